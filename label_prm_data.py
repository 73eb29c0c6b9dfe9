"""label_prm_data.py - step 2 of the pipeline: PRM data by binary search over line prefixes (paper section 3,
Algorithm 1, Figure 2).

For each of --max_prompts training prompts (a seeded sample; -1: every one), each policy checkpoint samples `--n`
responses. A passing response needs
no search: each of its lines is +1. For a failing one, the first unrecoverable line is found by
binary search over prefixes: a prefix of m lines is *correct* when at least one of K completions,
sampled by the same checkpoint continuing it, passes all tests (best-of-K, K = 20 in the paper).
Labels: +1 up to the last correct prefix, -1 after, 0 for neutral lines (comments, docstrings, `pass`: the
paper's neutral labeling, sandbox.split_steps).

    python label_prm_data.py --policy runs/baseline/ckpt-{0004,0008,0012,0016} --out runs/prm_data   # the demo's
    torchrun --nproc_per_node 8 label_prm_data.py --device cuda --bf16 true ...   # prompts split across GPUs

Writes, under --out: rows.jsonl (every labeled response, written as it goes; a re-run resumes, given the flags that made the rows),
labels.jsonl (the rows --select keeps: what train_prm.py reads) and summary.json. Under torchrun each
rank labels every WORLD_SIZE-th prompt with its own full copy of the policy and writes rows.rankR.jsonl;
rank 0 merges them into rows.jsonl at the end (a re-run, with any number of ranks, resumes from all).
Choices the paper leaves open (see README): neutral lines are not searched (they carry label 0 and a
prefix ending in one equals the one before it); the full failing response is known to fail, so
a response of L code lines is searched over its first L - 1; hard / medium prompts are defined by the
policy's pass rate on the prompt over all its responses (hard: 0, easy: 1, medium: in between).
"""
import glob
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import AutoModelForCausalLM, set_seed

import sandbox


K_FIRST = 4  # --k_first's default

# What a re-run into a folder with rows may change (it resumes them): how many prompts (a larger --max_prompts extends the
# same seeded sample), what is selected from the rows and how (--select, --max_passing, --neutral_comments relabel
# labels.jsonl from the search), and how fast and where; every flag that changes what a row is must be the rows' own
RESUME_MAY_CHANGE = ("max_prompts", "select", "max_passing", "neutral_comments", "k_first", "batch_size", "chunk", "workers",
                     "timeout", "device")


@dataclass
class Args:
    policy: list[str] = field(default_factory=lambda: [f"runs/baseline/ckpt-{i:04d}" for i in (4, 8, 12, 16)],
                              metadata={"help": (
        "policy checkpoint(s); the paper uses 4 evenly spaced through the sparse RL baseline run")})
    out: str = field(default="runs/prm_data", metadata={"help": (
        "output folder (rows.jsonl, labels.jsonl, summary.json); a re-run resumes its rows, with the flags that made them "
        f"(only {', '.join('--' + k for k in RESUME_MAY_CHANGE)} may differ)")})
    dataset: str = field(default="demo", metadata={"help": (
        "problem set: demo | demo-long | humaneval | mbpp | livecodebench | a .jsonl path")})
    split: str = field(default="train", metadata={"help": "split of the problem set to label"})
    max_prompts: int = field(default=100, metadata={"help": "label this many prompts (a seeded sample; -1 for all)"})
    n: int = field(default=2, metadata={"aliases": ["--samples"], "help": (
        "responses per prompt per checkpoint (write --samples under torchrun, which reads --n as one of its own options)")})
    k: int = field(default=20, metadata={"help": "completions per prefix check (best-of-K; the paper's K = 20)"})
    k_first: int = field(default=K_FIRST, metadata={"help": (
        "completions sampled first, at most --k (the default, above a smaller --k, becomes --k); the other K - k_first "
        "only if none of these passes (0 or --k: all K at once)")})
    temperature: float = field(default=1.0, metadata={"help": (
        "sampling temperature of the responses (the policy's own distribution, as RL samples it)")})
    prefix_temperature: float = field(default=1.0, metadata={"help": (
        "sampling temperature of the K completions of a prefix (the paper leaves it open)")})
    max_new_tokens: int = field(default=160, metadata={"help": "longest response in tokens"})
    batch_size: int = field(default=256, metadata={"help": "sequences per generate call"})
    chunk: int = field(default=50, metadata={"help": "prompts per unit of work; rows are written after each"})
    select: str = field(default="revised_only", metadata={"help": (
        "data selection (paper Table 2): full | remove_hard | medium_only | revised_only")})
    max_passing: int = field(default=-1, metadata={"help": (
        "with revised_only: passing responses kept per kept prompt (-1: all)")})
    neutral_comments: bool = field(default=True, metadata={"help": (
        "label neutral lines (comments, docstrings) 0 (the paper's neutral labeling); false: they take their prefix's"
        " label (shows the comment hack)")})
    workers: int = field(default=0, metadata={"help": "judge worker processes per rank (0: this node's cores over its ranks)"})
    timeout: float = field(default=3.0, metadata={"help": "seconds per program"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    bf16: bool = field(default=False, metadata={"help": (
        "compute in bfloat16 (GPUs): the policy is only run, so it is stored in bf16")})
    chat_template: bool = field(default=False, metadata={"help": (
        "feed prompts through the tokenizer's chat template (instruct models; sandbox.prompt_ids)")})
    revision: str = field(default=None, metadata={"help": (
        "Hub revision (branch, tag or commit) of Hub ids given as --policy")})
    seed: int = field(default=1, metadata={"help": "random seed"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="n k temperature prefix_temperature max_new_tokens batch_size chunk timeout",
                            nonnegative="k_first workers", at_most={"timeout": 86400},  # a day
                            choices={"select": ("full", "remove_hard", "medium_only", "revised_only")},
                            seed="seed", device="device")
        if self.k_first > self.k and self.k_first != K_FIRST:  # the default above a small --k: all K at once, as before
            raise ValueError(f"--k_first ({self.k_first}) must be at most --k ({self.k}): it is the first wave of the K")
        self.k_first = min(self.k_first, self.k)
        self.workers = self.workers or sandbox.cores_per_rank()
        for name, lowest in (("max_prompts", 1), ("max_passing", 0)):  # -1: all
            if getattr(self, name) != -1 and getattr(self, name) < lowest:
                raise ValueError(f"--{name} must be >= {lowest} or -1 (all), not {getattr(self, name)}")


class Interval:
    """Algorithm 1's state for one response (paper section 3, Figure 2): lo, the longest prefix known correct (0: the
    empty prefix, always completable), hi, the shortest prefix known wrong (n_steps + 1 stands for "none known").
    Each check halves it: the prefix m = mid() is checked, update(ok) moves lo (correct) or hi (wrong) to m; when no
    prefix lies between them the search is done and lo is the number of correct leading steps."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def done(self):
        return self.hi - self.lo <= 1

    def mid(self):
        return (self.lo + self.hi) // 2

    def update(self, ok):
        if ok:
            self.lo = self.mid()
        else:
            self.hi = self.mid()


def binary_search_first_error(n_steps, prefix_ok):
    """Number of correct leading steps c in [0, n_steps], for a monotone prefix_ok(m), m = 1..n_steps
    (correct up to c, wrong after). Fig. 2: for 5 lines, m=3 accepted -> [4, 5]; m=4 rejected -> c=3.
    Calls prefix_ok at most ceil(log2(n_steps + 1)) times. One search alone; `search` steps many Intervals at once."""
    interval = Interval(0, n_steps + 1)
    while not interval.done():
        interval.update(prefix_ok(interval.mid()))
    return interval.lo


def step_labels(steps, passed, correct, neutral_comments=True):
    """Paper section 3: +1 for code lines within the first `correct` code lines (all, if passed),
    -1 for code lines after, 0 for neutral lines (neutral labeling). Without neutral labeling a neutral line
    gets the label of the prefix it ends: it adds no code, so that is the preceding code's."""
    labels, seen = [], 0
    for _, _, neutral in steps:
        if neutral and neutral_comments:
            labels.append(0)
            continue
        seen += not neutral
        labels.append(1 if passed or seen <= correct else -1)
    return labels


def select_rows(rows, how, max_passing=-1):
    """Paper Table 2. Pass rate per prompt over all its responses: hard = 0, easy = 1, medium between.
    revised_only keeps prompts where a failing response has a correct prefix (correct_steps > 0: the search found
    at least one correct code line; its first_error, counted over all lines, is then > 0 too): those responses,
    plus up to max_passing passing responses of the same prompt (-1: all)."""
    by_prompt = {}
    for r in rows:  # by prompt text: the demo's train split repeats a few short prompts under other ids
        by_prompt.setdefault(r["prompt"], []).append(r)
    keep = []
    for group in by_prompt.values():
        rate = sum(r["passed"] for r in group) / len(group)
        if how == "full" or (how == "remove_hard" and rate > 0) or (how == "medium_only" and 0 < rate < 1):
            keep += group
        elif how == "revised_only":
            revised = [r for r in group if not r["passed"] and r["correct_steps"] > 0]
            passing = [r for r in group if r["passed"]]
            if revised:
                keep += revised + (passing if max_passing < 0 else passing[:max_passing])
    return keep


@dataclass
class Labeler:
    """The checkpoint labeling now: it samples the responses and completes their prefixes (the policy itself, as the
    paper does). `args`: how it samples and judges; `timing`: seconds spent sampling and judging, summed."""
    path: str
    model: object
    tok: object
    eos: list
    args: Args
    progress: bool = True  # rank 0 shows the progress bars
    timing: dict = field(default_factory=lambda: {"sample": 0.0, "judge": 0.0})


@dataclass
class Response:
    """One sampled response while it is labeled; `row` writes it out."""
    problem: int   # its problem's index in the chunk
    sample: int    # which of the prompt's n responses
    text: str      # the completion judged
    ids: list      # its token ids as sampled
    passed: bool = False
    correct: int = 0                            # correct leading code lines (the search's answer)
    probes: list = field(default_factory=list)  # [m, correct, completions judged], in the order asked

    def code_lines(self):
        """The lines the search is over: split_steps' spans of the non-neutral lines."""
        return [s for s in sandbox.split_steps(self.text) if not s[2]]


def sample(labeler, inputs, n, temperature, stops, desc):
    """n sampled continuations of each token-id list in `inputs`, [[(text, ids)] * n], each ended by
    sandbox.end_response at its EOS or one of its `stops`, through sandbox.sample, the stages' one batched sampler;
    shorter inputs together."""
    a = labeler.args
    jobs = sorted(((i, j) for i in range(len(inputs)) for j in range(n)), key=lambda ij: len(inputs[ij[0]]))
    t = time.time()
    done = sandbox.sample(labeler.model, labeler.tok, labeler.eos, [inputs[i] for i, _ in jobs], [stops[i] for i, _ in jobs],
                          a.batch_size, labeler.progress, desc, do_sample=True, temperature=temperature, top_k=0,
                          top_p=1.0, max_new_tokens=a.max_new_tokens)
    labeler.timing["sample"] += time.time() - t
    out = [[None] * n for _ in inputs]
    for (i, j), completion in zip(jobs, done):
        out[i][j] = completion
    return out


def judge(labeler, items):
    """sandbox.check_many on (problem, completion) pairs, timed."""
    t = time.time()
    verdicts = sandbox.check_many(items, labeler.args.workers, labeler.args.timeout)
    labeler.timing["judge"] += time.time() - t
    return verdicts


def prefixes_ok(labeler, problems, prompts, stops, asks):
    """Best-of-K (paper section 3): for each (response, m) in `asks`, is the prefix through the response's m-th code
    line correct, i.e. does at least one of K completions sampled by the policy continuing it pass all the tests? The
    prefix is the response's tokens as sampled, through that line (sandbox.prefix_through_line): the policy continues
    exactly what it wrote, not a re-encoding of its text. K in two waves: k_first
    completions of every prefix, the other K - k_first only for those none of whose first ones passed (the same
    answer as K at once, fewer samples). Returns ([correct], [programs judged]), one each per ask."""
    a, tok = labeler.args, labeler.tok
    inputs, prefixes = [], []
    for r, m in asks:
        n, prefix = sandbox.prefix_through_line(tok, r.ids, r.code_lines()[m - 1])
        inputs.append(prompts[r.problem] + r.ids[:n]), prefixes.append(prefix)
    ok, programs, todo = [False] * len(asks), [0] * len(asks), list(range(len(asks)))
    for wave in ([a.k_first, a.k - a.k_first] if 0 < a.k_first < a.k else [a.k]):
        conts = sample(labeler, [inputs[i] for i in todo], wave, a.prefix_temperature,
                       [stops[asks[i][0].problem] for i in todo], f"prefixes x{wave}")
        # each completion ended where generate stopped it (a stop string may begin in the prefix)
        verdicts = judge(labeler, [(problems[asks[i][0].problem], prefixes[i] + c) for i, cs in zip(todo, conts) for c, _ in cs])
        for w, i in enumerate(todo):
            ok[i] = any(v.passed for v in verdicts[w * wave:(w + 1) * wave])  # best-of-K
            programs[i] += wave
        todo = [i for i in todo if not ok[i]]
    return ok, programs


def search(labeler, problems, prompts, stops, responses):
    """Algorithm 1 for every failing response at once: one Interval each, stepped in lockstep. The whole failing
    response is known wrong, so a response of L code lines searches its first L - 1 (Interval(0, L), as
    binary_search_first_error(L - 1) starts). Each round asks every open search's midpoint; all of them are
    completed in one sampling pass and judged in one check_many call (prefixes_ok). Fills each response's
    `correct` and `probes`."""
    intervals = [Interval(0, len(r.code_lines())) for r in responses]
    while open_ := [(r, s) for r, s in zip(responses, intervals) if not s.done()]:
        oks, programs = prefixes_ok(labeler, problems, prompts, stops, [(r, s.mid()) for r, s in open_])
        for (r, s), ok, n in zip(open_, oks, programs):
            r.probes.append([s.mid(), ok, n])
            s.update(ok)
    for r, s in zip(responses, intervals):
        r.correct = s.lo


def label_chunk(labeler, problems, demo):
    """Sample n responses per problem, judge them, and binary-search every failing one, all in lockstep. Returns
    the rows (labels, the search's cost, and on the demo the exact scorer's labels beside them)."""
    a = labeler.args
    prompts = [sandbox.prompt_ids(labeler.tok, p.prompt, a.chat_template) for p in problems]
    stops = [sandbox.stop_strings(p, a.chat_template) for p in problems]
    sampled = sample(labeler, prompts, a.n, a.temperature, stops, "sample")
    responses = [Response(i, j, text, ids) for i in range(len(problems)) for j, (text, ids) in enumerate(sampled[i])]
    for r, v in zip(responses, judge(labeler, [(problems[r.problem], r.text) for r in responses])):
        r.passed = v.passed
    search(labeler, problems, prompts, stops, [r for r in responses if not r.passed])
    return [row(r, problems[r.problem], labeler.path, demo) for r in responses]


def row(r, problem, policy, demo):
    """A labeled response as rows.jsonl holds it. Every prefix of a passing program can be completed: no search, every
    code line correct."""
    steps = sandbox.split_steps(r.text)
    correct = len(r.code_lines()) if r.passed else r.correct
    labels = step_labels(steps, r.passed, correct)
    out = {"task_id": problem.task_id, "policy": policy, "sample": r.sample, "prompt": problem.prompt, "response": r.text,
           "response_ids": r.ids,
           "checks": len(r.probes), "programs": sum(n for _, _, n in r.probes), "probes": r.probes, "passed": r.passed,
           "correct_steps": correct, "steps": [list(s) for s in steps], "labels": labels,
           "first_error": next((m for m, l in enumerate(labels) if l == -1), None)}
    if demo:  # the exact step scorer beside the labels, to measure their noise
        out["oracle"] = sandbox.demo.oracle_step_scores(problem, r.text)
    return out


def read_rows(out):
    """(every row labeled under `out`, each once; the rank files): rows.jsonl, then the rank files of a
    torchrun run. A last line cut short by a kill is dropped (its prompt is labeled again)."""
    rank_files = sorted(glob.glob(os.path.join(out, "rows.rank*.jsonl")))
    rows = {}
    for path in [p for p in [os.path.join(out, "rows.jsonl")] if os.path.exists(p)] + rank_files:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break
                try:
                    r = json.loads(line)
                    rows[r["policy"], r["task_id"], r["sample"]] = r
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    sandbox.fail(f"{path}:{i}: not a labeled row ({type(e).__name__}: {e})")
    return list(rows.values()), rank_files


def merge_rows(out, order):
    """rows.jsonl := every row read_rows finds, sorted by order[(policy, task_id)] and sample (the order of a
    one-process run); the rank files are removed. Returns the rows."""
    rows, rank_files = read_rows(out)
    rows.sort(key=lambda r: (order.get((r["policy"], r["task_id"]), len(order)), r["sample"]))
    if rows or rank_files:
        with open(os.path.join(out, "rows.jsonl.tmp"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(os.path.join(out, "rows.jsonl.tmp"), os.path.join(out, "rows.jsonl"))
        for path in rank_files:
            os.remove(path)
    return rows


def summarize(rows, timing):
    fail = [r for r in rows if not r["passed"]]
    n_fail = max(1, len(fail))
    searched = [max(0, sum(1 for s in r["steps"] if not s[2]) - 1) for r in fail]  # prefixes a search covers
    return {
        "responses": len(rows), "prompts": len({r["task_id"] for r in rows}),
        "share_passing": sum(r["passed"] for r in rows) / max(1, len(rows)),
        "failing": len(fail), "revised": sum(r["correct_steps"] > 0 for r in fail),
        "checks_per_failing": sum(r["checks"] for r in fail) / n_fail,
        "linear_checks_per_failing": sum(searched) / n_fail,  # a linear scan checks every one of them
        "programs_per_failing": sum(r["programs"] for r in fail) / n_fail,
        "linear_programs_per_failing": sum(searched) / n_fail * sum(r["programs"] for r in fail)
                                       / max(1, sum(r["checks"] for r in fail)),  # at this run's programs per check
        # the search's bound, ceil(log2(n + 1)) for n searched prefixes; must never be exceeded
        "max_checks_minus_bound": max([r["checks"] - n.bit_length() for r, n in zip(fail, searched)] or [0]),
        "seconds_sampling": timing["sample"], "seconds_judging": timing["judge"],
    } | oracle_agreement(rows)


def too_few(rows, kept, select, few=10):
    """One line when the selection kept fewer than `few` rows (None otherwise): how many, and why. A failing response
    with fewer than 2 code lines has no prefix to search (an empty one: the policy wrote no code), so its prefixes
    are not to blame."""
    if len(kept) >= few:
        return None
    fail = [r for r in rows if not r["passed"]]
    short = [r for r in fail if sum(not s[2] for s in r["steps"]) < 2]  # no prefix to search
    empty = sum(not any(not s[2] for s in r["steps"]) for r in short)
    revised = sum(r["correct_steps"] > 0 for r in fail)
    stuck = len(fail) - len(short) - revised  # searched, and no prefix found correct
    if not fail:
        why = "every response passed: there was no failing one to search"
    elif select != "revised_only":
        why = f"{len(fail)} of {len(rows)} responses fail"
    else:
        parts = [f"{revised} of {len(fail)} failing responses have a correct prefix"]
        if short:
            parts.append(f"{len(short)} have no prefix to search ({empty} without a code line, {len(short) - empty} with one: "
                         f"is the policy writing code? its stop strings, --max_new_tokens, --chat_template)")
        if stuck:
            parts.append(f"in {stuck} no completion of any prefix passed: the policy cannot recover from their first line")
        why = "; ".join(parts)
    return f"--select {select} kept {len(kept)} of {len(rows)} labeled responses: {why}"


def oracle_agreement(rows):
    """Demo only: how the search's code-line labels compare with the exact step scorer. Best-of-K errs
    mostly one way on the demo: a correct prefix none of whose K completions passes is labeled -1 (a
    wrong line is labeled +1 only when a completion repairs it by assigning its variable again)."""
    def code_lines(rs):
        return [(l, o) for r in rs if "oracle" in r for l, o, s in zip(r["labels"], r["oracle"], r["steps"]) if not s[2]]
    pairs = code_lines(rows)
    if not pairs:
        return {}
    searched = code_lines([r for r in rows if not r["passed"]])  # passing responses agree by construction
    correct = [l for l, o in pairs if o > 0]
    wrong = [l for l, o in pairs if o < 0]
    return {"labels_agree_with_oracle": sum(l == o for l, o in pairs) / len(pairs),
            "failing_labels_agree_with_oracle": sum(l == o for l, o in searched) / max(1, len(searched)),
            "correct_lines_labeled_-1": sum(l < 0 for l in correct) / max(1, len(correct)),
            "wrong_lines_labeled_+1": sum(l > 0 for l in wrong) / max(1, len(wrong))}


def main():
    args = sandbox.parse_args(Args, device="device", out="out")
    sandbox.guard_out(args, RESUME_MAY_CHANGE)  # rows of another labeling there stop it: their flags differ
    # torchrun: the ranks label apart and meet once, at the end (the gloo group is only for that)
    rank, world, device = sandbox.start_ranks(args.device, meet_only=True)
    set_seed(args.seed + rank)
    with sandbox.bad_data_exits():  # the judge on programs of known verdict: a judge failing all would label all -1
        problems = sandbox.load_problems(args.dataset, args.split)
        sandbox.self_test(problems, args.workers, args.timeout)
    random.Random(args.seed).shuffle(problems)
    problems = problems[:args.max_prompts] if args.max_prompts >= 0 else problems  # a seeded sample of the prompts
    sandbox.data_line(args.dataset, args.split, len(problems), len(args.policy), f"prompts ({args.n} responses each per "
                      f"checkpoint, a pass per checkpoint)", quiet=rank != 0, warn=False)
    with sandbox.bad_data_exits("--policy "):  # every policy up front, not after hours of labeling
        for path in args.policy:
            sandbox.find_model(path, args.revision, kind="causal", chat=args.chat_template)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=1)
    order = {key: i for i, key in enumerate((pol, p.task_id) for pol in args.policy for p in problems)}
    if rank == 0:  # resume: what earlier runs wrote, with any number of ranks, is merged into rows.jsonl
        merge_rows(args.out, order)
    if world > 1:
        dist.barrier()
    # and the (checkpoint, prompt) pairs whose n responses are all there are skipped
    count = Counter((r["policy"], r["task_id"]) for r in read_rows(args.out)[0])
    done = {key for key, c in count.items() if c >= args.n}
    mine = os.path.join(args.out, "rows.jsonl" if world == 1 else f"rows.rank{rank}.jsonl")
    timing, labeler = {"sample": 0.0, "judge": 0.0, "responses": 0}, None  # this run's, this rank's
    for path in args.policy:
        todo = [p for p in problems if (path, p.task_id) not in done][rank::world]
        if not todo:
            continue
        tok, eos = sandbox.load_tokenizer(path, args.revision)
        labeler = None  # the previous checkpoint's weights go before the next one's load (a 7B policy is 15 GB in bf16)
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        model = sandbox.load_model(AutoModelForCausalLM, path, device, dtype, args.revision).eval()
        labeler = Labeler(path, model, tok, eos, args, progress=rank == 0)
        for s in tqdm(range(0, len(todo), args.chunk), desc=f"label {os.path.basename(path.rstrip('/'))}", disable=rank > 0):
            rows = label_chunk(labeler, todo[s:s + args.chunk], sandbox.is_demo(args.dataset))
            timing["responses"] += len(rows)
            with open(mine, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))  # one write per chunk
        timing = {k: timing[k] + labeler.timing.get(k, 0) for k in timing}
    times = [timing]
    if world > 1:  # wait for every rank, then rank 0 alone merges, selects and summarizes
        times = [None] * world
        dist.all_gather_object(times, timing)
        if rank > 0:
            return
    rows = merge_rows(args.out, order)
    rows = [r for r in rows if r["policy"] in args.policy]
    by_rank = [t["responses"] for t in times]
    summary_path = os.path.join(args.out, "summary.json")
    if done and os.path.exists(summary_path):  # resume: the time spent so far is part of the run's cost
        with open(summary_path) as f:
            old = json.load(f)
        times.append({"sample": old["seconds_sampling"], "judge": old["seconds_judging"]})
    timing = {k: sum(t[k] for t in times) for k in ("sample", "judge")}  # seconds summed over ranks
    kept = select_rows(rows, args.select, args.max_passing)
    if not args.neutral_comments:  # relabel comments from the search's result (the search is the same)
        kept = [r | {"labels": step_labels(r["steps"], r["passed"], r["correct_steps"], False)} for r in kept]
    with open(os.path.join(args.out, "labels.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    summary = summarize(rows, timing) | {"select": args.select, "max_passing": args.max_passing, "kept_rows": len(kept),
                                         "kept_passing": sum(r["passed"] for r in kept), "k": args.k,
                                         "neutral_comments": args.neutral_comments, "labeled_this_run_by_rank": by_rank}
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    print("\n" + sandbox.table(["metric", "value"], summary.items()))
    if note := too_few(rows, kept, args.select):
        (sandbox.fail if not kept else print)(note)  # nothing to train a PRM on: stop with the reason


if __name__ == "__main__":
    with sandbox.bad_data_exits(interrupted="interrupted: every chunk labeled so far is in --out's rows files; the same "
                                            "command resumes from them"):
        main()
    sandbox.stop_ranks()  # torchrun: all ranks leave together, once main()'s models are gone
