"""experiments/ablation.py - the demo's ablation as a study: the whole chain per seed, a fair sparse baseline,
the critic controls, learning curves, and two claims with paired intervals (paper v1 Table 1, Figures 3, 4).

    python experiments/ablation.py --seeds 10 11 12 13 14 --out runs/ablation       # the study: test split
    python experiments/ablation.py --seeds 100 101 --split valid --out runs/design   # choosing a design: valid split

Per seed s, every stage from the shipped SFT policy with --seed s, so the seeds' spread holds every stage's
variance (each command is printed; a re-run skips what is done and resumes a PPO run cut off):
  1. sparse     PPO with the unit-test reward only (a checkpoint every 2 iterations)
  2. labels     label_prm_data.py on 4 evenly spaced checkpoints of that run (the paper's PRM data)
  3. PRM, ORM   train_prm.py on those labels; the ORM (--labels outcome) on the same rows, every code line
                labeled by the response's verdict: outcome supervision from the same labeled responses
  4. settings   each of --settings from that seed's PRM and ORM
  5. evaluation every final policy on --split (greedy and --n samples at T = 1); the --curves settings'
                checkpoints every 2 iterations on the first --curve_problems valid tasks; the PRM against
                exact line labels on the valid samples of the SFT policy and the last sparse and both
                checkpoints (benchmarks/prm_quality.py)
Settings (train_psgpo.py flags; {prm} and {orm}: the seed's own):
  sparse               --dense_reward false --value_init policy       the paper's RL baseline
  sparse_warm_critic   sparse, --critic_warmup W: the critic trains alone for W iterations before the policy
                       moves (W more iterations of rollouts); the fair baseline of claim (a)
  value_init_orm       --dense_reward false --value_init prm --prm {orm}: a critic started from a trained
                       outcome model; tells process supervision from "any trained critic" (claim (b))
  value_init           --dense_reward false --value_init prm --prm {prm}
  dense                --dense_reward true --value_init policy
  both                 --dense_reward true --value_init prm: PSGPO
  both_returns_scale   both, --value_scale returns: the copied PRM mapped from [-1, 1] to the returns' [0, 1]
  oracle               --dense_reward true --value_init policy --prm oracle: the exact step scorer (a ceiling)
The claims, stated before the study ran: the primary metric is sampled pass@1 on --split at the end of the
budget, paired per seed; (a) both - sparse_warm_critic, (b) both - value_init_orm, each with a 95% t interval
over seeds and, beside it, a bootstrap over seeds and tasks. Everything else is secondary, reported with its
paired interval against sparse and, for what each part adds, against its control (CONTRASTS). Writes
results.md, results.json (every number per seed), curves.png (unless --curves none), bestofk.png, gain_by_steps.png under --out.
"""
import atexit
import functools
import json
import multiprocessing
import os
import runpy
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {
    "sparse": "--dense_reward false --value_init policy",
    "sparse_warm_critic": "--dense_reward false --value_init policy --critic_warmup {warm}",
    "value_init_orm": "--dense_reward false --value_init prm --prm {orm}",
    "value_init": "--dense_reward false --value_init prm --prm {prm}",
    "dense": "--dense_reward true --value_init policy --prm {prm}",
    "both": "--dense_reward true --value_init prm --prm {prm}",
    "both_returns_scale": "--dense_reward true --value_init prm --prm {prm} --value_scale returns",
    "oracle": "--dense_reward true --value_init policy --prm oracle",
}
CLAIMS = [("both", "sparse_warm_critic"), ("both", "value_init_orm")]
CONTRASTS = [("value_init", "value_init_orm"), ("both", "value_init"), ("both", "dense"), ("dense", "sparse_warm_critic"),
             ("both_returns_scale", "both"), ("oracle", "dense")]  # what each part adds against its control (secondary)


def starts_from(setting):
    """The models a setting starts from, of the seed's PRM and ORM ({prm} and {orm} in its flags)."""
    return [m for m in ("prm", "orm") if "{" + m + "}" in SETTINGS[setting]]


def run_length(setting, args):
    """PPO iterations of a setting's run: the warm critic's W iterations come before the budget's."""
    return args.iterations + (args.warm if setting == "sparse_warm_critic" else 0)


T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]  # t quantiles, df 1..15


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [10, 11, 12, 13, 14], metadata={"help": "one whole chain per seed"})
    out: str = field(default="runs/ablation", metadata={"help": "output folder: s<seed>/ per chain, eval/, results and plots"})
    split: str = field(default="test", metadata={"help": "where the final policies are evaluated: test (reporting) | valid (choosing a design)"})
    settings: list[str] = field(default_factory=lambda: list(SETTINGS), metadata={"help": "settings run for every seed (and sparse, whose checkpoints the labels come from)"})
    curves: list[str] = field(default_factory=lambda: ["sparse", "sparse_warm_critic", "value_init_orm", "both"], metadata={"help": "settings whose checkpoints are evaluated every 2 iterations on valid (none: no curves)"})
    iterations: int = field(default=16, metadata={"help": "PPO iterations the policy moves (a multiple of 8: labels from 4 checkpoints, curves every 2)"})
    warm: int = field(default=4, metadata={"help": "sparse_warm_critic: iterations the critic trains alone first (4: chosen on valid, docs/demo.md)"})
    policy: str = field(default="checkpoints/demo-sft", metadata={"help": "the SFT policy every chain starts from"})
    n: int = field(default=4, metadata={"help": "sampled completions per task in the final evaluation (plus one greedy)"})
    curve_problems: int = field(default=200, metadata={"help": "valid tasks each curve checkpoint is evaluated on (greedy + 2 samples)"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples of seeds and tasks"})
    ppo: str = field(default="", metadata={"help": "extra train_psgpo.py flags for every run (the tests' tiny sizes)"})
    label: str = field(default="", metadata={"help": "extra label_prm_data.py flags"})
    prm_flags: str = field(default="", metadata={"help": "extra train_prm.py flags"})
    evaluate: str = field(default="", metadata={"help": "extra evaluate.py flags"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    parallel: int = field(default=2, metadata={"help": "commands at once (CPU: the cores are shared among them)"})


def run(cmd, log, threads):
    """One stage command (printed first), its output to `log`; one clear line if it fails. A `python SCRIPT ...`
    command runs as that script's __main__ in a process forked from a warm one (torch and transformers already
    imported: ~1.5 s a command instead of ~5), exactly as the printed command would run it: the same argv,
    working directory, threads and exit handlers, and the same outputs byte for byte (tests/test_ablation.py)."""
    print("$ " + " ".join("python" if c == sys.executable else shlex.quote(str(c)) for c in cmd), flush=True)
    cmd = [str(c) for c in cmd]
    if cmd[0] == sys.executable and cmd[1].endswith(".py"):
        p = warm_processes().Process(target=run_script, args=(cmd[1:], log, threads))
        p.start(), p.join()
        failed = p.exitcode
    else:
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        with open(log, "a") as f:
            failed = subprocess.run(cmd, cwd=HERE, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if failed:
        raise SystemExit(f"ablation.py: failed: {' '.join(cmd)} (see {log})")


@functools.cache
def warm_processes():
    """A forkserver that has imported what every stage imports (a process with no threads yet, so forking it is safe)."""
    sys.path.insert(0, HERE)  # where the forkserver finds sandbox
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "sandbox"])
    return ctx


def run_script(argv, log, threads):
    """In a forked process: `python argv...` as a fresh interpreter would run it, its output appended to `log`."""
    os.chdir(HERE)
    os.environ |= {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    import torch  # already imported by the forkserver
    torch.set_num_threads(threads)  # what OMP_NUM_THREADS does in a fresh interpreter (torch is already imported)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1), os.dup2(fd, 2)
    sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # a forked process ends with os._exit: the script's exit handlers (the judge's workers) run here
        sys.stdout.flush(), sys.stderr.flush()


def schedule(jobs, parallel):
    """jobs: {name: (names it needs done first, function)}; runs each once its needs are done, `parallel` at once."""
    done, running = set(), {}
    with ThreadPoolExecutor(parallel) as pool:
        while len(done) < len(jobs):
            for name, (needs, fn) in jobs.items():
                if name not in done and name not in running and set(needs) <= done and len(running) < parallel:
                    running[name] = pool.submit(fn)
            if not running:
                raise SystemExit(f"ablation.py: jobs whose needs are never met: {sorted(set(jobs) - done)}")
            finished, _ = wait(running.values(), return_when=FIRST_COMPLETED)
            for name in [n for n, f in running.items() if f in finished]:
                running.pop(name).result()  # a failed job stops the study with its one line
                done.add(name)


def per_task(eval_json, model=None):
    """{task_id: (greedy passed, mean of the sampled verdicts)} of one model in an evaluate.py eval.json."""
    with open(eval_json) as f:
        models = json.load(f)["models"]
    out = {}
    for s in models[model or next(iter(models))]["samples"]:
        g, samples = out.setdefault(s["task_id"], [None, []])
        if s["kind"] == "greedy":
            out[s["task_id"]][0] = s["passed"]
        else:
            samples.append(s["passed"])
    return {t: (g, float(np.mean(s))) for t, (g, s) in out.items()}


def task_values(evals):
    """evals: {name: {seed: eval.json}} -> (sampled, greedy), each {name: {seed: {task: value}}} (per_task's two halves)."""
    tasks = {n: {s: per_task(path) for s, path in by_seed.items()} for n, by_seed in evals.items()}
    return ({n: {s: {t: v[1] for t, v in ts.items()} for s, ts in by_seed.items()} for n, by_seed in tasks.items()},
            {n: {s: {t: float(v[0]) for t, v in ts.items()} for s, ts in by_seed.items()} for n, by_seed in tasks.items()})


def pct(xs):
    """Fractions as percent, mean +- sample std (one value: itself)."""
    return f"{100 * np.mean(xs):.1f} +- {100 * np.std(xs, ddof=1):.1f}" if len(xs) > 1 else f"{100 * xs[0]:.1f}"


def interval(p, k="ci95"):
    """A paired() result as points: mean [lo, hi] of its t (ci95) or bootstrap (bootstrap95) interval."""
    return f"{100 * p['mean']:+.1f} [{100 * p[k][0]:+.1f}, {100 * p[k][1]:+.1f}]"


def paired(a, b, rng, reps):
    """a, b: {seed: {task: value}} of two settings. Per seed, the difference of the task means; their mean with a
    95% t interval over seeds; and a bootstrap interval over seeds and tasks (seeds resampled, then tasks within
    each, the same tasks for both settings)."""
    seeds = sorted(a)
    tasks = sorted(a[seeds[0]])
    d = np.array([[a[s][t] - b[s][t] for t in tasks] for s in seeds])  # [seeds, tasks]
    boot = [d[rng.integers(0, len(seeds), len(seeds))][:, rng.integers(0, len(tasks), len(tasks))].mean() for _ in range(reps)]
    return t_interval(d.mean(1)) | {"bootstrap95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]}


def t_interval(diffs):
    """Per-seed differences -> their mean with a 95% t interval over seeds."""
    diffs = np.asarray(diffs, dtype=float)
    half = T975[min(len(diffs) - 1, len(T975)) - 1] * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return {"diffs": diffs.tolist(), "mean": float(diffs.mean()), "ci95": [float(diffs.mean() - half), float(diffs.mean() + half)]}


def flat(metrics, prefix=""):
    """evaluate.py's metrics as one level: {"by_steps/4/pass@1": ..., "planted/true_div": ...}."""
    out = {}
    for key, v in metrics.items():
        out |= flat(v, f"{prefix}{key}/") if isinstance(v, dict) else {f"{prefix}{key}": v}
    return out


def reach(iterations, curve, level):
    """The first iteration at which a mean curve reaches `level` (None if it never does)."""
    return next((i for i, y in zip(iterations, curve) if y >= level), None)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    args.curves = [c for c in args.curves if c != "none"]
    settings = list(dict.fromkeys(["sparse"] + args.settings))
    if unknown := [s for s in settings + args.curves if s not in SETTINGS]:
        raise SystemExit(f"ablation.py: unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    models = {m for st in settings for m in starts_from(st)}
    if args.iterations % 8 or args.split not in ("test", "valid"):
        raise SystemExit("ablation.py: --iterations must be a multiple of 8 and --split test or valid")
    O, py, t0 = args.out, sys.executable, time.time()
    threads = max(1, (os.cpu_count() or 2) // args.parallel) if args.device == "cpu" else 4
    os.makedirs(os.path.join(O, "eval"), exist_ok=True)
    common = ["--device", args.device]

    def last(s, setting):  # the final checkpoint: warm-critic runs take W more iterations
        return f"{O}/s{s}/{setting}/ckpt-{run_length(setting, args):04d}"

    def step(name, cmd, done_when, s):  # one command, skipped when its output is there
        def fn():
            if not os.path.exists(done_when):
                run(cmd, f"{O}/s{s}/{name}.log", threads)
        return fn

    jobs = {}
    for s in args.seeds:
        d = f"{O}/s{s}"
        os.makedirs(d, exist_ok=True)
        for setting in settings:
            flags = SETTINGS[setting].format(prm=f"{d}/prm", orm=f"{d}/orm", warm=args.warm).split()
            after = [f"{s}/{m}" for m in starts_from(setting)]
            jobs[f"{s}/{setting}"] = (after, step(setting, [py, "train_psgpo.py", "--policy", args.policy, "--seed", s, "--out", f"{d}/{setting}",
                                                             "--iterations", run_length(setting, args), "--save_every", 2, "--resume", "true", *flags, *common,
                                                             *args.ppo.split()], f"{last(s, setting)}/config.json", s))
            jobs[f"{s}/eval/{setting}"] = ([f"{s}/{setting}"], step(f"eval-{setting}", [py, "evaluate.py", "--model", last(s, setting), "--split", args.split,
                                           "--n", args.n, "--seed", s, "--threads", threads, "--out", f"{O}/eval/s{s}-{setting}", *common,
                                           *args.evaluate.split()], f"{O}/eval/s{s}-{setting}/eval.json", s))
        for setting in args.curves:  # every 2 iterations on the first valid tasks (the warm-up's too)
            ckpts = [f"{d}/{setting}/ckpt-{i:04d}" for i in range(2, run_length(setting, args) + 1, 2)]
            jobs[f"{s}/curve/{setting}"] = ([f"{s}/{setting}"], step(f"curve-{setting}", [py, "evaluate.py", "--model", *ckpts, "--split", "valid", "--n", 2,
                                            "--max_problems", args.curve_problems, "--seed", s, "--threads", threads, "--out", f"{O}/curves/s{s}-{setting}",
                                            *common, *args.evaluate.split()], f"{O}/curves/s{s}-{setting}/by_length.png", s))
        every = args.iterations // 4
        if not models:  # sparse alone (choosing a budget): no labels
            continue
        jobs[f"{s}/labels"] = ([f"{s}/sparse"], step("labels", [py, "label_prm_data.py", "--policy", *[f"{d}/sparse/ckpt-{i * every:04d}" for i in range(1, 5)],
                                                                  "--seed", s, "--out", f"{d}/prm_data", *common, *args.label.split()], f"{d}/prm_data/summary.json", s))
        for model, extra in [m for m in (("prm", []), ("orm", ["--labels", "outcome"])) if m[0] in models | {"prm"}]:
            jobs[f"{s}/{model}"] = ([f"{s}/labels"], step(model, [py, "train_prm.py", "--data", f"{d}/prm_data", "--init", args.policy, "--seed", s,
                                                                  "--out", f"{d}/{model}", *extra, *common, *args.prm_flags.split()], f"{d}/{model}/metrics.json", s))
        jobs[f"{s}/quality"] = ([f"{s}/prm", "sft/curve"] + [f"{s}/curve/{c}" for c in ("sparse", "both") if c in args.curves],
                                step("quality", [py, "benchmarks/prm_quality.py", "--prm", f"{d}/prm", "--out", f"{d}/prm_quality.json", "--eval",
                                                 f"{O}/curves/sft/eval.json", *[f"{O}/curves/s{s}-{c}/eval.json" for c in ("sparse", "both") if c in args.curves],
                                                 "--last_only", "true"], f"{d}/prm_quality.json", s))
    jobs["sft/curve"] = ([], step("sft", [py, "evaluate.py", "--model", args.policy, "--split", "valid", "--n", 2, "--max_problems", args.curve_problems,
                                          "--threads", threads, "--out", f"{O}/curves/sft", *common, *args.evaluate.split()], f"{O}/curves/sft/by_length.png", args.seeds[0]))
    jobs["sft/eval"] = ([], step("sft-eval", [py, "evaluate.py", "--model", args.policy, "--split", args.split, "--n", args.n, "--threads", threads,
                                              "--out", f"{O}/eval/sft", *common, *args.evaluate.split()], f"{O}/eval/sft/eval.json", args.seeds[0]))
    schedule(jobs, args.parallel)
    report(args, settings, time.time() - t0)


def report(args, settings, seconds):
    """results.json, results.md and the plots from every chain's outputs."""
    O, seeds = args.out, args.seeds

    def metrics(folder, model=None):
        with open(os.path.join(folder, "eval.json")) as f:
            models = json.load(f)["models"]
        return models[model or next(iter(models))]["metrics"]

    evals = {st: [metrics(f"{O}/eval/s{s}-{st}") for s in seeds] for st in settings}
    sampled, greedy = task_values({st: {s: f"{O}/eval/s{s}-{st}/eval.json" for s in seeds} for st in settings})
    rng = np.random.default_rng(0)
    claims = [{"setting": a, "baseline": b, "metric": "pass@1"} | paired(sampled[a], sampled[b], rng, args.bootstrap) for a, b in CLAIMS
              if a in settings and b in settings]
    secondary = [{"setting": st, "baseline": "sparse", "metric": m} | paired(v[st], v["sparse"], rng, args.bootstrap)
                 for st in settings if st != "sparse" for m, v in (("pass@1", sampled), ("greedy_pass@1", greedy))]
    secondary += [{"setting": a, "baseline": b, "metric": "pass@1"} | paired(sampled[a], sampled[b], rng, args.bootstrap)
                  for a, b in CONTRASTS if a in settings and b in settings]
    curves = {}
    for st in args.curves:
        its = list(range(2, run_length(st, args) + 1, 2))
        runs = [json.load(open(f"{O}/curves/s{s}-{st}/eval.json"))["models"] for s in seeds]
        curves[st] = {"iterations": its} | {m: [[r[f"{O}/s{s}/{st}/ckpt-{i:04d}"]["metrics"][m] for s, r in zip(seeds, runs)] for i in its]
                                            for m in ("pass@1", "greedy_pass@1")}
    quality = [json.load(open(f"{O}/s{s}/prm_quality.json")) for s in seeds if os.path.exists(f"{O}/s{s}/prm_quality.json")]
    sft = metrics(f"{O}/eval/sft")
    results = {"seeds": seeds, "split": args.split, "iterations": args.iterations, "warm": args.warm, "n": args.n, "curve_problems": args.curve_problems,
               "settings": {"sft": {k: [v] for k, v in flat(sft).items()}} | {st: {k: [flat(m)[k] for m in ms] for k in flat(ms[0])} for st, ms in evals.items()},
               "paired": claims, "secondary": secondary, "prm_quality": quality, "curves": curves,
               "labeling": [json.load(open(f"{O}/s{s}/prm_data/summary.json")) for s in seeds if quality], "minutes_this_call": seconds / 60}
    write(O, results)


def write(O, results):
    """results.json, results.md and the plots under O, from the results alone (also experiments/pool_seeds.py's)."""
    with open(os.path.join(O, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    seeds, curves, quality, sft = results["seeds"], results["curves"], results["prm_quality"], results["settings"]["sft"]
    evals = {st: v for st, v in results["settings"].items() if st != "sft"}  # {setting: {metric: [one value per seed]}}

    def iv(c, k="ci95"):  # a run's bootstrap, or each pooled run's (pool_seeds.py)
        return interval(c, k) if k in c else "; ".join(f"[{100 * b[0]:+.1f}, {100 * b[1]:+.1f}] (seeds {r})" for r, b in c.get(k + "_by_run", {}).items())
    per_seed = lambda p: ", ".join(f"{100 * x:+.1f}" for x in p["diffs"])  # noqa: E731
    lines = [f"Demo {results['split']} split, {len(seeds)} whole-chain seeds ({', '.join(map(str, seeds))}), {results['iterations']} PPO iterations of 64 "
             f"prompts; percent, mean +- sample std over seeds.", "",
             f"| setting | greedy pass@1 | pass@1 (T=1) | pass@{results['n']} |", "|---|---|---|---|",
             f"| SFT | {100 * sft['greedy_pass@1'][0]:.1f} | {100 * sft['pass@1'][0]:.1f} | {100 * sft['best_of_k'][0][-1]:.1f} |"]
    lines += [f"| {st} | {pct(m['greedy_pass@1'])} | {pct(m['pass@1'])} | {pct([b[-1] for b in m['best_of_k']])} |" for st, m in evals.items()]
    lines += ["", "The claims (sampled pass@1, paired per seed; points, mean [95% t interval over seeds]; bootstrap over seeds and tasks):", "",
              "| claim | per seed | mean [t 95%] | bootstrap 95% |", "|---|---|---|---|"]
    lines += [f"| {c['setting']} - {c['baseline']} | {per_seed(c)} | {iv(c)} | {iv(c, 'bootstrap95')} |" for c in results["paired"]]
    lines += ["", "Secondary (each setting - sparse, then what each part adds against its control; paired per seed):", "",
              "| comparison | metric | per seed | mean [t 95%] | bootstrap 95% |", "|---|---|---|---|---|"]
    lines += [f"| {c['setting']} - {c['baseline']} | {c['metric']} | {per_seed(c)} | {iv(c)} | {iv(c, 'bootstrap95')} |" for c in results["secondary"]]
    level = np.mean(curves["sparse"]["pass@1"][-1]) if "sparse" in curves else None
    if level is not None:
        lines += ["", f"Learning curves (valid, first {results['curve_problems']} tasks, 2 samples): iterations to reach the sparse baseline's final "
                      f"mean sampled pass@1 ({100 * level:.1f}%):", "", "| setting | iterations | final mean pass@1 |", "|---|---|---|"]
        lines += [f"| {st} | {reach(c['iterations'], np.mean(c['pass@1'], 1), level)} | {100 * np.mean(c['pass@1'][-1]):.1f} |" for st, c in curves.items()]
    keys = [k for k in (quality or [{}])[0] if k.startswith(("step_auc", "correct_below_0", "caught/"))]
    lines += [] if not quality else ["", "The PRM of each seed against exact line labels (valid samples):", "", "| seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(f"{q[k]:.3f}" for k in keys) + " |" for s, q in zip(seeds, quality)]
    with open(os.path.join(O, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    pngs = plots(O, results["settings"], curves)
    print("\n".join(lines) + f"\n\nwrote {O}/results.md, results.json, {', '.join(pngs)}")


def plots(O, settings, curves):
    """curves.png (valid pass@1 over iterations, mean and min-max band over seeds), bestofk.png (Figure 3) and
    gain_by_steps.png (Figure 4: each setting's pass@1 gain over sparse by task length, mean and band).
    settings: results.json's {setting: {metric: [one value per seed]}}. Returns the names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if curves:  # --curves none: no curves.png
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, m in zip(axes, ("pass@1", "greedy_pass@1")):
            for st, c in curves.items():
                y = 100 * np.array(c[m])  # [iterations, seeds]
                ax.plot(c["iterations"], y.mean(1), marker="o", label=st)
                ax.fill_between(c["iterations"], y.min(1), y.max(1), alpha=0.15)
            ax.set(xlabel="PPO iteration", ylabel=f"valid {m} (%)", title=f"learning curves: {m} (mean, min-max over seeds)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8), fig.tight_layout(), fig.savefig(os.path.join(O, "curves.png"), dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for st, m in settings.items():
        y = 100 * np.array(m["best_of_k"])  # [seeds, K]
        ax.plot(range(1, y.shape[1] + 1), y.mean(0), marker="o", label=st)
        ax.fill_between(range(1, y.shape[1] + 1), y.min(0), y.max(0), alpha=0.1)
    ax.set(xlabel="K (samples)", ylabel="% tasks solved within K", title="best-of-K (Figure 3)"), ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout(), fig.savefig(os.path.join(O, "bestofk.png"), dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    steps = [k.split("/")[1] for k in settings["sparse"] if k.startswith("by_steps/") and k.endswith("/pass@1")]
    by_steps = lambda st: np.array([settings[st][f"by_steps/{k}/pass@1"] for k in steps]).T  # noqa: E731  [seeds, lengths]
    for st in [s for s in settings if s not in ("sft", "sparse")]:
        y = 100 * (by_steps(st) - by_steps("sparse"))  # paired per seed
        ax.plot(steps, y.mean(0), marker="o", label=f"{st} - sparse")
        ax.fill_between(steps, y.min(0), y.max(0), alpha=0.1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="lines in the reference (steps + return)", ylabel="pass@1 difference (points)", title="gain by length (Figure 4)")
    ax.grid(alpha=0.3), ax.legend(fontsize=7), fig.tight_layout(), fig.savefig(os.path.join(O, "gain_by_steps.png"), dpi=100)
    plt.close(fig)
    return (["curves.png"] if curves else []) + ["bestofk.png", "gain_by_steps.png"]

if __name__ == "__main__":
    main()
