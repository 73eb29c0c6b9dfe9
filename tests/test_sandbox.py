"""sandbox (the package): loaders, the demo task family, verdicts (right, wrong, hostile), parallel order, steps."""
import json
import shutil
import os
import sys
import time

import pytest

import sandbox
from sandbox import DataError, Problem, check, check_many, load_problems, split_steps


def fn_problem(body_ok="    return a + b\n"):
    return Problem("t/add", "def add(a, b):\n", body_ok,
                   "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n", "add")


# ------------------------------------------------------------------ loaders
def test_humaneval_offline():
    ps = load_problems("humaneval")
    assert len(ps) == 164 and len({p.task_id for p in ps}) == 164
    assert all(p.entry_point and p.test and p.solution for p in ps)


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


def test_unknown_and_missing(tmp_path):
    with pytest.raises(DataError, match="unknown problem set 'nope'"):
        load_problems("nope")
    with pytest.raises(DataError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="unknown split"):
        load_problems("demo", "validation")


def test_find_model_local_or_hub(tmp_path, monkeypatch, tiny_policy):
    """A model is a local folder or a Hub id; otherwise one line, at once for paths that look local."""
    assert sandbox.find_model(tiny_policy("gpt2")).model_type == "gpt2"
    for path, message in [(tmp_path / "missing", "no such model folder"), (tmp_path, "not a model folder"),
                          ("runs/nope/ckpt-0001", "no such model folder")]:
        with pytest.raises(DataError, match=message):
            sandbox.find_model(str(path))
    with pytest.raises(DataError, match="neither a local model folder nor reachable on the Hugging Face Hub") as e:
        sandbox.find_model("Qwen/Qwen2.5-Coder-7B-Instruct")  # offline (conftest): a Hub id is tried, and fails in one line
    assert "\n" not in str(e.value)
    # a folder whose config loads but whose weights or tokenizer are missing fails before any stage starts
    import shutil
    for missing, message in [("model.safetensors", "no model weights"), ("tokenizer.json", "tokenizer does not load")]:
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(tiny_policy("gpt2"), broken)
        for f in broken.glob(missing.split(".")[0] + "*"):
            f.unlink()
        with pytest.raises(DataError, match=message):
            sandbox.find_model(str(broken))
        assert sandbox.find_model(str(broken), tokenizer=False) if missing != "model.safetensors" else True


HUB_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "hub")


def hub_cache(tmp_path, monkeypatch, repo, files):
    """A Hugging Face cache holding `files` ({path in the repo: writer(local path)}) of dataset `repo` as
    huggingface_hub lays out a fetched snapshot (refs/main, snapshots/<commit>/...); the tests run offline (conftest)."""
    import huggingface_hub
    folder, commit = tmp_path / "hub" / f"datasets--{repo.replace('/', '--')}", "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    for rel, write in files.items():
        path = folder / "snapshots" / commit / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def parquet(rows, schema):
    import pyarrow as pa
    import pyarrow.parquet as pq
    return lambda path: pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def acecode_schema():
    import pyarrow as pa  # the card's dataset_info
    return pa.schema([("id", pa.string()), ("source", pa.string()), ("question", pa.string()), ("test_cases", pa.list_(pa.string())),
                      ("inferences", pa.list_(pa.struct([("completion", pa.string()), ("completion_id", pa.int64()),
                                                        ("model_name", pa.string()), ("pass_rate", pa.float64())]))),
                      ("context_messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])))])


def test_acecode_from_its_published_parquet_judges_its_references(tmp_path, monkeypatch):
    """AceCode-87K read from its Parquet file in the Hugging Face cache, offline, by the real loader: each problem's
    reference (an inference that passed every test, its code block) passes, a wrong program fails; a row without a
    passing inference has no reference; a triple quote or a backslash in a question leaves the prompt one string."""
    rows = json.load(open(os.path.join(HUB_DATA, "acecode-87k.json")))
    hub_cache(tmp_path, monkeypatch, "TIGER-Lab/AceCode-87K", {"data/train-00000-of-00001.parquet": parquet(rows, acecode_schema())})
    problems = load_problems("acecode", "train")
    assert [p.task_id for p in problems] == ["AceCode/oss_101", "AceCode/evol_7", "AceCode/bigcode_python_fns_3"]
    assert problems[0].solution.startswith("from typing import List") and problems[2].solution is None
    for p in problems[:2]:
        assert check(p, p.solution).passed
        assert not check(p, p.solution.replace("return", "return None and", 1) + "\n").passed
    assert check(problems[2], "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n").passed
    assert not check(problems[2], "def clamp(x, lo, hi):\n    return x\n").passed
    sandbox.self_test(problems)  # what every stage runs first: the references pass, each with a failing line fails
    with pytest.raises(DataError, match="unknown split 'test'"):
        load_problems("acecode", "test")


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("test_cases"), r"acecode: train-00000-of-00001.parquet has no column 'test_cases'"),
    (lambda r: r.update(test_cases=[]), r"row 1 \('evol_7'\): field 'test_cases' should be a non-empty list of strings"),
    (lambda r: r["inferences"][0].pop("pass_rate"), r"row 1 \('evol_7'\) inferences: field 'pass_rate' should be int or float"),
])
def test_a_changed_acecode_format_is_one_line_naming_the_row_and_field(tmp_path, monkeypatch, change, message):
    import pyarrow as pa
    rows = json.load(open(os.path.join(HUB_DATA, "acecode-87k.json")))
    change(rows[1])
    schema = acecode_schema()
    if "test_cases" not in rows[1]:
        schema = pa.schema([f for f in schema if f.name != "test_cases"])
        for r in rows:
            r.pop("test_cases", None)
    if "pass_rate" not in rows[1]["inferences"][0]:
        rows[1]["inferences"][0]["pass_rate"] = None
    hub_cache(tmp_path, monkeypatch, "TIGER-Lab/AceCode-87K", {"data/train-00000-of-00001.parquet": parquet(rows, schema)})
    with pytest.raises(DataError, match=message) as e:
        load_problems("acecode", "train")
    assert "\n" not in str(e.value)


def test_mbpp_from_its_published_parquet(tmp_path, monkeypatch):
    import pyarrow as pa  # the card's features of config full
    schema = pa.schema([("task_id", pa.int32()), ("text", pa.string()), ("code", pa.string()), ("test_list", pa.list_(pa.string())),
                        ("test_setup_code", pa.string()), ("challenge_test_list", pa.list_(pa.string()))])
    rows = json.load(open(os.path.join(HUB_DATA, "mbpp-full-train.json")))
    hub_cache(tmp_path, monkeypatch, "google-research-datasets/mbpp", {"full/train-00000-of-00001.parquet": parquet(rows, schema)})
    problems = load_problems("mbpp", "train")
    assert [p.task_id for p in problems] == ["MBPP/601", "MBPP/602"]
    for p in problems:
        assert check(p, p.solution).passed and not check(p, p.solution.replace("return", "return None and", 1)).passed
    with pytest.raises(DataError, match=r"mbpp: no file of google-research-datasets/mbpp matches full/test-\*.parquet \(offline") as e:
        load_problems("mbpp", "test")  # not in the cache, and offline: one line, the way out in it
    assert "\n" not in str(e.value) and "Hugging Face cache" in str(e.value)


def lcb_cache(tmp_path, monkeypatch, name="lcb-test6.jsonl"):
    hub_cache(tmp_path, monkeypatch, "livecodebench/code_generation_lite",
              {"test6.jsonl": lambda path: shutil.copy(os.path.join(HUB_DATA, name), path)})


def test_livecodebench_from_its_release_files_with_a_date_window(tmp_path, monkeypatch):
    """LiveCodeBench read from its release file test6.jsonl (v6) in the cache, offline: private tests decoded (JSON, or
    base64 / zlib / pickle of a JSON string), a functional problem called as Solution().method on one JSON value per
    input line, a stdin one compared line by line with decimals; a contest-date window keeps the problems after it."""
    lcb_cache(tmp_path, monkeypatch)
    every = {p.task_id: p for p in load_problems("livecodebench", "v6")}
    assert list(every) == ["LCB/3001", "LCB/abc400_a", "LCB/2001"]
    scaled, pairs = every["LCB/3001"], every["LCB/abc400_a"]
    assert scaled.test.count("assert") == 3 and len(pairs.io_tests) == 2
    assert check(scaled, "return sum(nums) * k\n").passed  # the completion continues the starter's method
    assert check(scaled, "return tuple([sum(nums) * k])[0]\n").passed
    assert not check(scaled, "return sum(nums)\n").passed
    right = "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs), f'{sum(xs) / n:.3f}')\n"
    assert check(pairs, right).passed  # "2.000" is the decimal 2.00
    assert not check(pairs, "print(6, 2)\n").passed
    assert [p.task_id for p in load_problems("livecodebench", "v6:2025-01-01")] == ["LCB/3001", "LCB/abc400_a"]
    assert [p.task_id for p in load_problems("livecodebench", "v6:2025-01-01:2025-04-01")] == ["LCB/3001"]
    for split, message in [("release_v9", "unknown split 'release_v9'"), ("v6:2025-13-01", "the dates must be YYYY-MM-DD"),
                           ("v6:2030-01-01", "no problem of split 'v6:2030-01-01' lies within its dates")]:
        with pytest.raises(DataError, match=message):
            load_problems("livecodebench", split)


def test_livecodebench_refuses_a_pickle_that_is_not_a_string(tmp_path, monkeypatch, capsys):
    lcb_cache(tmp_path, monkeypatch, "lcb-evil.jsonl")
    with pytest.raises(DataError, match=r"test6.jsonl:1: private_test_cases is neither JSON nor .* \(refused: a pickle that builds builtins.print"):
        load_problems("livecodebench", "v6")
    assert "pwned" not in capsys.readouterr().out


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
    # the same, at module level after a correct body: the tests are never even defined
    body = fn_problem().solution + completion.replace("    ", "", 1)
    assert check(fn_problem(), fn_problem().solution).passed
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


def test_a_signal_to_the_trainers_process_group_leaves_the_verdicts_alone(tmp_path):
    """Ctrl-C in a terminal (or torchrun's signal) reaches the trainer's whole process group; the trainer finishes
    its iteration, so the judge's workers, in sessions of their own, must finish theirs: 4 passing programs
    judged while SIGINT hits the group all still pass (with the workers in the trainer's group, the 2 in flight
    came back as "the judge's worker died")."""
    import signal
    import subprocess
    import sys
    script = tmp_path / "trainer.py"
    script.write_text(f"""import json, signal, sys
sys.path.insert(0, {os.path.dirname(os.path.dirname(sandbox.__file__))!r})
import sandbox
signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))  # the trainer's handler: finish, then save
p = sandbox.Problem("t/add", "def add(a, b):\\n", None, "def check(candidate):\\n    assert candidate(2, 3) == 5\\n", "add")
sandbox.check(p, "    return a + b\\n")  # the workers are up
print("judging", flush=True)
vs = sandbox.check_many([(p, "    import time; time.sleep(1.5)\\n    return a + b\\n")] * 4, workers=2)
print(json.dumps([v.status for v in vs]), flush=True)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "judging"
    time.sleep(0.7)  # two programs in flight
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[0] == "interrupted" and json.loads(lines[-1]) == ["passed"] * 4, out


def test_memory_output_and_fork_bombs(tmp_path):
    p = fn_problem()
    t = time.monotonic()
    assert not check(p, "    x = bytearray(8 * 2**30)\n    return a + b\n").passed
    v = check(p, "    while True: print('x' * 100000)\n", timeout=2.0)
    assert (v.passed, v.status) == (False, "output_limit")
    v = check(p, "    import posix\n    while True:\n        try: posix.fork()\n        except OSError: pass\n", timeout=2.0)
    assert not v.passed and time.monotonic() - t < 20
    assert check(p, p.solution).passed


def test_a_correct_program_that_prints_past_the_output_limit_has_a_verdict_of_its_own():
    """A correct program that writes more than 16 MB (worker.OUTPUT_LIMIT) was a plain error, "killed by SIGXFSZ"; it
    is output_limit now, a status in sandbox.VERDICTS (train_psgpo.py's verdicts/* shares), and never a pass: also when
    it ignores the signal and its write's error, and for a stdin/stdout program."""
    p = fn_problem()
    loud = "    print('x' * (17 << 20))\n    return a + b\n"
    deaf = "    import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n    try:\n        print('x' * (17 << 20), flush=True)\n" \
           "    except OSError:\n        pass\n    return a + b\n"
    io = Problem("io", "Print y.\n", io_tests=[("", "y")], code_prefix="")
    quiet = "    print('x' * (7 << 20))\n    return a + b\n"  # under the limit, called twice
    vs = check_many([(p, loud), (p, deaf), (io, "print('y' * (17 << 20))\n"), (p, quiet)])
    assert [(v.passed, v.status) for v in vs] == [(False, "output_limit")] * 3 + [(True, "passed")], vs
    assert "output_limit" in sandbox.VERDICTS


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
    # lines that do nothing are neutral too: a docstring (one line or several), a bare string, `pass`, `...`
    doc = '    """Add one.\n    Twice.\n    """\n    pass\n    ...\n    x = "s"\n    "lone"\n    if x: pass\n'
    assert [n for _, n in spans(doc)] == [True, True, True, True, True, False, True, False]
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


# ------------------------------------------------------------------ the rules every stage shares
def test_end_response_stops_at_any_eos_or_a_stop_string(tiny_tokenizer):
    tok = tiny_tokenizer
    eos, other = tok.eos_token_id, tok.pad_token_id  # a second EOS id, as instruct models list in generation_config.json
    body = tok("    x1 = a + 1\n    return x1", add_special_tokens=False)["input_ids"]
    assert sandbox.end_response(tok, body + [eos] + body, [eos], []) == ("    x1 = a + 1\n    return x1", len(body) + 1)
    assert sandbox.end_response(tok, body + [other] + body, [eos, other], [])[1] == len(body) + 1  # the other EOS ends it too
    assert sandbox.end_response(tok, body, [eos], []) == ("    x1 = a + 1\n    return x1", len(body))  # ran to max_new_tokens
    cut_ids = tok("    return 1\ndef g():\n", add_special_tokens=False)["input_ids"]
    text, n = sandbox.end_response(tok, cut_ids + [eos], [eos], ["\ndef"])
    assert text == "    return 1" and len(tok.decode(cut_ids[:n])) > len(text) >= len(tok.decode(cut_ids[:n - 1]))
    assert sandbox.cut_at_stop("    return 1\ndef g():\n", ["\nclass", "\ndef"]) == "    return 1"
    assert sandbox.cut_at_stop("    return 1\n", ["\ndef"]) == "    return 1\n"


def test_line_end_tokens_hold_each_lines_last_character(tiny_tokenizer):
    from train_sft import train_tokenizer
    byte_tok = train_tokenizer(["x"], 258)  # bytes only: token t is character t
    text = "    a = 1\n\n    # c\n        b = a\n    return b"
    ids = byte_tok(text, add_special_tokens=False)["input_ids"]
    assert sandbox.line_end_tokens(byte_tok, ids, split_steps(text)) == [9, 18, 32, len(text) - 1]
    for tok in (byte_tok, tiny_tokenizer):  # the demo's BPE merges a newline with the next line's indent
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ends = [len(tok.decode(ids[:t + 1])) for t in range(len(ids))]
        for (a, b, _), t in zip(split_steps(text), sandbox.line_end_tokens(tok, ids, split_steps(text))):
            assert (ends[t - 1] if t else 0) < b <= ends[t]  # the token holding the line's last character


def test_prompt_ids_plain_or_through_a_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    prompt = "def f(a, b):\n"
    assert sandbox.prompt_ids(tok, prompt) == tok(prompt)["input_ids"]
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "{% if not loop.last %}<|im_end|>\n{% endif %}{% endfor %}")
    try:
        text = tok.decode(sandbox.prompt_ids(tok, prompt, chat=True))
    finally:
        tok.chat_template = None
    # the assistant's turn is begun with the prompt in a code block: the model continues the code itself
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n```python\n" + prompt)
    p = sandbox.Problem("t", prompt)
    assert sandbox.stop_strings(p) == p.stop and sandbox.stop_strings(p, chat=True) == p.stop + ["```"]


def test_a_closing_fence_ends_a_chat_completion_wherever_it_stands(tiny_tokenizer):
    """An instruct model that closes the prefilled code block at once writes "```" first: the completion is empty,
    not "```" (which the judge would run after the prompt as a SyntaxError and labeling would count as a code line)."""
    tok, eos = tiny_tokenizer, [tiny_tokenizer.eos_token_id]
    stops = sandbox.stop_strings(sandbox.Problem("t", "def f(a):\n"), chat=True)
    for response, kept in [("```\nThis function adds.", ""), ("    return a\n```", "    return a\n"), ("    return a  ```", "    return a  "),
                           ("    return a\n", "    return a\n")]:
        assert sandbox.end_response(tok, tok(response, add_special_tokens=False)["input_ids"] + eos, eos, stops)[0] == kept
    assert sandbox.split_steps(sandbox.cut_at_stop("```\n", stops)) == []  # no step to label


def test_load_tokenizer_takes_every_eos_id_and_pads(tmp_path, tiny_policy):
    import shutil
    from transformers import GenerationConfig, PreTrainedTokenizerFast
    folder = tmp_path / "instruct"
    shutil.copytree(tiny_policy("qwen2"), folder)
    GenerationConfig(eos_token_id=[7, 11], repetition_penalty=1.1).save_pretrained(folder)
    tok, eos = sandbox.load_tokenizer(str(folder))
    assert eos == sorted({tok.eos_token_id, 7, 11}) and tok.padding_side == "left"
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token)
    no_pad.save_pretrained(folder)
    tok, eos = sandbox.load_tokenizer(str(folder))
    assert tok.pad_token_id == eos[0]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_samples_the_same_tokens_with_either_attention_and_gives_the_model_its_own_back(monkeypatch, tiny_policy, arch):
    """sandbox.generate on the CPU samples with CPU_ATTENTION's kernel: the same tokens as with SDPA from the same
    seed (left-padded rows of different lengths), and the model's own implementation, for training, after."""
    import torch
    from transformers import AutoModelForCausalLM
    import sandbox.models as sandbox_models
    tok, eos = sandbox.load_tokenizer(tiny_policy(arch))
    model = AutoModelForCausalLM.from_pretrained(tiny_policy(arch), attn_implementation="sdpa").eval()
    rows = [sandbox.prompt_ids(tok, p.prompt, False)[: 20 + 7 * i] for i, p in enumerate(load_problems("demo", "valid")[:4])]
    seqs, used = [], set()
    model.register_forward_pre_hook(lambda m, args: used.add(m.config._attn_implementation))
    for impl in ("sdpa", "eager"):
        monkeypatch.setattr(sandbox_models, "CPU_ATTENTION", impl)
        torch.manual_seed(0)
        seqs.append(sandbox.generate(model, tok, rows, eos, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=24)[0])
        assert used == {impl} and model.config._attn_implementation == "sdpa"
        used.clear()
    assert torch.equal(*seqs)


def test_growing_cache_layer_holds_what_torch_cat_would():
    """sandbox_models.GrowingLayer against transformers' DynamicLayer (a new tensor by torch.cat at every
    update): the same keys and values after a prefill and each token, through two doublings of its buffers."""
    import torch
    from transformers.cache_utils import DynamicLayer
    import sandbox.models as sandbox_models
    grow, cat = sandbox_models.GrowingLayer(), DynamicLayer()
    lengths = []
    for m in [5] + [1] * 20:
        k, v = torch.randn(3, 2, m, 4), torch.randn(3, 2, m, 4)
        for got, want in zip(grow.update(k, v), cat.update(k, v)):
            assert torch.equal(got, want)
        lengths.append(grow.buffers[0].shape[-2])
    assert sorted(set(lengths)) == [10, 22, 46] and grow.get_seq_length() == 25


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_generate_on_the_cpu_fills_growing_buffers_and_samples_the_same_tokens(monkeypatch, tiny_policy, arch):
    """sandbox.generate on the CPU caches keys and values in GrowingLayer's buffers: the same tokens from the same
    seed as transformers' own cache (left-padded rows of different lengths, long enough that the buffers grow)."""
    import torch
    from transformers import AutoModelForCausalLM
    import sandbox.models as sandbox_models
    tok, eos = sandbox.load_tokenizer(tiny_policy(arch))
    model = AutoModelForCausalLM.from_pretrained(tiny_policy(arch)).eval()
    rows = [sandbox.prompt_ids(tok, p.prompt, False)[: 10 + 5 * i] for i, p in enumerate(load_problems("demo", "valid")[:4])]
    caches, seqs = [], []
    for make in (sandbox_models.kv_cache, lambda model: None):
        monkeypatch.setattr(sandbox_models, "kv_cache", lambda model: caches.append(make(model)) or caches[-1])
        torch.manual_seed(0)
        seqs.append(sandbox.generate(model, tok, rows, eos, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=40)[0])
    assert all(type(layer) is sandbox_models.GrowingLayer for layer in caches[0].layers) and caches[1] is None
    assert seqs[0].shape[1] > 2 * len(rows[-1])  # past the first buffers' length: they grew
    assert torch.equal(*seqs)


def test_fsdp_load_reads_the_weights_on_rank_0_alone(tmp_path, tiny_policy):
    """sandbox.load_model(fsdp=True) on 2 gloo ranks, rank 1 unable to read any weights: every rank's shards,
    buffers (RoPE's inv_freq, not in the state dict) and a fresh head are rank 0's; the gathered weights equal
    the saved ones, and a forward pass on either rank equals the plainly loaded model's. Then
    sandbox.stop_ranks frees the sharded model its caller dropped before the ranks leave the group."""
    import subprocess
    import sys
    script = tmp_path / "load.py"
    script.write_text(f"""import sys, weakref, torch, torch.distributed as dist
sys.path.insert(0, {os.path.dirname(os.path.dirname(sandbox.__file__))!r})
import sandbox
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification
path = {tiny_policy("llama")!r}
rank, world, device = sandbox.start_ranks("cpu")
torch.manual_seed(rank)  # every rank draws differently: what comes out equal came from rank 0
plain = [cls.from_pretrained(path, **kw) if rank == 0 else None
         for cls, kw in ((AutoModelForCausalLM, dict()), (AutoModelForTokenClassification, dict(num_labels=1)))]
if rank == 1:
    def refuse(*args, **kwargs):
        raise AssertionError("rank 1 read the weights")
    AutoModelForCausalLM.from_pretrained = AutoModelForTokenClassification.from_pretrained = refuse
x = torch.tensor([[3, 5, 7, 9, 11]])
for i, (cls, kw) in enumerate(((AutoModelForCausalLM, dict()), (AutoModelForTokenClassification, dict(num_labels=1)))):
    torch.manual_seed(0)  # rank 0's fresh head is drawn after this seed, on rank 0 alone
    model = sandbox.load_model(cls, path, device, fsdp=True, **kw)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    out = model(x).logits
    outs = [torch.zeros_like(out) for _ in range(world)]
    dist.all_gather(outs, out)
    built = cls.from_config(AutoConfig.from_pretrained(path, **kw))  # buffers from the config alone, no weights read
    assert all(torch.equal(b, dict(built.named_buffers())[n]) for n, b in model.named_buffers()), "buffers"
    if rank == 0:
        if i == 1:
            torch.manual_seed(0)
            plain[1] = cls.from_pretrained(path, **kw)  # the same draw of the fresh head
        ref = plain[i].state_dict()
        assert full.keys() == ref.keys() and all(torch.equal(full[k], ref[k]) for k in ref), "weights"
        want = plain[i](x).logits
        assert all(torch.allclose(o, want, atol=1e-6) for o in outs), "logits"
alive = weakref.ref(model)
del model, out, outs  # FSDP2 keeps it in reference cycles: stop_ranks must free it before leaving the group
sandbox.stop_ranks()
assert alive() is None and not dist.is_initialized(), "stop_ranks"
print("ok", rank, flush=True)
""")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.count("ok") == 2, r.stdout[-1000:] + r.stderr[-3000:]


def test_every_stage_feeds_prompts_through_the_chat_template(tmp_path, monkeypatch, tiny_policy):
    """--chat_template true, applied the same way by every stage that feeds a model a prompt: labeling,
    training the PRM, PPO rollouts and evaluation all build the prompt with sandbox.prompt_ids(chat=True)."""
    import shutil
    import sys
    import evaluate
    import label_prm_data
    import train_prm
    import train_psgpo
    from transformers import AutoTokenizer
    policy = tmp_path / "instruct"
    shutil.copytree(tiny_policy("qwen2"), policy)
    tok = AutoTokenizer.from_pretrained(policy)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                         "{% if not loop.last %}<|im_end|>\n{% endif %}{% endfor %}")
    tok.save_pretrained(policy)
    calls, real = [], sandbox.prompt_ids

    def spy(tok, prompt, chat=False):
        calls.append(chat)
        return real(tok, prompt, chat)
    monkeypatch.setattr(sandbox, "prompt_ids", spy)
    stages = [(label_prm_data, ["--policy", policy, "--out", tmp_path / "labels", "--max_prompts", 2, "--samples", 2, "--k", 2,
                                "--max_new_tokens", 12, "--select", "full", "--workers", 1]),
              (train_prm, ["--data", tmp_path / "labels", "--init", policy, "--out", tmp_path / "prm", "--epochs", 1, "--holdout", 0.5]),
              (train_psgpo, ["--policy", policy, "--prm", tmp_path / "prm", "--out", tmp_path / "ppo", "--batch_size", 2,
                             "--minibatch_size", 2, "--max_new_tokens", 12, "--iterations", 1, "--warmup", 1, "--workers", 1]),
              (evaluate, ["--model", policy, "--max_problems", 2, "--n", 1, "--max_new_tokens", 12, "--out", tmp_path / "eval", "--workers", 1])]
    for module, argv in stages:
        calls.clear()
        monkeypatch.setattr(sys, "argv", [module.__name__, *map(str, argv), "--chat_template", "true"])
        module.main()
        assert calls and all(calls), module.__name__  # every prompt went through the template


def test_checkpoint_activations_same_gradients_no_deprecation(tiny_policy):
    """sandbox.checkpoint_activations turns on activation checkpointing under the name this transformers has
    (no FutureWarning on 5.24), and the gradients are those without it."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM
    ids = torch.arange(1, 17).reshape(2, 8)
    grads = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_policy("llama")).train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("error", FutureWarning)
                sandbox.checkpoint_activations(model)
            assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing  # 5.24's name, 5.0's
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_prefix_through_line_is_whole_tokens_through_the_lines_end(tiny_tokenizer):
    """The prefix the binary search completes: a prefix of the response's own tokens, holding the text through the line
    and no more (the demo's BPE merges a newline with the next line's indent: that token is left out then)."""
    from train_sft import train_tokenizer
    text = "    x1 = a + 1\n    x2 = x1 * 2\n    return x2\n"
    steps = split_steps(text)
    for tok in (train_tokenizer(["x"], 258), tiny_tokenizer):  # bytes only; a BPE whose tokens span lines
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for a, b, _ in steps:
            n, prefix = sandbox.prefix_through_line(tok, ids, (a, b, False))
            assert prefix == tok.decode(ids[:n]) and text.startswith(prefix)
            assert len(prefix) <= b and (n == len(ids) or len(tok.decode(ids[:n + 1])) > b)  # the next token goes past the line
            assert len(prefix) == b or b - len(prefix) < len(tok.decode(ids[n:n + 1]))  # the rest of the line: the next token


# ------------------------------------------------------------------ the command line every stage shares
def test_lr_schedule_warms_up_then_holds_or_decays():
    import torch
    def lr(**kw):
        return sandbox.lr_schedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), **kw).get_last_lr()[0]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, seen = sandbox.lr_schedule(opt, warmup=4), []
    for _ in range(6):
        seen.append(sched.get_last_lr()[0]), opt.step(), sched.step()
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr(warmup=0) == 1.0  # no warm-up: full rate at once (it divided by zero before)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched, seen = sandbox.lr_schedule(opt, warmup=1, total=4, floor=0.1), []
    for _ in range(6):
        seen.append(sched.get_last_lr()[0]), opt.step(), sched.step()
    assert seen[0] == 1.0 and seen[2] == pytest.approx(0.55) and seen[4:] == [pytest.approx(0.1)] * 2  # cosine to the floor


def test_the_judges_self_test_stops_a_judge_that_fails_everything_or_passes_everything(monkeypatch):
    problems = load_problems("demo", "test")
    sandbox.self_test(problems, workers=1)  # the real judge: references pass, the failing copies fail
    for status in ("error", "passed"):
        monkeypatch.setattr(sandbox.judge, "check_many", lambda items, *a, s=status: [sandbox.Verdict(s == "passed", s, "")] * len(items))
        with pytest.raises(DataError, match=r"the judge's self-test: judge/add's (reference solution|program known to fail) was judged"):
            sandbox.self_test(problems)


def test_judge_workers_default_to_the_cores_of_each_local_rank(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert sandbox.cores_per_rank() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))
    assert sandbox.cores_per_rank() == 1
    import train_psgpo
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert train_psgpo.Args().workers == cores and train_psgpo.Args(workers=3).workers == 3


def test_the_package_imports_one_way():
    """rules <- problems <- demo, models, judge, cli <- the face (__init__): no module imports one above it, and none
    imports the face (the circle sandbox.py, sandbox_demo.py and sandbox_models.py made)."""
    import ast
    level = {"rules": 0, "problems": 1, "demo": 2, "models": 2, "judge": 2, "cli": 2, "worker": 0}
    folder = os.path.dirname(sandbox.__file__)
    for name, rank in level.items():
        tree = ast.parse(open(os.path.join(folder, f"{name}.py")).read())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.name.startswith("sandbox")}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("sandbox")}
        assert all(m in level and level[m] < rank for m in imported), (name, imported)
    assert sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f != "__init__.py") == sorted(level)


def test_a_stop_string_may_begin_in_the_prompt(tiny_tokenizer):
    """generate's stop check reads the whole sequence: after a prompt ending in a newline, a response beginning `def`
    completes "\\ndef" and generation stops there. The response ends there too (nothing, one sampled token kept), not
    at "def" plus whatever followed; a stop string within the prompt alone cuts nothing."""
    tok, eos = tiny_tokenizer, [tiny_tokenizer.eos_token_id]
    prompt = tok("def f(a):\n    return a\n\ndef g(a):\n")["input_ids"]  # holds "\ndef" itself
    body = tok("    return f(a)\n", add_special_tokens=False)["input_ids"]
    assert sandbox.end_response(tok, body + eos, eos, ["\ndef"], prompt) == ("    return f(a)\n", len(body) + 1)
    restart = tok("def h():\n", add_special_tokens=False)["input_ids"]
    assert sandbox.end_response(tok, restart + eos, eos, ["\ndef"], prompt) == ("", 1)
    assert sandbox.end_response(tok, restart + eos, eos, ["\ndef"])[0] == "def h():\n"  # without the prompt: its old reading
    assert sandbox.cut_at_stop("ef x", ["\ndef"], lead="\nd") == "" and sandbox.cut_at_stop("x\ndef", ["\ndef"], lead="\ndef") == "x"
