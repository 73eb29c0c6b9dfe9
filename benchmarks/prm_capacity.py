"""What the demo's PRM can learn at all: labeled data without the labeling's cost or noise.

Writes a labels .jsonl that train_prm.py reads: for N demo train prompts (none of --exclude's), the
flawed reference (the planted mistakes, README) as the response, labeled by sandbox.oracle_step_scores,
the exact step scorer. Not the paper's method (no policy samples, no search): a diagnostic that tells
apart "too few labeled prompts" from "the policy-initialised PRM cannot represent the check". README,
stage 2, has the measurements.

    python benchmarks/prm_capacity.py --n 3000 --out runs/prm_capacity/labels.jsonl
    python train_prm.py --data runs/prm_capacity/labels.jsonl --init runs/sft --holdout 0 --eval runs/prm_eval --epochs 3
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--n", type=int, default=3000, help="prompts")
ap.add_argument("--out", default="runs/prm_capacity/labels.jsonl")
ap.add_argument("--exclude", default="runs/prm_eval/rows.jsonl", help="labeled rows whose prompts are left out (the eval set)")
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()

exclude = set()
if os.path.exists(args.exclude):
    with open(args.exclude) as f:
        exclude = {json.loads(line)["prompt"] for line in f}
problems = [p for p in sandbox.load_problems("demo", "train") if p.prompt not in exclude]
random.Random(args.seed).shuffle(problems)
os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
with open(args.out, "w") as f:
    for p in problems[:args.n]:
        response = p.meta["flawed_solution"]  # the correct reference where nothing was planted
        labels = [int(s) for s in sandbox.oracle_step_scores(p, response)]
        first_error = next((m for m, label in enumerate(labels) if label < 0), None)
        f.write(json.dumps({"task_id": p.task_id, "prompt": p.prompt, "response": response, "steps": sandbox.split_steps(response),
                            "labels": labels, "passed": first_error is None, "first_error": first_error}) + "\n")
print(f"wrote {min(args.n, len(problems))} rows to {args.out} ({len(exclude)} excluded prompts)")
