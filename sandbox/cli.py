"""sandbox/cli.py - the stages' command line, alike in every script: flags parsed and checked before anything loads or
is written (a bad value stops with one line naming the flag and what it takes: `check_flags`; what this machine must
allow, a GPU, a writable --out: `check_here`), the output folder guarded (`guard_out`: a used one stops; a resume
continues only the same run), bad data and a Ctrl-C stopped with one line (`bad_data_exits`), and the summary table
each stage prints at its end.
"""
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile

from transformers import HfArgumentParser

from .problems import DataError


def fail(message):
    """Stop with one line, `<script>: <message>`, and exit status 1."""
    raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'psgpo'}: {message}")


@contextlib.contextmanager
def bad_data_exits(prefix="", interrupted=None):
    """A DataError inside (a bad file, model folder or problem set) stops the stage with its one line, `prefix` before it;
    with `interrupted`, so does a Ctrl-C (KeyboardInterrupt), with that line (what the stage leaves behind, and how to
    go on), not a traceback."""
    try:
        yield
    except DataError as e:
        fail(f"{prefix}{e}")
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        fail(interrupted)


class _Parser(HfArgumentParser):
    def error(self, message):  # argparse's error (an unknown flag, a value of the wrong type): one line, not the usage
        fail(f"{message} (--help lists every flag)")


def parse_args(Args, device="", out=""):
    """The script's Args from the command line. Its __post_init__ checks the values (`check_flags`), then `check_here`
    what depends on this machine (`device`, `out`: the flags' names); one it refuses stops the script with one line,
    before any model loads or any output is written."""
    try:
        args = _Parser(Args).parse_args_into_dataclasses()[0]
        check_here(args, device, out)
        return args
    except ValueError as e:
        fail(e)


SEED_MAX = 2**31 - 1  # numpy's seeds are 32-bit and each rank adds its number to the seed


def check_flags(args, positive="", nonnegative="", fraction="", below_one="", at_most=None, choices=None, seed="", device=""):
    """Called by each Args.__post_init__: a ValueError naming the first flag whose value is out of range. Each group is
    the flags' names, space-separated: positive (> 0), nonnegative (>= 0), fraction (in [0, 1]), below_one (in [0, 1));
    at_most: {flag: the largest value it takes} (a --timeout of 1e30 overflows the judge's clock); choices: {flag: the
    values it takes}; seed: whole numbers from 0 to SEED_MAX; device: cpu or cuda. NaN and infinity are out of every
    range. Only the values: what this machine allows is check_here's (Args may describe a command for another machine:
    README's GPU commands parse on a laptop)."""
    for names, ok, what in ((positive, lambda v: v > 0, "> 0"), (nonnegative, lambda v: v >= 0, ">= 0"),
                            (fraction, lambda v: 0 <= v <= 1, "between 0 and 1"),
                            (below_one, lambda v: 0 <= v < 1, ">= 0 and below 1")):
        for name in names.split():
            v = getattr(args, name)
            if not _number(v) or not ok(v):
                raise ValueError(f"--{name} must be {what}, not {v!r}")
    for name, most in (at_most or {}).items():
        if _number(getattr(args, name)) and getattr(args, name) > most:
            raise ValueError(f"--{name} must be at most {most:g}, not {getattr(args, name)!r}")
    for name, allowed in (choices or {}).items():
        if getattr(args, name) not in allowed:
            raise ValueError(f"--{name} must be {' or '.join(map(str, allowed))}, not {getattr(args, name)!r}")
    for name in seed.split():
        v = getattr(args, name)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= SEED_MAX:
            raise ValueError(f"--{name} must be a whole number from 0 to {SEED_MAX}, not {v!r}")
    for name in device.split():
        if getattr(args, name) not in ("cpu", "cuda"):
            raise ValueError(f"--{name} must be cpu or cuda, not {getattr(args, name)!r}")


def check_here(args, device="", out=""):
    """What this machine must allow, checked by parse_args before any work: a ValueError naming the flag. device: the
    flags' names whose cuda needs a GPU torch sees; out: output folders, each a folder or a path where one can be made,
    writable (an empty folder is made and removed in the deepest part that exists: permission bits say nothing to
    root, nor on /proc)."""
    for name in device.split():
        import torch
        if getattr(args, name) == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"--{name} cuda, but torch sees no CUDA GPU here (torch {torch.__version__}, {build}): use "
                             f"--{name} cpu, or the torch build for this machine's GPUs")
    for name in out.split():
        if why := _not_writable(getattr(args, name)):
            raise ValueError(f"--{name} {getattr(args, name)}: {why}")


def _number(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


PROBE = ".psgpo-write-check-"  # the folder _not_writable makes and removes (another rank may see it for a moment)


def _not_writable(path):
    """Why `path` cannot be an output folder here (None if it can): a file, or under one, or a place this process
    cannot write."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder"
    deepest = os.path.abspath(path)
    while not os.path.exists(deepest):
        deepest = os.path.dirname(deepest)
    if not os.path.isdir(deepest):
        return f"cannot be made: {deepest} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=PROBE, dir=deepest))
    except OSError as e:
        return f"cannot be written: {deepest} refuses a new folder ({e.strerror or e})"
    return None


def guard_out(args, may_change=(), resume=None, finished=()):
    """--out, before a stage writes to it (after its flags' checks, before any model loads). A folder without results
    is this run's: missing, empty, or a start that failed before its first result (args.json, an empty log.jsonl,
    TensorBoard's event files). One with results stops the stage in one line, unless this run continues the same run:
    `resume` is train_psgpo.py's --resume (False: it stops); None, a stage without that flag, which continues
    (label_prm_data.py's rows) or redoes from the start (train_sft.py, train_prm.py, evaluate.py) a run cut off before
    it wrote any of `finished` (with one of them there, the run was finished: it stops). The same run: args.json
    records the flags given now, but for those in `may_change`; every other difference is named. Returns whether the
    folder holds an earlier run that this one continues."""
    names = sorted(os.listdir(args.out)) if os.path.isdir(args.out) else []
    results = [n for n in names if n != "args.json" and not n.startswith(("events.out.tfevents.", PROBE))
               and not (n == "log.jsonl" and os.path.getsize(os.path.join(args.out, n)) == 0)]
    if not results:
        return False
    held = ", ".join(results[:4]) + (", ..." if len(results) > 4 else "")
    if done := [n for n in finished if n in names]:
        fail(f"{args.out} already holds a finished run ({', '.join(done)}): choose another --out")
    if resume is False:
        fail(f"{args.out} already holds a run ({held}): --resume true continues it; or choose another --out")
    try:
        with open(os.path.join(args.out, "args.json")) as f:
            recorded = json.load(f)
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError):
        fail(f"{args.out} holds {held} but no args.json of the run that wrote them: choose another --out")
    given = json.loads(json.dumps(dataclasses.asdict(args)))  # as args.json holds them (tuples as lists)
    # a flag newer than the record: the older run ran as its default does
    recorded = {f.name: _default(f) for f in dataclasses.fields(args)} | recorded
    changed = [f"--{k} {_shown(recorded.get(k))} -> {_shown(v)}" for k, v in given.items()
               if k not in may_change and recorded.get(k) != v]
    if changed:
        allowed = f" (only {', '.join('--' + k for k in may_change)} may change)" if may_change else ""
        fail(f"{args.out} holds a run with other flags: {'; '.join(changed)}{allowed}: choose another --out, or give "
             f"the flags it was run with (its args.json)")
    return True


def _default(f):
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return None if value is dataclasses.MISSING else json.loads(json.dumps(value))


def _shown(v):
    return " ".join(map(str, v)) if isinstance(v, list) else str(v)


def data_line(dataset, split, n, passes, unit="problems", quiet=False, warn=True):
    """What every stage prints as it starts: how many problems (or rows) it has and how many passes over them this run
    makes; with `warn` (the stages that train a policy) one warning line above 5 passes, where a policy starts to
    memorise its prompts (and labeling its checkpoints then finds few failures). quiet: print nothing (other ranks)."""
    if quiet:
        return
    print(f"{dataset}/{split}: {n} {unit}, {passes:.2f} passes over them in this run")
    if warn and passes > 5:
        print(f"warning: {passes:.1f} passes over {n} {unit} of {dataset}/{split}: the policy may memorise them; use a larger "
              f"set (--dataset acecode: docs/real_scale.md) or fewer steps", file=sys.stderr)


def table(header, rows):
    """A markdown table: header [name], rows [[value]] (floats to 3 decimals)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(map(cell, r)) + " |" for r in rows])
