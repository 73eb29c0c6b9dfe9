"""Does the demo PRM (or an ORM: any line scorer) see the mistakes? Its scores against exact line labels, on responses
it never trained on.

The responses are evaluate.py's samples (its eval.json) on the demo's `valid` split, whose prompts no stage
trains on, from the policies RL starts from and reaches (the SFT policy, the baseline's last checkpoint).
Every code line is labeled exactly by sandbox.demo.oracle_step_scores (+1 correct, -1 from the first wrong line
on); the PRM's labels came from the binary search, the exact scorer is only the yardstick here. Reports:
  step_auc               AUC of the PRM's score, correct code lines against wrong ones
  correct_below_0        share of correct code lines the PRM scores below 0 (false alarms)
  caught/<kind>          share of first wrong lines the PRM scores below 0, by the planted mistake the line
                         writes (sandbox.demo.planted_kind) or `other` (any other slip: a miscopied operand, ...)
                         (a threshold at 0: meaningless for an outcome model, whose scores sit below 0 on most
                         lines of any response; the measures below need no threshold)
Threshold-free, in each response whose exact labels hold a wrong line (`wrong_responses`), the drops of the score
from one code line to the next, d_m = R(y<=m-1) - R(y<=m), the first from R(x), the score on the prompt's last token
(the value a critic copied from the model starts the response with; a token no label sits on):
  drop_on_first_wrong    share of those responses whose largest drop falls on the first wrong line (ties split)
  drop_auc               AUC of the drop onto the first wrong line against every other drop in those responses
  drop_on_first_wrong_after_correct, drop_auc_after_correct   the same two without R(x), in the responses with a
                         correct code line before the first wrong one (`after_correct_responses`): drops between lines
  level/correct_before   mean score on the correct code lines before the first wrong line
  level/wrong            mean score on the wrong code lines (the first wrong one and every one after it)
  level/all_correct      mean score on the code lines of responses with no wrong line; level/start: mean R(x)
  <measure>/<kind>       drop_on_first_wrong and drop_auc by the first wrong line's kind; first_error_auc/<kind>:
                         AUC of every correct code line against the first wrong lines of that kind

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

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
from train_prm import auc, prm_example, read_rows  # noqa: E402


def quality(rows, scores, problems, starts=None):
    """The report above, from rows (task_id, response, steps), the model's score on each step and, for the drop
    measures, its score R(x) on each row's prompt (starts; None: the drop measures left out)."""
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
    return out if starts is None else out | localization(rows, scores, starts, problems, correct)


def localization(rows, scores, starts, problems, correct):
    """The threshold-free measures of the docstring: where in a failing response the score drops most, and the
    score's levels; correct: the scores of every correct code line (for first_error_auc)."""
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    auc_of = lambda pos, neg: auc(pos + neg, [True] * len(pos) + [False] * len(neg))  # noqa: E731
    located, after_correct, after_drops, drops, first = {}, [], ([], []), {}, {}
    levels = {"start": list(starts), "correct_before": [], "wrong": [], "all_correct": []}
    for row, sc, start in zip(rows, scores, starts):
        problem = problems[row["task_id"]]
        code = [(oracle, s, row["response"][a:b].rstrip("\n"))
                for (a, b, neutral), oracle, s in zip(row["steps"], sandbox.demo.oracle_step_scores(problem, row["response"]), sc) if not neutral]
        j = next((m for m, (oracle, _, _) in enumerate(code) if oracle < 0), None)  # the first wrong code line
        if j is None:
            levels["all_correct"] += [s for _, s, _ in code]
            continue
        levels["wrong"] += [s for oracle, s, _ in code if oracle < 0]
        levels["correct_before"] += [s for _, s, _ in code[:j]]
        kind = sandbox.demo.planted_kind(problem, code[j][2]) or "other"
        first.setdefault(kind, []).append(code[j][1])
        s = [start] + [x for _, x, _ in code]
        d = [s[m] - s[m + 1] for m in range(len(code))]  # d[m]: the drop onto code line m (onto line 0 from R(x))
        top = [m for m, x in enumerate(d) if x == max(d)]
        for key in ("all", kind):
            located.setdefault(key, []).append((j in top) / len(top))
            drops.setdefault(key, ([], []))[0].append(d[j])
            drops[key][1].extend(x for m, x in enumerate(d) if m != j)
        if j > 0:  # the drops between scored lines only
            top = [m for m, x in enumerate(d[1:], 1) if x == max(d[1:])]
            after_correct.append((j in top) / len(top))
            after_drops[0].append(d[j]), after_drops[1].extend(x for m, x in enumerate(d[1:], 1) if m != j)
    out = {"wrong_responses": len(located.get("all", [])), "drop_on_first_wrong": mean(located.get("all", [])),
           "drop_auc": auc_of(*drops["all"]) if "all" in drops else float("nan"),
           "after_correct_responses": len(after_correct), "drop_on_first_wrong_after_correct": mean(after_correct),
           "drop_auc_after_correct": auc_of(*after_drops) if after_correct else float("nan")}
    out |= {f"level/{k}": mean(v) for k, v in levels.items()}
    for kind in sorted(first):
        out |= {f"drop_on_first_wrong/{kind}": mean(located[kind]), f"drop_auc/{kind}": auc_of(*drops[kind]),
                f"first_error_auc/{kind}": auc_of(correct, first[kind])}
    return out


def score_rows(model, tok, rows):
    """(the score on every step of every row, the score R(x) on each row's prompt's last token): train_prm.score_steps
    with the prompt's score beside it (one row at a time)."""
    steps, starts = [], []
    with torch.no_grad():
        for row in rows:
            ids, _, positions = prm_example(tok, row)
            scores = model(torch.tensor([ids])).logits[0, :, 0].float()  # [T]
            steps.append(scores[positions].tolist())
            starts.append(scores[len(sandbox.prompt_ids(tok, row["prompt"], False)) - 1].item())
    return steps, starts


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
    steps, starts = score_rows(model, tok, rows)
    out = quality(rows, steps, problems, starts)
    out = {"prm": args.prm, "eval": [args.labels] if args.labels else args.eval, "split": split, "policies": policies} | out
    with open(args.out or os.path.join(args.prm, "quality.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(sandbox.table(["metric", "value"], [(k, v) for k, v in out.items() if k not in ("policies", "eval")]))


if __name__ == "__main__":
    main()
