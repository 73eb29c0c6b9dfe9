"""Does the demo PRM see the mistakes? Its scores against exact line labels, on responses it never trained on.

The responses are evaluate.py's samples (its eval.json) on the demo's `valid` split, whose prompts no stage
trains on, from the policies RL starts from and reaches (the SFT policy, the baseline's last checkpoint).
Every code line is labeled exactly by sandbox.demo.oracle_step_scores (+1 correct, -1 from the first wrong line
on); the PRM's labels came from the binary search, the exact scorer is only the yardstick here. Reports:
  step_auc               AUC of the PRM's score, correct code lines against wrong ones
  correct_below_0        share of correct code lines the PRM scores below 0 (false alarms)
  caught/<kind>          share of first wrong lines the PRM scores below 0, by the planted mistake the line
                         writes (sandbox.demo.planted_kind) or `other` (any other slip: a miscopied operand, ...)

    python evaluate.py --model runs/sft runs/baseline/ckpt-0008 --split valid --n 2 --out runs/prm_eval
    python experiments/prm_quality.py --prm runs/prm --eval runs/prm_eval/eval.json   # -> runs/prm/quality.json
    (--eval takes several eval.json files; --last_only true keeps each file's last model, a run's final checkpoint)

Does it fit what it trained on? --labels scores label_prm_data.py's failing rows (train split) instead:
    python experiments/prm_quality.py --prm runs/prm --labels runs/prm_data/labels.jsonl --out runs/prm/fit.json
"""
import argparse
import json
import os
import sys
from types import SimpleNamespace

from transformers import AutoModelForTokenClassification, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
from train_prm import auc, read_rows, score_steps  # noqa: E402


def quality(rows, scores, problems):
    """The report above, from rows (task_id, response, steps) and the PRM's score on each step."""
    s_code, y_code, caught = [], [], {}
    for row, sc in zip(rows, scores):
        problem, first = problems[row["task_id"]], True
        for (a, b, neutral), oracle, s in zip(row["steps"], sandbox.demo.oracle_step_scores(problem, row["response"]), sc):
            if neutral:
                continue
            s_code.append(s), y_code.append(oracle > 0)
            if oracle < 0 and first:
                kind = sandbox.demo.planted_kind(problem, row["response"][a:b].rstrip("\n")) or "other"
                caught.setdefault(kind, []).append(s < 0)
                first = False
    correct = [s for s, y in zip(s_code, y_code) if y]
    out = {"responses": len(rows), "code_lines": len(s_code), "step_auc": auc(s_code, y_code),
           "correct_below_0": sum(s < 0 for s in correct) / max(1, len(correct))}
    for kind, hits in sorted(caught.items()):
        out[f"caught/{kind}"] = sum(hits) / len(hits)
        out[f"first_errors/{kind}"] = len(hits)
    return out


def failing_rows(path):
    """label_prm_data.py's rows (train split) of the responses that fail their tests: the PRM's own training data,
    read and checked as train_prm.py reads it."""
    return [r for r in read_rows(path) if not r["passed"]], [], "train"


def sampled_rows(paths, last_only):
    """evaluate.py's sampled completions in eval.json files, as rows, with the policies and the split they came from."""
    rows, policies = [], []
    for path in paths:
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"prm_quality.py: {path}: cannot read evaluate.py's eval.json ({e})")
        if not sandbox.is_demo(report["args"]["dataset"]):
            raise SystemExit(f"prm_quality.py: {path}: the exact line labels exist for the demo's tasks only, not {report['args']['dataset']!r}")
        split = report["args"]["split"]
        models = list(report["models"].items())[-1:] if last_only else report["models"].items()
        for name, m in models:
            policies.append(name)
            for s in m["samples"]:
                if s["kind"] == "sample":
                    steps = sandbox.split_steps(s["completion"])  # labels: placeholders for prm_example; the oracle labels here
                    rows.append({"task_id": s["task_id"], "response": s["completion"], "steps": steps, "labels": [0] * len(steps)})
    return rows, policies, split


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prm", default="runs/prm")
    ap.add_argument("--eval", nargs="+", default=["runs/prm_eval/eval.json"], help="evaluate.py's eval.json files on demo prompts")
    ap.add_argument("--labels", default="", help="label_prm_data.py's labels.jsonl instead of --eval: its failing rows (the PRM's training data)")
    ap.add_argument("--last_only", default="false", help="true: of each eval.json only its last model (a run's final checkpoint)")
    ap.add_argument("--out", default="", help="JSON report (default: PRM/quality.json)")
    args = ap.parse_args()
    rows, policies, split = failing_rows(args.labels) if args.labels else sampled_rows(args.eval, args.last_only == "true")
    problems = {p.task_id: p for p in sandbox.load_problems("demo", split)}
    unknown = next((r["task_id"] for r in rows if r["task_id"] not in problems), None)
    if unknown:
        raise SystemExit(f"prm_quality.py: {args.labels or ' '.join(args.eval)}: task {unknown!r} is not a demo {split} task")
    for r in rows:
        r["prompt"] = problems[r["task_id"]].prompt
    tok, model = AutoTokenizer.from_pretrained(args.prm), AutoModelForTokenClassification.from_pretrained(args.prm).eval()
    out = quality(rows, score_steps(model, tok, rows, SimpleNamespace(device="cpu", bf16=False, chat_template=False)), problems)
    out = {"prm": args.prm, "eval": [args.labels] if args.labels else args.eval, "split": split, "policies": policies} | out
    with open(args.out or os.path.join(args.prm, "quality.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(sandbox.table(["metric", "value"], [(k, v) for k, v in out.items() if k not in ("policies", "eval")]))


if __name__ == "__main__":
    main()
