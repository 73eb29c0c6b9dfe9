"""Line scorers against the volume of labeled data (paper Figure 5's axis), the PRM beside the outcome model (ORM):
for each N, a PRM (train_prm.py, the binary search's line labels) and an ORM (train_prm.py --labels outcome, every
code line labeled with the response's verdict) trained on the same selected rows of the first N labeled prompts (in
labeling order), each measured by experiments/prm_quality.py on valid-split samples neither trained on, against
the demo's exact line labels: step AUC, whether the largest score drop falls on the first wrong line, the drop's
AUC, the score levels on correct and wrong lines, by the first wrong line's planted kind (prm_quality's docstring).

    python label_prm_data.py --policy checkpoints/demo-sft --max_prompts 400 --out runs/sft_labels400
    python evaluate.py --model checkpoints/demo-sft --dataset demo --split valid --n 1 --out runs/sft_valid
    python experiments/prm_volume.py --data runs/sft_labels400 --eval runs/sft_valid/eval.json --prompts 25 50 100 200 400 --out runs/scorer
    # -> runs/scorer/{results.md, results.json, scorer.png}; one model folder per model, N and --seeds seed

Every model starts from --init; its training seed is --seeds' (the labels and the samples are fixed). A re-run skips
what is there (a model's metrics.json, its quality.json).
"""
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
from transformers import HfArgumentParser

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ablation import provenance  # noqa: E402

MODELS = {"prm": [], "orm": ["--labels", "outcome"]}  # train_prm.py flags: line labels, or the verdict on every line
KINDS = ("missing_parens", "true_div", "xor_pow", "other")


@dataclass
class Args:
    data: str = field(default="runs/prm_data", metadata={"help": "label_prm_data.py's folder (rows.jsonl: the labeling order; labels.jsonl: the selected rows)"})
    init: str = field(default="checkpoints/demo-sft", metadata={"help": "the policy every model starts from"})
    eval: str = field(default="runs/prm_eval/eval.json", metadata={"help": "evaluate.py's samples on the valid split (the yardstick's responses)"})
    out: str = field(default="runs/prm_volume", metadata={"help": "one folder per model, N and seed; results.md, results.json, scorer.png"})
    prompts: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400], metadata={"help": "numbers of labeled prompts to train on"})
    models: list[str] = field(default_factory=lambda: list(MODELS), metadata={"help": "prm (line labels) | orm (the verdict on every line)"})
    seeds: list[int] = field(default_factory=lambda: [1], metadata={"help": "train_prm.py seeds: one model per seed"})
    prm_flags: str = field(default="", metadata={"help": "extra train_prm.py flags for every model"})


def subsets(data, prompts):
    """{N: the selected rows (labels.jsonl) of the first N labeled prompts}, the order being rows.jsonl's (every
    labeled response, in labeling order; labels.jsonl's own where rows.jsonl is missing); one line if N is too many."""
    read = lambda name: [json.loads(line) for line in open(os.path.join(data, name))]  # noqa: E731
    rows = read("labels.jsonl")
    order = list(dict.fromkeys(r["task_id"] for r in (read("rows.jsonl") if os.path.exists(os.path.join(data, "rows.jsonl")) else rows)))
    if too_many := [n for n in prompts if n > len(order)]:
        raise SystemExit(f"prm_volume.py: --prompts {too_many}: {data} labeled only {len(order)} prompts")
    return {n: [r for r in rows if r["task_id"] in set(order[:n])] for n in prompts}


def main():
    a = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    if bad := [m for m in a.models if m not in MODELS]:
        raise SystemExit(f"prm_volume.py: --models {bad}: choose from {', '.join(MODELS)}")
    source = provenance("", "prm_volume.py")  # the code's commit, before anything runs
    os.makedirs(a.out, exist_ok=True)
    results = []
    for n, rows in subsets(a.data, a.prompts).items():
        data = os.path.join(a.out, f"labels-{n}.jsonl")
        with open(data, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        for model in a.models:
            for seed in a.seeds:
                folder = os.path.join(a.out, f"{model}-{n}-s{seed}")
                for done, cmd in ((os.path.join(folder, "metrics.json"), [sys.executable, "train_prm.py", "--data", data, "--init", a.init, "--out", folder,
                                                                         "--holdout", "0", "--seed", str(seed), *MODELS[model], *a.prm_flags.split()]),
                                  (os.path.join(folder, "quality.json"), [sys.executable, "experiments/prm_quality.py", "--prm", folder, "--eval", a.eval])):
                    if not os.path.exists(done):  # a re-run skips what is there
                        print("$ " + " ".join(["python", *cmd[1:]]), flush=True)
                        subprocess.run(cmd, cwd=HERE, check=True, stdout=subprocess.DEVNULL)
                with open(os.path.join(folder, "quality.json")) as f:
                    q = json.load(f)
                results.append({"model": model, "prompts": n, "rows": len(rows), "failing_rows": sum(not r["passed"] for r in rows), "seed": seed} | q)
    labeling = {k: json.load(open(os.path.join(a.data, k + ".json"))) for k in ("args", "summary") if os.path.exists(os.path.join(a.data, k + ".json"))}
    with open(a.eval) as f:
        eval_args = json.load(f)["args"]
    report = {"command": "python experiments/prm_volume.py " + " ".join(sys.argv[1:]), "args": asdict(a), "provenance": source,
              "labeling": labeling, "eval_args": eval_args, "results": results}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = table(results, a)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    plot(results, a, os.path.join(a.out, "scorer.png"))


def cell(results, model, n, key, fmt, spread=True):
    """A measure's mean over the seeds' models, with its range when there are several (spread)."""
    xs = [r[key] for r in results if r["model"] == model and r["prompts"] == n and key in r]
    if not xs:
        return "-"
    return fmt.format(np.mean(xs)) + (f" ({fmt.format(min(xs))} to {fmt.format(max(xs))})" if spread and len(xs) > 1 else "")


def table(results, a):
    """results.md: one row per labeled volume and model."""
    r0 = results[0]  # the same samples for every model
    kinds = [k for k in KINDS if f"first_errors/{k}" in r0]
    lines = [f"Line scorers against exact line labels on {r0['responses']} valid samples ({a.eval}), {r0['wrong_responses']} of them with a wrong "
             f"line ({r0['after_correct_responses']} after a correct code line). Models trained from {a.init} on the selected rows of the first N "
             f"labeled prompts of {a.data}; train_prm.py seeds {', '.join(map(str, a.seeds))} (mean, and the range over seeds when several). "
             "Measures: experiments/prm_quality.py's docstring; the largest drop counts the drop onto the first code line from R(x), the "
             "score on the prompt; \"after a correct line\" leaves R(x) out, in the responses whose first code line is right. The levels "
             "and the by-kind columns (by the first wrong line's kind; first-error AUC: every correct line against the first wrong lines of "
             "that kind): means over seeds only.", "",
             "| prompts (rows) | model | step AUC | largest drop on the first wrong line | drop AUC | the same two, after a correct line | "
             "score: correct lines before it | wrong lines | all-correct responses | R(x) | "
             + " | ".join(f"{k} ({r0[f'first_errors/{k}']}): largest drop, drop AUC, first-error AUC" for k in kinds) + " |", "|---" * (10 + len(kinds)) + "|"]
    for n in dict.fromkeys(r["prompts"] for r in results):
        rows = next(r["rows"] for r in results if r["prompts"] == n)
        for model in dict.fromkeys(r["model"] for r in results):
            c = lambda key, fmt, spread=True: cell(results, model, n, key, fmt, spread)  # noqa: E731
            lines.append(f"| {n} ({rows}) | {model.upper()} | {c('step_auc', '{:.2f}')} | {c('drop_on_first_wrong', '{:.0%}')} | {c('drop_auc', '{:.2f}')} | "
                         f"{c('drop_on_first_wrong_after_correct', '{:.0%}')}, {c('drop_auc_after_correct', '{:.2f}')} | "
                         + " | ".join(c(f"level/{k}", "{:+.2f}", False) for k in ("correct_before", "wrong", "all_correct", "start")) + " | "
                         + " | ".join(", ".join([c(f"drop_on_first_wrong/{k}", "{:.0%}", False), c(f"drop_auc/{k}", "{:.2f}", False),
                                                 c(f"first_error_auc/{k}", "{:.2f}", False)]) for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def plot(results, a, path):
    """scorer.png: each measure against the labeled prompts (log scale), the PRM solid, the ORM dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = list(dict.fromkeys(r["prompts"] for r in results))
    models = list(dict.fromkeys(r["model"] for r in results))
    style = {"prm": "-", "orm": "--"}
    values = lambda model, key: [[r[key] for r in results if r["model"] == model and r["prompts"] == n and key in r] or [np.nan] for n in ns]  # noqa: E731
    mean = lambda model, key: [np.mean(v) for v in values(model, key)]  # noqa: E731
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    panels = [("step AUC (correct vs wrong lines)", ["step_auc"]), ("largest drop on the first wrong line (share)", ["drop_on_first_wrong"]),
              ("drop AUC (first wrong line vs other drops)", ["drop_auc"]),
              ("mean score", ["level/correct_before", "level/wrong", "level/all_correct", "level/start"])]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            for i, model in enumerate(models):
                ax.plot(ns, mean(model, key), style.get(model, ":"), marker="o", color=f"C{keys.index(key)}", lw=2,
                        label=f"{model.upper()}" + (f": {key.split('/')[1]}" if "/" in key else ""))
                ax.fill_between(ns, [min(v) for v in values(model, key)], [max(v) for v in values(model, key)], color=f"C{keys.index(key)}", alpha=0.12)
        ax.set_title(title, fontsize=9)
    for ax in axes[:3]:
        ax.set_ylim(0, 1.02)
    axes[3].set_ylim(-1.1, 1.1), axes[3].axhline(0, color="k", lw=0.6)
    for kind_i, kind in enumerate(KINDS):  # by kind, thin: the largest drop's share, the drop's AUC
        for model in models:
            if any(f"drop_on_first_wrong/{kind}" in r for r in results):
                for ax, key in ((axes[1], "drop_on_first_wrong"), (axes[2], "drop_auc")):
                    ax.plot(ns, mean(model, f"{key}/{kind}"), style.get(model, ":"), color=f"C{kind_i + 4}", alpha=0.7, lw=1,
                            label=kind if model == models[0] else None)
    for ax in axes:
        ax.set_xscale("log"), ax.set_xticks(ns, [str(n) for n in ns]), ax.minorticks_off()
        ax.set_xlabel("labeled prompts"), ax.grid(alpha=0.3), ax.legend(fontsize=6)
    fig.suptitle(f"PRM (solid) and ORM (dashed) as line scorers against exact labels on valid samples ({a.eval}); thin: by the first wrong "
                 "line's kind; bands: the range over seeds", fontsize=9)
    fig.tight_layout(), fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
