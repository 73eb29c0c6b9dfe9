"""experiments/studies.py - the questions the paper's reviewers asked (ICLR 2025), each a small study on the demo.

    python experiments/studies.py --study lambda --seeds 10 11 12      # Eq. 3's lambda
    python experiments/studies.py --study k --seeds 10 11 12           # K and the temperature of the prefix checks
    python experiments/studies.py --study source --seeds 10 11 12      # where the labeled responses come from
    python experiments/studies.py --study explore --seeds 10 11 12 13 14   # exploration or generalization (no new runs)
    python experiments/studies.py --study hacks --seeds 10 11 12       # padding and try/except, with and without 1/T
    python experiments/studies.py --study critic --seeds 10 11 12      # group-relative RL without a critic, +- dense reward

Every study builds on the ablation's whole chain per seed (experiments/ablation.py --out --base: seed s's sparse
baseline, its labels, its PRM, and the settings sparse_warm_critic, value_init_orm and both, evaluated on test, with
their valid curves); what is missing of it is run first by ablation.py's own command. A study then runs its
variants (VARIANTS) with the same seed, from the same SFT policy, on the same budget, evaluates them exactly as the
ablation does (so every comparison is paired per seed and task), and writes <out>/<study>.md, .json and .png.
Resumable: a re-run skips what is done. The numbers, the commands and what they show: docs/results/studies.md.
"""
import ast
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ablation  # noqa: E402
import sandbox  # noqa: E402

BOTH = "--dense_reward true --value_init prm --prm {prm}"  # PSGPO, the ablation's `both`
VARIANTS = {  # name: (label_prm_data.py flags for the variant's own labels and PRM, or None: the seed's PRM; train_psgpo.py flags)
    "lam_0.05": (None, BOTH + " --lam_fail 0.05 --lam_pass 0.005"),
    "lam_1.0": (None, BOTH + " --lam_fail 1.0 --lam_pass 0.1"),
    "k1": ("--policy {ckpts} --k 1", BOTH),
    "k4": ("--policy {ckpts} --k 4", BOTH),
    "k4_t0.7": ("--policy {ckpts} --k 4 --prefix_temperature 0.7", BOTH),
    "src_sft": ("--policy {sft} --samples 8 --k 4", BOTH),             # 8 responses per prompt, as 4 checkpoints x 2
    "src_both": ("--policy {sft} {last} --samples 4 --k 4", BOTH),     # 4 from the SFT policy, 4 from the baseline's last
    "no_length_norm": (None, BOTH + " --length_norm false"),
    "group_sparse": (None, "--advantage group --dense_reward false --value_init policy"),
    "group_dense": (None, "--advantage group --dense_reward true --value_init policy --prm {prm}"),
}
# Per study: its variants; the paired comparisons (the first is the study's question); the variants with valid curves.
# The ablation's settings (sparse, sparse_warm_critic, value_init_orm, both) are named as they are; `both` is lambda 0.25,
# K 20 at T 1, labels from the baseline's 4 checkpoints, with 1/T and a critic.
STUDIES = {
    "lambda": (["lam_0.05", "lam_1.0"], [("lam_0.05", "sparse_warm_critic"), ("both", "sparse_warm_critic"), ("lam_1.0", "sparse_warm_critic"),
                                         ("lam_0.05", "both"), ("lam_1.0", "both")], []),
    "k": (["k1", "k4", "k4_t0.7"], [("k1", "sparse_warm_critic"), ("k4", "sparse_warm_critic"), ("both", "sparse_warm_critic"),
                                    ("k4_t0.7", "sparse_warm_critic"), ("k1", "both"), ("k4", "both"), ("k4_t0.7", "k4")], []),
    "source": (["k4", "src_sft", "src_both"], [("src_sft", "k4"), ("src_both", "k4"), ("k4", "sparse_warm_critic"),
                                               ("src_sft", "sparse_warm_critic"), ("src_both", "sparse_warm_critic")], []),
    "explore": ([], [("both", "sparse_warm_critic"), ("both", "value_init_orm"), ("sparse_warm_critic", "sparse")], []),
    "hacks": (["no_length_norm"], [("no_length_norm", "both"), ("both", "sparse")], ["no_length_norm"]),
    "critic": (["group_sparse", "group_dense"], [("group_dense", "group_sparse"), ("group_sparse", "sparse_warm_critic"),
                                                ("group_dense", "both")], []),
}
BASE = ["sparse", "sparse_warm_critic", "value_init_orm", "both"]  # the ablation's settings a study reads, with their curves


@dataclass
class Args:
    study: list[str] = field(default_factory=lambda: ["lambda"], metadata={"help": f"one or more of: {', '.join(STUDIES)}"})
    seeds: list[int] = field(default_factory=lambda: [10, 11, 12], metadata={"help": "whole-chain seeds (the ablation's, with --base)"})
    base: str = field(default="runs/ablation", metadata={"help": "the ablation's --out: each seed's chain (run there first if missing)"})
    out: str = field(default="runs/studies", metadata={"help": "s<seed>/<variant> runs, eval/, curves/, and <study>.md/.json/.png"})
    iterations: int = field(default=16, metadata={"help": "PPO iterations (the ablation's budget)"})
    warm: int = field(default=4, metadata={"help": "the ablation's --warm (sparse_warm_critic)"})
    policy: str = field(default="checkpoints/demo-sft", metadata={"help": "the SFT policy"})
    n: int = field(default=4, metadata={"help": "sampled completions per task in the final evaluation (the ablation's)"})
    curve_problems: int = field(default=200, metadata={"help": "valid tasks per curve checkpoint (the ablation's)"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples of seeds and tasks"})
    ppo: str = field(default="", metadata={"help": "extra train_psgpo.py flags for every run (the tests' tiny sizes)"})
    label: str = field(default="", metadata={"help": "extra label_prm_data.py flags"})
    prm_flags: str = field(default="", metadata={"help": "extra train_prm.py flags"})
    evaluate: str = field(default="", metadata={"help": "extra evaluate.py flags"})
    parallel: int = field(default=2, metadata={"help": "commands at once (the cores are shared among them)"})
    plan: str = field(default="", metadata={"help": "the plan file naming each study's question, committed before the run; empty: every reading exploratory"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything runs
        sandbox.check_flags(self, positive="iterations n curve_problems bootstrap parallel", nonnegative="warm")


def hack_forms(completion):
    """What the reviewers asked about, in one response: {"try": a try statement, "dead": an assignment whose name is
    never read (a line that only pads), "code_lines", "neutral_lines"}; a response that does not parse has neither."""
    steps = sandbox.split_steps(completion)
    out = {"try": False, "dead": False, "code_lines": sum(not n for *_, n in steps), "neutral_lines": sum(n for *_, n in steps)}
    try:
        names = [n for n in ast.walk(ast.parse("def f():\n" + completion)) if isinstance(n, (ast.Name, ast.Try))]
    except (SyntaxError, ValueError):
        return out
    read = {n.id for n in names if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return out | {"try": any(isinstance(n, ast.Try) for n in names),
                  "dead": any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in read for n in names)}


def main():
    args = sandbox.parse_args(Args)
    if unknown := [s for s in args.study if s not in STUDIES]:
        raise SystemExit(f"studies.py: unknown studies {unknown}: choose from {', '.join(STUDIES)}")
    args.provenance = ablation.provenance(args.plan, "studies.py")  # before any run: the plan was committed, and what the code was
    O, B, py, t0 = args.out, args.base, sys.executable, time.time()
    threads = max(1, (os.cpu_count() or 2) // args.parallel)
    tiny = ["--ppo", args.ppo, "--label", args.label, "--prm_flags", args.prm_flags, "--evaluate", args.evaluate]
    base_done = [f"{B}/{k}/s{s}-{st}/eval.json" for s in args.seeds for st in BASE for k in ("eval", "curves")] + [f"{B}/s{s}/prm_quality.json" for s in args.seeds]
    os.makedirs(O, exist_ok=True)
    if not all(map(os.path.exists, base_done)):  # the ablation's chain for these seeds, by its own command
        ablation.run([py, "experiments/ablation.py", "--seeds", *args.seeds, "--out", B, "--settings", *BASE[1:], "--iterations", args.iterations,
                      "--warm", args.warm, "--policy", args.policy, "--n", args.n, "--curve_problems", args.curve_problems, "--parallel", args.parallel,
                      "--bootstrap", args.bootstrap, *tiny], f"{O}/ablation.log", 1)

    def step(log, cmd, done_when):
        return lambda: None if os.path.exists(done_when) else ablation.run(cmd, log, threads)

    jobs, every, last = {}, args.iterations // 4, f"{args.iterations:04d}"
    curves = {v for st in args.study for v in STUDIES[st][2]}
    for s in args.seeds:
        d = f"{O}/s{s}"
        os.makedirs(d, exist_ok=True), os.makedirs(f"{O}/eval", exist_ok=True)
        for v in dict.fromkeys(v for st in args.study for v in STUDIES[st][0]):
            label, ppo = VARIANTS[v]
            prm, needs = f"{B}/s{s}/prm", []
            if label:  # the variant's own labels and PRM, trained exactly as the ablation's
                ckpts = " ".join(f"{B}/s{s}/sparse/ckpt-{i * every:04d}" for i in range(1, 5))
                flags = label.format(ckpts=ckpts, sft=args.policy, last=f"{B}/s{s}/sparse/ckpt-{last}").split()
                prm, needs = f"{d}/{v}-prm", [f"{s}/{v}/prm"]
                jobs[f"{s}/{v}/labels"] = ([], step(f"{d}/{v}-labels.log", [py, "label_prm_data.py", "--seed", s, "--out", f"{d}/{v}-data", "--device", "cpu",
                                                                           *args.label.split(), *flags], f"{d}/{v}-data/summary.json"))
                jobs[f"{s}/{v}/prm"] = ([f"{s}/{v}/labels"], step(f"{d}/{v}-prm.log", [py, "train_prm.py", "--data", f"{d}/{v}-data", "--init", args.policy,
                                                                                      "--seed", s, "--out", prm, "--device", "cpu", *args.prm_flags.split()],
                                                                  f"{prm}/metrics.json"))
                jobs[f"{s}/{v}/quality"] = ([f"{s}/{v}/prm"], step(f"{d}/{v}-quality.log", [py, "experiments/prm_quality.py", "--prm", prm, "--out", f"{prm}/quality.json",
                                            "--eval", f"{B}/curves/sft/eval.json", f"{B}/curves/s{s}-sparse/eval.json", f"{B}/curves/s{s}-both/eval.json",
                                            "--last_only", "true"], f"{prm}/quality.json"))
            jobs[f"{s}/{v}"] = (needs, step(f"{d}/{v}.log", [py, "train_psgpo.py", "--policy", args.policy, "--seed", s, "--out", f"{d}/{v}",
                                                             "--iterations", args.iterations, "--save_every", 2, "--resume", "true",
                                                             *ppo.format(prm=prm).split(), "--device", "cpu", *args.ppo.split()], f"{d}/{v}/ckpt-{last}/config.json"))
            jobs[f"{s}/{v}/eval"] = ([f"{s}/{v}"], step(f"{d}/eval-{v}.log", [py, "evaluate.py", "--model", f"{d}/{v}/ckpt-{last}", "--split", "test", "--n", args.n,
                                                                            "--seed", s, "--threads", threads, "--out", f"{O}/eval/s{s}-{v}", "--device", "cpu",
                                                                            *args.evaluate.split()], f"{O}/eval/s{s}-{v}/eval.json"))
            if v in curves:  # the ablation's curve command: every 2 iterations on the first valid tasks
                ckpts = [f"{d}/{v}/ckpt-{i:04d}" for i in range(2, args.iterations + 1, 2)]
                jobs[f"{s}/{v}/curve"] = ([f"{s}/{v}"], step(f"{d}/curve-{v}.log", [py, "evaluate.py", "--model", *ckpts, "--split", "valid", "--n", 2,
                                                                                   "--max_problems", args.curve_problems, "--seed", s, "--threads", threads,
                                                                                   "--out", f"{O}/curves/s{s}-{v}", "--device", "cpu", *args.evaluate.split()],
                                                                 f"{O}/curves/s{s}-{v}/by_length.png"))
    ablation.schedule(jobs, args.parallel)
    for st in args.study:
        report(st, args, time.time() - t0)


# ------------------------------------------------------------------ the reports
def where(name, args, s):
    """(run folder, final eval.json, curve eval.json) of an ablation setting or a study variant, seed s."""
    root = args.out if name in VARIANTS else args.base
    return f"{root}/s{s}/{name}", f"{root}/eval/s{s}-{name}/eval.json", f"{root}/curves/s{s}-{name}/eval.json"


def log_rows(name, args, s):
    with open(os.path.join(where(name, args, s)[0], "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return rows[-args.iterations:]  # the budget's iterations (a warm critic's first W left out)


def curve_samples(name, args, s):
    """{iteration: [samples]} of a setting's curve eval.json (its checkpoints every 2 iterations)."""
    with open(where(name, args, s)[2]) as f:
        models = json.load(f)["models"]
    before = ablation.run_length(name, args) - args.iterations  # a warm critic's first W iterations: the policy had not moved
    return {int(k.rsplit("ckpt-", 1)[1]) - before: m["samples"] for k, m in models.items()}


def report(study, args, seconds):
    variants, pairs, _ = STUDIES[study]
    names = list(dict.fromkeys([n for p in pairs for n in p] + variants))
    seeds, rng = args.seeds, np.random.default_rng(0)
    sampled, greedy = ablation.task_values({n: {s: where(n, args, s)[1] for s in seeds} for n in names})
    role = lambda a, b, m: ablation.role((a, b), m, args.plan, pairs[:1], pairs[1:])  # noqa: E731  the question: the first pair
    result = {"study": study, "seeds": seeds, "iterations": args.iterations, "provenance": args.provenance,
              "settings": {n: {"pass@1": [float(np.mean(list(sampled[n][s].values()))) for s in seeds],
                               "greedy_pass@1": [float(np.mean(list(greedy[n][s].values()))) for s in seeds]} for n in names},
              "paired": [{"setting": a, "baseline": b, "metric": m, "role": role(a, b, m)} | ablation.paired(v[a], v[b], rng, args.bootstrap)
                         for a, b in pairs for m, v in (("pass@1", sampled), ("greedy_pass@1", greedy))]}
    pct, iv = ablation.pct, ablation.interval
    lines = [f"Study `{study}`: demo test split, {len(seeds)} whole-chain seeds ({', '.join(map(str, seeds))}), {args.iterations} PPO iterations "
             f"of 64 responses; percent, mean +- std over seeds.", "", "| setting | greedy pass@1 | pass@1 (T=1) |", "|---|---|---|"]
    lines += [f"| {n} | {pct(r['greedy_pass@1'])} | {pct(r['pass@1'])} |" for n, r in result["settings"].items()]
    src = args.provenance
    lines += ["", "Paired per seed (points; mean [95% t interval over seeds], shown where it excludes 0; a bootstrap over seeds and tasks "
                  "beside it, never read alone); the first row is the question. " + (f"Plan: {src['plan']} (commit {src['plan_commit'][:10]})."
                  if "plan" in src else "No plan file: every row is exploratory (a hypothesis for a new plan, not a finding)."), "",
              "| comparison | metric | role | per seed | mean [t 95%] | t interval | bootstrap 95% |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['setting']} - {p['baseline']} | {p['metric']} | {p['role']} | {', '.join(f'{100 * x:+.1f}' for x in p['diffs'])} | {iv(p)} | "
              f"{'excludes 0' if p['ci95'][0] > 0 or p['ci95'][1] < 0 else 'includes 0'} | {iv(p, 'bootstrap95')} |" for p in result["paired"]]
    extra = {"lambda": over_iterations, "k": labeling, "source": labeling, "explore": exploration, "hacks": hacks, "critic": over_iterations}[study]
    lines += extra(names, args, result, rng, iv)
    result["minutes_this_call"] = seconds / 60
    with open(f"{args.out}/{study}.json", "w") as f:
        json.dump(result, f, indent=1)
    with open(f"{args.out}/{study}.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n\nwrote {args.out}/{study}.md, {study}.json, {study}.png")


def plot_lines(path, panels):
    """panels: [(title, ylabel, {label: (x, y [len(x), seeds])})] -> plots three to a row, mean and min-max band over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cols = (len(panels) + 2) // 3, min(3, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, ylabel, series) in zip(axes.flat, panels):
        for label, (x, y) in series.items():
            y = np.asarray(y, dtype=float)
            ax.plot(x, y.mean(1), marker="o", ms=3, label=label)
            ax.fill_between(x, y.min(1), y.max(1), alpha=0.15)
        ax.set(xlabel="PPO iteration", ylabel=ylabel, title=title), ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7), fig.tight_layout(), fig.savefig(path, dpi=100)
    plt.close(fig)


def over_iterations(names, args, result, rng, iv):
    """lambda, critic: does the policy chase the PRM or the tests? Train pass rate and the dense reward per response
    over iterations (train_psgpo.py's log), and both over the budget's last quarter."""
    its = list(range(1, args.iterations + 1))
    logs = {n: [log_rows(n, args, s) for s in args.seeds] for n in names}
    series = {k: {n: (its, [[r[i][k] for r in logs[n]] for i in range(len(its))]) for n in names} for k in ("train/pass_rate", "rewards/dense")}
    plot_lines(f"{args.out}/{result['study']}.png", [("training pass rate (fresh train prompts)", "pass rate", series["train/pass_rate"]),
                                                      ("dense reward per response (Eq. 3)", "sum of r_m", series["rewards/dense"])])
    q = args.iterations // 4
    result["training"] = {n: {k: [float(np.mean([row[k] for row in r[-q:]])) for r in logs[n]] for k in series} for n in names}
    out = ["", f"Training (train_psgpo.py's log, mean of the last {q} iterations per seed; {result['study']}.png has the curves):", "",
           "| setting | train pass rate | dense reward per response |", "|---|---|---|"]
    out += [f"| {n} | {100 * np.mean(t['train/pass_rate']):.1f} +- {100 * np.std(t['train/pass_rate'], ddof=1):.1f} | "
            f"{np.mean(t['rewards/dense']):+.4f} |" for n, t in result["training"].items()]
    return out + blind_spots(names, args, result)


def blind_spots(names, args, result):
    """Does a policy learn the mistakes its PRM does not see? Per seed and planted kind: the share of first wrong lines
    of that kind the seed's PRM scores below 0 (experiments/prm_quality.py), and the share of lines each setting's test
    samples write in that wrong form (evaluate.py's planted/<kind>)."""
    quality = {s: json.load(open(f"{args.base}/s{s}/prm_quality.json")) for s in args.seeds}
    planted = {n: {s: next(iter(json.load(open(where(n, args, s)[1]))["models"].values()))["metrics"]["planted"] for s in args.seeds} for n in names}
    kinds = [k for k in planted[names[0]][args.seeds[0]] if k in sandbox.demo.PLANTED_RATES]
    result["blind_spots"] = {k: {"prm_caught": [quality[s].get(f"caught/{k}", float("nan")) for s in args.seeds]} |
                             {n: [planted[n][s][k] for s in args.seeds] for n in names} for k in kinds}
    out = ["", "Blind spots: the seed's PRM's catch rate of each planted mistake's first wrong lines (valid samples), against the share of "
               "lines each setting's test samples write in that wrong form (%):", "", "| seed | kind | PRM catches | " + " | ".join(names) + " |",
           "|---" * (len(names) + 3) + "|"]
    return out + [f"| {s} | {k} | {100 * quality[s].get(f'caught/{k}', float('nan')):.0f} | " + " | ".join(f"{100 * planted[n][s][k]:.1f}" for n in names) + " |"
                  for s in args.seeds for k in kinds]


def labeling(names, args, result, rng, iv):
    """k, source: what each labeling bought: agreement with the exact scorer, its cost, the PRM's quality."""
    rows = []
    for n in names:
        if n not in VARIANTS and n != "both":
            continue
        data, prm = (f"{args.out}/s{{}}/{n}-data", f"{args.out}/s{{}}/{n}-prm/quality.json") if n in VARIANTS else \
                    (f"{args.base}/s{{}}/prm_data", f"{args.base}/s{{}}/prm_quality.json")
        summ = [json.load(open(data.format(s) + "/summary.json")) for s in args.seeds]
        qual = [json.load(open(prm.format(s))) for s in args.seeds]
        rows.append({"setting": n, "k": summ[0]["k"], "responses": [x["responses"] for x in summ],
                     "completions": [x["programs_per_failing"] * x["failing"] for x in summ],
                     "minutes": [(x["seconds_sampling"] + x["seconds_judging"]) / 60 for x in summ],
                     "labels_agree": [x["labels_agree_with_oracle"] for x in summ], "correct_labeled_-1": [x["correct_lines_labeled_-1"] for x in summ],
                     "wrong_labeled_+1": [x["wrong_lines_labeled_+1"] for x in summ], "kept_rows": [x["kept_rows"] for x in summ],
                     "prm_step_auc": [x["step_auc"] for x in qual], "prm_correct_below_0": [x["correct_below_0"] for x in qual],
                     "prm_caught_missing_parens": [x.get("caught/missing_parens", float("nan")) for x in qual]})
    result["labeling"] = rows
    m = lambda xs, f="{:.3f}": f.format(np.mean(xs))  # noqa: E731
    out = ["", "Labeling and the PRM (mean over seeds; `both` is the ablation's: K = 20 at T = 1 from the baseline's 4 checkpoints; "
               "agreement and the PRM's quality against the exact scorer, which no stage uses):", "",
           "| labels of | K | completions sampled | minutes | labels agree | correct labeled -1 | wrong labeled +1 | kept rows | PRM step AUC "
           "| PRM correct < 0 | PRM catches missing_parens |", "|---" * 11 + "|"]
    out += [f"| {r['setting']} | {r['k']} | {m(r['completions'], '{:.0f}')} | {m(r['minutes'], '{:.1f}')} | {m(r['labels_agree'])} | "
            f"{m(r['correct_labeled_-1'])} | {m(r['wrong_labeled_+1'])} | {m(r['kept_rows'], '{:.0f}')} | {m(r['prm_step_auc'])} | "
            f"{m(r['prm_correct_below_0'])} | {m(r['prm_caught_missing_parens'])} |" for r in rows]
    gains = {r["setting"]: np.array(result["settings"][r["setting"]]["pass@1"]) - np.array(result["settings"]["sparse_warm_critic"]["pass@1"]) for r in rows}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (n, g) in enumerate(gains.items()):
        ax.scatter([i] * len(g), 100 * g, color="C0", alpha=0.5), ax.plot([i - 0.2, i + 0.2], [100 * g.mean()] * 2, color="k")
    ax.axhline(0, color="k", lw=0.8), ax.set_xticks(range(len(gains)), [f"{n}\n({r['k']} / {np.mean(r['completions']) / 1000:.1f}k)" for n, r in
                                                                       zip(gains, rows)], fontsize=7)
    ax.set(ylabel="pass@1 - sparse_warm_critic (points)", title=f"{result['study']}: PSGPO's gain per labeling (K / completions)")
    ax.grid(alpha=0.3), fig.tight_layout(), fig.savefig(f"{args.out}/{result['study']}.png", dpi=100)
    plt.close(fig)
    return out


def exploration(names, args, result, rng, iv):
    """explore: is a setting's test gain already in its training pass rate (fresh train prompts: the demo's 20,000
    never repeat in 1,024 rollouts), and which planted mistakes go, when, in training and on test."""
    logs = {n: [log_rows(n, args, s) for s in args.seeds] for n in names}
    kinds = sorted(k.split("/", 1)[1] for k in logs[names[0]][0][0] if k.startswith("planted/"))
    its, q = list(range(1, args.iterations + 1)), args.iterations // 4
    train = {n: {s: {"last": float(np.mean([row["train/pass_rate"] for row in r[-q:]]))} for s, r in zip(args.seeds, logs[n])} for n in names}
    test_planted = {n: [json.load(open(where(n, args, s)[1]))["models"] for s in args.seeds] for n in names}
    test_planted = {n: [next(iter(m.values()))["metrics"]["planted"] for m in ms] for n, ms in test_planted.items()}
    result["train_pass_rate_last_quarter"] = {n: [v["last"] for v in train[n].values()] for n in names}
    result["paired_train_pass_rate"] = [{"setting": a, "baseline": b} | ablation.paired(train[a], train[b], rng, args.bootstrap) for a, b in STUDIES["explore"][1]]
    result["planted"] = {n: {k: {"train_last_quarter": [float(np.mean([row[f"planted/{k}"] for row in r[-q:]])) for r in logs[n]],
                                 "test": [p[k] for p in test_planted[n]]} for k in kinds} for n in names}
    out = ["", f"Training pass rate (mean of the last {q} iterations' rollouts, fresh train prompts) against test, paired per seed:", "",
           "| comparison | train pass rate | test pass@1 |", "|---|---|---|"]
    test = {(p["setting"], p["baseline"]): p for p in result["paired"] if p["metric"] == "pass@1"}
    out += [f"| {p['setting']} - {p['baseline']} | {iv(p)} | {iv(test[(p['setting'], p['baseline'])])} |" for p in result["paired_train_pass_rate"]]
    out += ["", "Planted mistakes: share of the lines where a kind can occur written in its wrong form (training: last quarter's rollouts; "
                "test: the final policy's samples), mean over seeds:", "", "| setting | " + " | ".join(f"{k} train | {k} test" for k in kinds) + " |",
            "|---" * (2 * len(kinds) + 1) + "|"]
    out += [f"| {n} | " + " | ".join(f"{100 * np.mean(result['planted'][n][k]['train_last_quarter']):.1f} | {100 * np.mean(result['planted'][n][k]['test']):.1f}"
                                     for k in kinds) + " |" for n in names]
    valid = {n: [curve_samples(n, args, s) for s in args.seeds] for n in names}
    vits = {n: [i for i in sorted(valid[n][0]) if i > 0] for n in names}  # the budget's checkpoints
    plot_lines(f"{args.out}/explore.png", [("training pass rate", "pass rate", {n: (its, [[r[i]["train/pass_rate"] for r in logs[n]] for i in range(len(its))])
                                                                                for n in names}),
                                           ("valid sampled pass@1 (curves)", "pass@1", {n: (vits[n], [[np.mean([x["passed"] for x in c[i] if x["kind"] == "sample"])
                                                                                                       for c in valid[n]] for i in vits[n]]) for n in names})]
               + [(f"planted {k} in training rollouts", "share written wrong", {n: (its, [[r[i][f"planted/{k}"] for r in logs[n]] for i in range(len(its))])
                                                                                 for n in names}) for k in kinds])
    return out


def hacks(names, args, result, rng, iv):
    """hacks: the share of sampled valid responses (curves, every 2 iterations) with a try statement or a dead
    assignment, and their code lines, per setting; at the end of the budget paired per seed and task."""
    share = {}  # {name: {seed: {iteration: {task: {form: mean over the task's samples}}}}}
    for n in names:
        share[n] = {}
        for s in args.seeds:
            share[n][s] = {}
            for it, samples in curve_samples(n, args, s).items():
                per = {}
                for x in samples:
                    if x["kind"] == "sample":
                        per.setdefault(x["task_id"], []).append(hack_forms(x["completion"]))
                share[n][s][it] = {t: {k: float(np.mean([h[k] for h in hs])) for k in hs[0]} for t, hs in per.items()}
    forms, last = ["dead", "try", "code_lines", "neutral_lines"], args.iterations
    its = sorted(share[names[0]][args.seeds[0]])
    mean = lambda n, it, k: [np.mean([v[k] for v in share[n][s][it].values()]) for s in args.seeds]  # noqa: E731
    result["hacks"] = {n: {k: [mean(n, it, k) for it in its] for k in forms} | {"iterations": its} for n in names}
    at_end = {k: {n: {s: {t: v[k] for t, v in share[n][s][last].items()} for s in args.seeds} for n in names} for k in forms}
    result["paired_hacks"] = [{"setting": a, "baseline": b, "form": k} | ablation.paired(at_end[k][a], at_end[k][b], rng, args.bootstrap)
                              for a, b in STUDIES["hacks"][1] for k in forms]
    out = ["", f"Hacks on valid samples (first {args.curve_problems} tasks, 2 samples each) at iteration {last}, mean over seeds "
               "(dead: an assignment never read; try: a try statement; lines per response):", "",
           "| setting | " + " | ".join(forms) + " |", "|---" * (len(forms) + 1) + "|"]
    out += [f"| {n} | " + " | ".join(f"{np.mean(result['hacks'][n][k][-1]):.3f}" for k in forms) + " |" for n in names]
    out += ["", "Paired at the end (share of responses, or lines; mean [95% t interval over seeds]):", "", "| comparison | form | mean [t 95%] |", "|---|---|---|"]
    out += [f"| {p['setting']} - {p['baseline']} | {p['form']} | {p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] |" for p in result["paired_hacks"]]
    out += blind_spots(names, args, result)
    plot_lines(f"{args.out}/hacks.png", [(f"{k} ({'share of responses' if k in ('dead', 'try') else 'per response'})", k,
                                          {n: (its, result["hacks"][n][k]) for n in names}) for k in forms])
    return out


if __name__ == "__main__":
    main()
