"""sandbox/demo.py - the built-in demo task family: straight-line integer arithmetic, one assignment per step.

`sandbox.load_problems("demo", split)` loads it (splits train, valid, test); the stages reach the rest as
`sandbox.demo`: the planted mistakes (`planted_kind`, `planted_mistakes`) and the exact step scorer
(`oracle_step_scores`, the PRM's ceiling, used as the `oracle` setting and as the yardstick of PRM quality).

  def f(a, b):
      '''Return x4, computed step by step.
      x1: a minus 4
      x2: x1 times (b plus 3)
      x3: x2 times 6, divided by 3
      x4: x3 cubed
      '''
      x1 = a - 4                  <- the completion starts here
      # x1 times (b plus 3)
      x2 = (b + 3) * x1

      x3 = x2 * 6 // 3
      x4 = x3 ** 3
      return x4

The words give each step in code order, so a line is a monotone copy of its docstring line with the
operators spelled out (a measured choice: a 0.9M model learns that copy; reordering words it did not).
Every step is one-to-one in the previous value (the division is exact, multiplied factors are non-zero
on every test input), so a wrong value on any line changes the returned value.
Harmless variation: commuted operands of + and *, `x ** 3` or `x * x * x`, optional comment and blank lines.

Planted mistakes (train split only, in `meta["flawed_solution"]`, the warm-up policy's targets): three
classic Python slips, each written at its rate wherever its construction appears. Each is *visible in
the line itself* (no correct line of any task has that shape), so a line-level PRM can learn to see
it, and each always fails the tests (checked per task). A long task holds several of them, so the
unit-test reward of a long response is rarely 1: the setting the paper's dense reward is for.
Tests, labels and the test split always use the correct `solution`; `meta["planted"]` lists (line, kind).
"""
import ast
import dataclasses
import gc
import hashlib
import json
import os
import random
import sys

from .problems import DataError, Problem
from .rules import split_steps

SEED = 1234
SIZES = {"train": 20000, "test": 1000, "valid": 1000}
MAX_STEPS = 8
N_TESTS = 5
LONG_LINES = 6  # demo-long: tasks of 5 to 8 steps and the return, where a sparse reward is rarest
MAX_VALUE = 10 ** 12  # intermediate values stay below this on every test input
COMMENT_RATE, BLANK_RATE = 0.15, 0.1
PLANTED_RATES = {
    "missing_parens": 0.4,  # "P times (U plus W)" written without the parentheses: P * U + W
    "true_div": 0.4,        # "P times M, divided by C" written with true division: P * M / C (a float)
    "xor_pow": 0.4,         # "P cubed" written with the XOR operator: P ^ 3
}


def _step(rng, p, args):
    """One step on the previous value `p`: (words, correct forms, planted kind, wrong form, value fn,
    wrong form's value fn); a value fn maps the environment of earlier values to this step's value.
    The words give the expression in code order ("x1 minus 7"), so the line is a monotone copy of them."""
    others = [a for a in args if a != p]
    u = rng.choice(others + [str(rng.randint(1, 9))] * max(1, len(others)))  # another argument or a constant
    op = rng.choice(["add", "sub", "mulsum", "div", "cube"])
    if op == "add":
        return f"{p} plus {u}", [f"{p} + {u}", f"{u} + {p}"], None, None, lambda e: e[p] + e[u], None
    if op == "sub":
        a, b = (p, u) if rng.random() < 0.5 else (u, p)
        return f"{a} minus {b}", [f"{a} - {b}"], None, None, lambda e: e[a] - e[b], None
    if op == "mulsum":
        w = str(rng.randint(1, 9))
        return (f"{p} times ({u} plus {w})", [f"{p} * ({u} + {w})", f"({u} + {w}) * {p}"], "missing_parens",
                f"{p} * {u} + {w}", lambda e: e[p] * (e[u] + e[w]), lambda e: e[p] * e[u] + e[w])
    if op == "div":  # an exact division, so every step stays one-to-one in the previous value
        c = rng.randint(2, 4)
        m, c = str(c * rng.randint(2, 3)), str(c)
        return (f"{p} times {m}, divided by {c}", [f"{p} * {m} // {c}", f"{m} * {p} // {c}"], "true_div",
                f"{p} * {m} / {c}", lambda e: e[p] * e[m] // e[c], lambda e: e[p] * e[m] / e[c])
    return (f"{p} cubed", [f"{p} ** 3", f"{p} * {p} * {p}"], "xor_pow", f"{p} ^ 3", lambda e: e[p] ** 3,
            lambda e: e[p] ^ 3)


def _task(rng, task_id, planted):
    """One demo task, or None when its values grow too large or its tests would miss a planted mistake."""
    args = ["a", "b"]
    n = rng.randint(1, MAX_STEPS)
    steps = [_step(rng, f"x{k - 1}" if k > 1 else rng.choice(args), args) for k in range(1, n + 1)]

    def run(env, wrong=None):  # every value, with step `wrong` (1-based) in its wrong form
        env = dict(env)
        for k, (_, _, _, _, fn, wrong_fn) in enumerate(steps, 1):
            env[f"x{k}"] = (wrong_fn if k == wrong else fn)(env)
            if not 0 < abs(env[f"x{k}"]) < MAX_VALUE:  # a dead step (0), or too large to be a good test
                raise ArithmeticError
        return env

    # hidden test inputs: no intermediate value is 0 (no step is dead) and none is huge
    tests = []
    for _ in range(50):
        try:
            tests.append(run({a: rng.randint(-20, 20) for a in args} | {str(i): i for i in range(13)}))
        except ArithmeticError:
            pass
        if len(tests) == N_TESTS:
            break

    def caught(k):  # some test input tells step k's wrong form from the right one (an int of the right value)
        for t in tests:
            try:
                r = run(t, wrong=k)[f"x{n}"]
            except (ArithmeticError, TypeError):  # its value is 0 or huge, or a float overflows: it differs
                return True
            if type(r) is not int or r != t[f"x{n}"]:
                return True
        return False
    if len(tests) < N_TESTS or not all(caught(k) for k, s in enumerate(steps, 1) if s[2]):
        return None
    head = f"def f({', '.join(args)}):\n"
    doc = f'    """Return x{n}, computed step by step.\n'
    doc += "".join(f"    x{k}: {s[0]}\n" for k, s in enumerate(steps, 1)) + '    """\n'
    good, bad, marks = [], [], []
    for k, (words, forms, kind, wrong, _, _) in enumerate(steps, 1):
        if rng.random() < BLANK_RATE and k > 1:
            good.append(""), bad.append("")
        if rng.random() < COMMENT_RATE:
            good.append(f"    # {words}"), bad.append(f"    # {words}")
        line = f"    x{k} = {rng.choice(forms)}"
        good.append(line)
        if planted and kind and rng.random() < PLANTED_RATES[kind]:
            bad.append(f"    x{k} = {wrong}")
            marks.append((len(bad) - 1, kind))
        else:
            bad.append(line)
    good.append(f"    return x{n}"), bad.append(f"    return x{n}")
    checks = "".join(f"    r = candidate({', '.join(str(t[a]) for a in args)})\n"
                     f"    assert type(r) is int and r == {t[f'x{n}']}, r\n" for t in tests)
    # where each named construction appears and its wrong form, for counting planted mistakes in any response
    wrong_forms = {f"x{k}": (kind, wrong) for k, (_, _, kind, wrong, _, _) in enumerate(steps, 1) if kind}
    meta = {"n_steps": n + 1, "args": args, "wrong_forms": wrong_forms, "inputs": [[t[a] for a in args] for t in tests]}
    if planted:
        meta |= {"flawed_solution": "\n".join(bad) + "\n", "planted": marks}
    return Problem(task_id=task_id, prompt=head + doc, solution="\n".join(good) + "\n",
                   test="def check(candidate):\n" + checks, entry_point="f", stop=["\ndef", "\nclass"], meta=meta)


def planted_kind(problem, line):
    """Demo tasks: the planted mistake a line (without its newline) writes, or None; a line `x3 = ...`
    is in the wrong form when it equals step 3's (spaces ignored)."""
    var, eq, expr = line.partition("=")
    kind_wrong = problem.meta.get("wrong_forms", {}).get(var.strip())
    return kind_wrong[0] if eq and kind_wrong and expr.replace(" ", "") == kind_wrong[1].replace(" ", "") else None


def planted_mistakes(problem, response):
    """Demo tasks: {kind: [lines written in that kind's wrong form, lines where the kind can occur]}
    for a response."""
    counts = {kind: [0, 0] for kind in PLANTED_RATES}
    for kind, _ in problem.meta.get("wrong_forms", {}).values():
        counts[kind][1] += 1
    for line in response.split("\n"):
        if kind := planted_kind(problem, line):
            counts[kind][0] += 1
    return counts


def oracle_step_scores(problem, response):
    """Demo tasks: an exact step scorer, the ceiling of what a PRM can give. For each step of
    split_steps(response): 0 for a comment line; +1 while every code line so far assigns (or returns)
    the reference's value for its variable on every hidden input, -1 from the first one that does not.
    Lines are evaluated as integer arithmetic on the AST (+ - * // ** ^, names, integers), never executed."""
    def value(node, env):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand, env)
            return -v if isinstance(node.op, ast.USub) else v
        ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.FloorDiv: int.__floordiv__,
               ast.Pow: int.__pow__, ast.BitXor: int.__xor__}  # `/` is not here: it makes a float, never right
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = value(node.left, env), value(node.right, env)
            if max(abs(a), abs(b)) > 10 ** 40 or (isinstance(node.op, ast.Pow) and not 0 <= b <= 3):
                raise OverflowError
            return ops[type(node.op)](a, b)  # a // 0 raises ZeroDivisionError: a wrong line
        raise ValueError("not demo arithmetic")

    def run_line(line, envs):
        """(variable, [value per input]) of one code line; raises on anything else."""
        node = ast.parse(line.strip()).body[0]
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            var = node.targets[0].id
        elif isinstance(node, ast.Return) and node.value is not None:
            var = "return"
        else:
            raise ValueError("not an assignment or a return")
        vals = [value(node.value, env) for env in envs]
        for env, v in zip(envs, vals):
            env[var] = v
        return var, vals

    args = problem.meta["args"]
    ref_envs = [dict(zip(args, x)) for x in problem.meta["inputs"]]
    reference = dict(run_line(line, ref_envs) for line in problem.solution.split("\n")
                     if line.strip() and not line.strip().startswith("#"))
    envs, ok, scores = [dict(zip(args, x)) for x in problem.meta["inputs"]], True, []
    for start, end, is_comment in split_steps(response):
        if is_comment:
            scores.append(0.0)
            continue
        if ok:
            try:
                var, vals = run_line(response[start:end], envs)
                ok = reference.get(var) == vals
            except Exception:  # a line that does not parse or is not demo arithmetic
                ok = False
        scores.append(1.0 if ok else -1.0)
    return scores


def load(split, long=False):
    """The demo split; long=True (`demo-long`): only its tasks of at least LONG_LINES lines, the same tasks
    with the same ids."""
    problems = _load(split)
    return [p for p in problems if p.meta["n_steps"] >= LONG_LINES] if long else problems


def _decode(f):
    """The cached split's Problems, with the cyclic collector paused: the train split's ~340k new lists and dicts set it
    off again and again, each pass over torch's and transformers' ~340k objects too (0.98 s -> 0.32 s a stage)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        return [Problem(**p) for p in json.load(f)]
    finally:
        if was_on:
            gc.enable()


def _load(split):
    """The demo split, deterministic from SEED. Test prompts are distinct; valid (for choosing designs
    and budgets; the test split is for reporting) excludes the test prompts; train excludes both but may
    repeat its own: there are few distinct one-step tasks, so a train split without repeats would hold few
    of them, and its lengths, and its pass rates, would differ from the test's. Building the train split
    takes seconds, so each split is cached as JSON under ~/.cache/psgpo, keyed by the source of this file and of
    problems.py (Problem's schema): a change to either builds it anew."""
    if split not in SIZES:
        raise DataError(f"demo: unknown split {split!r} (choose from {sorted(SIZES)})")
    key = hashlib.sha256(b"".join(open(m.__file__, "rb").read() for m in (sys.modules[__name__], sys.modules[Problem.__module__]))).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "psgpo", f"demo-{split}-{key}.json")
    try:
        with open(cache) as f:
            return _decode(f)
    except (OSError, ValueError, TypeError):
        pass
    taken = set()  # prompts the splits made so far hold: a later split may not use them
    for s in ("test", "valid", "train"):  # each split from its own seed, in this order, up to the one asked for
        rng, out = random.Random(f"demo-{s}-{SEED}"), []
        while len(out) < SIZES[s]:
            p = _task(rng, f"demo/{s}/{len(out)}", planted=s == "train")
            if p is not None and p.prompt not in taken:
                if s != "train":
                    taken.add(p.prompt)
                out.append(p)
        if s == split:
            break
    rows = json.loads(json.dumps([dataclasses.asdict(p) for p in out]))  # as the cache holds them (lists, not tuples)
    try:  # written whole, then renamed: a reader never sees half a file
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(f"{cache}.{os.getpid()}", "w") as f:
            json.dump(rows, f)
        os.replace(f"{cache}.{os.getpid()}", cache)
    except OSError:  # a read-only home: built every time
        pass
    return [Problem(**p) for p in rows]
