"""sandbox.py: loaders, the demo task family, verdicts (right, wrong, hostile), parallel order, steps."""
import json
import os
import re
import time

import pytest

import sandbox
from sandbox import DataError, Problem, check, check_many, load_problems, split_steps


@pytest.fixture(scope="module")
def demo_test():
    return load_problems("demo", "test")


@pytest.fixture(scope="module")
def demo_valid():
    return load_problems("demo", "valid")


@pytest.fixture(scope="module")
def demo_train():
    return load_problems("demo", "train")


def fn_problem(body_ok="    return a + b\n"):
    return Problem("t/add", "def add(a, b):\n", body_ok,
                   "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n", "add")


# ------------------------------------------------------------------ loaders
def test_humaneval_offline():
    ps = load_problems("humaneval")
    assert len(ps) == 164 and len({p.task_id for p in ps}) == 164
    assert all(p.entry_point and p.test and p.solution for p in ps)


def test_demo_deterministic_distinct_and_disjoint(demo_train, demo_test, demo_valid):
    assert len(demo_test) >= 1000 and len(demo_train) >= 5000
    assert len({p.prompt for p in demo_test}) == len(demo_test)
    assert not {p.prompt for p in demo_train} & {p.prompt for p in demo_test}
    assert len({p.prompt for p in demo_valid}) == len(demo_valid) and not {p.prompt for p in demo_valid} & (
        {p.prompt for p in demo_train} | {p.prompt for p in demo_test})
    # the same task lengths in both splits from 2 steps on (there are few distinct one-step tasks: the test
    # and valid splits take most of the likely ones, and train may repeat what is left)
    for n in range(3, sandbox.DEMO_MAX_STEPS + 2):
        share = lambda ps: sum(p.meta["n_steps"] == n for p in ps) / len(ps)  # noqa: E731
        assert abs(share(demo_train) - share(demo_test)) < 0.04, n  # the test share's standard error is ~0.011
    again = sandbox._demo("test")
    assert [(p.prompt, p.solution, p.test) for p in again] == [(p.prompt, p.solution, p.test) for p in demo_test]
    steps = [p.meta["n_steps"] - 1 for p in demo_test]
    assert min(steps) == 1 and max(steps) == sandbox.DEMO_MAX_STEPS
    assert any("    #" in p.solution for p in demo_test) and any("\n\n" in p.solution for p in demo_test)


def test_demo_planted_rates(demo_train):
    # each planted kind appears at its documented rate among the lines where it can appear
    total = {k: [0, 0] for k in sandbox.PLANTED_RATES}
    for p in demo_train[:3000]:
        flawed = sandbox.planted_mistakes(p, p.meta["flawed_solution"])
        assert all(made == 0 for made, _ in sandbox.planted_mistakes(p, p.solution).values())
        assert sum(made for made, _ in flawed.values()) == len(p.meta["planted"])
        for kind, (made, possible) in flawed.items():
            total[kind][0] += made
            total[kind][1] += possible
    for kind, rate in sandbox.PLANTED_RATES.items():
        assert abs(total[kind][0] / total[kind][1] - rate) < 0.03, (kind, total[kind])
    # the flawed target differs from the reference exactly on the planted lines
    for p in demo_train[:200]:
        bad, good = p.meta["flawed_solution"].split("\n"), p.solution.split("\n")
        assert [i for i in range(len(good)) if bad[i] != good[i]] == [i for i, _ in p.meta["planted"]]
    # the counter reads a model's spacing too
    p = next(p for p in demo_train if p.meta["planted"])
    line = p.meta["flawed_solution"].split("\n")[p.meta["planted"][0][0]]
    assert sandbox.planted_mistakes(p, line.replace(" ", ""))[p.meta["planted"][0][1]][0] == 1


def test_demo_references_pass_and_planted_fail(demo_test, demo_train):
    assert all(v.passed for v in check_many([(p, p.solution) for p in demo_test]))
    # one planted mistake always fails (two can cancel out, as two sign errors do)
    sample = [p for p in demo_train[:1500] if len(p.meta["planted"]) <= 1]
    verdicts = check_many([(p, p.meta["flawed_solution"]) for p in sample])
    assert len(sample) > 400 and all(v.passed == (not p.meta["planted"]) for p, v in zip(sample, verdicts))


def mutations(solution):
    """Every one-line mutation of a demo solution: per code line, change its operator or a constant."""
    lines = solution.split("\n")
    for i, line in enumerate(lines):
        if not line.strip() or line.strip().startswith("#"):
            continue
        for a, b in ((" + ", " - "), (" - ", " + "), (" * ", " + ")):
            if a in line:
                yield "\n".join(lines[:i] + [line.replace(a, b, 1)] + lines[i + 1:])
        m = re.search(r"\b\d\b", line.split("=", 1)[-1])
        if m:
            k = m.start() + line.index("=") + 1
            yield "\n".join(lines[:i] + [line[:k] + str(int(line[k]) % 9 + 1) + line[k + 1:]] + lines[i + 1:])
        if line.strip().startswith("return x"):
            n = int(line.split("x")[-1])
            if n > 1:
                yield "\n".join(lines[:i] + [f"    return x{n - 1}"] + lines[i + 1:])


def test_demo_every_one_line_mutation_fails(demo_test):
    items = [(p, m) for p in demo_test[:150] for m in mutations(p.solution)]
    assert len(items) > 1000
    verdicts = check_many(items)
    survivors = [m for (p, m), v in zip(items, verdicts) if v.passed]
    assert not survivors, survivors[:3]


def test_oracle_step_scores(demo_train):
    for p in demo_train[:1000]:
        assert all(s >= 0 for s in sandbox.oracle_step_scores(p, p.solution))
        flawed = p.meta["flawed_solution"]
        scores, steps = sandbox.oracle_step_scores(p, flawed), split_steps(flawed)
        lines = [flawed[:a].count("\n") for a, _, _ in steps]
        assert [s == 0 for s in scores] == [c for _, _, c in steps]  # comments are neutral
        if p.meta["planted"]:  # +1 before the first planted line, -1 on it and on every code line after
            first = lines.index(p.meta["planted"][0][0])
            assert all(s >= 0 for s in scores[:first]) and all(s == -1 or c for s, (_, _, c) in zip(scores[first:], steps[first:]))
        else:
            assert all(s >= 0 for s in scores)
    p = demo_train[0]
    assert sandbox.oracle_step_scores(p, "    import os\n" + p.solution)[0] == -1  # not arithmetic: wrong
    assert sandbox.oracle_step_scores(p, "") == []


def test_local_jsonl_function_and_stdio(tmp_path):
    f = tmp_path / "fn.jsonl"
    f.write_text(json.dumps({"task_id": "x/0", "prompt": "def inc(x):\n", "canonical_solution": "    return x + 1\n",
                             "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "inc"}) + "\n\n")
    (p,) = load_problems(str(f))
    assert check(p, p.solution).passed and not check(p, "    return x\n").passed
    g = tmp_path / "io.jsonl"
    g.write_text(json.dumps({"task_id": "io/0", "prompt": "Read n, print 2n.\n```python\n",
                             "io_tests": [{"input": "3\n", "output": "6\n"}, {"input": "5\n", "output": "10"}]}) + "\n")
    (q,) = load_problems(str(g))
    assert check(q, "print(2 * int(input()))\n").passed
    assert check(q, "import sys\nprint(2 * int(input()))\nsys.exit(0)\n").passed  # a clean exit after the output
    assert not check(q, "print(6)\n").passed
    assert not check(q, "import sys\nsys.exit(0)\nprint(2 * int(input()))\n").passed


@pytest.mark.parametrize("content, message", [
    ("{not json}\n", r"bad\.jsonl:1: not valid JSON"),
    ('{"task_id": "a", "prompt": "p"}\n', r"bad\.jsonl:1: missing or non-string field 'test'"),
    ('{"task_id": "a"}\n', r"bad\.jsonl:1: missing or non-string field 'prompt'"),
    ("[1, 2]\n", r"bad\.jsonl:1: expected a JSON object"),
    ("\n\n", r"bad\.jsonl: no rows"),
    ('{"task_id": "a", "prompt": "p", "io_tests": []}\n', r"'io_tests' must be a non-empty list"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        load_problems(str(f))
    assert "\n" not in str(e.value)


def test_unknown_and_missing(tmp_path):
    with pytest.raises(DataError, match="unknown problem set 'nope'"):
        load_problems("nope")
    with pytest.raises(DataError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="unknown split"):
        load_problems("demo", "validation")


@pytest.mark.parametrize("name", ["mbpp", "livecodebench"])
def test_hub_unreachable_is_one_line(monkeypatch, name):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the hub\nmore lines")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="pass a local .jsonl") as e:
        load_problems(name)
    assert "\n" not in str(e.value)


def test_find_model_local_or_hub(tmp_path, monkeypatch, tiny_policy):
    """A model is a local folder or a Hub id; otherwise one line, at once for paths that look local."""
    assert sandbox.find_model(tiny_policy("gpt2")).model_type == "gpt2"
    for path, message in [(tmp_path / "missing", "no such model folder"), (tmp_path, "not a model folder"),
                          ("runs/nope/ckpt-0001", "no such model folder")]:
        with pytest.raises(DataError, match=message):
            sandbox.find_model(str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network here: a Hub id is tried, and fails in one line
    with pytest.raises(DataError, match="neither a local model folder nor reachable on the Hugging Face Hub") as e:
        sandbox.find_model("Qwen/Qwen2.5-Coder-7B-Instruct")
    assert "\n" not in str(e.value)


def test_mbpp_and_livecodebench_rows_judge():
    mb = sandbox._mbpp_problem({"task_id": 2, "text": "Add two numbers.", "code": "def add(a, b):\n    return a + b",
                                "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": ""})
    assert check(mb, mb.solution).passed and not check(mb, "def add(a, b):\n    return a - b").passed
    stdio = {"question_id": "1", "question_content": "Print the sum of two ints.", "starter_code": "", "metadata": "{}",
             "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
             "private_test_cases": json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}])}
    p = sandbox._lcb_problem(stdio)
    assert len(p.io_tests) == 2 and check(p, "print(sum(map(int, input().split())))\n").passed
    assert not check(p, "print(3)\n").passed
    starter = "class Solution:\n    def twice(self, x: int) -> int:\n"
    func = {"question_id": "2", "question_content": "Twice x.", "starter_code": starter,
            "metadata": json.dumps({"func_name": "twice"}), "private_test_cases": "[]",
            "public_test_cases": json.dumps([{"input": "4", "output": "8", "testtype": "functional"}])}
    q = sandbox._lcb_problem(func)
    assert check(q, "        return 2 * x\n").passed and not check(q, "        return x\n").passed


# ------------------------------------------------------------------ verdicts
def test_right_wrong_error_timeout():
    p = fn_problem()
    assert check(p, p.solution) == sandbox.Verdict(True, "passed", "")
    v = check(p, "    return a - b\n")
    assert (v.passed, v.status) == (False, "failed") and "AssertionError" in v.detail
    v = check(p, "    return a +\n")
    assert (v.passed, v.status) == (False, "error") and "SyntaxError" in v.detail
    v = check(p, "    return undefined_name\n")
    assert v.status == "error" and "NameError" in v.detail
    t = time.monotonic()
    v = check(p, "    while True: pass\n", timeout=1.0)
    assert v.status == "timeout" and time.monotonic() - t < 3.0
    v = check(p, "    import time; time.sleep(60)\n", timeout=1.0)
    assert v.status == "timeout" and time.monotonic() - t < 6.0


HOSTILE_EARLY_EXITS = [
    "    import sys; sys.exit(0)\n",
    "    exit()\n",
    "    quit(0)\n",
    "    raise SystemExit(0)\n",
    "    import os; os._exit(0)\n",
    "    import posix; posix._exit(0)\n",
    "    raise KeyboardInterrupt\n",
    "    import posix, signal; posix.kill(posix.getpid(), signal.SIGKILL)\n",
    "    print('passed'); print('All tests passed'); import os; os._exit(0)\n",
    "    import sys; sys.stdout.write('passed\\n'); sys.stdout.flush(); sys.exit(0)\n",
    "    import atexit, os; atexit.register(lambda: os._exit(0)); raise ValueError\n",
]


@pytest.mark.parametrize("completion", HOSTILE_EARLY_EXITS)
def test_early_exit_never_passes_at_call_time(completion):
    # the completion ends the process when the tests call it, before any assert runs
    assert not check(fn_problem(), completion).passed


@pytest.mark.parametrize("completion", HOSTILE_EARLY_EXITS)
def test_early_exit_never_passes_at_import_time(completion):
    # the same, at module level: the tests are never even defined
    body = "    return a + 1\n" + completion.replace("    ", "", 1)
    assert not check(fn_problem(), body).passed


def test_completion_cannot_swallow_or_replace_the_tests():
    p = Problem("t/s", "def f():\n", None,
                'def check(candidate):\n    """doc"""\n    assert candidate() == 1\n', "f")
    assert check(p, "    return 1\n").passed
    # an unclosed string would turn the tests into text, leaving a fake check() in charge
    assert not check(p, '    return 2\ndef check(c):\n    pass\nx = """\n').passed
    assert not check(p, "    return 2\nimport builtins\nbuiltins.AssertionError = ZeroDivisionError\n").passed


def test_killing_the_worker_is_a_failure_and_the_judge_recovers():
    p = fn_problem()
    v = check(p, "    import posix, signal; posix.kill(posix.getppid(), signal.SIGKILL)\n")
    assert not v.passed
    assert check(p, p.solution).passed


def test_memory_output_and_fork_bombs(tmp_path):
    p = fn_problem()
    t = time.monotonic()
    assert not check(p, "    x = bytearray(8 * 2**30)\n    return a + b\n").passed
    assert not check(p, "    while True: print('x' * 100000)\n", timeout=2.0).passed
    v = check(p, "    import posix\n    while True:\n        try: posix.fork()\n        except OSError: pass\n", timeout=2.0)
    assert not v.passed and time.monotonic() - t < 20
    assert check(p, p.solution).passed


def test_no_process_survives_the_verdict():
    import pathlib
    import tempfile
    shared = tempfile.mkdtemp()  # under /tmp, so that a program under the judge's own uid can write here
    os.chmod(shared, 0o777)
    pidfile = pathlib.Path(shared) / "pid"
    body = (f"    import posix, time\n    if posix.fork() == 0:\n        posix.setsid()\n"
            f"        open({str(pidfile)!r}, 'w').write(str(posix.getpid()))\n        time.sleep(120)\n"
            f"    time.sleep(0.5)\n    return a + b\n")
    assert check(fn_problem(), body).passed  # the tests pass: the sleeper is only left behind
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process {pid} started by the program is still alive")


@pytest.mark.skipif(os.geteuid() != 0, reason="host files are protected by the judge's own uid, which needs root")
def test_host_files_are_safe(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("keep me")
    for attack in (f"import posix; posix.unlink({str(canary)!r})",
                   f"open({str(canary)!r}, 'w').write('gone')",
                   f"import posix; posix.chmod({str(canary)!r}, 0o000)"):
        v = check(fn_problem(), "    return a + b\n" + attack + "\n")
        assert not v.passed and "PermissionError" in v.detail, v
    assert canary.read_text() == "keep me" and oct(canary.stat().st_mode)[-3:] == "644"


def test_check_many_keeps_order_and_runs_in_parallel():
    p = fn_problem()
    good, bad = p.solution, "    return a * b\n"
    items = [(p, good if i % 3 else bad) for i in range(60)]
    verdicts = check_many(items, workers=2)
    assert [v.passed for v in verdicts] == [bool(i % 3) for i in range(60)]
    t = time.monotonic()
    vs = check_many([(p, "    import time; time.sleep(30)\n")] * 4, workers=2, timeout=1.0)
    assert [v.status for v in vs] == ["timeout"] * 4 and time.monotonic() - t < 3.5


# ------------------------------------------------------------------ steps
def spans(text):
    return [(text[a:b], c) for a, b, c in split_steps(text)]


def test_split_steps():
    text = '    x1 = a + 1\n\n    # add one\n  \n        s = "# not a comment"\n    return x1'
    assert spans(text) == [("    x1 = a + 1\n", False), ("    # add one\n", True),
                           ('        s = "# not a comment"\n', False), ("    return x1", False)]
    assert split_steps("") == [] and split_steps("\n\n") == []
    assert spans("x = 1  # trailing\n") == [("x = 1  # trailing\n", False)]
    # a multi-line string: its lines are code even when they start with '#'
    assert spans('s = """\n# inside\n"""\n# real\n') == [('s = """\n', False), ("# inside\n", False),
                                                        ('"""\n', False), ("# real\n", True)]
    # code that does not tokenize: lines before the error are trusted, later ones start with '#'
    broken = "x = (1,\n# inside parens\n"
    assert spans(broken) == [("x = (1,\n", False), ("# inside parens\n", True)]
    assert spans("  a = 1\n b = 2\n # c\n") == [("  a = 1\n", False), (" b = 2\n", False), (" # c\n", True)]
    # spans cover the text exactly, apart from blank lines
    s = split_steps(text)
    assert "".join(text[a:b] for a, b, _ in s) == "".join(l for l in text.splitlines(True) if l.strip())


def test_split_steps_survives_any_model_output(monkeypatch):
    # NUL bytes and lone surrogates make Python >= 3.12's tokenizer raise Unicode errors or SystemError
    for text in ["x = 1\x00\u00e9\n# c\n", "x = \udc80\n# c\n", '\t"\x0c"\n\x00\x0c#\n x\udc80\n\rx', "\x00"]:
        lines = [l + "\n" for l in text.split("\n")[:-1]] + [text.split("\n")[-1]]
        assert "".join(text[a:b] for a, b, _ in split_steps(text)) == "".join(l for l in lines if l.strip())
    import tokenize

    def raises(error):  # what 3.12 raises, on any Python: every line falls back to the '#' rule
        def generate_tokens(readline):
            raise error
        return generate_tokens
    for error in (UnicodeDecodeError("utf-8", b"\xef", 0, 1, "unexpected end of data"), SystemError("tokenizer")):
        monkeypatch.setattr(tokenize, "generate_tokens", raises(error))
        assert spans("x = 1\n  # c\ny = '#'\n") == [("x = 1\n", False), ("  # c\n", True), ("y = '#'\n", False)]
