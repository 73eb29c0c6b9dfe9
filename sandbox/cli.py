"""sandbox/cli.py - the stages' command line, alike in every script: flags parsed and checked before anything loads or
is written (a bad value stops with one line naming the flag and what it takes), bad data stopped with one line naming
the file, and the summary table each stage prints at its end.
"""
import contextlib
import math
import os
import sys

from transformers import HfArgumentParser

from .problems import DataError


def fail(message):
    """Stop with one line, `<script>: <message>`, and exit status 1."""
    raise SystemExit(f"{os.path.basename(sys.argv[0]) or 'psgpo'}: {message}")


@contextlib.contextmanager
def bad_data_exits(prefix=""):
    """A DataError inside (a bad file, model folder or problem set) stops the stage with its one line, `prefix` before it."""
    try:
        yield
    except DataError as e:
        fail(f"{prefix}{e}")


class _Parser(HfArgumentParser):
    def error(self, message):  # argparse's error (an unknown flag, a value of the wrong type): one line, not the usage
        fail(f"{message} (--help lists every flag)")


def parse_args(Args):
    """The script's Args from the command line. Its __post_init__ checks the values (`check_flags`); one it refuses stops
    the script with one line, before any model loads or any output is written."""
    try:
        return _Parser(Args).parse_args_into_dataclasses()[0]
    except ValueError as e:
        fail(e)


def check_flags(args, positive="", nonnegative="", fraction="", choices=None):
    """Called by each Args.__post_init__: a ValueError naming the first flag whose value is out of range. Each group is
    the flags' names, space-separated: positive (> 0), nonnegative (>= 0), fraction (in [0, 1]); choices: {flag: the
    values it takes}. NaN and infinity are out of every range."""
    for names, ok, what in ((positive, lambda v: v > 0, "> 0"), (nonnegative, lambda v: v >= 0, ">= 0"),
                            (fraction, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for name in names.split():
            v = getattr(args, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"--{name} must be {what}, not {v!r}")
    for name, allowed in (choices or {}).items():
        if getattr(args, name) not in allowed:
            raise ValueError(f"--{name} must be {' or '.join(map(str, allowed))}, not {getattr(args, name)!r}")


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
