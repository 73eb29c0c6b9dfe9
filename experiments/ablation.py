"""experiments/ablation.py - the demo's ablation as a study: the whole chain per seed, a warm-critic sparse baseline,
the critic controls, learning curves, and two claims with paired intervals (paper v1 Table 1, Figures 3, 4).

    python experiments/ablation.py --seeds 10 11 12 13 14 --out runs/ablation       # the study: test split
    python experiments/ablation.py --seeds 100 101 --split valid --out runs/design   # choosing a design: valid split

Per seed s, every stage from the shipped SFT policy with --seed s, so the seeds' spread holds every stage's
variance (each command is printed; a re-run skips what is done and resumes a PPO run cut off):
  1. sparse     PPO with the unit-test reward only (a checkpoint every 2 iterations)
  2. labels     label_prm_data.py on 4 evenly spaced checkpoints of that run (the paper's PRM data)
  3. PRM, ORMs   train_prm.py on those labels (MODELS): the PRM; the ORM (--labels outcome), every code line labeled
                by the response's verdict, on the same rows (the rows the search selected: it needs the search too);
                orm_all, the verdicts of every labeled response (all an outcome model needs: no binary search)
  4. settings   each of --settings from that seed's PRM and ORMs (sparse runs unevaluated unless named)
  5. evaluation every final policy on --split (greedy and --n samples at T = 1); the --curves settings'
                checkpoints every 2 iterations on the first --curve_problems valid tasks; the PRM against
                exact line labels on the valid samples of the SFT policy and the last sparse and both
                checkpoints (experiments/prm_quality.py)
Settings (train_psgpo.py flags; {prm}, {orm}, {orm_all}: the seed's own):
  sparse               --dense_reward false --value_init policy       the paper's RL baseline
  sparse_warm_critic   sparse, --critic_warmup W: the critic trains alone for W iterations before the policy
                       moves (W more iterations of rollouts; its critic's fit: explained variance at start)
  value_init_orm       --dense_reward false --value_init prm --prm {orm}: the critic from an outcome model
  value_init           --dense_reward false --value_init prm --prm {prm}
  dense                --dense_reward true --value_init policy
  both                 --dense_reward true --value_init prm: PSGPO
  dense_orm, both_orm  dense and both with the ORM in the PRM's place: outcome supervision in the same roles
  both_orm_all         both_orm with orm_all
  both_returns_scale   both, --value_scale returns: the copied PRM mapped from [-1, 1] to the returns' [0, 1]
  oracle               --dense_reward true --value_init policy --prm oracle: the exact step scorer (a ceiling)
The claims (--claims, setting:baseline) are on sampled pass@1 on --split at the end of the budget, paired per seed,
each with a 95% t interval over seeds (shown where it excludes 0) and, beside it, a bootstrap over seeds and tasks.
A comparison is a claim or a planned one only when --plan names a plan file committed before the run (the plan
states the claims, settings, seeds, budget, metric and samples per task; results.json records its commit and the
code's); every other comparison (each setting - sparse, CONTRASTS: what each part adds against its control) is
reported as exploratory. Also per run: pass@4, the policy's entropy and KL to the SFT policy at the end, the
critic's explained variance on the first rollouts the policy learns from, and the evaluation's own noise (the
standard error of a seed's pass@1 from its n samples per task). Writes results.md, results.json (every number per
seed; the call's flags as given, `args`; each stage's problem set, `dataset`; every stage's command, `commands`; the
code's and the plan's commits, `provenance`), curves.png (unless --curves none), bestofk.png, gain_by_steps.png and
minutes.jsonl under --out. experiments/pool_seeds.py pools calls that differ in their seeds only. t_p_value, holm
and power are the arithmetic of a reading's p value, a multiplicity correction and a plan's power (docs/results/demo.md).
"""
import atexit
import functools
import hashlib
import json
import math
import multiprocessing.connection
import os
import runpy
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import sandbox  # noqa: E402
SETTINGS = {
    "sparse": "--dense_reward false --value_init policy",
    "sparse_warm_critic": "--dense_reward false --value_init policy --critic_warmup {warm}",
    "value_init_orm": "--dense_reward false --value_init prm --prm {orm}",
    "value_init": "--dense_reward false --value_init prm --prm {prm}",
    "dense": "--dense_reward true --value_init policy --prm {prm}",
    "both": "--dense_reward true --value_init prm --prm {prm}",
    "dense_orm": "--dense_reward true --value_init policy --prm {orm}",
    "both_orm": "--dense_reward true --value_init prm --prm {orm}",
    "both_orm_all": "--dense_reward true --value_init prm --prm {orm_all}",
    "both_returns_scale": "--dense_reward true --value_init prm --prm {prm} --value_scale returns",
    "oracle": "--dense_reward true --value_init policy --prm oracle",
}
MODELS = {  # the reward models a chain trains from its labels: train_prm.py flags
    "prm": [],                                            # the binary search's line labels, on the selected rows
    "orm": ["--labels", "outcome"],                       # the verdict on every code line, the same rows
    "orm_all": ["--labels", "outcome", "--rows", "all"],  # the verdict, every labeled response (what an ORM costs)
}
CLAIMS = ["both:sparse_warm_critic", "both:both_orm"]
CONTRASTS = [("value_init", "value_init_orm"), ("both", "value_init"), ("both", "dense"), ("dense", "sparse_warm_critic"),
             ("both", "value_init_orm"), ("both_orm", "value_init_orm"), ("dense", "dense_orm"), ("both", "both_orm_all"),
             ("both_orm", "both_orm_all"), ("both_returns_scale", "both"), ("oracle", "dense")]  # what each part adds against its control


def starts_from(setting):
    """The models a setting starts from, of the seed's PRM and ORM ({prm} and {orm} in its flags)."""
    return [m for m in MODELS if "{" + m + "}" in SETTINGS[setting]]


def run_length(setting, args):
    """PPO iterations of a setting's run: the warm critic's W iterations come before the budget's."""
    return args.iterations + (args.warm if setting == "sparse_warm_critic" else 0)


T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131]  # t quantiles, df 1..15


@dataclass
class Args:
    seeds: list[int] = field(default_factory=lambda: [10, 11, 12, 13, 14], metadata={"help": "one whole chain per seed"})
    out: str = field(default="runs/ablation", metadata={"help": "output folder: s<seed>/ per chain, eval/, results and plots"})
    split: str = field(default="test", metadata={"help": "where the final policies are evaluated: test (reporting) | valid (choosing a design)"})
    settings: list[str] = field(default_factory=lambda: [s for s in SETTINGS if s not in ("dense_orm", "both_orm_all")], metadata={"help": "settings run and evaluated for every seed (sparse always runs when labels are needed: they come from its checkpoints)"})
    curves: list[str] = field(default_factory=lambda: ["sparse", "sparse_warm_critic", "value_init_orm", "both"], metadata={"help": "settings whose checkpoints are evaluated every 2 iterations on valid (none: no curves)"})
    iterations: int = field(default=16, metadata={"help": "PPO iterations the policy moves (a multiple of 8: labels from 4 checkpoints, curves every 2)"})
    warm: int = field(default=4, metadata={"help": "sparse_warm_critic: iterations the critic trains alone first (4: chosen on valid, docs/results/demo.md)"})
    policy: str = field(default="checkpoints/demo-sft", metadata={"help": "the SFT policy every chain starts from"})
    n: int = field(default=4, metadata={"help": "sampled completions per task in the final evaluation (plus one greedy)"})
    curve_problems: int = field(default=200, metadata={"help": "valid tasks each curve checkpoint is evaluated on (greedy + 2 samples)"})
    claims: list[str] = field(default_factory=lambda: list(CLAIMS), metadata={"help": "the claims, setting:baseline, sampled pass@1 paired per seed (the plan's)"})
    planned: list[str] = field(default_factory=list, metadata={"help": "secondary comparisons the plan names, setting:baseline; every other one is reported as exploratory"})
    plan: str = field(default="", metadata={"help": "the plan file (claims, settings, seeds, metric), committed before the run; empty: no plan, every reading exploratory"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap resamples of seeds and tasks"})
    ppo: str = field(default="", metadata={"help": "extra train_psgpo.py flags for every run (the tests' tiny sizes)"})
    label: str = field(default="", metadata={"help": "extra label_prm_data.py flags"})
    prm_flags: str = field(default="", metadata={"help": "extra train_prm.py flags"})
    evaluate: str = field(default="", metadata={"help": "extra evaluate.py flags"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    parallel: int = field(default=2, metadata={"help": "commands at once (CPU: the cores are shared among them)"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything runs
        sandbox.check_flags(self, positive="iterations n curve_problems bootstrap parallel", nonnegative="warm",
                            choices={"split": ("test", "valid"), "device": ("cpu", "cuda")})
        if self.iterations % 8:
            raise ValueError(f"--iterations must be a multiple of 8 (labels from 4 checkpoints, curves every 2), not {self.iterations}")


def pairs(specs, flag):
    """["a:b", ...] -> [(a, b), ...]; one line if a spec is not setting:baseline of known settings."""
    out = [tuple(x.split(":")) for x in specs]
    if bad := [x for x, p in zip(specs, out) if len(p) != 2 or not set(p) <= set(SETTINGS)]:
        raise SystemExit(f"ablation.py: --{flag} {bad}: each must be setting:baseline, both from {', '.join(SETTINGS)}")
    return out


def role(pair, metric, plan, claims, planned):
    """A comparison's standing: a claim or a planned secondary comparison when a plan names it (sampled pass@1, the
    plan's metric), else exploratory - a hypothesis for a new plan, never a finding."""
    if not plan or metric != "pass@1":
        return "exploratory"
    return "claim" if pair in claims else "planned" if pair in planned else "exploratory"


def provenance(plan, script="ablation.py", root=HERE):
    """What a result was made from: the code's commit and whether the working tree differed from it (dirty; then the
    sha256 of `git diff HEAD`, so two dirty runs can be told to hold the same changes), and the plan's commit. A plan
    must be a file committed before the run and unchanged since: a plan is what was written down before the numbers
    existed, so an uncommitted or edited one stops the run (one line)."""
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    out = {"code_commit": git("rev-parse", "HEAD") or None, "code_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    if out["code_dirty"]:
        out["code_diff_sha256"] = hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()
    if plan:
        path = os.path.relpath(os.path.abspath(plan), root)
        commit = git("log", "-1", "--format=%H", "--", path) if os.path.isfile(plan) else ""
        if not commit or git("status", "--porcelain", "--", path):
            raise SystemExit(f"{script}: --plan {plan}: not a committed file, or changed since its commit: commit the plan before the run")
        out |= {"plan": path, "plan_commit": commit}
    return out


def shown(cmd):
    """A stage command as printed and recorded: `python SCRIPT flags...`, each argument shell-quoted."""
    return " ".join("python" if c == sys.executable else shlex.quote(str(c)) for c in cmd)


def stage_datasets(args):
    """The problem set each stage ran on: the last --dataset in its extra flags, else the stages' default (demo)."""
    def dataset(flags):
        toks = flags.split()
        given = [toks[i + 1] for i in range(len(toks) - 1) if toks[i] == "--dataset"] + [t.split("=", 1)[1] for t in toks if t.startswith("--dataset=")]
        return given[-1] if given else "demo"
    return {"train_psgpo.py": dataset(args.ppo), "label_prm_data.py": dataset(args.label), "evaluate.py": dataset(args.evaluate)}


def run(cmd, log, threads):
    """One stage command (printed first), its output to `log`; one clear line if it fails. A `python SCRIPT ...`
    command runs as that script's __main__ in a process forked from a warm one (torch and transformers already
    imported: ~1.5 s a command instead of ~5), exactly as the printed command would run it: the same argv,
    working directory, threads and exit handlers, and the same outputs byte for byte (tests/test_ablation.py)."""
    sys.stdout.write(f"$ {shown(cmd)}\n"), sys.stdout.flush()  # one write: two stages' lines never interleave
    cmd = [str(c) for c in cmd]
    if cmd[0] == sys.executable and cmd[1].endswith(".py"):
        p = warm_processes().Process(target=run_script, args=(cmd[1:], log, threads))
        with _REAPING:  # start() reads the exit code of every finished child, join() its own: one thread at a time
            p.start()
        multiprocessing.connection.wait([p.sentinel])  # until it ends, without reading its exit code
        with _REAPING:
            p.join()
        failed = p.exitcode
    else:
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        with open(log, "a") as f:
            failed = subprocess.run(cmd, cwd=HERE, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if failed:  # the stage's own one-line reason (its log's last line) on the screen, not only in the log
        reason = ([line.strip() for line in open(log, errors="replace") if line.strip()] or ["(no output)"])[-1]
        raise SystemExit(f"ablation.py: failed (exit code {failed}): {' '.join(cmd)}\n  {reason[-500:]}\n  (the whole output: {log})")


# A forked child's exit code can be read once only. Two of schedule()'s threads reading it at once (one in its
# join(), the other in start(), which polls every finished child first) leave the loser 255 for a stage that
# ended well: CPython gh-130895. This lock lets one of them read; the other then finds the code stored.
_REAPING = threading.Lock()


@functools.cache
def warm_processes():
    """A forkserver that has imported what every stage imports (a process with no threads yet, so forking it is safe),
    and matplotlib's pyplot, which every evaluation imports to draw its plots (~0.3 s a command)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "sandbox", "matplotlib.pyplot"])
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


def t_p_value(diffs):
    """The two-sided p of a paired t test that the mean of the per-seed differences is 0 (df = seeds - 1): 1 minus
    twice the t density's integral from 0 to |t| (trapezoids; no scipy here)."""
    d = np.asarray(diffs, dtype=float)
    df, t = len(d) - 1, abs(d.mean()) / (d.std(ddof=1) / np.sqrt(len(d)))
    x = np.linspace(0, t, 200001)
    density = np.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / np.sqrt(df * np.pi) * (1 + x * x / df) ** (-(df + 1) / 2)
    return float(max(0.0, 1 - 2 * np.trapezoid(density, x)))


def holm(p_values):
    """Holm's step-down adjustment: the k-th smallest of m p values times (m - k + 1), kept non-decreasing and at most
    1; a comparison survives a family-wise 0.05 where its adjusted p is below 0.05."""
    order, adjusted, running = np.argsort(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def power(effect, sd, seeds, reps=1_000_000, rng_seed=0):
    """The chance that a paired t test over `seeds` seeds (two-sided, 0.05) shows a true mean difference `effect` when the
    per-seed differences spread with sd `sd`: the share of draws of the noncentral t statistic (z + effect sqrt(n) / sd)
    / sqrt(chi2_df / df) beyond the t quantile (T975)."""
    rng, df = np.random.default_rng(rng_seed), seeds - 1
    t = (rng.standard_normal(reps) + effect * np.sqrt(seeds) / sd) / np.sqrt(rng.chisquare(df, reps) / df)
    return float(np.mean(np.abs(t) > T975[df - 1]))


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
    args = sandbox.parse_args(Args)
    args.curves = [c for c in args.curves if c != "none"]
    settings = list(dict.fromkeys(args.settings))  # evaluated; sparse also runs (unevaluated) when labels need it
    if unknown := [s for s in settings + args.curves if s not in SETTINGS]:
        raise SystemExit(f"ablation.py: unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    pairs(args.claims, "claims"), pairs(args.planned, "planned")
    args.provenance = provenance(args.plan)  # before any run: the plan was committed, and what the code was
    models = {m for st in settings + args.curves for m in starts_from(st)}
    runs = list(dict.fromkeys((["sparse"] if models else []) + settings + args.curves))
    O, py, t0 = args.out, sys.executable, time.time()
    threads = max(1, (os.cpu_count() or 2) // args.parallel) if args.device == "cpu" else 4
    os.makedirs(os.path.join(O, "eval"), exist_ok=True)
    common = ["--device", args.device]

    def last(s, setting):  # the final checkpoint: warm-critic runs take W more iterations
        return f"{O}/s{s}/{setting}/ckpt-{run_length(setting, args):04d}"

    commands = {}  # every stage's command, as printed: results.json records them whether or not this call ran them

    def step(name, cmd, done_when, s):  # one command, skipped when its output is there; its minutes in minutes.jsonl
        commands[f"s{s}/{name}"] = shown(cmd)

        def fn():
            if not os.path.exists(done_when):
                t = time.time()
                run(cmd, f"{O}/s{s}/{name}.log", threads)
                with open(f"{O}/minutes.jsonl", "a") as f:
                    f.write(json.dumps({"seed": s, "step": name, "minutes": round((time.time() - t) / 60, 2)}) + "\n")
        return fn

    jobs = {}
    for s in args.seeds:
        d = f"{O}/s{s}"
        os.makedirs(d, exist_ok=True)
        for setting in runs:
            flags = SETTINGS[setting].format(warm=args.warm, **{m: f"{d}/{m}" for m in MODELS}).split()
            after = [f"{s}/{m}" for m in starts_from(setting)]
            jobs[f"{s}/{setting}"] = (after, step(setting, [py, "train_psgpo.py", "--policy", args.policy, "--seed", s, "--out", f"{d}/{setting}",
                                                             "--iterations", run_length(setting, args), "--save_every", 2, "--resume", "true", *flags, *common,
                                                             *args.ppo.split()], f"{last(s, setting)}/config.json", s))
        for setting in settings:
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
        for model in [m for m in MODELS if m in models | {"prm"}]:  # the PRM always: its quality is reported
            jobs[f"{s}/{model}"] = ([f"{s}/labels"], step(model, [py, "train_prm.py", "--data", f"{d}/prm_data", "--init", args.policy, "--seed", s,
                                                                  "--out", f"{d}/{model}", *MODELS[model], *common, *args.prm_flags.split()], f"{d}/{model}/metrics.json", s))
        jobs[f"{s}/quality"] = ([f"{s}/prm", "sft/curve"] + [f"{s}/curve/{c}" for c in ("sparse", "both") if c in args.curves],
                                step("quality", [py, "experiments/prm_quality.py", "--prm", f"{d}/prm", "--out", f"{d}/prm_quality.json", "--eval",
                                                 f"{O}/curves/sft/eval.json", *[f"{O}/curves/s{s}-{c}/eval.json" for c in ("sparse", "both") if c in args.curves],
                                                 "--last_only", "true"], f"{d}/prm_quality.json", s))
    jobs["sft/curve"] = ([], step("sft", [py, "evaluate.py", "--model", args.policy, "--split", "valid", "--n", 2, "--max_problems", args.curve_problems,
                                          "--threads", threads, "--out", f"{O}/curves/sft", *common, *args.evaluate.split()], f"{O}/curves/sft/by_length.png", args.seeds[0]))
    jobs["sft/eval"] = ([], step("sft-eval", [py, "evaluate.py", "--model", args.policy, "--split", args.split, "--n", args.n, "--threads", threads,
                                              "--out", f"{O}/eval/sft", *common, *args.evaluate.split()], f"{O}/eval/sft/eval.json", args.seeds[0]))
    schedule(jobs, args.parallel)
    report(args, settings, time.time() - t0, commands)


def eval_noise(eval_json):
    """The evaluation's own noise in one setting's sampled pass@1 on one seed: the standard error of the mean over N
    tasks of each task's n-sample pass rate, sqrt(sum_t v_t / n) / N, with v_t = c_t (n - c_t) / (n (n - 1)) the
    unbiased per-sample variance of task t (c_t of n samples passed). Shrinks as 1 / sqrt(n): what more samples buy."""
    with open(eval_json) as f:
        samples = next(iter(json.load(f)["models"].values()))["samples"]
    by_task = {}
    for x in samples:
        if x["kind"] == "sample":
            by_task.setdefault(x["task_id"], []).append(x["passed"])
    n = len(next(iter(by_task.values())))
    if n < 2:
        return float("nan")
    v = [sum(c) * (n - sum(c)) / (n * (n - 1)) for c in by_task.values()]
    return float(np.sqrt(sum(v) / n) / len(v))


def end_of_training(run_dir, setting, args):
    """From a run's log.jsonl: the policy's entropy and KL to the SFT policy at its last iteration (its training
    rollouts; sharpening shows as entropy falling while pass@1 rises and pass@k does not), and the critic's explained
    variance on the first rollouts the policy learns from (after a warm critic's W iterations, else the first)."""
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    first = rows[run_length(setting, args) - args.iterations]
    return {"end/entropy": rows[-1]["charts/entropy"], "end/exact_kl": rows[-1].get("charts/exact_kl", float("nan")),
            "end/kl_per_seq": rows[-1]["charts/kl_per_seq"], "critic/explained_variance_at_start": first["charts/explained_variance"]}


def report(args, settings, seconds, commands):
    """results.json, results.md and the plots from every chain's outputs."""
    O, seeds = args.out, args.seeds

    def metrics(folder, model=None):
        with open(os.path.join(folder, "eval.json")) as f:
            models = json.load(f)["models"]
        return models[model or next(iter(models))]["metrics"]

    evals = {st: [flat(metrics(f"{O}/eval/s{s}-{st}")) | end_of_training(f"{O}/s{s}/{st}", st, args) |
                  {"eval_se": eval_noise(f"{O}/eval/s{s}-{st}/eval.json")} for s in seeds] for st in settings}
    sampled, greedy = task_values({st: {s: f"{O}/eval/s{s}-{st}/eval.json" for s in seeds} for st in settings})
    rng = np.random.default_rng(0)
    claimed, planned = pairs(args.claims, "claims"), pairs(args.planned, "planned")

    def compare(a, b, metric, values):  # paired per seed, with its role and the evaluation's noise in each seed's difference
        p = paired(values[a], values[b], rng, args.bootstrap)
        noise = {"eval_se_of_diff": [float(np.hypot(x["eval_se"], y["eval_se"])) for x, y in zip(evals[a], evals[b])]} if metric == "pass@1" else {}
        return {"setting": a, "baseline": b, "metric": metric, "role": role((a, b), metric, args.plan, claimed, planned)} | p | noise
    claims = [compare(a, b, "pass@1", sampled) for a, b in claimed if a in settings and b in settings]
    others = [(a, b, "pass@1") for a, b in planned]
    others += [(st, "sparse", m) for st in settings if st != "sparse" and "sparse" in settings for m in ("pass@1", "greedy_pass@1")]
    others += [(a, b, "pass@1") for a, b in CONTRASTS]
    secondary = [compare(a, b, m, sampled if m == "pass@1" else greedy) for a, b, m in dict.fromkeys(others)
                 if a in settings and b in settings and not (m == "pass@1" and (a, b) in claimed)]
    curves = {}
    for st in args.curves:
        its = list(range(2, run_length(st, args) + 1, 2))
        runs = [json.load(open(f"{O}/curves/s{s}-{st}/eval.json"))["models"] for s in seeds]
        curves[st] = {"iterations": its} | {m: [[r[f"{O}/s{s}/{st}/ckpt-{i:04d}"]["metrics"][m] for s, r in zip(seeds, runs)] for i in its]
                                            for m in ("pass@1", "greedy_pass@1")}
    quality = [json.load(open(f"{O}/s{s}/prm_quality.json")) for s in seeds if os.path.exists(f"{O}/s{s}/prm_quality.json")]
    sft = metrics(f"{O}/eval/sft")
    results = {"seeds": seeds, "split": args.split, "iterations": args.iterations, "warm": args.warm, "n": args.n, "curve_problems": args.curve_problems,
               "provenance": args.provenance, "args": asdict(args), "dataset": stage_datasets(args), "commands": commands,
               "settings": {"sft": {k: [v] for k, v in flat(sft).items()}} | {st: {k: [m[k] for m in ms] for k in ms[0]} for st, ms in evals.items()},
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
    at = lambda m, k, fmt, scale=1: fmt.format(scale * np.nanmean(m[k])) if k in m else "-"  # noqa: E731  a mean over seeds
    src = results.get("provenance", {})
    tasks = results.get("dataset", {})  # older results.json: unrecorded
    on = "" if set(tasks.values()) <= {"demo"} else " (problem sets: " + ", ".join(f"{stage} {d}" for stage, d in tasks.items()) + ")"
    lines = [f"Demo {results['split']} split{on}, {len(seeds)} whole-chain seeds ({', '.join(map(str, seeds))}), {results['iterations']} PPO iterations of 64 "
             f"prompts, {results['n']} samples per task; percent, mean +- sample std over seeds. "
             + (f"Plan: {src['plan']} (commit {src['plan_commit'][:10]}); " if "plan" in src else "No plan file: every comparison is exploratory; ")
             + (f"code: commit {src['code_commit'][:10]}{' with uncommitted changes' if src['code_dirty'] else ''}." if src.get("code_commit") else "code: unrecorded."), "",
             "| setting | greedy pass@1 | pass@1 (T=1) | pass@4 | entropy at the end (nats/token) | KL to SFT at the end (nats/token) "
             "| critic's explained variance at start | evaluation noise (se, points) |", "|---" * 8 + "|",
             f"| SFT | {100 * sft['greedy_pass@1'][0]:.1f} | {100 * sft['pass@1'][0]:.1f} | {100 * sft['best_of_k'][0][min(3, len(sft['best_of_k'][0]) - 1)]:.1f} | - | - | - | - |"]
    lines += [f"| {st} | {pct(m['greedy_pass@1'])} | {pct(m['pass@1'])} | {pct([b[min(3, len(b) - 1)] for b in m['best_of_k']])} | "
              f"{at(m, 'end/entropy', '{:.3f}')} | {at(m, 'end/exact_kl', '{:.3f}')} | {at(m, 'critic/explained_variance_at_start', '{:+.2f}')} | "
              f"{at(m, 'eval_se', '{:.2f}', 100)} |" for st, m in evals.items()]
    shown = lambda c: "shown" if c["ci95"][0] > 0 or c["ci95"][1] < 0 else "not shown"  # noqa: E731  the t interval excludes 0, or not
    noise = lambda c: f"{100 * np.mean(c['eval_se_of_diff']):.2f} / {100 * np.std(c['diffs'], ddof=1):.2f}" if "eval_se_of_diff" in c and len(c["diffs"]) > 1 else "-"  # noqa: E731
    lines += ["", "The claims (sampled pass@1, paired per seed; points, mean [95% t interval over seeds], shown when it excludes 0; a bootstrap over "
                  "seeds and tasks beside it; the evaluation's noise in one seed's difference against the spread of the differences over seeds):", "",
              "| claim | role | per seed | mean [t 95%] | reading | bootstrap 95% | eval noise / seeds' sd |", "|---" * 7 + "|"]
    lines += [f"| {c['setting']} - {c['baseline']} | {c.get('role', '-')} | {per_seed(c)} | {iv(c)} | {shown(c)} | {iv(c, 'bootstrap95')} | {noise(c)} |"
              for c in results["paired"]]
    for title, rows in (("Planned secondary comparisons (in the plan)", [c for c in results["secondary"] if c.get("role") == "planned"]),
                        ("Exploratory comparisons (not in the plan: hypotheses for a new plan, not findings)",
                         [c for c in results["secondary"] if c.get("role") != "planned"])):
        lines += [] if not rows else ["", title + ", paired per seed:", "", "| comparison | metric | per seed | mean [t 95%] | t interval | bootstrap 95% |",
                                      "|---|---|---|---|---|---|"]
        lines += [f"| {c['setting']} - {c['baseline']} | {c['metric']} | {per_seed(c)} | {iv(c)} | {'excludes 0' if shown(c) == 'shown' else 'includes 0'} | "
                  f"{iv(c, 'bootstrap95')} |" for c in rows]
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
    gain_by_steps.png (Figure 4: each setting's pass@1 gain over sparse, else the first baseline run, by task length).
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
    base = next(b for b in ("sparse", "sparse_warm_critic", *settings) if b in settings and b != "sft")  # the paper's baseline, else the warm critic's
    steps = [k.split("/")[1] for k in settings[base] if k.startswith("by_steps/") and k.endswith("/pass@1")]
    by_steps = lambda st: np.array([settings[st][f"by_steps/{k}/pass@1"] for k in steps]).T  # noqa: E731  [seeds, lengths]
    for st in [s for s in settings if s not in ("sft", base)]:
        y = 100 * (by_steps(st) - by_steps(base))  # paired per seed
        ax.plot(steps, y.mean(0), marker="o", label=f"{st} - {base}")
        ax.fill_between(steps, y.min(0), y.max(0), alpha=0.1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="lines in the reference (steps + return)", ylabel="pass@1 difference (points)", title="gain by length (Figure 4)")
    ax.grid(alpha=0.3), ax.legend(fontsize=7), fig.tight_layout(), fig.savefig(os.path.join(O, "gain_by_steps.png"), dpi=100)
    plt.close(fig)
    return (["curves.png"] if curves else []) + ["bestofk.png", "gain_by_steps.png"]


if __name__ == "__main__":
    main()
