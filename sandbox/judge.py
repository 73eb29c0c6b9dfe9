"""sandbox/judge.py - judging untrusted code: `check(problem, completion)` and `check_many(items)`.

A few warm worker processes (worker.py, which says what protects the host and the verdict) each run one program
at a time in a forked child; check_many spreads a list over them. A program is the problem's code prefix (its
prompt, for function tests) + the completion, then its tests (sandbox/problems.py's schemas).
"""
import atexit
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from .problems import DataError, Problem


VERDICTS = ("passed", "failed", "error", "timeout", "output_limit", "died")  # every status a verdict can have


@dataclass
class Verdict:
    passed: bool
    status: str       # passed | failed (a test said no) | error (did not run) | timeout | output_limit (wrote more than
                      # 16 MB: worker.OUTPUT_LIMIT; never a pass) | died (the judge's worker did)
    detail: str = ""  # a short reason: the exception, the first differing output, the signal


class _Worker:
    """Host side of one worker: send a job, wait for its verdict with a deadline, restart if stuck."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        # a session of its own: Ctrl-C in a terminal (or torchrun's signal to the trainer's process group) must not
        # kill the judge mid-iteration, turning the programs in flight into failures that the trainer then learns from
        # -I: the worker's folder (this package) is not on the programs' import path; -B: no .pyc files written
        self.proc = subprocess.Popen([sys.executable, "-I", "-B", "-u", os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")],
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
                "died", "the judge's worker died")

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


def cores_per_rank():
    """The CPU cores this process may use, shared among torchrun's ranks on this node (the judge's default workers)."""
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


KNOWN = Problem("judge/add", "def add(a, b):\n", "    return a + b\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
FAILS = "\nraise AssertionError('a program known to fail')\n"  # appended at module level: the program stops there


def self_test(problems, workers=2, timeout=3.0, n=3):
    """The judge on programs of known verdict, before a stage trusts it: a built-in task's solution and up to n of the
    problems' reference solutions must pass, and each of them with a failing line appended must fail. A judge that
    fails every program (a container where the uid drop, pidfd or seccomp behave differently) would otherwise give
    PPO all-zero rewards and labeling -1 on every line, without a word. DataError with one line naming the cause: the
    sandbox when the built-in task is judged wrong (or a program known to fail passes), --timeout when a reference
    ran out of time, the task when its own reference fails its tests."""
    cases = [(p, p.solution + tail, tail == "") for p in [KNOWN] + [p for p in problems if p.solution][:n] for tail in ("", FAILS)]
    verdicts = check_many([(p, c) for p, c, _ in cases], workers, timeout)
    wrong = [(p, passes, v) for (p, _, passes), v in zip(cases, verdicts) if v.passed != passes]
    if not wrong:
        return
    p, passes, v = min(wrong, key=lambda w: (w[0] is not KNOWN, w[1]))  # the built-in task first: it tells of the sandbox
    said = f"{v.status} ({v.detail[:100]})"
    if passes and v.status == "timeout":
        raise DataError(f"the judge's self-test: {p.task_id}'s reference solution ran out of time ({v.detail[:100]}): --timeout "
                        f"{timeout:g} is too small for it; raise --timeout")
    if passes and p is not KNOWN and v.status != "died":
        raise DataError(f"the judge's self-test: task {p.task_id}'s own reference solution fails its tests, judged {said} "
                        f"(the judge passed its built-in task): fix or drop that task in the problem set")
    raise DataError(f"the judge's self-test: {p.task_id}'s {'reference solution' if passes else 'program known to fail'} was "
                    f"judged {said}; the sandbox does not work here (README: At real scale, the judge)")


def check(problem, completion, timeout=3.0, mem_mb=1024):
    """Judge one completion: the program is problem's code prefix + completion, then its tests."""
    return check_many([(problem, completion)], workers=1, timeout=timeout, mem_mb=mem_mb)[0]
