"""The paper's ablation in miniature (v1 Table 1, Figures 3-4): the four ways of using the PRM in PPO,
from the same SFT policy and PRM, over several seeds, plus a run that shows the length hack
(paper 4.1) and a perfect step scorer as the PRM's ceiling.

    bash run_demo.sh                          # first: runs/sft, runs/prm_data, runs/prm
    python experiments/ablation.py            # -> runs/ablation/results.md and *.png
    python experiments/ablation.py --device cuda --parallel 6      # on a GPU: runs side by side

Settings (train_psgpo.py flags; the PRM is runs/prm unless said):
  sparse          --dense_reward false --value_init policy    the RL baseline, unit-test reward only
  value_init      --dense_reward false --value_init prm       the PRM starts the critic
  dense           --dense_reward true  --value_init policy    the PRM's line rewards (Eq. 3)
  both            --dense_reward true  --value_init prm       PSGPO
  oracle          --dense_reward true  --prm oracle           sandbox's exact step scorer as the dense reward
  no_length_norm  both, --length_norm false                   the hack that 1/T guards against
The hack runs only when asked (`--hacks no_length_norm`). (The comment hack needs no run: Eq. 3 pays
comment lines nothing, train_psgpo.dense_reward.) run_demo.sh's baseline and PSGPO
runs are this script's sparse and both runs of seed 0 when their flags match: they are not run again.
Every command is printed before it runs, and a re-run skips the runs and evaluations already done.
Each run is evaluated on the demo test split (evaluate.py); results.md holds the Table 1 analogue
(mean +- std over seeds), each PRM setting's gain over sparse against 2 sample std, and the PRM's
quality against exact line labels on valid-split samples (benchmarks/prm_quality.py); results.json
every number per seed, {setting: {metric as evaluate.py names it: [one value per seed]}}; the plots:
bestofk.png (Figure 3), gain_by_steps.png (Figure 4), training.png (training pass rate and each planted
mistake's rate over iterations) and, with hacks, hacks.png (lines per response, share of comment lines).
"""
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import sandbox  # noqa: E402
ITERS, PPO = 8, "--kl_coef 0 --kl_loss_coef 0.25 --batch_size 64 --warmup 20"  # run_demo.sh's PPO budget and flags
SETTINGS = {
    "sparse": "--dense_reward false --value_init policy",
    "value_init": "--dense_reward false --value_init prm --prm {prm}",
    "dense": "--dense_reward true --value_init policy --prm {prm}",
    "both": "--dense_reward true --value_init prm --prm {prm}",
    "oracle": "--dense_reward true --value_init policy --prm oracle",
    "no_length_norm": "--dense_reward true --value_init prm --prm {prm} --length_norm false",
}


@dataclass
class Args:
    runs: str = field(default="runs", metadata={"help": "run_demo.sh's folder: sft/, prm_data/, prm/ are read from it"})
    out: str = field(default="runs/ablation", metadata={"help": "output folder: one folder per run, eval/, results.md, plots"})
    settings: list[str] = field(default_factory=lambda: ["sparse", "value_init", "dense", "both", "oracle"], metadata={"help": "settings run for every seed"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "seeds of every setting"})
    hacks: list[str] = field(default_factory=lambda: ["none"], metadata={"help": "settings run once (first seed), beside `both`: no_length_norm; `none` for none"})
    iterations: int = field(default=ITERS, metadata={"help": "PPO iterations per run (run_demo.sh's)"})
    ppo: str = field(default=PPO, metadata={"help": "train_psgpo.py flags shared by every run (run_demo.sh's)"})
    evaluate: str = field(default="--n 4", metadata={"help": "evaluate.py flags for every policy (demo test split)"})
    quality_problems: int = field(default=500, metadata={"help": "valid-split prompts the PRM is measured on (benchmarks/prm_quality.py)"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    parallel: int = field(default=1, metadata={"help": "runs at once (CPU: the cores are shared among them)"})


def run(cmd, log, threads):
    """Run one stage command (printed first), its output to `log`; one clear line if it fails."""
    print("$ " + " ".join("python" if c == sys.executable else shlex.quote(c) for c in cmd), flush=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as f:
        if subprocess.run(cmd, cwd=HERE, stdout=f, stderr=subprocess.STDOUT, env=env).returncode:
            raise SystemExit(f"ablation.py: failed: {' '.join(cmd)} (see {log})")


def mean_std(xs):
    """Percent, mean +- sample standard deviation (n - 1) over seeds."""
    return f"{100 * np.mean(xs):.1f} +- {100 * np.std(xs, ddof=1):.1f}" if len(xs) > 1 else f"{100 * xs[0]:.1f}"


def curves(logs, key, w=5):
    """Mean over seeds of a logged metric, then a running mean over w iterations: (iterations, values)."""
    y = np.mean([[row[key] for row in log] for log in logs], axis=0)
    w = min(w, len(y))
    return np.arange(w, len(y) + 1), np.convolve(y, np.ones(w) / w, mode="valid")


def flat(metrics, prefix=""):
    """evaluate.py's metrics as one level: {"by_steps/4/pass@1": ..., "planted/true_div": ...}."""
    out = {}
    for key, v in metrics.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = v
    return out


def same(value, flag):
    """A value in a run's args.json against a command-line flag's text ("0" and 0.0 are the same)."""
    try:
        return float(value) == float(flag)
    except (TypeError, ValueError):
        return str(value).lower() == flag.lower()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def plots(out, evals, logs, sft_eval, main):
    """bestofk.png, gain_by_steps.png and training.png for the settings in `main`; hacks.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))  # Figure 3: best-of-K, mean over seeds
    for s in ["sft"] + main:
        ms = [sft_eval] if s == "sft" else evals[s]
        y = np.mean([m["best_of_k"] for m in ms], axis=0)
        ax.plot(range(1, len(y) + 1), 100 * y, marker="o", label=s)
    ax.set(xlabel="K (samples)", ylabel="% test tasks solved within K", title="best-of-K (Figure 3)")
    ax.legend(), ax.grid(alpha=0.3), fig.tight_layout(), fig.savefig(os.path.join(out, "bestofk.png"), dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))  # Figure 4: pass@1 gain over the baseline, by task length
    steps = list(evals["sparse"][0]["by_steps"])
    base = np.mean([[m["by_steps"][k]["pass@1"] for k in steps] for m in evals["sparse"]], axis=0)
    for s in [s for s in main if s != "sparse"]:
        y = np.mean([[m["by_steps"][k]["pass@1"] for k in steps] for m in evals[s]], axis=0)
        ax.plot(steps, 100 * (y - base), marker="o", label=f"{s} - sparse")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="lines in the reference (steps + return)", ylabel="pass@1 difference (points)", title="gain by length (Figure 4)")
    ax.legend(), ax.grid(alpha=0.3), fig.tight_layout(), fig.savefig(os.path.join(out, "gain_by_steps.png"), dpi=100)
    plt.close(fig)
    keys = ["train/pass_rate"] + [k for k in logs["sparse"][0][0] if k.startswith("planted/")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8))
    for ax, key in zip(axes, keys):  # training curves: exploration (pass rate) and credit assignment (planted)
        for s in main:
            ax.plot(*curves(logs[s], key), label=s)
        ax.set(xlabel="iteration", title=key), ax.grid(alpha=0.3)
    fig.suptitle("training (mean over seeds, 5-iteration running mean)")
    axes[0].legend(), fig.tight_layout(), fig.savefig(os.path.join(out, "training.png"), dpi=100)
    plt.close(fig)
    hacks = [s for s in ("both", "no_length_norm") if s in logs]
    if len(hacks) < 2:  # no hack run: no hacks.png
        return
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    for ax, key in zip(axes, ("response/steps", "response/comment_share", "train/pass_rate")):
        for s in hacks:
            ax.plot(*curves(logs[s][:1], key), label=s)  # the first seed: the hacks run once
        ax.set(xlabel="iteration", title=key), ax.grid(alpha=0.3)
    fig.suptitle("reward hacks (first seed, 5-iteration running mean)")
    axes[0].legend(), fig.tight_layout(), fig.savefig(os.path.join(out, "hacks.png"), dpi=100)
    plt.close(fig)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    py, R, O = sys.executable, args.runs, args.out
    for need in ("sft/config.json", "prm/config.json", "prm_data/rows.jsonl", "prm_data/labels.jsonl"):
        if not os.path.exists(os.path.join(R, need)):
            raise SystemExit(f"ablation.py: {R}/{need} is missing: run `bash run_demo.sh` first (or pass --runs)")
    args.hacks = [h for h in args.hacks if h != "none"]
    unknown = [s for s in args.settings + args.hacks if s not in SETTINGS]
    if unknown or "sparse" not in args.settings:
        raise SystemExit(f"ablation.py: settings must include sparse and come from {', '.join(SETTINGS)}; not {unknown}")
    os.makedirs(O, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // args.parallel) if args.device == "cpu" else 4
    t_start = time.time()

    # 1. PPO runs: every setting x seed, and each hack once
    jobs = list(dict.fromkeys([(s, seed) for s in args.settings for seed in args.seeds] + [(h, args.seeds[0]) for h in args.hacks]))

    def folder(s, seed):
        """The run's folder: run_demo.sh's baseline / psgpo run when it is this one (same flags and seed)."""
        demo = os.path.join(R, {"sparse": "baseline", "both": "psgpo"}.get(s, "-"), "args.json")
        if os.path.exists(demo) and os.path.exists(os.path.join(os.path.dirname(demo), f"ckpt-{args.iterations:04d}")):
            flags = SETTINGS[s].format(prm=f"{R}/prm", out=O).split() + args.ppo.split()
            want = {k[2:]: v for k, v in zip(flags[::2], flags[1::2])} | {"seed": str(seed), "iterations": str(args.iterations)}
            have = read_json(demo)
            if all(same(have.get(k), v) for k, v in want.items()):
                return os.path.dirname(demo)
        return os.path.join(O, f"{s}-s{seed}")

    def final(s, seed):
        return os.path.join(folder(s, seed), f"ckpt-{args.iterations:04d}")

    def ppo(job):
        s, seed = job
        if not os.path.exists(os.path.join(final(s, seed), "config.json")):
            flags = SETTINGS[s].format(prm=f"{R}/prm", out=O).split() + args.ppo.split()
            run([py, "train_psgpo.py", "--policy", f"{R}/sft", "--out", f"{O}/{s}-s{seed}", "--seed", str(seed), "--iterations",
                 str(args.iterations), "--save_every", str(args.iterations), "--resume", "true", "--device", args.device, *flags],
                os.path.join(O, f"{s}-s{seed}.log"), threads)

    # 2. Every final policy (and the SFT policy) on the demo test split, each in its own folder
    def evaluate(name_model):
        name, model = name_model
        if not os.path.exists(os.path.join(O, "eval", name, "eval.json")):
            run([py, "evaluate.py", "--model", model, "--out", f"{O}/eval/{name}", "--device", args.device, "--threads", str(threads),
                 *args.evaluate.split()], os.path.join(O, f"eval-{name}.log"), threads)
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(ppo, jobs))
        list(pool.map(evaluate, [("sft", f"{R}/sft")] + [(f"{s}-s{seed}", final(s, seed)) for s, seed in jobs]))

    # 3. Does the PRM see the mistakes? Its scores against exact line labels on valid-split samples of the
    #    policies RL starts from and reaches (benchmarks/prm_quality.py)
    quality_path = os.path.join(O, "prm_quality.json")
    if not os.path.exists(quality_path):
        policies = [f"{R}/sft"] + [final(s, args.seeds[0]) for s in ("sparse", "both") if s in args.settings]
        run([py, "evaluate.py", "--model", *policies, "--out", f"{O}/prm_eval", "--device", args.device, "--threads", str(threads),
             *args.evaluate.split(), "--split", "valid", "--n", "2", "--max_problems", str(args.quality_problems)],
            os.path.join(O, "prm_eval.log"), threads)
        run([py, "benchmarks/prm_quality.py", "--prm", f"{R}/prm", "--eval", f"{O}/prm_eval/eval.json", "--out", quality_path],
            os.path.join(O, "prm_eval.log"), threads)
    quality = read_json(quality_path)

    # 4. The Table 1 analogue, mean +- std over seeds; every number to results.json; the plots
    def metrics(name):
        return next(iter(read_json(os.path.join(O, "eval", name, "eval.json"))["models"].values()))["metrics"]
    evals, logs = {}, {}
    for s, seed in jobs:
        evals.setdefault(s, []).append(metrics(f"{s}-s{seed}"))
        logs.setdefault(s, []).append(read_jsonl(os.path.join(folder(s, seed), "log.jsonl")))
    sft = metrics("sft")
    k = f"pass@{sft['n']}"  # pass@n, from the best-of-K curve (its K = n point is the same estimator)
    cols = ["greedy_pass@1", "pass@1", k]

    def get(m, c):
        return m["best_of_k"][m["n"] - 1] if c == k else m[c]
    kinds = list(sandbox.PLANTED_RATES)
    lines = [f"| setting | seeds | greedy pass@1 | pass@1 | {k} | train pass rate, last 10 iters | planted mistakes ({' / '.join(kinds)}) |",
             "|---|---|---|---|---|---|---|",
             f"| SFT | - | {' | '.join(mean_std([get(sft, c)]) for c in cols)} | - | "
             + " / ".join(f"{100 * sft['planted'][p]:.1f}" for p in kinds) + " |"]
    for s in evals:
        ms = evals[s]
        train = [np.mean([row["train/pass_rate"] for row in log[-10:]]) for log in logs[s]]
        lines.append(f"| {s} | {len(ms)} | {' | '.join(mean_std([get(m, c) for m in ms]) for c in cols)} | {mean_std(train)} | "
                     + " / ".join(f"{100 * np.mean([m['planted'][p] for m in ms]):.1f}" for p in kinds) + " |")
    hack_lines = ["| run | lines per response, first -> last 5 iters | comment share | train pass rate |", "|---|---|---|---|"]
    for s in [s for s in ("both", "no_length_norm") if s in logs]:
        log = logs[s][0]
        first_last = [f"{np.mean([r[key] for r in log[:5]]):.2f} -> {np.mean([r[key] for r in log[-5:]]):.2f}"
                      for key in ("response/steps", "response/comment_share", "train/pass_rate")]
        hack_lines.append(f"| {s} (seed {args.seeds[0]}) | {' | '.join(first_last)} |")
    # the paper's claim, tested: each PRM setting against the baseline, gain vs 2 sample std (the larger of the two)
    gains = ["| setting - sparse | " + " | ".join(f"{c}: gain (2 std)" for c in cols[:2]) + " | beats sparse by >= 2 std on both |",
             "|---|---|---|---|"]
    for s in [s for s in evals if s != "sparse" and len(evals[s]) > 1]:
        cells, ok = [], True
        for c in cols[:2]:
            a, b = [m[c] for m in evals[s]], [m[c] for m in evals["sparse"]]
            gain, two_std = np.mean(a) - np.mean(b), 2 * max(np.std(a, ddof=1), np.std(b, ddof=1))
            cells.append(f"{100 * gain:+.1f} ({100 * two_std:.1f})")
            ok = ok and gain >= two_std
        gains.append(f"| {s} | {' | '.join(cells)} | {'yes' if ok else 'no'} |")
    plots(O, evals, logs, sft, args.settings)
    report = (f"Demo test split, {k} from --evaluate's samples; percent, mean +- sample std over seeds.\n\n" + "\n".join(lines)
              + "\n\n" + "\n".join(gains) + "\n")
    report += ("\nThe PRM against exact line labels (benchmarks/prm_quality.py), on "
               f"{quality['responses']} valid-split samples of {', '.join(quality['policies'])}:\n\n| metric | value |\n|---|---|\n"
               + "".join(f"| {k} | {100 * v:.1f}% |\n" if k.startswith(("caught", "correct")) else f"| {k} | {v:.3f} |\n" if isinstance(v, float)
                         else f"| {k} | {v} |\n" for k, v in quality.items() if k not in ("prm", "eval", "split", "policies")))
    if len(hack_lines) > 3:
        report += "\nReward hacks (paper 4.1):\n\n" + "\n".join(hack_lines) + "\n"
    with open(os.path.join(O, "results.md"), "w") as f:
        f.write(report)
    # every number, per seed: {setting: {metric as evaluate.py names it: [one value per seed]}}
    table = {s: {key: [flat(m)[key] for m in ms] for key in flat(ms[0])} | {"seeds": [seed for s2, seed in jobs if s2 == s],
             "train_pass_rate_last10": [float(np.mean([row["train/pass_rate"] for row in log[-10:]])) for log in logs[s]]}
             for s, ms in evals.items()}
    with open(os.path.join(O, "results.json"), "w") as f:
        json.dump({"settings": {"sft": {key: [v] for key, v in flat(sft).items()}} | table, "prm_quality": quality, "args": vars(args),
                   "minutes_this_call": (time.time() - t_start) / 60}, f, indent=1)
    print("\n" + report + f"\nwrote {O}/results.md, results.json and the plots (bestofk.png, gain_by_steps.png, training.png"
          + (", hacks.png)" if args.hacks else ")"))


if __name__ == "__main__":
    main()
