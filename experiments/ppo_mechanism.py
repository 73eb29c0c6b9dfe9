"""experiments/ppo_mechanism.py - what PPO does with the line scores, on the demo: per iteration, how often each planted
mistake is still written, and how GAE's advantages split into the outcome reward's, Eq. 3's, the KL's and the critic's
parts, for the settings of one experiments/ablation.py call, beside each setting's reward model as a line scorer.

    python experiments/ablation.py --seeds 100 101 102 103 --split valid --settings sparse both both_orm both_orm_all --curves sparse both both_orm both_orm_all --curve_problems 500 --out runs/mech
    python experiments/ppo_mechanism.py --run runs/mech --out runs/mech/mechanism     # -> results.md, results.json, mechanism.png

Per seed and setting it reads:
  written/<kind>   the share of the lines where a planted kind can occur that the policy writes in its wrong form
                   (sandbox.demo.planted_mistakes), on `valid` at every second checkpoint (the --curves evaluation:
                   the first --curve_problems valid tasks, 2 samples each; iteration 0 is the SFT policy's curve
                   evaluation, the same tasks) and at the end (the final evaluation: every --split task, --n samples)
  share_<part>     train_psgpo.py's advantage/share_{outcome,dense,kl,critic} of every iteration (its training
                   rollouts): Cov(A_part, A) / Var(A), the exact split of the advantages by term, summing to 1
  rewards          rewards/outcome and rewards/dense (a response's Eq. 3 total), the critic's explained variance
and scores each seed's reward models (prm, orm, orm_all) as line scorers on the SFT policy's valid samples with
experiments/prm_quality.py (drop_on_first_wrong/<kind>: whether the largest score drop falls on that first wrong
line; skipped where its json exists). Writes results.json (every series per seed, the paired differences), results.md
(one table) and mechanism.png (one plot). Readings on the design seeds are a design's, exploratory: no claim.
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
from ablation import provenance, starts_from, t_interval  # noqa: E402

KINDS = ("missing_parens", "true_div", "xor_pow")
PARTS = ("outcome", "dense", "kl", "critic")


@dataclass
class Args:
    run: str = field(default="runs/mech", metadata={"help": "an experiments/ablation.py --out folder with --curves for the settings"})
    settings: list[str] = field(default_factory=lambda: ["sparse", "both", "both_orm", "both_orm_all"], metadata={"help": "settings to read (each in the run's --curves)"})
    against: str = field(default="both_orm", metadata={"help": "the setting `both` is paired against per seed"})
    out: str = field(default="runs/mech/mechanism", metadata={"help": "results.md, results.json, mechanism.png"})


def read_log(path):
    """A run's log.jsonl: {metric: [one value per iteration]} of the metrics this study reads."""
    rows = [json.loads(line) for line in open(path)]
    keys = [f"advantage/share_{p}" for p in PARTS] + [f"planted/{k}" for k in KINDS] + [
        "rewards/outcome", "rewards/dense", "charts/explained_variance", "train/pass_rate"]
    return {k: [r.get(k, float("nan")) for r in rows] for k in keys}


def curve(curve_json, sft_json):
    """valid, per checkpoint of a --curves evaluation (and the SFT policy's as iteration 0): {"iterations": [...],
    "written/<kind>": [...], "pass@1": [...]}, in iteration order."""
    points = {}
    for path, it_of in ((sft_json, lambda name: 0), (curve_json, lambda name: int(name.rstrip("/").rsplit("ckpt-", 1)[1]))):
        for name, m in json.load(open(path))["models"].items():
            points[it_of(name)] = m["metrics"]
    its = sorted(points)
    return {"iterations": its, "pass@1": [points[i]["pass@1"] for i in its]} | {
        f"written/{k}": [points[i]["planted"][k] for i in its] for k in KINDS}


def final(eval_json):
    """The final evaluation's sampled pass@1 and written/<kind> (every --split task, --n samples each)."""
    m = next(iter(json.load(open(eval_json))["models"].values()))["metrics"]
    return {"pass@1": m["pass@1"]} | {f"written/{k}": m["planted"][k] for k in KINDS}


def scorer_quality(run, seed, model):
    """prm_quality.py's report of one seed's reward model on the SFT policy's valid samples (its curve evaluation)."""
    out = f"{run}/s{seed}/{model}_quality_sft.json"
    if not os.path.exists(out):
        subprocess.run([sys.executable, os.path.join(HERE, "experiments/prm_quality.py"), "--prm", f"{run}/s{seed}/{model}",
                        "--eval", f"{run}/curves/sft/eval.json", "--out", out], check=True, capture_output=True)
    return json.load(open(out))


def gather(run, settings):
    """Every series of the study, per setting and seed."""
    r = json.load(open(f"{run}/results.json"))
    seeds, data = r["seeds"], {}
    for st in settings:
        model = (starts_from(st) or [None])[0]
        data[st] = {"model": model, "seeds": {}}
        for s in seeds:
            d = {"log": read_log(f"{run}/s{s}/{st}/log.jsonl"), "valid": curve(f"{run}/curves/s{s}-{st}/eval.json", f"{run}/curves/sft/eval.json"),
                 "final": final(f"{run}/eval/s{s}-{st}/eval.json")}
            if model:
                q = scorer_quality(run, s, model)
                d["scorer"] = {k: q[k] for k in q if k.startswith(("step_auc", "drop_on_first_wrong/", "first_error_auc/", "level/"))
                               or k in ("drop_on_first_wrong", "drop_auc")}
            data[st]["seeds"][str(s)] = d
    return r, seeds, data


def mean_over(seeds_data, path):
    """The mean over seeds of a series (or a value) at `path` ("valid/written/true_div": d["valid"]["written/true_div"])."""
    top, rest = path.split("/", 1)  # the series' group (log, valid, final, scorer), then its own key
    return np.nanmean([d[top].get(rest, np.nan) for d in seeds_data.values()], axis=0).tolist()  # nan: a kind no response held


def paired(data, a, b, value):
    """Per seed value(a) - value(b), with the mean and a 95% t interval over seeds (ablation.t_interval)."""
    sa, sb = data[a]["seeds"], data[b]["seeds"]
    return t_interval([value(sa[s]) - value(sb[s]) for s in sa])


def summarise(data, against):
    """The numbers the table and the text read: per setting, means over seeds; `both - against`, paired per seed."""
    out = {}
    for st, v in data.items():
        sd = v["seeds"]
        first = next(iter(sd.values()))
        its = first["valid"]["iterations"]
        row = {"model": v["model"], "valid_iterations": its,
               "final/pass@1": mean_over(sd, "final/pass@1")}
        for k in KINDS:
            row[f"valid/written/{k}"] = mean_over(sd, f"valid/written/{k}")
            row[f"final/written/{k}"] = mean_over(sd, f"final/written/{k}")
            row[f"train/written/{k}"] = mean_over(sd, f"log/planted/{k}")
            if v["model"]:
                row[f"scorer/drop_on_first_wrong/{k}"] = mean_over(sd, f"scorer/drop_on_first_wrong/{k}")
        for p in PARTS:
            per_it = np.array([d["log"][f"advantage/share_{p}"] for d in sd.values()])  # [seeds, iterations]
            row[f"share_{p}"] = per_it.mean(0).tolist()
            row[f"share_{p}/mean"] = float(per_it.mean())
        for k in ("rewards/outcome", "rewards/dense", "charts/explained_variance"):
            row[k] = mean_over(sd, f"log/{k}")
        out[st] = row
    diffs = {}
    if "both" in data and against in data:
        for k in KINDS:  # the end (every valid task) and the mean over the curve's checkpoints after iteration 0
            diffs[f"final/written/{k}"] = paired(data, "both", against, lambda d: d["final"][f"written/{k}"])
            diffs[f"valid_mean/written/{k}"] = paired(data, "both", against, lambda d: float(np.mean(d["valid"][f"written/{k}"][1:])))
            if data[against]["model"]:
                diffs[f"scorer/drop_on_first_wrong/{k}"] = paired(data, "both", against, lambda d: d["scorer"].get(f"drop_on_first_wrong/{k}", np.nan))
        diffs["final/pass@1"] = paired(data, "both", against, lambda d: d["final"]["pass@1"])
        for p in ("outcome", "dense", "critic"):
            diffs[f"share_{p}/mean"] = paired(data, "both", against, lambda d: float(np.mean(d["log"][f"advantage/share_{p}"])))
    return out, diffs


def against_sparse(data):
    """Each reward-model setting against the sparse run, paired per seed: each kind's share written wrong at the last
    valid checkpoint ({} without a sparse run)."""
    return {f"{st} - sparse: last valid/written/{k}": paired(data, st, "sparse", lambda d: d["valid"][f"written/{k}"][-1])
            for st in data if st != "sparse" and "sparse" in data for k in KINDS}


def iv(c, scale=100, fmt="{:+.1f}"):
    """A t_interval as `mean [lo, hi]`, scaled (percent points by default)."""
    return f"{fmt.format(scale * c['mean'])} [{fmt.format(scale * c['ci95'][0])}, {fmt.format(scale * c['ci95'][1])}]"


def table(summary, diffs, seeds, run_results, against):
    """results.md: the one table, and the paired differences under it."""
    its = next(iter(summary.values()))["valid_iterations"]
    show = [i for i in (0, 4, 8, 12, 16) if i in its]
    lines = [f"Demo valid split, {len(seeds)} design seeds ({', '.join(map(str, seeds))}), {run_results['iterations']} PPO iterations of 64 prompts; "
             f"code {run_results['provenance'].get('code_commit', 'unrecorded')[:10]}. Means over the seeds; percent.", "",
             "| setting | its model's largest drop on the first wrong line (mp / td / xp) | lines written wrong on valid, iteration "
             + " / ".join(map(str, show)) + ": mp | td | xp | at the end, every valid task (mp / td / xp) | advantage variance: outcome / Eq. 3 / critic "
             "(mean over iterations) | at iteration 1 | at the last | Eq. 3's total per response / the outcome's (mean) | valid pass@1 |",
             "|---" * 11 + "|"]
    for st, r in summary.items():
        scorer = " / ".join(f"{100 * r[f'scorer/drop_on_first_wrong/{k}']:.0f}" for k in KINDS) if r["model"] else "-"
        written = [" / ".join(f"{100 * r[f'valid/written/{k}'][its.index(i)]:.1f}" for i in show) for k in KINDS]
        at_end = " / ".join(f"{100 * r[f'final/written/{k}']:.1f}" for k in KINDS)
        shares = lambda j: " / ".join(f"{100 * r[f'share_{p}'][j]:.1f}" for p in ("outcome", "dense", "critic"))  # noqa: E731
        mean_shares = " / ".join(f"{100 * r[f'share_{p}/mean']:.1f}" for p in ("outcome", "dense", "critic"))
        rewards = f"{np.mean(r['rewards/dense']):+.3f} / {np.mean(r['rewards/outcome']):.3f}"
        lines.append(f"| {st} ({r['model'] or 'no reward model'}) | {scorer} | {' | '.join(written)} | {at_end} | {mean_shares} | {shares(0)} | "
                     f"{shares(-1)} | {rewards} | {100 * r['final/pass@1']:.1f} |")
    lines += ["", "(mp `missing_parens`, td `true_div`, xp `xor_pow`; the scorer on the SFT policy's valid samples of the curve evaluation; "
              "the KL's share is 0 where `--kl_coef` is 0, the demo's.)", "",
              f"`both - {against}` (or the pair the row names), paired per seed (points; mean [95% t interval over the {len(seeds)} seeds], "
              "a design's reading, exploratory):", "",
              "| quantity | per seed | mean [t 95%] |", "|---|---|---|"]
    for k, c in diffs.items():
        lines.append(f"| {k} | {', '.join(f'{100 * x:+.1f}' for x in c['diffs'])} | {iv(c)} |")
    return "\n".join(lines) + "\n"


def plot(summary, data, path):
    """mechanism.png: top row, each kind's share written wrong on valid per iteration (mean and min-max over seeds);
    bottom row, the advantage variance's outcome, Eq. 3 and critic shares per iteration, per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    colors = dict(zip(summary, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, k in zip(axes[0], KINDS):
        for st, r in summary.items():
            y = 100 * np.array([d["valid"][f"written/{k}"] for d in data[st]["seeds"].values()])  # [seeds, checkpoints]
            ax.plot(r["valid_iterations"], y.mean(0), marker="o", ms=3, color=colors[st], label=st)
            ax.fill_between(r["valid_iterations"], y.min(0), y.max(0), color=colors[st], alpha=0.12)
        ax.set(title=f"{k}: lines written wrong (valid)", xlabel="PPO iteration", ylabel="% of the lines where it can occur"), ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    for ax, p in zip(axes[1], ("outcome", "dense", "critic")):
        for st, r in summary.items():
            y = 100 * np.array([d["log"][f"advantage/share_{p}"] for d in data[st]["seeds"].values()])  # [seeds, iterations]
            x = np.arange(1, y.shape[1] + 1)
            ax.plot(x, y.mean(0), marker="o", ms=3, color=colors[st], label=st)
            ax.fill_between(x, y.min(0), y.max(0), color=colors[st], alpha=0.12)
        name = {"outcome": "the outcome reward", "dense": "Eq. 3's line rewards", "critic": "the critic's values"}[p]
        ax.set(title=f"advantage variance from {name}", xlabel="PPO iteration", ylabel="% of Var(A)"), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    a = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    source = provenance("", "ppo_mechanism.py")
    run_results, seeds, data = gather(a.run, a.settings)
    summary, diffs = summarise(data, a.against)
    vs_sparse = against_sparse(data)
    os.makedirs(a.out, exist_ok=True)
    results = {"command": "python experiments/ppo_mechanism.py " + " ".join(sys.argv[1:]), "args": asdict(a), "provenance": source,
               "run": {k: run_results[k] for k in ("seeds", "split", "iterations", "n", "curve_problems", "provenance", "args", "commands")},
               "summary": summary, "both_minus_" + a.against: diffs, "minus_sparse": vs_sparse, "per_seed": data}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    md = table(summary, diffs | vs_sparse, seeds, run_results, a.against)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    plot(summary, data, os.path.join(a.out, "mechanism.png"))
    print(md + f"\nwrote {a.out}/results.md, results.json, mechanism.png")


if __name__ == "__main__":
    main()
