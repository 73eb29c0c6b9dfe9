"""evaluate.py - step 5 of the pipeline, the paper's evaluation: pass@1 / pass@k (Table 1), the best-of-K curve
(Figure 3) and pass@1 by response length (Figure 4), for one or more checkpoints side by side on the same problems.

    python evaluate.py --model checkpoints/demo-sft runs/psgpo/ckpt-0016 --n 4    # -> runs/eval/
    python evaluate.py --oracle --dataset humaneval                               # the harness itself: 100%
    torchrun --nproc_per_node 8 evaluate.py --model runs/psgpo/ckpt-0100 --dataset humaneval --device cuda --bf16 true

For every problem: one greedy completion and `--n` sampled ones at `--temperature`, all from batched
`generate` with the KV cache (sandbox.sample: prompts left-padded to [B, P], every response starting at
column P; exact sampling, nothing from the checkpoint's generation config). A response ends where every
stage ends it (sandbox.end_response): at its first EOS (any of the checkpoint's EOS ids), at the first of
the problem's stop strings, or at max_new_tokens; that completion is what gets judged (program = prompt
+ completion + tests, see sandbox/problems.py).
Metrics (all in `compute_metrics`, a pure function of the verdicts):
  pass@k      unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), averaged over problems
  best_of_k   pass@K for K = 1..n: the expected share of problems solved within K samples (Figure 3)
  by_tokens   pass rate of the sampled responses by their length in tokens (Figure 4)
  by_steps    demo only: greedy and sampled pass@1 by the task's number of steps (lines incl. return)
  planted     demo only: per planted-mistake kind, the share of the lines where it can occur that the
              sampled responses write in its wrong form (sandbox.demo.planted_mistakes)
Outputs under --out: eval.json (every number, every completion with its verdict; rewritten after each
model), by_length.png, bestofk.png (with --n > 0). Under torchrun each rank generates and judges every WORLD_SIZE-th
problem with its own full copy of the model (sampling seed + rank) and rank 0 merges them in order.
"""
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, set_seed

import sandbox


@dataclass
class Args:
    model: list[str] = field(default_factory=lambda: ["checkpoints/demo-sft"], metadata={"help": (
        "one or more checkpoint folders or Hugging Face names, evaluated side by side")})
    dataset: str = field(default="demo", metadata={"help": (
        "demo | demo-long | humaneval | mbpp | livecodebench | FILE.jsonl")})
    split: str = field(default="test", metadata={"help": "split of the problem set"})
    max_problems: int = field(default=0, metadata={"help": "evaluate only the first N problems (0: all)"})
    n: int = field(default=10, metadata={"aliases": ["--samples"], "help": (
        "sampled completions per problem (greedy is always added); pass@k for k <= n (write --samples under torchrun, "
        "which reads --n as one of its own options)")})
    temperature: float = field(default=1.0, metadata={"help": (
        "sampling temperature (1.0: the policy's own distribution, as RL samples it)")})
    max_new_tokens: int = field(default=256, metadata={"help": (
        "longest response, in tokens: at real scale the training's (README: 512); the share cut there is reported")})
    batch_size: int = field(default=64, metadata={"help": "sequences per generate call"})
    length_edges: str = field(default="", metadata={"help": (
        "token-length bucket edges, e.g. 50,100,200 (empty: 50,100,200; demo: 30,45,60)")})
    oracle: bool = field(default=False, metadata={"help": (
        "judge the reference solutions instead of a model (a check of the harness)")})
    seed: int = field(default=1, metadata={"help": "sampling seed (same seed, same samples on CPU)"})
    out: str = field(default="runs/eval", metadata={"help": (
        "output folder: eval.json, bestofk.png, by_length.png; a finished one stops, one cut off is redone by the same command")})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    bf16: bool = field(default=False, metadata={"help": (
        "compute in bfloat16 (GPUs): the models are only run, so they are stored in bf16")})
    chat_template: bool = field(default=False, metadata={"help": (
        "feed prompts through the tokenizer's chat template (instruct models; sandbox.prompt_ids)")})
    revision: str = field(default=None, metadata={"help": (
        "Hub revision (branch, tag or commit) of Hub ids given as --model")})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    workers: int = field(default=0, metadata={"help": "judge worker processes per rank (0: this node's cores over its ranks)"})
    timeout: float = field(default=3.0, metadata={"help": "seconds per program (per stdin test)"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="temperature max_new_tokens batch_size threads timeout",
                            nonnegative="max_problems n workers", at_most={"timeout": 86400},  # a day
                            seed="seed", device="device")
        self.workers = self.workers or sandbox.cores_per_rank()
        edges = self.length_edges.split(",") if self.length_edges else []
        if not all(e.strip().isdigit() for e in edges) or [int(e) for e in edges] != sorted({int(e) for e in edges}):
            raise ValueError(f"--length_edges must be increasing whole numbers like 50,100,200, not {self.length_edges!r}")


# What a re-run into the folder of an evaluation cut off before its end may change (it evaluates again from the start):
# threads and the judge's workers and timeout; every other flag must be the cut-off run's (its args.json)
REDO_MAY_CHANGE = ("threads", "workers", "timeout")


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k), in a stable product form."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def bucket(x, edges):
    """Label of the length bucket of x: '<e0', 'e0-e1', ..., '>=eN'."""
    for i, e in enumerate(edges):
        if x < e:
            return f"<{e}" if i == 0 else f"{edges[i - 1]}-{e}"
    return f">={edges[-1]}"


def compute_metrics(results, edges):
    """results: one dict per problem {"greedy": bool, "samples": [bool] * n, "tokens": [int] * n, "n_steps": int | None,
    "planted": [sandbox.demo.planted_mistakes(...)] * n (demo, optional)}. Returns every number reported."""
    n = len(results[0]["samples"])
    m = {"problems": len(results), "n": n, "greedy_pass@1": float(np.mean([r["greedy"] for r in results]))}
    if "cut" in results[0]:  # completions that reached --max_new_tokens unfinished (greedy and sampled)
        m["cut_at_max_new_tokens"] = float(np.mean([c for r in results for c in r["cut"]]))
    if n:
        c = [sum(r["samples"]) for r in results]
        for k in [k for k in (1, 5, 10, 20, 50, 100) if k <= n]:
            m[f"pass@{k}"] = float(np.mean([pass_at_k(n, ci, k) for ci in c]))
        m["best_of_k"] = [float(np.mean([pass_at_k(n, ci, k) for ci in c])) for k in range(1, n + 1)]
    by_tok = {}
    for r in results:
        for ok, t in zip(r["samples"], r["tokens"]):
            by_tok.setdefault(bucket(t, edges), []).append(ok)
    labels = [bucket(e - 1, edges) for e in edges] + [bucket(edges[-1], edges)]
    m["by_tokens"] = {b: {"pass@1": float(np.mean(by_tok[b])), "responses": len(by_tok[b])}
                      for b in labels if b in by_tok}
    if results[0].get("n_steps") is not None:
        steps = sorted({r["n_steps"] for r in results})
        m["by_steps"] = {s: {"greedy_pass@1": float(np.mean([r["greedy"] for r in results if r["n_steps"] == s])),
                             "pass@1": float(np.mean([np.mean(r["samples"]) for r in results if r["n_steps"] == s])) if n else None,
                             "problems": sum(r["n_steps"] == s for r in results)} for s in steps}
    if n and "planted" in results[0]:  # each kind: lines written in its wrong form / lines where it can occur
        counts = [c for r in results for c in r["planted"]]
        m["planted"] = {k: sum(c[k][0] for c in counts) / max(1, sum(c[k][1] for c in counts)) for k in sorted(counts[0])}
        failed = [any(made for made, _ in c.values()) for r in results for c, ok in zip(r["planted"], r["samples"]) if not ok]
        m["planted"]["failures_with_a_planted_kind"] = float(np.mean(failed)) if failed else 0.0
    return m


def generate(model, tok, eos, problems, n, args, desc):
    """n completions per problem (n=0: one greedy completion): [[(completion, n_tokens, cut)] * max(n, 1)], each ended
    where sandbox.end_response ends every stage's responses (its first EOS or stop string), batched by sandbox.sample;
    cut: it reached --max_new_tokens before either (judged as it stands: most such programs fail)."""
    greedy = n == 0
    order = sorted(range(len(problems)), key=lambda i: len(problems[i].prompt))  # similar lengths: less padding
    jobs = [i for i in order for _ in range(max(n, 1))]
    stops = [sandbox.stop_strings(p, args.chat_template) for p in problems]
    done = sandbox.sample(model, tok, eos, [sandbox.prompt_ids(tok, problems[i].prompt, args.chat_template) for i in jobs],
                          [stops[i] for i in jobs], args.batch_size, args.rank == 0, desc, max_new_tokens=args.max_new_tokens,
                          do_sample=not greedy, **({} if greedy else {"temperature": args.temperature, "top_k": 0, "top_p": 1.0}))
    out = [[] for _ in problems]
    for i, (text, ids) in zip(jobs, done):
        out[i].append((text, len(ids), len(ids) >= args.max_new_tokens and ids[-1] not in eos))
    return out


def evaluate_one(name, problems, args, edges):
    """Sample, judge and score one model (or the reference solutions): (metrics, timing, samples); this rank's
    share of the problems, then (rank 0) every rank's, in the problems' order."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    everything, problems = problems, problems[args.rank::world]
    t0 = time.time()
    if name == "oracle":  # the references, as both the greedy and the single sample; tokens ~ words
        count = lambda s: len(re.findall(r"\w+|[^\w\s]", s))  # noqa: E731
        greedy = [[(p.solution, count(p.solution), False)] for p in problems]
        sampled = greedy if args.n else [[] for _ in problems]
    else:
        tok, eos = sandbox.load_tokenizer(name, args.revision)
        dtype = torch.bfloat16 if args.bf16 else torch.float32  # only run: stored in bf16 under --bf16
        model = sandbox.load_model(AutoModelForCausalLM, name, args.device, dtype, args.revision).eval()
        greedy = generate(model, tok, eos, problems, 0, args, f"greedy {name}")
        set_seed(args.seed + args.rank)
        sampled = generate(model, tok, eos, problems, args.n, args, f"sample {name}") if args.n else [[] for _ in problems]
    gen_s = time.time() - t0
    items = [(p, c) for p, g, s in zip(problems, greedy, sampled) for c, *_ in g + s]
    t1 = time.time()
    verdicts = iter(sandbox.check_many(items, workers=args.workers, timeout=args.timeout, progress=args.rank == 0))
    judge_s = time.time() - t1
    results, samples = [], []
    for p, g, s in zip(problems, greedy, sampled):
        vs = [next(verdicts) for _ in g + s]
        r = {"greedy": vs[0].passed, "samples": [v.passed for v in vs[1:]], "tokens": [t for _, t, _ in s],
             "cut": [cut for *_, cut in g + s], "n_steps": p.meta.get("n_steps")}
        if sandbox.is_demo(args.dataset):
            r["planted"] = [sandbox.demo.planted_mistakes(p, c) for c, *_ in s]
        results.append(r)
        samples.append([{"task_id": p.task_id, "kind": "greedy" if j == 0 else "sample", "completion": c,
                         "n_tokens": t, "cut": cut, "passed": v.passed, "status": v.status, "detail": v.detail}
                        for j, ((c, t, cut), v) in enumerate(zip(g + s, vs))])
    if world > 1:  # problem i was rank i % world's (i // world)-th
        parts = [None] * world
        dist.all_gather_object(parts, (results, samples, gen_s, judge_s))
        results, samples = ([parts[i % world][j][i // world] for i in range(len(everything))] for j in (0, 1))
        gen_s, judge_s = max(p[2] for p in parts), max(p[3] for p in parts)  # wall time: the slowest rank's
    n_items = sum(len(s) for s in samples)
    timing = {"generate_s": round(gen_s, 2), "samples_per_s": round(n_items / max(gen_s, 1e-9), 1),
              "judge_s": round(judge_s, 2), "programs_per_s": round(n_items / max(judge_s, 1e-9), 1)}
    return compute_metrics(results, edges), timing, [x for s in samples for x in s]


def markdown(report, args):
    """One table, a column per model."""
    names = list(report)
    ms = [report[k]["metrics"] for k in names]
    rows = [("greedy pass@1", [m["greedy_pass@1"] for m in ms])]
    rows += [(f"{k} (T={args.temperature:g})", [m.get(k) for m in ms]) for k in ms[0] if k.startswith("pass@")]
    rows.append((f"cut at --max_new_tokens {args.max_new_tokens} (failed unfinished)", [m.get("cut_at_max_new_tokens") for m in ms]))
    for s in ms[0].get("by_steps", {}):
        rows.append((f"steps={s}: greedy / sampled", [(m["by_steps"][s]["greedy_pass@1"], m["by_steps"][s]["pass@1"]) for m in ms]))
    for b in ms[0]["by_tokens"]:
        rows.append((f"tokens {b}: pass@1", [m["by_tokens"].get(b, {}).get("pass@1") for m in ms]))
    for k in ms[0].get("planted", {}):
        rows.append((f"planted {k}", [m.get("planted", {}).get(k) for m in ms]))

    def fmt(v):
        if isinstance(v, tuple):
            return " / ".join(fmt(x) for x in v)
        return "-" if v is None else f"{100 * v:.1f}"
    timing = [(f"{k} (not %)", [str(report[n]["timing"][k]) for n in names]) for k in ("samples_per_s", "programs_per_s")]
    return sandbox.table(["metric (%)", *names], [[r, *map(fmt, vs)] for r, vs in rows] + [[r, *vs] for r, vs in timing])


def plot(report, out):
    """by_length.png (Figure 4: pass@1 by steps and by response tokens) and, where there are samples,
    bestofk.png (Figure 3). Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    sampled = {name: r["metrics"]["best_of_k"] for name, r in report.items() if "best_of_k" in r["metrics"]}
    if sampled:  # greedy only (--n 0): no best-of-K to draw
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, best in sampled.items():
            ax.plot(range(1, len(best) + 1), [100 * v for v in best], marker="o", label=name)
        ax.set(xlabel="K (samples)", ylabel="% problems solved within K", title="best-of-K (Figure 3)")
        ax.legend(), ax.grid(alpha=0.3), fig.tight_layout(), fig.savefig(os.path.join(out, "bestofk.png"), dpi=100)
        plt.close(fig)
        written.append(os.path.join(out, "bestofk.png"))
    views = [v for v in ("by_steps", "by_tokens") if v in next(iter(report.values()))["metrics"]]
    fig, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 4), squeeze=False)
    for ax, view in zip(axes[0], views):
        for name, r in report.items():
            d = r["metrics"][view]
            key = "pass@1" if r["metrics"]["n"] else "greedy_pass@1"
            ax.plot([str(b) for b in d], [100 * v[key] for v in d.values()], marker="o", label=name)
        ax.set(xlabel="steps (lines)" if view == "by_steps" else "response tokens", ylabel="pass@1 (%)",
               title=f"pass@1 {view.replace('_', ' ')} (Figure 4)")
        ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(os.path.join(out, "by_length.png"), dpi=100)
    plt.close(fig)
    return written + [os.path.join(out, "by_length.png")]


def main():
    args = sandbox.parse_args(Args, device="device", out="out")
    given = asdict(args)  # the flags as given, args.json (args.device becomes this rank's GPU below)
    # a finished evaluation there stops it (by_length.png is drawn last); one cut off before is redone from the start
    sandbox.guard_out(args, REDO_MAY_CHANGE, finished=("by_length.png",))
    # torchrun: the ranks generate apart and meet once per model (the gloo group is only for that)
    args.rank, world, args.device = sandbox.start_ranks(args.device, meet_only=True, threads=args.threads)
    set_seed(args.seed)
    with sandbox.bad_data_exits():  # the judge on programs of known verdict first
        problems = sandbox.load_problems(args.dataset, args.split)
        sandbox.self_test(problems, args.workers, args.timeout)
    if args.max_problems:
        problems = problems[:args.max_problems]
    sandbox.data_line(args.dataset, args.split, len(problems), 1, f"problems (greedy and {args.n} samples each)", quiet=args.rank != 0, warn=False)
    if args.oracle and not all(p.solution for p in problems):
        sandbox.fail(f"--oracle: {args.dataset} has problems without a reference solution")
    names = ["oracle"] if args.oracle else args.model
    with sandbox.bad_data_exits():  # a bad model stops the run before minutes are spent on the first one
        for name in [] if args.oracle else names:
            sandbox.find_model(name, args.revision, kind="causal", chat=args.chat_template)
    edges = [int(e) for e in args.length_edges.split(",")] if args.length_edges else (
        [30, 45, 60] if sandbox.is_demo(args.dataset) else [50, 100, 200])
    os.makedirs(args.out, exist_ok=True)
    if args.rank == 0:
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(given, f, indent=1)
    path = os.path.join(args.out, "eval.json")
    report = {}
    for name in names:  # the same problems, seed and settings for every model
        metrics, timing, samples = evaluate_one(name, problems, args, edges)
        if args.rank > 0:
            continue
        report[name] = {"metrics": metrics, "timing": timing, "samples": samples}
        with open(path, "w") as f:  # rewritten after each model: a long run keeps what it has
            json.dump({"args": asdict(args), "ranks": world, "problems": len(problems), "models": report}, f, indent=1)
        print(f"{name}: greedy pass@1 {100 * metrics['greedy_pass@1']:.1f}%  "
              + (f"pass@1 {100 * metrics['pass@1']:.1f}%  " if args.n else "") + f"({timing})")
    if args.rank > 0:
        return
    plots = plot(report, args.out)
    print(f"\n{args.dataset}/{args.split}, {len(problems)} problems, n={args.n}, T={args.temperature:g}\n")
    print(markdown(report, args))
    print(f"\nwrote {', '.join([path, *plots])}")


if __name__ == "__main__":
    main()
    sandbox.stop_ranks()  # torchrun: all ranks leave together, once main()'s models are gone
