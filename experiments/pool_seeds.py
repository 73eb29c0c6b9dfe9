"""experiments/pool_seeds.py - one study's seeds from several runs of experiments/ablation.py, pooled into one report.

    python experiments/pool_seeds.py --runs docs/results/ablation/budget48 runs/ablation-48b --out docs/results/ablation/budget48-5seeds

For a study whose seeds ran in separate calls (e.g. on two machines, or more seeds added to a pre-registered
design): the runs must differ in their seeds and nothing else that makes a number, or it stops in one line naming
the key and the runs (`same_design`). They must match in: every ablation.py flag (`args`: the settings, the claims,
the SFT policy, the budget, n, every stage's extra flag string --ppo/--label/--prm_flags/--evaluate token by token,
the device) but --seeds, --out, --parallel and --bootstrap (which chains, where written, how scheduled, each run's
own bootstrap); each stage's problem set (`dataset`); the settings and curves run; the plan (file and commit); and
the code. The code's commit may differ when no file that makes a number differs between the two commits (`git diff
A B -- CODE` is empty: the same stage code gives the same numbers for the same seed; a commit that changed comments
in those files is refused, as git cannot tell a comment from code), and a run made with uncommitted changes pools
only with runs of the same commit and the same changes (provenance.code_diff_sha256). Library versions and the
machine are not recorded, so not checked. An older results.json lacks some keys: ablation.py's defaults of the time
fill n (4) and curve_problems (200), as before; any other missing key reads "unrecorded", which matches only another
run's "unrecorded" (the same unknown), never a recorded value: runs from before a key was recorded pool with each
other as they did, never with a newer run. The pooled results.json has every seed's numbers, the claims' and secondary
comparisons' paired differences with a 95% t interval over all seeds (a per-seed difference needs only the
two settings' pass rates), and each run's own bootstrap over seeds and tasks (pooling that one needs every
seed's per-task verdicts, which results.json does not keep). Writes results.md, results.json and the plots as
ablation.py does.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, fields

from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ablation  # noqa: E402
from ablation import t_interval, write  # noqa: E402

DESIGN = ("split", "iterations", "warm", "n", "curve_problems")
FREE = ("seeds", "out", "parallel", "bootstrap")  # the flags runs of one design may differ in (the docstring says why)
FLAG_STRINGS = ("ppo", "label", "prm_flags", "evaluate")  # compared token by token, as ablation.py splits them
CODE = ["train_sft.py", "train_psgpo.py", "train_psgpo_run.py", "label_prm_data.py", "train_prm.py", "evaluate.py", "sandbox",
        "experiments/ablation.py", "experiments/prm_quality.py", "checkpoints"]  # what makes a study's numbers, the SFT policy included
UNRECORDED = "unrecorded"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    runs: list[str] = field(default_factory=list, metadata={"help": "folders with ablation.py's results.json, same design, other seeds"})
    out: str = field(default="runs/pooled", metadata={"help": "where the pooled results.md, results.json and plots go"})


def load(folder):
    """A run's results.json (one clear line if it is missing or not ablation.py's)."""
    path = os.path.join(folder, "results.json")
    try:
        with open(path) as f:
            r = json.load(f)
        r.setdefault("n", 4), r.setdefault("curve_problems", 200)  # ablation.py's defaults (older results.json lack them)
        [r[k] for k in ("seeds", "settings", "paired", "secondary", "curves", "prm_quality") + DESIGN]
        return r
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise SystemExit(f"pool_seeds.py: {path}: not an ablation.py results.json ({type(e).__name__}: {e})")


def design(r):
    """{key: value} of what must match between runs of one design (the docstring), missing keys as UNRECORDED."""
    args, prov = r.get("args", {}), r.get("provenance", {})
    d = {k: r[k] for k in DESIGN} | {"settings": sorted(r["settings"]), "curves": {c: v["iterations"] for c, v in sorted(r["curves"].items())}}
    for f in fields(ablation.Args):
        if f.name not in FREE + DESIGN + ("plan",):  # the plan: its file and commit, below
            v = args.get(f.name, UNRECORDED)
            if v != UNRECORDED:  # the same flags: tokens as ablation.py splits them, lists of settings in any order
                v = v.split() if f.name in FLAG_STRINGS else sorted(v) if isinstance(v, list) else v
            d[f"args.{f.name}"] = v
    d["dataset"] = r.get("dataset", UNRECORDED)
    d["plan"] = [prov.get("plan", "none"), prov.get("plan_commit", "none")]
    return d


def same_code(a, b, root=HERE):
    """Whether two runs' provenance names the same code: one commit (and, where dirty, the same changes), or two
    commits whose CODE files do not differ (in the repository at root). Returns a reason it does not, or None."""
    ka, kb = ((p.get("code_commit") or UNRECORDED, p.get("code_dirty", UNRECORDED), p.get("code_diff_sha256")) for p in (a, b))
    if ka == kb:
        return None
    if ka[1] is True or kb[1] is True:
        return "a run with uncommitted changes pools only with runs of its commit and the same changes"
    if UNRECORDED in (ka[0], kb[0]):
        return "one run's code commit is unrecorded"
    diff = subprocess.run(["git", "diff", "--quiet", ka[0], kb[0], "--", *CODE], cwd=root, capture_output=True)
    return None if diff.returncode == 0 else \
        "their stage code differs between the commits" if diff.returncode == 1 else "a commit is not in this repository"


def same_design(runs, names):
    """One line naming the first key two runs differ in, and the runs, if they are not one design."""
    first = design(runs[0])
    for r, name in zip(runs[1:], names[1:]):
        d = design(r)
        if diff := next((k for k in first if d.get(k) != first[k]), None):
            raise SystemExit(f"pool_seeds.py: the runs differ in {diff} ({names[0]}: {json.dumps(first[diff])}; {name}: {json.dumps(d.get(diff))}): not one design")
        if why := same_code(runs[0].get("provenance", {}), r.get("provenance", {})):
            commit = lambda x: x.get("provenance", {}).get("code_commit") or UNRECORDED  # noqa: E731
            raise SystemExit(f"pool_seeds.py: the runs differ in code_commit ({names[0]}: {commit(runs[0])}; {name}: {commit(r)}): {why}")


def pool(runs, names=None):
    """results.json dicts of one design -> one with every seed; the paired comparisons recomputed over all seeds."""
    first, names = runs[0], names or [f"run {i + 1}" for i in range(len(runs))]
    same_design(runs, names)
    seeds = [s for r in runs for s in r["seeds"]]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"pool_seeds.py: a seed appears in two runs ({seeds}): each seed's chain counts once")
    settings = {st: {k: [x for r in runs for x in r["settings"][st][k]] for k in m} for st, m in first["settings"].items() if st != "sft"}
    curves = {c: {"iterations": v["iterations"]} | {m: [sum((r["curves"][c][m][i] for r in runs), []) for i in range(len(v["iterations"]))]
                                                    for m in v if m != "iterations"} for c, v in first["curves"].items()}

    def pooled(c):  # the same comparison over every seed; each run's bootstrap beside it
        runs_of = [next(x for x in r["paired"] + r["secondary"] if (x["setting"], x["baseline"], x["metric"]) == (c["setting"], c["baseline"], c["metric"]))
                   for r in runs]
        diffs = [a - b for a, b in zip(settings[c["setting"]][c["metric"]], settings[c["baseline"]][c["metric"]])]
        return {k: c[k] for k in ("setting", "baseline", "metric", "role") if k in c} | t_interval(diffs) | \
            {"bootstrap95_by_run": {",".join(map(str, r["seeds"])): x["bootstrap95"] for r, x in zip(runs, runs_of)}} | \
            ({"eval_se_of_diff": [e for x in runs_of for e in x["eval_se_of_diff"]]} if "eval_se_of_diff" in c else {})
    recorded = {"args": first["args"] | {"seeds": seeds}} if "args" in first else {}
    recorded |= {"dataset": first["dataset"]} if "dataset" in first else {}
    recorded |= {"commands": {k: v for r in runs for k, v in r["commands"].items()}} if "commands" in first else {}
    return {k: first[k] for k in DESIGN} | recorded | {
        "provenance": first.get("provenance", {}) | {"runs": [r.get("provenance", {}) for r in runs]}, "seeds": seeds, "runs_seeds": [r["seeds"] for r in runs], "settings": {"sft": first["settings"]["sft"]} | settings,
        "paired": [pooled(c) for c in first["paired"]], "secondary": [pooled(c) for c in first["secondary"]],
        "prm_quality": [q for r in runs for q in r["prm_quality"]], "curves": curves,
        "labeling": [x for r in runs for x in r.get("labeling", [])], "minutes_this_call": sum(r.get("minutes_this_call", 0) for r in runs)}


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    if len(args.runs) < 2:
        raise SystemExit("pool_seeds.py: --runs needs two or more folders")
    os.makedirs(args.out, exist_ok=True)
    write(args.out, pool([load(r) for r in args.runs], args.runs))


if __name__ == "__main__":
    main()
