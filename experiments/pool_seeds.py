"""experiments/pool_seeds.py - one study's seeds from several runs of experiments/ablation.py, pooled into one report.

    python experiments/pool_seeds.py --runs docs/results/ablation/budget48 runs/ablation-48b --out docs/results/ablation/budget48-5seeds

For a study whose seeds ran in separate calls (e.g. on two machines, or more seeds added to a pre-registered
design): each run's results.json must have the same design (split, iterations, warm critic, settings, curves'
iterations) and other seeds. The pooled results.json has every seed's numbers, the claims' and secondary
comparisons' paired differences with a 95% t interval over all seeds (a per-seed difference needs only the
two settings' pass rates), and each run's own bootstrap over seeds and tasks (pooling that one needs every
seed's per-task verdicts, which results.json does not keep). Writes results.md, results.json and the plots as
ablation.py does.
"""
import json
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ablation import t_interval, write  # noqa: E402

DESIGN = ("split", "iterations", "warm", "n", "curve_problems")


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


def pool(runs):
    """results.json dicts of one design -> one with every seed; the paired comparisons recomputed over all seeds."""
    first = runs[0]
    for r in runs[1:]:
        if diff := [k for k in DESIGN if r[k] != first[k]] + (["settings"] if set(r["settings"]) != set(first["settings"]) else []) + \
                   (["curves"] if {c: v["iterations"] for c, v in r["curves"].items()} != {c: v["iterations"] for c, v in first["curves"].items()} else []):
            raise SystemExit(f"pool_seeds.py: the runs differ in {', '.join(diff)}: not one design")
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
    if len({json.dumps(r.get("provenance", {}).get("plan_commit")) for r in runs}) > 1:
        raise SystemExit("pool_seeds.py: the runs were made under different plans (provenance.plan_commit): not one study")
    return {k: first[k] for k in DESIGN} | {
        "provenance": first.get("provenance", {}) | {"runs": [r.get("provenance", {}) for r in runs]}, "seeds": seeds, "runs_seeds": [r["seeds"] for r in runs], "settings": {"sft": first["settings"]["sft"]} | settings,
        "paired": [pooled(c) for c in first["paired"]], "secondary": [pooled(c) for c in first["secondary"]],
        "prm_quality": [q for r in runs for q in r["prm_quality"]], "curves": curves,
        "labeling": [x for r in runs for x in r.get("labeling", [])], "minutes_this_call": sum(r.get("minutes_this_call", 0) for r in runs)}


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    if len(args.runs) < 2:
        raise SystemExit("pool_seeds.py: --runs needs two or more folders")
    os.makedirs(args.out, exist_ok=True)
    write(args.out, pool([load(r) for r in args.runs]))


if __name__ == "__main__":
    main()
