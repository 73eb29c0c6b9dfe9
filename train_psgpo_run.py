"""train_psgpo_run.py - the run around train_psgpo.py's algorithm, each piece a name train_psgpo.main() calls in one
line: torchrun's ranks and the checks before any model loads (`start`), the models made ready to train and wrapped for
several ranks (`for_training`), FSDP2 around generate (`gathered`), the on-policy check (`check_on_policy`), each
phase's seconds (`Laps`), the log (`Log`), the end of an iteration: signals, checkpoints (`save_or_stop`), and exact
resume (`resume`). Plumbing, kept out of the algorithm's way.
"""
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

import sandbox


@dataclass
class Ranks:
    """This process under torchrun (one process: rank 0 of 1) and its device."""
    rank: int
    world: int
    device: str


@dataclass
class Trained:
    """The two trained models with their optimizers and learning-rate schedules: what a checkpoint holds."""
    policy: torch.nn.Module
    value: torch.nn.Module
    policy_opt: torch.optim.Optimizer
    value_opt: torch.optim.Optimizer
    policy_sched: torch.optim.lr_scheduler.LRScheduler
    value_sched: torch.optim.lr_scheduler.LRScheduler

    def optimizers(self):
        return [self.policy_opt, self.value_opt]

    def schedules(self):
        return [self.policy_sched, self.value_sched]


def start(args, may_change):
    """torchrun (RANK set): one process per rank, each sampling its own prompts, gradients all-reduced (DDP) or
    sharded (FSDP2). Before any model loads and before the ranks meet: the output folder (a used one stops; --resume
    continues only the same run: sandbox.guard_out, `may_change` the flags that may differ), the models' kinds,
    weights and tokenizers (a Hub id is downloaded here, by every rank), the checkpoint resumed from, the problems and
    the judge (sandbox.self_test); then the ranks, and the seeds. Returns (Ranks, problems)."""
    if args.fsdp and "RANK" not in os.environ:
        sandbox.fail("--fsdp shards across ranks: run it under torchrun")
    sandbox.guard_out(args, may_change, resume=args.resume)
    with sandbox.bad_data_exits("--policy "):
        sandbox.find_model(args.policy, args.revision, kind="causal", chat=args.chat_template)
    if src := newest_checkpoint(args):  # the weights a resume loads, checked as the starting ones are
        with sandbox.bad_data_exits("--resume: "):
            sandbox.find_model(src, kind="causal")
            sandbox.find_model(os.path.join(src, "value"), tokenizer=False, kind="token")
        if not os.path.isfile(os.path.join(src, "trainer_state.pt")):
            sandbox.fail(f"--resume: {src} has no trainer_state.pt (only the newest checkpoint keeps it)")
    with sandbox.bad_data_exits():  # the judge on programs of known verdict: a judge failing all would train on zeros
        problems = sandbox.load_problems(args.dataset, args.split)
        g = args.group_size if args.advantage == "group" else 1
        sandbox.data_line(args.dataset, args.split, len(problems), args.iterations * args.batch_size / g / len(problems),
                          quiet=os.environ.get("RANK", "0") != "0")
        sandbox.self_test(problems, args.workers, args.timeout)
    if args.prm == "oracle" and not sandbox.is_demo(args.dataset):
        sandbox.fail(f"--prm oracle scores demo tasks only, not {args.dataset!r}")
    if (args.dense_reward or args.value_init == "prm") and args.prm != "oracle":
        with sandbox.bad_data_exits("--dense_reward/--value_init prm need a PRM: --prm "):
            sandbox.find_model(args.prm, args.revision, kind="token")
        if sandbox.load_tokenizer(args.prm, args.revision)[0].get_vocab() != sandbox.load_tokenizer(args.policy, args.revision)[0].get_vocab():
            sandbox.fail(f"{args.prm} and {args.policy} have different tokenizers; train the PRM from this policy")
    ranks = Ranks(*sandbox.start_ranks(args.device, timeout_minutes=args.dist_timeout))
    random.seed(args.seed + ranks.rank), np.random.seed(args.seed + ranks.rank), torch.manual_seed(args.seed + ranks.rank)
    return ranks, problems


def share(rows, ranks):
    """This rank's contiguous share of `rows` (a batch, a range, a minibatch's indices): rank r of W takes the r-th of W
    equal slices, so the ranks' shares, one after another, are the rows in their order."""
    n = len(rows)
    return rows[ranks.rank * n // ranks.world:(ranks.rank + 1) * n // ranks.world]


def join(rollouts, pad_id, P=None, R=None):
    """One Rollout from several (generate calls; the ranks' shares), in order: the prompts left-padded to the widest P
    (positions count real tokens only, so the models' outputs do not change) and the responses right-padded to the
    widest R (or to P, R given)."""
    P = P or max(r.P for r in rollouts)
    R = R or max(r.response.shape[1] for r in rollouts)
    def widen(r, x, fill):  # [b, r.P + r.R] -> [b, P + R]
        return torch.nn.functional.pad(x, (P - r.P, R - (x.shape[1] - r.P)), value=fill)
    seq = torch.cat([widen(r, r.seq, pad_id) for r in rollouts])
    rmask = torch.cat([torch.nn.functional.pad(r.rmask, (0, R - r.rmask.shape[1])) for r in rollouts])
    return type(rollouts[0])([p for r in rollouts for p in r.batch], seq, torch.cat([widen(r, r.seq_mask, 0) for r in rollouts]),
                             P, seq[:, P:], rmask, *([x for r in rollouts for x in getattr(r, k)] for k in ("texts", "lengths", "steps")))


def whole_batch(ro, objects, tensors, pad_id, ranks):
    """The whole batch on every rank, from each rank's share: the Rollout, lists of per-row `objects` (verdicts, line
    scores) and [b, R] per-row `tensors` (rewards, log-probs, values), each in the batch's order (the shares are
    contiguous: run.share). One process: as they are."""
    if ranks.world == 1:
        return ro, objects, tensors
    P, R = (int(max_over_ranks(x, ranks)) for x in (ro.P, ro.response.shape[1]))
    ro = join([ro], pad_id, P, R)
    local = [ro.seq, ro.seq_mask, ro.rmask] + [torch.nn.functional.pad(t, (0, R - t.shape[1])) for t in tensors]
    every = []
    for t in local:
        parts = [torch.empty_like(t) for _ in range(ranks.world)]
        dist.all_gather(parts, t.contiguous())
        every.append(torch.cat(parts))
    lists = [None] * ranks.world
    dist.all_gather_object(lists, (ro.batch, ro.texts, ro.lengths, ro.steps, *objects))
    batch, texts, lengths, steps, *objects = ([x for part in lists for x in part[k]] for k in range(len(lists[0])))
    seq, seq_mask, rmask, *tensors = every
    return type(ro)(batch, seq, seq_mask, P, seq[:, P:], rmask, texts, lengths, steps), objects, tensors


def over_ranks(parts, ranks):
    """One optimizer step's statistics from its micro-batches' parts (train_psgpo.minibatch_stats) on every rank:
    sums, and the largest of the "max_" ones."""
    keys = list(parts[0])
    total = torch.tensor([[p[k] for k in keys] for p in parts], dtype=torch.float64, device=ranks.device)
    sums, maxes = total.sum(0), total.max(0).values
    if ranks.world > 1:
        dist.all_reduce(sums), dist.all_reduce(maxes, dist.ReduceOp.MAX)
    return {k: (maxes if k.startswith("max_") else sums)[j].item() for j, k in enumerate(keys)}


def scores_lines(args):
    """Does the run need the PRM's forward pass (its dense reward; the oracle scores lines without a model)?"""
    return args.dense_reward and args.prm != "oracle"


def freeze(model, args):
    """A model that is only run (the reference, the PRM): no gradients. FSDP2 keeps the root's parameters (embeddings,
    head: 3.3 GB per GPU at 7B) gathered after a forward, for the backward that follows it in a trained model; a frozen
    one has none, so they are resharded after each forward."""
    model.requires_grad_(False)
    if args.fsdp:
        model.register_forward_hook(lambda module, inputs, output: module.reshard())
    return model


def for_training(policy, value, args, ranks):
    """The policy and the value model ready to train: no dropout (log-probs and values must agree between rollout and
    update), gradient checkpointing if asked. Returns the modules the update calls: under torchrun without FSDP,
    DDP replicas whose gradients are all-reduced in buckets that are the .grad tensors themselves (no second copy);
    else the models themselves (FSDP2 shards them as they load)."""
    for model in (policy, value):
        if args.gradient_checkpointing:
            sandbox.checkpoint_activations(model)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if hasattr(model.config, "attention_dropout"):
            model.config.attention_dropout = 0.0
    ddp = ranks.world > 1 and not args.fsdp
    return [torch.nn.parallel.DistributedDataParallel(m, gradient_as_bucket_view=True) if ddp else m for m in (policy, value)]


def check_on_policy(sampler_check, policy, tok, problems, eos, args, ranks):
    """Once per process, before the first rollout: PPO's ratio needs rollouts drawn from exactly the distribution
    train_psgpo.token_logp computes; sampler_check measures it on a few problems' prompts (the RNGs untouched).
    Stops every rank with one line if generate's sampler was changed; returns the rounding gap, logged once."""
    policy.eval()
    prompts = [sandbox.prompt_ids(tok, p.prompt, args.chat_template) for p in problems]
    with gathered(policy, args.fsdp):
        processed, gap = sampler_check(policy, tok, prompts, eos, args.temperature, args.fsdp)
    if max_over_ranks(processed, ranks) > 1e-6:
        sandbox.fail(f"generate's sampling distribution differs from softmax(logits / T) by up to {processed:.3g} nats: rollouts "
                     "would be off-policy (a logits processor or sampling setting?)")
    return gap


class Laps:
    """Each phase's wall seconds, from the previous lap (or the start) to laps(name): {"time/<name>": s}; on a GPU
    also the iteration's peak memory."""

    def __init__(self, device):
        self.device, self.seconds, self.t = device, {}, time.time()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)

    def __call__(self, name):
        self.seconds[f"time/{name}"], self.t = time.time() - self.t, time.time()
        if self.device.startswith("cuda"):
            self.seconds["memory/peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30


@contextlib.contextmanager
def gathered(model, fsdp):
    """FSDP2 around `generate`: weights gathered once and kept through every decoding step (not gathered
    again per token), sharded again afterwards. Nothing to do for DDP or one process."""
    if not fsdp:
        yield
        return
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        model.set_reshard_after_forward(True)
        for m in model.modules():
            if isinstance(m, FSDPModule):
                m.reshard()


def max_over_ranks(x, ranks):
    """The largest value of x over all ranks (every rank stops, or none)."""
    x = torch.tensor(float(x), device=ranks.device)
    if ranks.world > 1:
        dist.all_reduce(x, dist.ReduceOp.MAX)
    return x.item()


def newest_checkpoint(args):
    """With --resume: the newest complete ckpt-NNNN/ in --out (never a half-written ckpt-NNNN.tmp), else None. Only the
    newest keeps the optimizers' state (save), so it is the one a run resumes from."""
    ckpts = sorted(glob.glob(os.path.join(args.out, "ckpt-[0-9][0-9][0-9][0-9]"))) if args.resume else []
    return ckpts[-1] if ckpts else None


def save(out, it, trained, tok, log_rows, ranks, fsdp):
    """ckpt-NNNN/: the policy and tokenizer (what label_prm_data.py and evaluate.py load), value/, and
    trainer_state.pt: optimizers, schedulers, the log (no RNG state: every draw is seeded by the seed and the
    iteration, train_psgpo.rollout and minibatches). Written under ckpt-NNNN.tmp and renamed
    when complete, so a run cut off while saving never resumes from half a checkpoint. Every rank calls it.
    FSDP: the HF folders from the full weights gathered on rank 0, the optimizers' shards with
    torch.distributed.checkpoint in optim/ (each rank writes its own). Once the new one is complete, the older ones
    keep only the policy's folder, which labeling and evaluation read: they drop trainer_state.pt, optim/ (two fp32
    AdamW moments per trained weight: 122 GB at 7B) and value/ (the critic, which only a resume reads: 28 GB at 7B)."""
    ckpt, tmp = os.path.join(out, f"ckpt-{it:04d}"), os.path.join(out, f"ckpt-{it:04d}.tmp")
    if ranks.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    if ranks.world > 1:
        dist.barrier()
    sandbox.save_model(trained.policy, tmp, tok, fsdp), sandbox.save_model(trained.value, os.path.join(tmp, "value"), None, fsdp)
    if fsdp:
        dcp.save({"policy": get_optimizer_state_dict(trained.policy, trained.policy_opt),
                  "value": get_optimizer_state_dict(trained.value, trained.value_opt)}, checkpoint_id=os.path.join(tmp, "optim"))
    if ranks.rank == 0:
        torch.save({"iteration": it, "opts": None if fsdp else [o.state_dict() for o in trained.optimizers()],
                    "scheds": [s.state_dict() for s in trained.schedules()], "world": ranks.world, "log_rows": log_rows},
                   os.path.join(tmp, "trainer_state.pt"))
        os.replace(tmp, ckpt)
        for old in sorted(glob.glob(os.path.join(out, "ckpt-[0-9][0-9][0-9][0-9]")))[:-1]:  # the newest alone resumes
            for sub in ("optim", "value"):
                shutil.rmtree(os.path.join(old, sub), ignore_errors=True)
            if os.path.exists(os.path.join(old, "trainer_state.pt")):
                os.remove(os.path.join(old, "trainer_state.pt"))
    if ranks.world > 1:
        dist.barrier()


def resume(trained, args, ranks):
    """--resume: continue exactly from the newest checkpoint in --out (newest_checkpoint): the policy's and the value
    model's weights loaded into the models built at their start (sandbox.load_weights), the optimizers (FSDP: each rank
    reads its shards), schedulers, the log so far. What a run draws depends on the seed and the iteration alone, so a
    DDP run may resume on another number of ranks; FSDP's optimizer shards need as many ranks as wrote them.
    Returns (iteration, log rows); (0, []) for a new run."""
    src = newest_checkpoint(args)
    if src is None:
        return 0, []
    state = torch.load(os.path.join(src, "trainer_state.pt"), map_location=ranks.device, weights_only=False)
    if "world" not in state or (args.fsdp and state["world"] != ranks.world):
        sandbox.fail(f"{src} was written by an older train_psgpo.py or, with --fsdp, by {state.get('world')} ranks: "
                     f"resume it with as many, not {ranks.world}, or start a new --out")
    sandbox.load_weights(trained.policy, AutoModelForCausalLM, src, args.fsdp)
    sandbox.load_weights(trained.value, AutoModelForTokenClassification, os.path.join(src, "value"), args.fsdp)
    if args.fsdp:
        osd = {"policy": get_optimizer_state_dict(trained.policy, trained.policy_opt),
               "value": get_optimizer_state_dict(trained.value, trained.value_opt)}
        dcp.load(osd, checkpoint_id=os.path.join(src, "optim"))
        set_optimizer_state_dict(trained.policy, trained.policy_opt, osd["policy"])
        set_optimizer_state_dict(trained.value, trained.value_opt, osd["value"])
    else:
        for o, s in zip(trained.optimizers(), state["opts"]):
            o.load_state_dict(s)
    for o, s in zip(trained.schedules(), state["scheds"]):
        o.load_state_dict(s)
    return state["iteration"], state["log_rows"]


def stop_on_signals():
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the iteration, save, exit (the judge's workers run in a
    session of their own, so the signal does not reach them and the iteration's verdicts stand)."""
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    return stop


class Log:
    """The run's log (docs/metrics.md). Rank 0 writes args.json, log.jsonl as of the checkpoint resumed from (then a
    row per iteration, averaged over the ranks), and TensorBoard's events when it is installed; `rows` is the log so
    far on every rank (a checkpoint keeps it)."""

    def __init__(self, args, rows, ranks):
        self.args, self.rows, self.rank, self.world, self.device, self.writer = args, rows, ranks.rank, ranks.world, ranks.device, None
        if ranks.rank != 0:
            return
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=1)
        with open(os.path.join(args.out, "log.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(args.out)
        except ImportError:
            pass

    def write(self, row):
        if self.world > 1:  # every rank's row holds the same keys: their mean
            vals = torch.tensor(list(row.values())[1:], dtype=torch.float64, device=self.device)
            dist.all_reduce(vals)
            row = {"iteration": row["iteration"]} | {k: v / self.world for k, v in zip(list(row)[1:], vals.tolist())}
        self.rows.append(row)
        if self.rank != 0:
            return
        with open(os.path.join(self.args.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if self.writer is not None and k != "iteration":
                self.writer.add_scalar(k, v, row["iteration"])

    def summary(self):
        """A short summary table (rank 0): the first and the last iteration."""
        if self.rank == 0 and self.rows:
            keys = ("train/pass_rate", "rewards/dense", "charts/kl_per_seq", "charts/entropy", "charts/explained_variance",
                    "response/steps", "response/neutral_share")
            print("\n" + sandbox.table(["metric", "first iteration", "last iteration"], [[k, self.rows[0][k], self.rows[-1][k]] for k in keys]))


def save_or_stop(it, stop, trained, tok, log, args, ranks):
    """The end of iteration it: a signal seen by any rank stops them all; a checkpoint every --save_every iterations,
    at the end, and before stopping. Returns whether to stop now."""
    stop["now"] = max_over_ranks(stop["now"], ranks) > 0
    if (it + 1) % args.save_every == 0 or it + 1 == args.iterations or stop["now"]:
        save(args.out, it + 1, trained, tok, log.rows, ranks, args.fsdp)
    if stop["now"] and ranks.rank == 0:
        print(f"\ninterrupted: saved {args.out}/ckpt-{it + 1:04d}; --resume true continues from there")
    return stop["now"]
