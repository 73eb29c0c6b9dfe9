"""train_psgpo_run.py - the run around train_psgpo.py's algorithm: torchrun's ranks and the checks before any
model loads, FSDP2 around generate, checkpoints and exact resume, signals, the log. Plumbing, kept out of the
algorithm's way; train_psgpo.py calls each in one line (`run.save(...)`).
"""
import contextlib
import glob
import json
import os
import random
import shutil
import signal
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule

import sandbox


def start(args):
    """torchrun (RANK set): one process per rank, each sampling its own prompts, gradients all-reduced (DDP) or
    sharded (FSDP2). Checks the flags, the output folder, the models and the problems before any model loads;
    seeds. Returns (rank, world, device, problems)."""
    if args.fsdp and "RANK" not in os.environ:
        raise SystemExit("train_psgpo.py: --fsdp shards across ranks: run it under torchrun")
    if args.value_init not in ("prm", "policy") or args.value_scale not in ("prm", "returns"):
        raise SystemExit(f"train_psgpo.py: --value_init must be prm or policy and --value_scale prm or returns, not {args.value_init!r} / {args.value_scale!r}")
    if args.prm == "oracle" and args.value_init == "prm":
        raise SystemExit("train_psgpo.py: --prm oracle has no weights to start the value model from: use --value_init policy")
    if args.advantage not in ("gae", "group") or (args.advantage == "group" and (args.group_size < 2 or args.batch_size % (args.group_size * int(os.environ.get("WORLD_SIZE", 1))))):
        raise SystemExit(f"train_psgpo.py: --advantage must be gae or group; group needs --group_size >= 2 dividing --batch_size per rank "
                         f"(got {args.advantage!r}, {args.group_size}, {args.batch_size})")
    used = glob.glob(os.path.join(args.out, "ckpt-[0-9][0-9][0-9][0-9]")) or os.path.exists(os.path.join(args.out, "log.jsonl"))
    if used and not args.resume:
        raise SystemExit(f"train_psgpo.py: {args.out} already holds a run (log.jsonl, ckpt-NNNN/): --resume true continues it; or choose another --out")
    needs_prm = (args.dense_reward or args.value_init == "prm") and args.prm != "oracle"
    try:
        sandbox.find_model(args.policy, args.revision)
        problems = sandbox.load_problems(args.dataset, args.split)
    except sandbox.DataError as e:
        raise SystemExit(f"train_psgpo.py: {e}")
    if args.prm == "oracle" and "inputs" not in problems[0].meta:
        raise SystemExit(f"train_psgpo.py: --prm oracle scores demo tasks only, not {args.dataset!r}")
    if needs_prm:
        try:
            config = sandbox.find_model(args.prm, args.revision)
        except sandbox.DataError as e:
            raise SystemExit(f"train_psgpo.py: --dense_reward/--value_init prm need a PRM ({e}): train one with train_prm.py, "
                             f"or run the baseline: --dense_reward false --value_init policy")
        if not any(a.endswith("ForTokenClassification") for a in config.architectures or []) or config.num_labels != 1:
            raise SystemExit(f"train_psgpo.py: {args.prm}: --prm must be a token-classification model with one output (train_prm.py writes one)")
        if sandbox.load_tokenizer(args.prm, args.revision)[0].get_vocab() != sandbox.load_tokenizer(args.policy, args.revision)[0].get_vocab():
            raise SystemExit(f"train_psgpo.py: {args.prm} and {args.policy} have different tokenizers; train the PRM from this policy")
    rank, world, device = sandbox.start_ranks(args.device)
    random.seed(args.seed + rank), np.random.seed(args.seed + rank), torch.manual_seed(args.seed + rank)
    return rank, world, device, problems


def prepare_for_training(policy, value, gradient_checkpointing):
    """No dropout (log-probs and values must agree between rollout and update); gradient checkpointing if asked."""
    for model in (policy, value):
        if gradient_checkpointing:
            sandbox.checkpoint_activations(model)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if hasattr(model.config, "attention_dropout"):
            model.config.attention_dropout = 0.0


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


def max_over_ranks(x, world, device):
    """The largest value of x over all ranks (every rank stops, or none)."""
    x = torch.tensor(float(x), device=device)
    if world > 1:
        dist.all_reduce(x, dist.ReduceOp.MAX)
    return x.item()


def newest_checkpoint(args):
    """With --resume: the newest complete ckpt-NNNN/ in --out (never a half-written ckpt-NNNN.tmp), else None."""
    ckpts = sorted(glob.glob(os.path.join(args.out, "ckpt-[0-9][0-9][0-9][0-9]"))) if args.resume else []
    return ckpts[-1] if ckpts else None


def save(out, it, policy, value, tok, opts, scheds, log_rows, rank, world, fsdp, device):
    """ckpt-NNNN/: the policy and tokenizer (what label_prm_data.py and evaluate.py load), value/, and
    trainer_state.pt: optimizers, schedulers, the log, each rank's RNGs. Written under ckpt-NNNN.tmp and renamed
    when complete, so a run cut off while saving never resumes from half a checkpoint. Every rank calls it.
    FSDP: the HF folders from the full weights gathered on rank 0, the optimizers' shards with
    torch.distributed.checkpoint in optim/ (each rank writes its own)."""
    ckpt, tmp = os.path.join(out, f"ckpt-{it:04d}"), os.path.join(out, f"ckpt-{it:04d}.tmp")
    rngs = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None}] * world
    if world > 1:
        dist.all_gather_object(rngs, rngs[0])
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    if world > 1:
        dist.barrier()
    sandbox.save_model(policy, tmp, tok, fsdp), sandbox.save_model(value, os.path.join(tmp, "value"), None, fsdp)
    if fsdp:
        dcp.save({"policy": get_optimizer_state_dict(policy, opts[0]), "value": get_optimizer_state_dict(value, opts[1])},
                 checkpoint_id=os.path.join(tmp, "optim"))
    if rank == 0:
        torch.save({"iteration": it, "opts": None if fsdp else [o.state_dict() for o in opts], "scheds": [s.state_dict() for s in scheds],
                    "ranks": rngs, "log_rows": log_rows}, os.path.join(tmp, "trainer_state.pt"))
        os.replace(tmp, ckpt)
    if world > 1:
        dist.barrier()


def resume(src, policy, value, opts, scheds, args, rank, world, device):
    """Continue exactly from checkpoint `src`: optimizers (FSDP: each rank reads its shards), schedulers, this
    rank's RNGs, the log so far (the prompts drawn depend on the iteration alone). Returns (iteration, log)."""
    state = torch.load(os.path.join(src, "trainer_state.pt"), map_location=device, weights_only=False)
    if len(state.get("ranks", [])) != world:
        raise SystemExit(f"train_psgpo.py: {src} was written by {len(state.get('ranks', []))} ranks or an older train_psgpo.py; "
                         f"resume it with as many ranks, not {world}, or start a new --out")
    if args.fsdp:
        osd = {"policy": get_optimizer_state_dict(policy, opts[0]), "value": get_optimizer_state_dict(value, opts[1])}
        dcp.load(osd, checkpoint_id=os.path.join(src, "optim"))
        set_optimizer_state_dict(policy, opts[0], osd["policy"]), set_optimizer_state_dict(value, opts[1], osd["value"])
    for o, s in zip(scheds if args.fsdp else opts + scheds, state["scheds"] if args.fsdp else state["opts"] + state["scheds"]):
        o.load_state_dict(s)
    mine = state["ranks"][rank]
    random.setstate(mine["python"]), np.random.set_state(mine["numpy"]), torch.set_rng_state(mine["torch"].cpu())
    if mine["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(mine["cuda"].cpu(), device)
    return state["iteration"], state["log_rows"]


def stop_on_signals():
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the iteration, save, exit (the judge's workers run in a
    session of their own, so the signal does not reach them and the iteration's verdicts stand)."""
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    return stop


def start_log(args, log_rows, rank):
    """Rank 0: args.json, log.jsonl as of the checkpoint resumed from, and TensorBoard when it is installed."""
    if rank != 0:
        return None
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(asdict(args), f, indent=1)
    with open(os.path.join(args.out, "log.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in log_rows)
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(args.out)
    except ImportError:
        return None


def log(row, log_rows, writer, args, world, device):
    """The row averaged over ranks, appended to log_rows; rank 0 writes it to log.jsonl (and TensorBoard)."""
    if world > 1:
        vals = torch.tensor(list(row.values())[1:], dtype=torch.float64, device=device)
        dist.all_reduce(vals)
        row = {"iteration": row["iteration"]} | {k: v / world for k, v in zip(list(row)[1:], vals.tolist())}
    log_rows.append(row)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    with open(os.path.join(args.out, "log.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    for k, v in row.items():
        if writer is not None and k != "iteration":
            writer.add_scalar(k, v, row["iteration"])


def summary(log_rows, rank):
    """A short summary table (rank 0): the first and the last iteration."""
    if rank == 0 and log_rows:
        first, last = log_rows[0], log_rows[-1]
        print("\n| metric | first iteration | last iteration |\n|---|---|---|")
        for k in ("train/pass_rate", "rewards/dense", "charts/kl_per_seq", "charts/entropy", "charts/explained_variance", "response/steps", "response/neutral_share"):
            print(f"| {k} | {first[k]:.3f} | {last[k]:.3f} |")
