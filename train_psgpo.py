"""train_psgpo.py - stage 3: PPO with process supervision (paper section 4.1, Eq. 3): PSGPO.

Hand-written PPO + GAE. The PRM R_phi (train_prm.py) enters twice:
  dense reward  r_m = lam * R_phi(x, y<=m) / T  on the last token of code line m   (--dense_reward)
  value init    the value model starts as a copy of the PRM (body and head)      (--value_init prm)
The paper's four settings are these two flags; `--dense_reward false --value_init policy` is the RL
baseline (unit-test reward only), which needs no PRM and saves the checkpoints label_prm_data.py
samples from. The defaults are the demo's settings:

    python train_psgpo.py --policy checkpoints/demo-sft --dense_reward false --value_init policy --out runs/baseline
    python train_psgpo.py --policy checkpoints/demo-sft --prm runs/prm --out runs/psgpo
    torchrun --nproc_per_node 8 train_psgpo.py --policy Qwen/Qwen2.5-Coder-7B-Instruct --fsdp true ...   (README)

Reading order: the math (GAE, the clipped losses, Eq. 3), value init, then main(): the models, and each
iteration's numbered phases. Plumbing (torchrun, checkpoints and resume, signals, logging) is below main.

Padding convention: prompts are left-padded to P columns, so every response starts at column P;
`seq = [pad.. prompt | response | pad..]`, [B, P + R]. Response token t (column P + t) is an action:
its log-prob comes from the logits at column P + t - 1, the value of the state before it, V(s_t), from
the value head at column P + t - 1, and a line's dense reward sits on the token holding the line's last
character. The outcome reward (1 if all tests pass, else 0) sits on the response's last token (its EOS
when it has one).
"""
import contextlib
import glob
import json
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, HfArgumentParser

import sandbox


@dataclass
class Args:
    # common
    policy: str = field(default="checkpoints/demo-sft", metadata={"help": "starting policy (and KL reference): the SFT checkpoint or any HF causal LM (folder or Hub id)"})
    prm: str = field(default="runs/prm", metadata={"help": "PRM folder (train_prm.py), needed for --dense_reward or --value_init prm; 'oracle': demo only, the exact step scorer as dense reward"})
    out: str = field(default="runs/psgpo", metadata={"help": "run folder: args.json, log.jsonl, ckpt-NNNN/ checkpoints"})
    dataset: str = field(default="demo", metadata={"help": "demo | humaneval | mbpp | livecodebench | a .jsonl path"})
    split: str = field(default="train", metadata={"help": "split the prompts come from"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (under torchrun: each rank its own GPU)"})
    bf16: bool = field(default=False, metadata={"help": "compute in bfloat16 (GPUs): trained weights stay fp32 under autocast, frozen ones are stored in bf16"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    fsdp: bool = field(default=False, metadata={"help": "under torchrun: shard the four models with PyTorch FSDP2 instead of DDP replicas (7B-class models)"})
    chat_template: bool = field(default=False, metadata={"help": "feed prompts through the tokenizer's chat template (instruct models; sandbox.prompt_ids)"})
    revision: str = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of Hub ids given as --policy / --prm"})
    # the paper's settings (section 4.1)
    dense_reward: bool = field(default=True, metadata={"help": "add the PRM's line rewards (Eq. 3)"})
    value_init: str = field(default="prm", metadata={"help": "prm: value model = copy of the PRM (--prm); policy: policy body + fresh head"})
    value_scale: str = field(default="prm", metadata={"help": "with --value_init prm: prm (copied as it is, the paper) | returns (its head mapped from [-1, 1] to the returns' [0, 1])"})
    lam_fail: float = field(default=0.25, metadata={"help": "Eq. 3 lambda for a response that fails its tests"})
    lam_pass: float = field(default=0.025, metadata={"help": "Eq. 3 lambda for a response that passes"})
    length_norm: bool = field(default=True, metadata={"help": "divide line rewards by T, the number of code lines (false shows the hack)"})
    kl_coef: float = field(default=0.0, metadata={"help": "beta: per-token KL penalty in the reward, as in Eq. 3"})
    kl_loss_coef: float = field(default=0.25, metadata={"help": "coefficient of the exact KL to the reference (whole vocabulary) added to the loss"})
    # PPO
    iterations: int = field(default=8, metadata={"help": "PPO iterations (rollout + update)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per iteration (over all ranks), one response each"})
    minibatch_size: int = field(default=32, metadata={"help": "sequences per gradient step (over all ranks)"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    lr: float = field(default=1e-4, metadata={"help": "policy learning rate"})
    value_lr: float = field(default=3e-4, metadata={"help": "value model learning rate"})
    warmup: int = field(default=20, metadata={"help": "linear learning-rate warm-up, in optimizer steps"})
    critic_warmup: int = field(default=0, metadata={"help": "iterations at the start that train the value model alone (the policy does not move)"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    vf_clip: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=192, metadata={"help": "longest response in tokens"})
    # around the loop
    save_every: int = field(default=2, metadata={"help": "checkpoint every N iterations (and at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in --out"})
    workers: int = field(default=2, metadata={"help": "judge worker processes per rank"})
    timeout: float = field(default=3.0, metadata={"help": "seconds per program"})


# ------------------------------------------------------------------ the math, as small pure functions
def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask):
    mean = masked_mean(x, mask)
    return (x - mean) * torch.rsqrt(masked_mean((x - mean) ** 2, mask) + 1e-8)


def compute_gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation over response tokens. rewards, values, mask: [B, T]; mask is 1
    on response tokens (a prefix of each row); the value after the last token is 0.
        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * A_{t+1}
    Returns (advantages, returns = advantages + values), [B, T], zero off the mask."""
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_mask = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        next_value = values[:, t + 1] * next_mask if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * next_mask * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logp, old_logp, advantages, mask, clip):
    """PPO's clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old."""
    ratio = torch.exp(logp - old_logp)
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return masked_mean(loss, mask), masked_mean(((ratio - 1).abs() > clip).float(), mask)


def value_loss(values, old_values, returns, mask, clip):
    """Clipped value loss: 0.5 * mean of max((V - G)^2, (V_old + clip(V - V_old, -c, c) - G)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def dense_reward(step_tokens, step_scores, neutral, last_token, passed, lam_fail, lam_pass, length_norm):
    """Eq. 3: [(token, r_m)] with r_m = lam * R_phi(x, y<=m) / T on the last token of code line m; lam is
    lam_pass for a passing response and lam_fail for a failing one; T = number of *code* lines.
    Ours, where the paper leaves it open: neutral lines (comments, docstrings, `pass`: sandbox.split_steps)
    earn 0 (their neutral label) and are not counted in T, so adding them can neither shrink a failing
    response's penalty nor earn anything (the paper's policy learned to write excessive comments); a
    response without a code line (empty, comments only) gets the floor -lam_fail on its last token, no more
    than the worst real attempt (sum >= -lam when R_phi >= -1)."""
    code = [(t, s) for t, s, n in zip(step_tokens, step_scores, neutral) if not n]
    if not code:
        return [(last_token, -lam_fail)]
    lam = lam_pass if passed else lam_fail
    T = len(code) if length_norm else 1
    return [(t, lam * s / T) for t, s in code]


def forward(model, seq, mask):
    """Logits [B, L, V] (or scores [B, L, 1]) for left-padded rows: positions count real tokens only."""
    return model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits


def token_logp(model, seq, mask, P, temperature):
    """log pi(y_t | x, y<t) of each response token, [B, R] (logits at column P + t - 1 predict token t)."""
    logits = forward(model, seq, mask)[:, P - 1:-1].float() / temperature
    return torch.gather(F.log_softmax(logits, -1), 2, seq[:, P:, None])[..., 0]


def init_value_model(args, load):
    """Value initialization (paper 4.1). --value_init prm: the critic starts as a copy of the PRM, body and
    scalar head. The PRM was trained to score the prefix through token t, R_phi(x, y<=t), at column P + t,
    and the critic reads V(s_t), the value of the state before token t, at column P + t - 1: so the copied
    critic starts at V(s_t) = R_phi(x, y<t), the PRM's score of everything written before token t.
    --value_scale returns maps the head's output from the labels' [-1, 1] to the outcome reward's [0, 1]
    (V = (R_phi + 1) / 2), the scale of the returns it is trained on. --value_init policy (the baseline):
    the policy's body with a fresh head."""
    if args.value_init == "policy":
        return load(AutoModelForTokenClassification, args.policy, torch.float32, num_labels=1)
    value = load(AutoModelForTokenClassification, args.prm, torch.float32)
    if args.value_scale == "returns":
        head = getattr(value, "score", None) or value.classifier  # Llama / Qwen2: score; GPT-2: classifier
        with torch.no_grad():
            head.weight.mul_(0.5), head.bias.mul_(0.5).add_(0.5)
    return value


def dense_rewards(tok, responses, lengths, steps, scores, batch, texts, passed, args):
    """Phase 3 for a batch: [B, R] rewards holding Eq. 3's r_m on the token holding each code line's last
    character (sandbox.line_end_tokens: the token train_prm.py puts the line's label on), and every line's
    score. scores [B, R]: the PRM's R_phi(x, y<=t) after each response token; None for --prm oracle (the
    demo's exact step scorer)."""
    dense, step_scores = torch.zeros(len(batch), responses.shape[1], device=responses.device), []
    for b, (ids, st) in enumerate(zip(responses.tolist(), steps)):
        ends = sandbox.line_end_tokens(tok, ids[:lengths[b]], st)
        step_scores.append(sandbox.demo.oracle_step_scores(batch[b], texts[b]) if scores is None else scores[b, ends].tolist())
        for t, r in dense_reward(ends, step_scores[-1], [n for _, _, n in st], lengths[b] - 1, bool(passed[b]),
                                 args.lam_fail, args.lam_pass, args.length_norm):
            dense[b, t] += r
    return dense, step_scores


@torch.no_grad()
def sampler_check(policy, tok, rows, eos, temperature, fsdp, new_tokens=32):
    """PPO's ratio assumes the rollouts were drawn from softmax(logits / temperature), the distribution
    token_logp computes; a logits processor or sampling setting in generate (a repetition penalty, top-k)
    would change what it draws, and the first minibatch's ratio would be 1 all the same. Samples a few short
    responses; returns (processed, gap) over their tokens: processed = max |log p of generate's processed
    scores - log softmax(its raw logits / T)|, both fp32 from the same call, so exactly 0 unless something
    changed the distribution, whatever the model's precision; gap = max |log p_sampler - token_logp|, the
    rounding between step-by-step decoding and one forward pass (~1e-6 in fp32, larger in bf16), logged.
    The RNGs are left as they were, so the run's samples do not depend on the check."""
    with torch.random.fork_rng(devices=[policy.device] if policy.device.type == "cuda" else []):
        out, qmask = sandbox.generate(policy, tok, rows, eos, synced_gpus=fsdp, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                      max_new_tokens=new_tokens, output_scores=True, output_logits=True, return_dict_in_generate=True)
    P, response = qmask.shape[1], out.sequences[:, qmask.shape[1]:]
    logp = lambda scores: torch.stack(scores, 1).float().log_softmax(-1).gather(2, response[..., None])[..., 0]  # noqa: E731  [B, R]
    is_eos = torch.isin(response, torch.tensor(eos, device=response.device)).long()
    valid = (is_eos.cumsum(1) - is_eos) == 0  # through the first EOS
    sampler = logp(out.scores)
    trainer = token_logp(policy, out.sequences, torch.cat([qmask, torch.ones_like(response)], 1), P, temperature)
    worst = lambda d: torch.where(valid, d.abs(), 0).max().item()  # noqa: E731
    return worst(sampler - logp([x / temperature for x in out.logits])), worst(sampler - trainer)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    rank, world, device, problems = start(args)           # torchrun's ranks, the checks, the seeds, the prompts
    rng = random.Random(args.seed * 1000 + rank)          # which prompts this rank draws
    src = newest_checkpoint(args) or args.policy          # --resume: the newest ckpt-NNNN/ in --out

    # The models: the policy (trained), its frozen copy the reference, the PRM (frozen), the value model (trained).
    # Trained models keep fp32 weights (--bf16 autocasts their forward passes: bf16 weights would round small
    # AdamW updates away); frozen ones are stored in bf16 under --bf16. FSDP: each rank holds a shard of each.
    tok, eos = sandbox.load_tokenizer(src, args.revision)
    load = lambda cls, path, dtype, **kw: sandbox.load_model(cls, path, device, dtype, args.revision, args.fsdp, args.bf16, **kw)  # noqa: E731
    frozen = torch.bfloat16 if args.bf16 else torch.float32
    policy = load(AutoModelForCausalLM, src, torch.float32)
    ref = load(AutoModelForCausalLM, args.policy, frozen).requires_grad_(False)
    prm = load(AutoModelForTokenClassification, args.prm, frozen).requires_grad_(False) if args.dense_reward and args.prm != "oracle" else None
    value = load(AutoModelForTokenClassification, os.path.join(src, "value"), torch.float32) if src != args.policy else init_value_model(args, load)
    prepare_for_training(policy, value, args.gradient_checkpointing)
    opts = [torch.optim.AdamW(policy.parameters(), lr=args.lr, eps=1e-5), torch.optim.AdamW(value.parameters(), lr=args.value_lr, eps=1e-5)]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / args.warmup)) for o in opts]  # linear warm-up
    start_it, log_rows = resume(src, policy, value, opts, scheds, rng, args, rank, world, device) if src != args.policy else (0, [])
    # DDP: gradients all-reduced in buckets that are the .grad tensors themselves (no second copy)
    train_policy, train_value = (torch.nn.parallel.DistributedDataParallel(m, gradient_as_bucket_view=True) if world > 1 and not args.fsdp else m
                                 for m in (policy, value))
    writer, stop = start_log(args, log_rows, rank), stop_on_signals()
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=args.bf16)
    per_rank, mb = args.batch_size // world, max(1, args.minibatch_size // world)

    bar = tqdm(range(start_it, args.iterations), desc="psgpo", initial=start_it, total=args.iterations, disable=rank != 0)
    for it in bar:
        seconds = {}
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        # 1. Rollout: one response per prompt, sampled with the KV cache from left-padded prompts
        t0 = time.time()
        policy.eval(), value.eval()  # eval mode for the rollout: generate keeps its KV cache
        batch = rng.sample(problems, per_rank)
        prompts = [sandbox.prompt_ids(tok, p.prompt, args.chat_template) for p in batch]
        stops = [sandbox.stop_strings(p, args.chat_template) for p in batch]
        if it == start_it:  # once per process: rollouts are drawn from exactly the distribution token_logp computes
            with gathered(policy, args.fsdp):
                processed, sampler_gap = sampler_check(policy, tok, prompts[:4], eos, args.temperature, args.fsdp)
            if max_over_ranks(processed, world, device) > 1e-6:
                raise SystemExit(f"train_psgpo.py: generate's sampling distribution differs from softmax(logits / T) by up to {processed:.3g} "
                                 "nats: rollouts would be off-policy (a logits processor or sampling setting?)")
        with torch.no_grad(), autocast, gathered(policy, args.fsdp):  # FSDP: every rank steps until all are done
            seq, qmask = sandbox.generate(policy, tok, prompts, eos, sorted({s for st in stops for s in st}), args.fsdp, do_sample=True,
                                          temperature=args.temperature, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens)
        P = qmask.shape[1]
        texts, lengths = zip(*(sandbox.end_response(tok, row, eos, st) for row, st in zip(seq[:, P:].tolist(), stops)))
        R = max(lengths)  # trim to the longest kept response: every later pass runs at this width
        response, seq = seq[:, P:P + R], seq[:, :P + R]                                    # [B, R], [B, P + R]
        rmask = (torch.arange(R, device=device)[None] < torch.tensor(lengths, device=device)[:, None]).float()  # [B, R]
        seq_mask = torch.cat([qmask, rmask.long()], 1)                                      # [B, P + R]
        seconds["time/generate"] = time.time() - t0

        # 2. Outcome reward: 1 if the program passes all its tests, 0 otherwise, on the response's last token
        t0 = time.time()
        passed = torch.tensor([v.passed for v in sandbox.check_many(list(zip(batch, texts)), args.workers, args.timeout)], dtype=torch.float, device=device)
        rewards = torch.zeros(len(batch), R, device=device)
        rewards[torch.arange(len(batch)), torch.tensor(lengths, device=device) - 1] += passed
        seconds["time/judge"] = time.time() - t0

        # 3. Dense reward (Eq. 3): the PRM's score of each code line, r_m = lam * R_phi(x, y<=m) / T on the line's last token
        t0 = time.time()
        steps = [sandbox.split_steps(x) for x in texts]
        dense, step_scores = torch.zeros_like(rewards), []
        if args.dense_reward:
            with torch.no_grad(), autocast:
                scores = forward(prm, seq, seq_mask)[:, P:, 0].float() if prm is not None else None  # [B, R]: R_phi(x, y<=t) after token t
            dense, step_scores = dense_rewards(tok, response, lengths, steps, scores, batch, texts, passed, args)
        rewards += dense

        # 4. The rollout under the models: log pi_old (PPO's ratio), log pi_ref (the KL) and the values V(s_t)
        chunks = torch.arange(len(batch), device=device).split(mb)
        with torch.no_grad(), autocast:  # in minibatches: [B, R, V] logits need not fit at once
            old_logp = torch.cat([token_logp(policy, seq[i], seq_mask[i], P, args.temperature) for i in chunks])  # [B, R]
            ref_logp = torch.cat([token_logp(ref, seq[i], seq_mask[i], P, args.temperature) for i in chunks])    # [B, R]
            old_values = torch.cat([forward(value, seq[i], seq_mask[i])[:, P - 1:-1, 0].float() for i in chunks]) * rmask  # [B, R]: V(s_t)
        seconds["time/score"] = time.time() - t0

        # 5. KL penalty per token (beta in Eq. 3): r_t -= beta (log pi - log pi_ref); then GAE, advantages whitened
        kl = (old_logp - ref_logp) * rmask
        rewards = (rewards - args.kl_coef * kl) * rmask
        advantages, returns = compute_gae(rewards, old_values, rmask, args.gamma, args.gae_lambda)
        advantages = masked_whiten(advantages, rmask)

        # 6. PPO epochs over minibatches: the clipped policy loss (+ the exact KL to the reference) and the clipped value loss
        t0 = time.time()
        actor = it >= args.critic_warmup  # --critic_warmup: the first iterations train the value model alone
        stats = {k: [] for k in ("pg", "vf", "clipfrac", "approx_kl", "entropy", "exact_kl")}
        policy.train(), value.train()  # train mode for the update (gradient checkpointing needs it)
        for _ in range(args.ppo_epochs):
            for idx in torch.randperm(len(batch), device=device).split(mb):
                m, s, sm = rmask[idx], seq[idx], seq_mask[idx]
                with autocast:
                    logits = forward(train_policy, s, sm)[:, P - 1:-1].float() / args.temperature
                    vpred = forward(train_value, s, sm)[:, P - 1:-1, 0].float()
                logp_all = F.log_softmax(logits, -1)
                logp = torch.gather(logp_all, 2, response[idx][..., None])[..., 0]
                pg, clipfrac = policy_loss(logp, old_logp[idx], advantages[idx], m, args.clip)
                loss = pg
                if args.kl_loss_coef:  # exact KL(pi || pi_ref) over the whole vocabulary, per token
                    with torch.no_grad(), autocast:
                        ref_all = F.log_softmax(forward(ref, s, sm)[:, P - 1:-1].float() / args.temperature, -1)
                    exact = masked_mean((logp_all.exp() * (logp_all - ref_all)).sum(-1), m)
                    loss = loss + args.kl_loss_coef * exact
                    stats["exact_kl"].append(exact.item())
                vf = value_loss(vpred, old_values[idx], returns[idx], m, args.vf_clip)
                (loss * actor + vf).backward()  # separate models and optimizers: one backward serves both
                for o, sched, model, moves in zip(opts, scheds, (policy, value), (actor, True)):
                    if moves:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        o.step()
                        sched.step()
                    o.zero_grad(set_to_none=True)  # free the gradients before the next forward
                with torch.no_grad():
                    stats["pg"].append(pg.item()), stats["vf"].append(vf.item()), stats["clipfrac"].append(clipfrac.item())
                    stats["approx_kl"].append(masked_mean(0.5 * (logp - old_logp[idx]) ** 2, m).item())
                    stats["entropy"].append(masked_mean(-(logp_all.exp() * logp_all).sum(-1), m).item())
        seconds["time/update"] = time.time() - t0

        row = log_row(it, passed, dense, kl, stats, returns, old_values, rmask, steps, step_scores, lengths, batch, texts, seconds, device)
        if it == start_it:
            row["charts/sampler_gap"] = sampler_gap
        log(row, log_rows, writer, args, world, device)
        bar.set_postfix(pass_rate=f"{log_rows[-1]['train/pass_rate']:.2f}", kl=f"{log_rows[-1]['charts/kl_per_seq']:.2f}")
        stop["now"] = max_over_ranks(stop["now"], world, device) > 0  # a signal seen by any rank stops them all after this iteration
        if (it + 1) % args.save_every == 0 or it + 1 == args.iterations or stop["now"]:
            save(args.out, it + 1, policy, value, tok, opts, scheds, rank_state(rng, device), log_rows, rank, world, args.fsdp)
        if stop["now"]:
            if rank == 0:
                print(f"\ninterrupted: saved {args.out}/ckpt-{it + 1:04d}; --resume true continues from there")
            break
    finish(log_rows, rank, world)


# ------------------------------------------------------------------ plumbing: ranks, models, checkpoints, signals, logs
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
    ddp = "RANK" in os.environ
    if ddp:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else args.device
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // world))
    random.seed(args.seed + rank), np.random.seed(args.seed + rank), torch.manual_seed(args.seed + rank)
    return rank, world, device, problems


def prepare_for_training(policy, value, gradient_checkpointing):
    """No dropout (log-probs and values must agree between rollout and update); gradient checkpointing if asked."""
    for model in (policy, value):
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
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


def save(out, it, policy, value, tok, opts, scheds, rank_state, log_rows, rank, world, fsdp):
    """ckpt-NNNN/: policy and tokenizer (what label_prm_data.py and evaluate.py load), value/, and
    trainer_state.pt: optimizers, schedulers, the log, and each rank's RNGs and prompt stream. Written under
    ckpt-NNNN.tmp and renamed when complete, so a run cut off while saving never resumes from half a checkpoint.
    Every rank calls it (its RNG state travels to rank 0). FSDP: the HF folders from the full state dict
    (gathered on rank 0), the optimizers' shards with torch.distributed.checkpoint in optim/."""
    ckpt = os.path.join(out, f"ckpt-{it:04d}")
    states = [rank_state]
    if world > 1:
        states = [None] * world
        dist.all_gather_object(states, rank_state)
    if rank == 0:
        shutil.rmtree(ckpt + ".tmp", ignore_errors=True)
    if world > 1:
        dist.barrier()
    weights = [None, None]
    if fsdp:  # collectives: every rank takes part
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = [get_model_state_dict(m, options=full) for m in (policy, value)]
        dcp.save({"policy": get_optimizer_state_dict(policy, opts[0]), "value": get_optimizer_state_dict(value, opts[1])},
                 checkpoint_id=os.path.join(ckpt + ".tmp", "optim"))
    if rank == 0:
        policy.save_pretrained(ckpt + ".tmp", state_dict=weights[0])
        tok.save_pretrained(ckpt + ".tmp")
        value.save_pretrained(os.path.join(ckpt + ".tmp", "value"), state_dict=weights[1])
        torch.save({"iteration": it, "opts": None if fsdp else [o.state_dict() for o in opts], "scheds": [s.state_dict() for s in scheds],
                    "ranks": states, "log_rows": log_rows}, os.path.join(ckpt + ".tmp", "trainer_state.pt"))
        os.replace(ckpt + ".tmp", ckpt)
    if world > 1:
        dist.barrier()


def resume(src, policy, value, opts, scheds, rng, args, rank, world, device):
    """Continue exactly from checkpoint `src`: optimizers (FSDP: each rank reads its shards), schedulers, this
    rank's RNGs and prompt stream, the log so far. Returns (iteration, log rows)."""
    state = torch.load(os.path.join(src, "trainer_state.pt"), map_location=device, weights_only=False)
    if "ranks" not in state:
        raise SystemExit(f"train_psgpo.py: {src}: written by an older train_psgpo.py (no per-rank state): start a new --out")
    if len(state["ranks"]) != world:
        raise SystemExit(f"train_psgpo.py: {src} was written by {len(state['ranks'])} ranks; resume it with as many, not {world}")
    if args.fsdp:
        osd = {"policy": get_optimizer_state_dict(policy, opts[0]), "value": get_optimizer_state_dict(value, opts[1])}
        dcp.load(osd, checkpoint_id=os.path.join(src, "optim"))
        set_optimizer_state_dict(policy, opts[0], osd["policy"]), set_optimizer_state_dict(value, opts[1], osd["value"])
    else:
        for o, s in zip(opts, state["opts"]):
            o.load_state_dict(s)
    for o, s in zip(scheds, state["scheds"]):
        o.load_state_dict(s)
    mine = state["ranks"][rank]
    rng.setstate(mine["prompts"]), random.setstate(mine["python"]), np.random.set_state(mine["numpy"]), torch.set_rng_state(mine["torch"].cpu())
    if mine["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(mine["cuda"].cpu(), device)
    return state["iteration"], state["log_rows"]


def rank_state(rng, device):
    """This rank's randomness: the prompt stream, Python, NumPy, torch (CPU and this rank's GPU)."""
    return {"prompts": rng.getstate(), "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None}


def stop_on_signals():
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: finish the iteration, save, exit (the judge's workers run in a
    session of their own, so the signal does not reach them and the iteration's verdicts stand)."""
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    return stop


def log_row(it, passed, dense, kl, stats, returns, old_values, rmask, steps, step_scores, lengths, batch, texts, seconds, device):
    """One iteration's metrics (docs/metrics.md)."""
    n_steps = max(1, sum(len(s) for s in steps))
    var_returns = masked_mean((returns - masked_mean(returns, rmask)) ** 2, rmask)
    residual = returns - old_values
    row = {"iteration": it + 1, "train/pass_rate": passed.mean().item(),
           "rewards/outcome": passed.mean().item(), "rewards/dense": dense.sum(1).mean().item(),
           "charts/kl_per_seq": kl.sum(1).mean().item(), "charts/approx_kl": np.mean(stats["approx_kl"]),
           "charts/clipfrac": np.mean(stats["clipfrac"]), "charts/entropy": np.mean(stats["entropy"]),
           "losses/policy_loss": np.mean(stats["pg"]), "losses/value_loss": np.mean(stats["vf"]),
           "charts/explained_variance": (1 - masked_mean((residual - masked_mean(residual, rmask)) ** 2, rmask) / var_returns.clamp(min=1e-8)).item(),
           "response/steps": float(np.mean([len(s) for s in steps])), "response/tokens": float(np.mean(lengths)),
           "response/neutral_share": sum(n for st in steps for _, _, n in st) / n_steps,
           "response/prm_negative_share": sum(s < 0 for sc in step_scores for s in sc) / n_steps} | seconds
    if stats["exact_kl"]:
        row["charts/exact_kl"] = np.mean(stats["exact_kl"])
    if device.startswith("cuda"):
        row["memory/peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if "wrong_forms" in batch[0].meta:  # demo: how often each planted mistake is still written
        counts = [sandbox.demo.planted_mistakes(p, t) for p, t in zip(batch, texts)]
        for kind in sandbox.demo.PLANTED_RATES:
            row[f"planted/{kind}"] = sum(c[kind][0] for c in counts) / max(1, sum(c[kind][1] for c in counts))
    return row


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


def finish(log_rows, rank, world):
    """A short summary table (rank 0), then leave the process group."""
    if rank == 0 and log_rows:
        first, last = log_rows[0], log_rows[-1]
        print("\n| metric | first iteration | last iteration |\n|---|---|---|")
        for k in ("train/pass_rate", "rewards/dense", "charts/kl_per_seq", "charts/entropy", "charts/explained_variance", "response/steps", "response/neutral_share"):
            print(f"| {k} | {first[k]:.3f} | {last[k]:.3f} |")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
