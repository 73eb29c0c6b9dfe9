"""Did a code change move any number? Two quick starts' output folders (`RUNS=... bash run_demo.sh` at two commits),
compared file by file, every value of every row: the baseline's and PSGPO's log.jsonl (each iteration's metrics),
the labeled rows, the PRM's metrics and the evaluation. Timings and paths differ by nature and are skipped; a key
only one side has (a metric added by the change) is listed, not counted as a difference.

    python checks/same_numbers.py RUNS_BEFORE RUNS_AFTER
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sandbox  # noqa: E402

FILES = ["baseline/log.jsonl", "prm_data/rows.jsonl", "prm_data/labels.jsonl", "prm_data/summary.json", "prm/metrics.json",
         "psgpo/log.jsonl", "eval/eval.json"]
SKIP = {"policy", "path", "minutes", "timing"}  # paths and timings: by nature not equal twice


def skipped(name):
    return name in SKIP or name.startswith(("time/", "seconds")) or name.endswith("_seconds")


def records(path):
    """The rows of a .jsonl file (sandbox.read_jsonl: one line naming a bad file or line), or a .json file as one row."""
    if path.endswith(".jsonl"):
        return [row for _, row in sandbox.read_jsonl(path)]
    with open(path) as f:
        return [json.load(f)]


def flat(x, key=""):
    """{"a/b/0": leaf} of a JSON value; skipped keys left out."""
    if isinstance(x, dict):
        return {k: v for name, val in x.items() if not skipped(name)
                for k, v in flat(val, f"{key}/{name}" if key else name).items()}
    if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        return {k: v for i, val in enumerate(x) for k, v in flat(val, f"{key}/{i}").items()}
    return {key: x}


def compare(a, b):
    """(values compared, [(key, a, b) that differ], keys only in a, keys only in b) over the rows of two files."""
    if len(a) != len(b):
        return 0, [("rows", len(a), len(b))], set(), set()
    n, diff, only_a, only_b = 0, [], set(), set()
    for i, (x, y) in enumerate(zip(a, b)):
        x, y = flat(x), flat(y)
        only_a |= x.keys() - y.keys()
        only_b |= y.keys() - x.keys()
        for k in x.keys() & y.keys():
            n += 1
            if x[k] != y[k]:
                diff.append((f"row {i}: {k}", x[k], y[k]))
    return n, diff, only_a, only_b


def keys(names):
    """New or dropped keys, one per kind: list indices become N (samples/N/cut, once for the thousand samples)."""
    kinds = sorted({re.sub(r"/\d+(?=/|$)", "/N", k) for k in names})
    return ", ".join(kinds) or "-"


def main():
    if len(sys.argv) != 3 or not all(os.path.isdir(d) for d in sys.argv[1:]):
        sandbox.fail("usage: python checks/same_numbers.py RUNS_BEFORE RUNS_AFTER (two run_demo.sh output folders)")
    before, after = sys.argv[1:]
    rows, details = [], []
    for name in FILES:
        pa, pb = os.path.join(before, name), os.path.join(after, name)
        if not (os.path.exists(pa) and os.path.exists(pb)):
            rows.append([name, f"missing in {'before' if not os.path.exists(pa) else 'after'}", "", "", ""])
            continue
        with sandbox.bad_data_exits():
            n, diff, only_a, only_b = compare(records(pa), records(pb))
        rows.append([name, n, len(diff), keys(only_a), keys(only_b)])
        details += [f"{name} {k}: {x!r} -> {y!r}" for k, x, y in diff[:5]]
    print(sandbox.table(["file", "values compared", "different", "keys only before", "keys only after"], rows))
    print("\n".join(details) or "\nevery value compared is equal")
    sys.exit(1 if details else 0)


if __name__ == "__main__":
    main()
