"""Stage 3: PPO with process supervision (paper section 4.1, Eq. 3): PSGPO.

Hand-written PPO + GAE. The PRM R_phi (train_prm.py) enters twice:
  dense reward  r_m = lam * R_phi(x, y<=m) / T  on the last token of line m   (--dense_reward)
  value init    the value model starts as a copy of the PRM (body and head)  (--value_init prm)
The paper's four settings are these two flags; `--dense_reward false --value_init policy` is the
RL baseline (unit-test reward only), which needs no PRM and saves the checkpoints label_prm_data.py
samples from.

    python train_psgpo.py --dense_reward false --value_init policy --out runs/baseline      # baseline
    python train_psgpo.py --prm runs/prm --out runs/psgpo                                   # PSGPO
    torchrun --nproc_per_node 4 train_psgpo.py --policy Qwen/... --dataset mbpp --device cuda --bf16 ...

Padding convention: prompts are left-padded to P columns, so every response starts at column P;
`seq = [pad.. prompt | response | pad..]`, [B, P + R]. Response token t (column P + t) is an action:
its log-prob comes from the logits at column P + t - 1, the value of the state before it V(s_t) from
the value head at column P + t - 1, and a line's dense reward sits on the line's last token. The
outcome reward (1 if all tests pass, else 0) sits on the response's last token (its eos when it has one).
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
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer, GenerationConfig, HfArgumentParser

import sandbox


@dataclass
class Args:
    # common
    policy: str = field(default="runs/sft", metadata={"help": "starting policy: the SFT checkpoint or any HF causal LM"})
    prm: str = field(default="runs/prm", metadata={"help": "PRM folder (train_prm.py), needed for --dense_reward or --value_init prm; 'oracle': demo only, sandbox's exact step scorer as dense reward"})
    out: str = field(default="runs/psgpo", metadata={"help": "run folder: log.jsonl, ckpt-NNNN/ checkpoints"})
    dataset: str = field(default="demo", metadata={"help": "demo | humaneval | mbpp | livecodebench | a .jsonl path"})
    split: str = field(default="train", metadata={"help": "split the prompts come from"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (under torchrun: each rank its own GPU)"})
    bf16: bool = field(default=False, metadata={"help": "autocast to bfloat16 (GPUs)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    fsdp: bool = field(default=False, metadata={"help": "under torchrun: shard the four models with PyTorch FSDP2 (fully_shard) instead of DDP replicas (7B-class models)"})
    # the paper's settings (section 4.1)
    dense_reward: bool = field(default=True, metadata={"help": "add the PRM's line rewards (Eq. 3)"})
    value_init: str = field(default="prm", metadata={"help": "prm: value model = copy of the PRM; policy: policy body + fresh head"})
    lam_fail: float = field(default=0.25, metadata={"help": "Eq. 3 lambda for a response that fails its tests"})
    lam_pass: float = field(default=0.025, metadata={"help": "Eq. 3 lambda for a response that passes"})
    length_norm: bool = field(default=True, metadata={"help": "divide line rewards by T, the number of lines (false shows the hack)"})
    kl_coef: float = field(default=0.05, metadata={"help": "beta: per-token KL penalty in the reward, as in Eq. 3"})
    kl_loss_coef: float = field(default=0.0, metadata={"help": "coefficient of the exact KL to the reference (whole vocabulary) added to the loss"})
    # PPO
    iterations: int = field(default=100, metadata={"help": "PPO iterations (rollout + update)"})
    batch_size: int = field(default=128, metadata={"help": "prompts per iteration (over all ranks), one response each"})
    minibatch_size: int = field(default=32, metadata={"help": "sequences per gradient step"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    lr: float = field(default=1e-4, metadata={"help": "policy learning rate"})
    value_lr: float = field(default=3e-4, metadata={"help": "value model learning rate"})
    warmup: int = field(default=80, metadata={"help": "linear warm-up, in optimizer steps"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    vf_clip: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=192, metadata={"help": "longest response in tokens"})
    # around the loop
    save_every: int = field(default=25, metadata={"help": "checkpoint every N iterations (and at the end)"})
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


def step_end_tokens(char_ends, steps):
    """Token index holding each line's last character: the first t with char_ends[t] >= end
    (char_ends[t]: characters decoded through response token t)."""
    return [next(t for t, c in enumerate(char_ends) if c >= end) for _, end, _ in steps]


def dense_reward(step_tokens, step_scores, is_comment, last_token, passed, lam_fail, lam_pass, length_norm):
    """Eq. 3: [(token, r_m)] with r_m = lam * R_phi(x, y<=m) / T on the last token of code line m; lam is
    lam_pass for a passing response and lam_fail for a failing one; T = number of *code* lines.
    Ours, where the paper leaves it open: comment lines earn 0 (their neutral label) and are not counted in T,
    so adding comments can neither shrink a failing response's penalty nor earn anything (the paper's policy
    learned to write excessive comments); a response without a code line (empty, comments only) gets the
    floor -lam_fail on its last token, no more than the worst real attempt (sum >= -lam when R_phi >= -1)."""
    code = [(t, s) for t, s, c in zip(step_tokens, step_scores, is_comment) if not c]
    if not code:
        return [(last_token, -lam_fail)]
    lam = lam_pass if passed else lam_fail
    T = len(code) if length_norm else 1
    return [(t, lam * s / T) for t, s in code]


# ------------------------------------------------------------------ model plumbing
def forward(model, seq, mask):
    """Logits [B, L, V] (or scores [B, L, 1]) for left-padded rows: positions count real tokens only."""
    return model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits


def token_logp(model, seq, mask, P, temperature):
    """log pi(y_t | x, y<t) of each response token, [B, R] (logits at column P + t - 1 predict token t)."""
    logits = forward(model, seq, mask)[:, P - 1:-1].float() / temperature
    return torch.gather(F.log_softmax(logits, -1), 2, seq[:, P:, None])[..., 0]


def find_model(path, what):
    """A local folder or a Hub id (sandbox.find_model), or one clear line."""
    try:
        return sandbox.find_model(path)
    except sandbox.DataError as e:
        raise SystemExit(f"train_psgpo.py: {what}: {e}")


def load_token_model(path, what, dtype):
    cfg = find_model(path, what)
    if not any(a.endswith("ForTokenClassification") for a in cfg.architectures or []) or cfg.num_labels != 1:
        raise SystemExit(f"train_psgpo.py: {path}: {what} must be a token-classification model with one output (train_prm.py writes one)")
    return AutoModelForTokenClassification.from_pretrained(path, dtype=dtype)


@torch.no_grad()
def sampler_logp_gap(policy, query, qmask, P, eos, temperature, new_tokens=32):
    """PPO's ratio assumes the rollouts were drawn from softmax(logits / temperature), the distribution
    token_logp computes. A checkpoint's generation_config.json (repetition penalty, top-k, ...) would change
    what generate draws and nothing would show it (the first minibatch's ratio is 1 all the same). Samples
    a few short responses, returning max |log p_sampler - log p_token_logp| over their tokens (fp32; ~1e-6
    when they agree). The RNGs are left as they were, so the run's samples do not depend on the check."""
    with torch.random.fork_rng(devices=[policy.device] if policy.device.type == "cuda" else []):
        out = policy.generate(input_ids=query, attention_mask=qmask, max_new_tokens=new_tokens, output_scores=True, return_dict_in_generate=True,
                              synced_gpus=isinstance(policy, FSDPModule))
    response = out.sequences[:, P:]
    sampler = torch.stack(out.scores, 1).float().log_softmax(-1).gather(2, response[..., None])[..., 0]  # [B, R]
    is_eos = (response == eos).long()
    valid = (is_eos.cumsum(1) - is_eos) == 0  # through the first eos
    logp = token_logp(policy, out.sequences, torch.cat([qmask, torch.ones_like(response)], 1), P, temperature)
    return ((sampler - logp).abs() * valid).max().item()


def shard(model, bf16):
    """FSDP2: every decoder layer its own unit, then the root (embeddings, final norm, head); each rank keeps
    1/world of every weight, gradient and AdamW moment. bf16 compute from fp32 master weights, gradients
    reduced in fp32. The frozen reference and PRM are sharded the same way."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for m in model.modules():
        if type(m).__name__ in (model._no_split_modules or []):
            fully_shard(m, mp_policy=mp)
    return fully_shard(model, mp_policy=mp)


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


def rank_state(rng, device):
    """This rank's randomness: the prompt stream, Python, NumPy, torch (CPU and this rank's GPU)."""
    return {"prompts": rng.getstate(), "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None}


def set_rank_state(state, rng, device):
    rng.setstate(state["prompts"]), random.setstate(state["python"]), np.random.set_state(state["numpy"]), torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    ddp = "RANK" in os.environ
    if ddp:  # torchrun: one process per rank, each samples its own prompts; gradients are all-reduced
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else args.device
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if args.fsdp and not ddp:
        raise SystemExit("train_psgpo.py: --fsdp shards across ranks: run it under torchrun")
    if args.value_init not in ("prm", "policy"):
        raise SystemExit(f"train_psgpo.py: --value_init must be prm or policy, not {args.value_init!r}")
    oracle = args.prm == "oracle"
    if oracle and args.value_init == "prm":
        raise SystemExit("train_psgpo.py: --prm oracle has no weights to start the value model from: use --value_init policy")
    needs_prm = (args.dense_reward or args.value_init == "prm") and not oracle
    if needs_prm:
        try:
            sandbox.find_model(args.prm)
        except sandbox.DataError as e:
            raise SystemExit(f"train_psgpo.py: --dense_reward/--value_init prm need a PRM ({e}): train one with train_prm.py, "
                             f"or run the baseline: --dense_reward false --value_init policy")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // world))
    random.seed(args.seed + rank), np.random.seed(args.seed + rank), torch.manual_seed(args.seed + rank)
    rng = random.Random(args.seed * 1000 + rank)  # which prompts this rank draws
    try:
        problems = sandbox.load_problems(args.dataset, args.split)
    except sandbox.DataError as e:
        raise SystemExit(f"train_psgpo.py: {e}")
    if oracle and "inputs" not in problems[0].meta:
        raise SystemExit(f"train_psgpo.py: --prm oracle scores demo tasks only, not {args.dataset!r}")

    # models: policy (trained), reference (frozen), value (trained), PRM (frozen)
    start, log_rows = 0, []
    ckpts = sorted(glob.glob(os.path.join(args.out, "ckpt-[0-9][0-9][0-9][0-9]"))) if args.resume else []  # not *.tmp
    src = ckpts[-1] if ckpts else args.policy
    for path in {args.policy, src}:  # the starting policy (the KL reference) and, on resume, the checkpoint
        find_model(path, "--policy")
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token_id is None or tok.eos_token_id is None:
        raise SystemExit(f"train_psgpo.py: {src}: the tokenizer needs a pad and an eos token")
    tok.padding_side = "left"
    # trained models keep fp32 weights (--bf16 autocasts their forward passes: bf16 weights would round small
    # AdamW updates away); the frozen reference and PRM may be stored in bf16
    frozen = torch.bfloat16 if args.bf16 else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).to(device)
    # exact rollouts: generate draws from softmax(logits / temperature) and nothing else; the checkpoint's own
    # generation_config.json (repetition penalty, top-k/p, ...) would make them silently off-policy
    policy.generation_config = GenerationConfig(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                                                max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ref = AutoModelForCausalLM.from_pretrained(args.policy, dtype=frozen).to(device).eval().requires_grad_(False)
    prm = load_token_model(args.prm, "--prm", frozen).to(device).eval().requires_grad_(False) if args.dense_reward and not oracle else None
    if needs_prm and AutoTokenizer.from_pretrained(args.prm).get_vocab() != tok.get_vocab():
        raise SystemExit(f"train_psgpo.py: {args.prm} and {args.policy} have different tokenizers; train the PRM from this policy")
    if ckpts:
        value = AutoModelForTokenClassification.from_pretrained(os.path.join(src, "value"), dtype=torch.float32)
    elif args.value_init == "prm":
        value = load_token_model(args.prm, "--prm", torch.float32)
    else:
        value = AutoModelForTokenClassification.from_pretrained(args.policy, num_labels=1, dtype=torch.float32)
    value.to(device)
    if args.gradient_checkpointing:
        policy.gradient_checkpointing_enable(), value.gradient_checkpointing_enable()
    for model in (policy, value):  # no dropout: log-probs and values must agree between rollout and update
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if hasattr(model.config, "attention_dropout"):
            model.config.attention_dropout = 0.0
    if args.fsdp:
        for m in (policy, value, ref) + ((prm,) if prm is not None else ()):
            shard(m, args.bf16)
    opts = [torch.optim.AdamW(policy.parameters(), lr=args.lr, eps=1e-5), torch.optim.AdamW(value.parameters(), lr=args.value_lr, eps=1e-5)]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / args.warmup)) for o in opts]  # linear warm-up
    if ckpts:  # resume exactly: optimizers, each rank's RNGs and prompt stream, the log so far
        state = torch.load(os.path.join(src, "trainer_state.pt"), map_location=device, weights_only=False)
        if "ranks" not in state:
            raise SystemExit(f"train_psgpo.py: {src}: written by an older train_psgpo.py (no per-rank state): start a new --out")
        if len(state["ranks"]) != world:
            raise SystemExit(f"train_psgpo.py: {src} was written by {len(state['ranks'])} ranks; resume it with as many, not {world}")
        start, log_rows = state["iteration"], state["log_rows"]
        if args.fsdp:  # each rank reads its shards of the optimizer states
            osd = {"policy": get_optimizer_state_dict(policy, opts[0]), "value": get_optimizer_state_dict(value, opts[1])}
            dcp.load(osd, checkpoint_id=os.path.join(src, "optim"))
            set_optimizer_state_dict(policy, opts[0], osd["policy"]), set_optimizer_state_dict(value, opts[1], osd["value"])
        for o, s in zip(scheds if args.fsdp else opts + scheds, state["scheds"] if args.fsdp else state["opts"] + state["scheds"]):
            o.load_state_dict(s)
        set_rank_state(state["ranks"][rank], rng, device)
    # DDP: gradients all-reduced in buckets that are the .grad tensors themselves (no second copy)
    replicate = ddp and not args.fsdp
    train_policy = torch.nn.parallel.DistributedDataParallel(policy, gradient_as_bucket_view=True) if replicate else policy
    train_value = torch.nn.parallel.DistributedDataParallel(value, gradient_as_bucket_view=True) if replicate else value
    per_rank = args.batch_size // world
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(args), f, indent=1)
        with open(os.path.join(args.out, "log.jsonl"), "w") as f:  # the log as of the checkpoint resumed from
            f.writelines(json.dumps(r) + "\n" for r in log_rows)
    writer = None
    if rank == 0:
        try:  # TensorBoard when it is installed; log.jsonl always
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(args.out)
        except ImportError:
            pass
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C (or a scheduler's TERM): finish the iteration, save, exit
        signal.signal(sig, lambda *_: stop.update(now=True))
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=args.bf16)
    bar = tqdm(range(start, args.iterations), desc="psgpo", initial=start, total=args.iterations, disable=rank != 0)

    for it in bar:
        tm = {}
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        # 1. Rollout: one response per prompt, sampled with the KV cache from left-padded prompts
        t0 = time.time()
        policy.eval(), value.eval()  # eval mode for the rollout: generate keeps its KV cache
        batch = rng.sample(problems, per_rank)
        prompts = [tok(p.prompt)["input_ids"] for p in batch]
        P = max(map(len, prompts))
        query = torch.tensor([[tok.pad_token_id] * (P - len(q)) + q for q in prompts], device=device)
        qmask = (torch.arange(P, device=device)[None] >= torch.tensor([P - len(q) for q in prompts], device=device)[:, None]).long()
        assert (query[:, -1] != tok.pad_token_id).all(), "left padding: every prompt ends at column P - 1"
        if it == start:  # once per process: the sampler draws from exactly the distribution token_logp computes
            with gathered(policy, args.fsdp):
                gap = torch.tensor(sampler_logp_gap(policy, query[:4], qmask[:4], P, tok.eos_token_id, args.temperature), device=device)
            if ddp:  # every rank stops, or none
                dist.all_reduce(gap, dist.ReduceOp.MAX)
            if gap > 1e-3:
                raise SystemExit(f"train_psgpo.py: the sampler's log-probs differ from token_logp's by up to {gap:.3g} nats: "
                                 f"rollouts would be off-policy (a logits processor or sampling setting in {src}'s generation config?)")
        stops = sorted({s for p in batch for s in p.stop})  # finish a row at its stop sequence, not at max_new_tokens
        with torch.no_grad(), autocast, gathered(policy, args.fsdp):  # FSDP: every rank steps until all are done
            seq = policy.generate(input_ids=query, attention_mask=qmask, stop_strings=stops or None, tokenizer=tok, synced_gpus=args.fsdp)
        response = seq[:, P:]                                                              # [B, R]
        texts, lengths = [], []
        for p, row in zip(batch, response.tolist()):  # a response ends at its eos, or at a stop sequence
            n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            text = tok.decode(row[:n], skip_special_tokens=True)
            cut = min([text.find(s) for s in p.stop if s in text] or [len(text)])
            if cut < len(text):  # keep the tokens up to the one where the stop sequence starts
                n = next(k for k in range(1, n + 1) if len(tok.decode(row[:k], skip_special_tokens=True)) > cut)
            texts.append(text[:cut])
            lengths.append(n)
        R = max(lengths)  # trim to the longest kept response: every later pass runs at this width
        response, seq = response[:, :R], seq[:, :P + R]                                   # [B, R], [B, P + R]
        rmask = (torch.arange(R, device=device)[None] < torch.tensor(lengths, device=device)[:, None]).float()  # [B, R]
        seq_mask = torch.cat([qmask, rmask.long()], 1)                                    # [B, P + R]
        tm["time/generate"] = time.time() - t0

        # 2. Outcome reward: 1 if the program passes all tests, 0 otherwise, on the last token
        t0 = time.time()
        verdicts = sandbox.check_many(list(zip(batch, texts)), args.workers, args.timeout)
        passed = torch.tensor([v.passed for v in verdicts], dtype=torch.float, device=device)
        tm["time/judge"] = time.time() - t0
        last = (torch.tensor(lengths, device=device) - 1).clamp(min=0)
        rewards = torch.zeros(len(batch), R, device=device)
        rewards[torch.arange(len(batch)), last] += passed

        # 3. Dense reward (Eq. 3): the PRM's score of each line, on the line's last token
        t0 = time.time()
        steps = [sandbox.split_steps(t) for t in texts]
        dense = torch.zeros_like(rewards)
        neg_share = comment_share = 0.0
        if args.dense_reward:
            if prm is not None:
                with torch.no_grad(), autocast:
                    scores = forward(prm, seq, seq_mask)[:, P:, 0].float()                 # [B, R]: R_phi after token t
            n_steps = sum(len(s) for s in steps)
            for b, (row, st) in enumerate(zip(response.tolist(), steps)):
                ends = [len(tok.decode(row[:t + 1], skip_special_tokens=True)) for t in range(lengths[b])]
                toks = step_end_tokens(ends, st)
                step_scores = (sandbox.oracle_step_scores(batch[b], texts[b]) if oracle else scores[b, toks].tolist()) if st else []
                for t, r in dense_reward(toks, step_scores, [c for _, _, c in st], int(last[b]), bool(passed[b]), args.lam_fail, args.lam_pass, args.length_norm):
                    dense[b, t] += r
                neg_share += sum(s < 0 for s in step_scores) / max(1, n_steps)
        comment_share = sum(c for st in steps for _, _, c in st) / max(1, sum(len(s) for s in steps))
        rewards += dense

        # 4. KL penalty per token against the reference (beta in Eq. 3): r_t -= beta * (log pi - log pi_ref)
        mb = max(1, args.minibatch_size // world)
        with torch.no_grad(), autocast:  # in minibatches: [B, R, V] logits need not fit at once
            old_logp = torch.cat([token_logp(policy, seq[i], seq_mask[i], P, args.temperature) for i in torch.arange(len(batch)).split(mb)])  # [B, R]
            ref_logp = torch.cat([token_logp(ref, seq[i], seq_mask[i], P, args.temperature) for i in torch.arange(len(batch)).split(mb)])
            old_values = torch.cat([forward(value, seq[i], seq_mask[i])[:, P - 1:-1, 0].float() for i in torch.arange(len(batch)).split(mb)]) * rmask  # V(s_t)
        kl = (old_logp - ref_logp) * rmask
        rewards = (rewards - args.kl_coef * kl) * rmask
        tm["time/score"] = time.time() - t0

        # 5. Values and GAE; whiten the advantages over response tokens
        advantages, returns = compute_gae(rewards, old_values, rmask, args.gamma, args.gae_lambda)
        advantages = masked_whiten(advantages, rmask)

        # 6. PPO epochs over minibatches
        t0 = time.time()
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
                (loss + vf).backward()  # separate models and optimizers: one backward serves both
                for o, sched, model in zip(opts, scheds, (policy, value)):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    o.step()
                    sched.step()
                    o.zero_grad(set_to_none=True)  # free the gradients before the next forward
                with torch.no_grad():
                    stats["pg"].append(pg.item()), stats["vf"].append(vf.item()), stats["clipfrac"].append(clipfrac.item())
                    stats["approx_kl"].append(masked_mean(0.5 * (logp - old_logp[idx]) ** 2, m).item())
                    stats["entropy"].append(masked_mean(-(logp_all.exp() * logp_all).sum(-1), m).item())
        tm["time/update"] = time.time() - t0

        # logging (means over ranks) and checkpoints (rank 0)
        var_ret = masked_mean((returns - masked_mean(returns, rmask)) ** 2, rmask)
        row = {"iteration": it + 1, "train/pass_rate": passed.mean().item(),
               "rewards/outcome": passed.mean().item(), "rewards/dense": dense.sum(1).mean().item(),
               "charts/kl_per_seq": kl.sum(1).mean().item(), "charts/approx_kl": np.mean(stats["approx_kl"]),
               "charts/clipfrac": np.mean(stats["clipfrac"]), "charts/entropy": np.mean(stats["entropy"]),
               "losses/policy_loss": np.mean(stats["pg"]), "losses/value_loss": np.mean(stats["vf"]),
               "charts/explained_variance": (1 - masked_mean((returns - old_values - masked_mean(returns - old_values, rmask)) ** 2, rmask) / var_ret.clamp(min=1e-8)).item(),
               "response/steps": float(np.mean([len(s) for s in steps])), "response/tokens": float(np.mean(lengths)),
               "response/comment_share": comment_share, "response/prm_negative_share": neg_share} | tm
        if stats["exact_kl"]:
            row["charts/exact_kl"] = np.mean(stats["exact_kl"])
        if device.startswith("cuda"):
            row["memory/peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if "wrong_forms" in batch[0].meta:  # demo: how often each planted mistake is still written
            counts = [sandbox.planted_mistakes(p, t) for p, t in zip(batch, texts)]
            for kind in sandbox.PLANTED_RATES:
                row[f"planted/{kind}"] = sum(c[kind][0] for c in counts) / max(1, sum(c[kind][1] for c in counts))
        if ddp:
            vals = torch.tensor(list(row.values())[1:], dtype=torch.float64, device=device)
            dist.all_reduce(vals)
            row = {"iteration": it + 1} | {k: v / world for k, v in zip(list(row)[1:], vals.tolist())}
        log_rows.append(row)
        if rank == 0:
            with open(os.path.join(args.out, "log.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if writer is not None and k != "iteration":
                    writer.add_scalar(k, v, it + 1)
            bar.set_postfix(pass_rate=f"{row['train/pass_rate']:.2f}", kl=f"{row['charts/kl_per_seq']:.2f}", ent=f"{row['charts/entropy']:.2f}")
        if ddp:  # a signal seen by any rank stops them all after this iteration (none is left waiting)
            flag = torch.tensor(float(stop["now"]), device=device)
            dist.all_reduce(flag, dist.ReduceOp.MAX)
            stop["now"] = bool(flag)
        if (it + 1) % args.save_every == 0 or it + 1 == args.iterations or stop["now"]:
            save(args.out, it + 1, policy, value, tok, opts, scheds, rank_state(rng, device), log_rows, rank, world, args.fsdp)
        if stop["now"]:
            if rank == 0:
                print(f"\ninterrupted: saved {args.out}/ckpt-{it + 1:04d}; --resume continues from there")
            break

    if rank == 0 and log_rows:
        first, last_row = log_rows[0], log_rows[-1]
        print("\n| metric | first iteration | last iteration |\n|---|---|---|")
        for k in ("train/pass_rate", "rewards/dense", "charts/kl_per_seq", "charts/entropy", "response/steps", "response/comment_share"):
            print(f"| {k} | {first[k]:.3f} | {last_row[k]:.3f} |")
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
