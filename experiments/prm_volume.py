"""The demo PRM's quality against the volume of labeled data (the issue's lever "labeled volume"; paper
Figure 5 varies it the same way): PRMs trained on the labels of the first N prompts of run_demo.sh's
labeling (in its order), each measured by experiments/prm_quality.py on valid-split samples it never
trained on, against exact line labels.

    bash run_demo.sh                                                 # runs/prm_data
    python evaluate.py --model checkpoints/demo-sft runs/baseline/ckpt-0016 --split valid --n 2 --max_problems 500 --out runs/prm_eval
    python experiments/prm_volume.py --prompts 12 25 50 100          # -> runs/prm_volume/{results.md, prm_volume.png}
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    data: str = field(default="runs/prm_data", metadata={"help": "label_prm_data.py's folder (its labels.jsonl, in labeling order)"})
    init: str = field(default="checkpoints/demo-sft", metadata={"help": "the policy every PRM starts from"})
    eval: str = field(default="runs/prm_eval/eval.json", metadata={"help": "evaluate.py's samples on the valid split"})
    out: str = field(default="runs/prm_volume", metadata={"help": "one PRM per size, results.md, prm_volume.png"})
    prompts: list[int] = field(default_factory=lambda: [12, 25, 50, 100], metadata={"help": "numbers of labeled prompts to train on"})


def main():
    a = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    with open(os.path.join(a.data, "labels.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    order = list(dict.fromkeys(r["prompt"] for r in rows))  # prompts in labeling order
    results = []
    for n in a.prompts:
        folder, keep = os.path.join(a.out, f"prm-{n}"), set(order[:n])
        if not os.path.exists(os.path.join(folder, "quality.json")):
            os.makedirs(folder, exist_ok=True)
            data = os.path.join(folder, "labels.jsonl")
            with open(data, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows if r["prompt"] in keep)
            for cmd in ([sys.executable, "train_prm.py", "--data", data, "--init", a.init, "--out", folder, "--holdout", "0"],
                        [sys.executable, "experiments/prm_quality.py", "--prm", folder, "--eval", a.eval]):
                print("$ " + " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, cwd=HERE, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(folder, "quality.json")) as f:
            q = json.load(f)
        results.append((n, sum(r["prompt"] in keep for r in rows), q))
    kinds = [k for k in results[0][2] if k.startswith("caught/") and not k.endswith("_n")]
    lines = ["| labeled prompts | labeled responses | step AUC | correct below 0 | " + " | ".join(kinds) + " |", "|---" * (4 + len(kinds)) + "|"]
    lines += [f"| {n} | {m} | {q['step_auc']:.3f} | {q['correct_below_0']:.3f} | " + " | ".join(f"{q[k]:.3f}" for k in kinds) + " |" for n, m, q in results]
    report = f"PRM quality on {results[0][2]['responses']} valid-split samples ({a.eval}), by labeled volume:\n\n" + "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(report)
    print(report)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [m for _, m, _ in results]
    for key in ["step_auc", "correct_below_0"] + kinds:
        ax.plot(xs, [q[key] for _, _, q in results], marker="o", label=key)
    ax.set_xscale("log"), ax.set_xticks(xs, [str(x) for x in xs]), ax.minorticks_off()
    ax.set_xlabel("labeled responses the PRM trained on"), ax.set_ylim(0, 1.02), ax.legend(fontsize=7)
    ax.set_title("PRM quality vs labeled volume (valid split, exact labels)")
    fig.tight_layout(), fig.savefig(os.path.join(a.out, "prm_volume.png"), dpi=100)


if __name__ == "__main__":
    main()
