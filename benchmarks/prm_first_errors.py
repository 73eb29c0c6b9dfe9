"""Which mistakes a demo PRM sees: its score on each failing response's first wrong line, by kind.

For every labeled demo response (a label_prm_data.py folder's rows.jsonl) with a wrong line (by the
exact scorer, sandbox.oracle_step_scores), the first wrong line is classed by the planted mistake it
writes (sandbox.planted_kind: sub_swap, missing_parens, stale_var) or as `other`; the table gives how
many there are and the share the PRM scores below 0 (it caught the mistake), beside the share of
correct code lines it scores 0 or above. README, stage 2, has the measurements.

    python benchmarks/prm_first_errors.py --prm runs/prm --rows runs/prm_eval/rows.jsonl --exclude runs/prm_data/labels.jsonl
"""
import argparse
import os
import sys
from types import SimpleNamespace

from transformers import AutoModelForTokenClassification, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
from train_prm import read_rows, score_steps  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--prm", default="runs/prm")
ap.add_argument("--rows", default="runs/prm_eval/rows.jsonl")
ap.add_argument("--exclude", default="", help="the PRM's training data (.jsonl): its prompts are left out")
args = ap.parse_args()

trained = {row["prompt"] for row in read_rows(args.exclude)} if args.exclude else set()
rows = [row for row in read_rows(args.rows) if row["prompt"] not in trained]
problems = {p.task_id: p for p in sandbox.load_problems("demo", "train")}
tok, model = AutoTokenizer.from_pretrained(args.prm), AutoModelForTokenClassification.from_pretrained(args.prm).eval()
caught, correct = {}, []  # kind -> [scored below 0?]; correct code lines: [scored >= 0?]
for row, scores in zip(rows, score_steps(model, tok, rows, SimpleNamespace(device="cpu", bf16=False))):
    problem = problems[row["task_id"]]
    for (a, b, is_comment), oracle, score in zip(row["steps"], sandbox.oracle_step_scores(problem, row["response"]), scores):
        if is_comment:
            continue
        if oracle > 0:
            correct.append(score >= 0)
            continue
        kind = sandbox.planted_kind(problem, row["response"][a:b].rstrip("\n")) or "other"
        caught.setdefault(kind, []).append(score < 0)
        break  # the first wrong line only
print(f"{args.prm} on {args.rows}: correct code lines scored >= 0: {sum(correct) / len(correct):.1%} of {len(correct)}")
print("| first wrong line | responses | scored below 0 |\n|---|---|---|")
for kind, hits in sorted(caught.items(), key=lambda kv: -len(kv[1])):
    print(f"| {kind} | {len(hits)} | {sum(hits) / len(hits):.1%} |")
