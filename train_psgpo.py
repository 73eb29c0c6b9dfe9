"""train_psgpo.py - PPO with process supervision (paper section 4.1, Eq. 3): PSGPO; also the RL baseline.

Hand-written PPO + GAE. The PRM R_phi (train_prm.py) enters twice:
  dense reward  r_m = lam * R_phi(x, y<=m) / T  on the last token of code line m   (--dense_reward)
  value init    the value model starts as a copy of the PRM (body and head)      (--value_init prm)
The paper's four settings are these two flags. In the pipeline (README) this script runs step 1, the RL baseline
(`--dense_reward false --value_init policy`: the unit-test reward only, no PRM; its checkpoints are what
label_prm_data.py samples from), and step 4, PSGPO. The defaults are the demo's settings:

    python train_psgpo.py --policy checkpoints/demo-sft --dense_reward false --value_init policy --out runs/baseline
    python train_psgpo.py --policy checkpoints/demo-sft --prm runs/prm --out runs/psgpo
    torchrun --nproc_per_node 8 train_psgpo.py --policy Qwen/Qwen2.5-Coder-7B-Instruct --fsdp true ...   (README)

Reading order: the math (GAE, the clipped losses, Eq. 3), value init, then main(): the four models, and each
iteration's six numbered phases on one rollout. Around them, train_psgpo_run.py: torchrun's ranks and the checks
before anything loads, wrapping the models for several ranks, the on-policy check, phase timers, checkpoints and
exact resume, signals, the log. Options beyond the paper are marked "(ours)" at their flag and where they branch.

Padding convention: prompts are left-padded to P columns, so every response starts at column P;
`seq = [pad.. prompt | response | pad..]`, [B, P + R]. Which column holds what, for response token t:

    column          P-1 ........ P+t-1 ........ P+t
    input token     x_last       y_{t-1}        y_t      (x: the prompt, y: the response)
    read there      logits -> log pi(y_t | x, y<t);  V(s_t), the value of the state before y_t
    R_phi there     R_phi(x, y<=t) at column P+t: a line's score and its dense reward sit on its last token

So the critic's V(s_t) and the PRM's score of the same row are one column apart (init_value_model). The outcome
reward (1 if all tests pass, else 0) sits on the response's last token (its EOS when it has one).
"""
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

import sandbox
import train_psgpo_run as run


# What a --resume may change: how far the run goes and how often it saves, the judge's workers and timeout, the ranks'
# patience, and memory (micro-batches, recomputed activations); every other flag must be the run's own (args.json)
RESUME_MAY_CHANGE = ("iterations", "save_every", "resume", "workers", "timeout", "dist_timeout", "micro_batch_size",
                     "gradient_checkpointing")


@dataclass
class Args:
    # the paper's method (section 4.1, Eq. 3)
    policy: str = field(default="checkpoints/demo-sft", metadata={"help": (
        "starting policy (and KL reference): the SFT checkpoint or any HF causal LM (folder or Hub id)")})
    prm: str = field(default="runs/prm", metadata={"help": (
        "PRM folder (train_prm.py), needed for --dense_reward or --value_init prm; 'oracle' (ours, demo only): the "
        "exact step scorer as dense reward")})
    dense_reward: bool = field(default=True, metadata={"help": "add the PRM's line rewards (Eq. 3)"})
    value_init: str = field(default="prm", metadata={"help": (
        "prm: value model = copy of the PRM (--prm); policy: policy body + fresh head")})
    lam_fail: float = field(default=0.25, metadata={"help": "Eq. 3 lambda for a response that fails its tests"})
    lam_pass: float = field(default=0.025, metadata={"help": "Eq. 3 lambda for a response that passes"})
    length_norm: bool = field(default=True, metadata={"help": (
        "divide line rewards by T, the number of code lines (false shows the hack)")})
    kl_coef: float = field(default=0.0, metadata={"help": "beta: per-token KL penalty in the reward, as in Eq. 3"})
    # PPO (the paper's RL; it leaves these values open)
    iterations: int = field(default=16, metadata={"help": "PPO iterations (rollout + update)"})
    batch_size: int = field(default=64, metadata={"help": "prompts per iteration (over all ranks), one response each"})
    minibatch_size: int = field(default=32, metadata={"help": "sequences per optimizer step (over all ranks)"})
    ppo_epochs: int = field(default=2, metadata={"help": "passes over each batch"})
    lr: float = field(default=1e-4, metadata={"help": "policy learning rate"})
    value_lr: float = field(default=3e-4, metadata={"help": "value model learning rate"})
    warmup: int = field(default=4, metadata={"help": "linear learning-rate warm-up, in optimizer steps"})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon"})
    vf_clip: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=192, metadata={"help": "longest response in tokens"})
    # beyond the paper (ours): each is marked "(ours)" where it branches
    kl_loss_coef: float = field(default=0.25, metadata={"help": (
        "(ours) coefficient of the exact KL to the reference (whole vocabulary) added to the loss: the demo's KL, in "
        "place of Eq. 3's beta")})
    value_scale: str = field(default="prm", metadata={"help": (
        "(ours) with --value_init prm: prm (copied as it is, the paper) | returns (its head mapped from [-1, 1] to the "
        "returns' [0, 1])")})
    critic_warmup: int = field(default=0, metadata={"help": (
        "(ours) iterations at the start that train the value model alone (the policy does not move)")})
    advantage: str = field(default="gae", metadata={"help": (
        "gae: the critic's GAE (the paper) | group (ours): group-relative, no critic (RLOO over --group_size responses "
        "per prompt)")})
    group_size: int = field(default=4, metadata={"help": (
        "(ours) with --advantage group: responses per prompt (--batch_size counts responses)")})
    # the run: none of these changes what is computed, only where and in how many pieces
    micro_batch_size: int = field(default=0, metadata={"help": (
        "sequences per forward/backward on a rank (phases 4 and 6): a minibatch's gradients are accumulated over its "
        "micro-batches, so memory, not the step, depends on it (0: the rank's whole share of a minibatch)")})
    generate_batch_size: int = field(default=0, metadata={"help": (
        "sequences per generate call on a rank (0: the rank's whole share of the batch); each call samples under its "
        "own seed, so the same value gives the same rollouts on any number of ranks")})
    out: str = field(default="runs/psgpo", metadata={"help": (
        "run folder: args.json, log.jsonl, ckpt-NNNN/ checkpoints; a used one stops (but --resume)")})
    dataset: str = field(default="demo", metadata={"help": (
        "demo | demo-long | humaneval | mbpp | livecodebench | a .jsonl path")})
    split: str = field(default="train", metadata={"help": "split the prompts come from"})
    seed: int = field(default=1, metadata={"help": "random seed"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (under torchrun: each rank its own GPU)"})
    bf16: bool = field(default=False, metadata={"help": (
        "compute in bfloat16 (GPUs): trained weights stay fp32 under autocast, frozen ones are stored in bf16")})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    fsdp: bool = field(default=False, metadata={"help": (
        "under torchrun: shard the four models with PyTorch FSDP2 instead of DDP replicas (7B-class models)")})
    chat_template: bool = field(default=False, metadata={"help": (
        "feed prompts through the tokenizer's chat template (instruct models; sandbox.prompt_ids)")})
    revision: str = field(default=None, metadata={"help": (
        "Hub revision (branch, tag or commit) of Hub ids given as --policy / --prm")})
    save_every: int = field(default=4, metadata={"help": (
        "checkpoint every N iterations (and at the end): the demo labels from 4 of them")})
    resume: bool = field(default=False, metadata={"help": (
        "continue from the newest checkpoint in --out: the same run (its args.json), where only "
        f"{', '.join('--' + k for k in RESUME_MAY_CHANGE if k != 'resume')} may differ")})
    workers: int = field(default=0, metadata={"help": "judge worker processes per rank (0: this node's cores over its ranks)"})
    timeout: float = field(default=3.0, metadata={"help": "seconds per program"})
    dist_timeout: float = field(default=60, metadata={"help": "under torchrun: minutes a rank waits for the others in a collective"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="iterations batch_size minibatch_size ppo_epochs lr value_lr clip vf_clip "
                                           "temperature max_new_tokens save_every timeout group_size dist_timeout",
                            nonnegative="warmup critic_warmup kl_coef kl_loss_coef lam_fail lam_pass workers "
                                        "micro_batch_size generate_batch_size",
                            fraction="gamma gae_lambda", at_most={"timeout": 86400, "dist_timeout": 1440},  # a day
                            choices={"value_init": ("prm", "policy"), "value_scale": ("prm", "returns"),
                                     "advantage": ("gae", "group")}, seed="seed", device="device")
        if self.critic_warmup >= self.iterations:
            raise ValueError(f"--critic_warmup ({self.critic_warmup}) must be below --iterations ({self.iterations}): the "
                             f"policy would never move")
        if self.prm == "oracle" and self.value_init == "prm":
            raise ValueError("--prm oracle has no weights to start the value model from: use --value_init policy")
        self.workers = self.workers or sandbox.cores_per_rank()
        g, world = self.group_size if self.advantage == "group" else 1, int(os.environ.get("WORLD_SIZE", 1))
        if self.advantage == "group" and self.group_size < 2:
            raise ValueError(f"--group_size must be >= 2 with --advantage group (the leave-one-out baseline's group), "
                             f"not {self.group_size}")
        # every rank takes as many forward and backward passes as the others (or FSDP's collectives hang)
        if self.batch_size % (g * world):
            raise ValueError(f"--batch_size ({self.batch_size}) must be a multiple of "
                             f"{'--group_size x ' if g > 1 else ''}the ranks ({g * world})")
        if self.batch_size % self.minibatch_size or self.minibatch_size % world:
            raise ValueError(f"--minibatch_size ({self.minibatch_size}) must divide --batch_size ({self.batch_size}) and be "
                             f"a multiple of the ranks ({world})")


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


def group_advantages(rewards, mask, g):
    """(ours, --advantage group) Advantages without a critic (RLOO, as GRPO-style code RL uses, with the dense line
    rewards summed to go as PRIME does): rows come in groups of g responses to one prompt.
        G_t = sum_{t' >= t} r_t'                    the return to go (gamma = 1): outcome + dense rewards
        A_t = G_t - mean_{j != i} G_0^j             baseline: the other g - 1 responses' total returns
    With the outcome reward alone, A = R_i - mean_{j != i} R_j on every token of response i."""
    returns = rewards.flip(1).cumsum(1).flip(1) * mask  # [B, T]; column 0 holds each response's total
    total = returns[:, 0].view(-1, g)
    baseline = (total.sum(1, keepdim=True) - total) / (g - 1)  # leave-one-out mean, [B / g, g]
    return (returns - baseline.reshape(-1, 1)) * mask


def advantages_and_returns(rewards, values, mask, args):
    """GAE with the critic's values (the paper's PPO); --advantage group (ours): group-relative advantages (no critic in
    them; the value model still trains on GAE's returns, so its fit is logged as before)."""
    advantages, returns = compute_gae(rewards, values, mask, args.gamma, args.gae_lambda)
    if args.advantage == "group":
        advantages = group_advantages(rewards, mask, args.group_size)
    return advantages, returns


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
    than the worst real attempt; (ours) the PRM's scores are clipped to its labels' range [-1, 1] (its head is
    unbounded), so the line rewards of a failing response sum to at least -lam_fail."""
    code = [(t, min(1.0, max(-1.0, s))) for t, s, n in zip(step_tokens, step_scores, neutral) if not n]  # in [-1, 1]
    if not code:
        return [(last_token, -lam_fail)]
    lam = lam_pass if passed else lam_fail
    T = len(code) if length_norm else 1
    return [(t, lam * s / T) for t, s in code]


@dataclass
class Rollout:
    """Phase 1's output, which phases 2-6 and the log read: B responses, left-padded prompts of P columns."""
    batch: list              # the B problems, one response each
    seq: torch.Tensor        # [B, P + R] prompt | response ids, trimmed to the longest kept response
    seq_mask: torch.Tensor   # [B, P + R] 1 on real tokens
    P: int                   # response token t sits at column P + t
    response: torch.Tensor   # [B, R] = seq[:, P:]
    rmask: torch.Tensor      # [B, R] 1 on the tokens each response kept (through its EOS or stop string)
    texts: list              # the completions judged (sandbox.end_response)
    lengths: list            # response tokens kept
    steps: list              # each text's lines, sandbox.split_steps: [(start, end, neutral)]


def place_dense_rewards(tok, ro, scores, passed, args):
    """Phase 3 for a rollout: [B, R] rewards holding Eq. 3's r_m (dense_reward) on the token holding each code line's
    last character (sandbox.line_end_tokens: the token train_prm.py puts the line's label on), and every line's
    score. scores [B, R]: the PRM's R_phi(x, y<=t) after each response token; None for --prm oracle (ours: the
    demo's exact step scorer)."""
    dense, step_scores = torch.zeros(len(ro.batch), ro.response.shape[1], device=ro.response.device), []
    for b, (ids, st) in enumerate(zip(ro.response.tolist(), ro.steps)):
        ends = sandbox.line_end_tokens(tok, ids[:ro.lengths[b]], st)
        oracle = scores is None
        step_scores.append(sandbox.demo.oracle_step_scores(ro.batch[b], ro.texts[b]) if oracle else scores[b, ends].tolist())
        for t, r in dense_reward(ends, step_scores[-1], [n for _, _, n in st], ro.lengths[b] - 1, bool(passed[b]),
                                 args.lam_fail, args.lam_pass, args.length_norm):
            dense[b, t] += r
    return dense, step_scores


def forward(model, seq, mask):
    """Logits [B, L, V] (or scores [B, L, 1]) for left-padded rows: positions count real tokens only."""
    return model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits


def token_logp(model, seq, mask, P, temperature):
    """log pi(y_t | x, y<t) of each response token, [B, R] (logits at column P + t - 1 predict token t)."""
    logits = forward(model, seq, mask)[:, P - 1:-1].float() / temperature
    return torch.gather(F.log_softmax(logits, -1), 2, seq[:, P:, None])[..., 0]


def token_values(value, seq, mask, P):
    """V(s_t) of each response token, [B, R]: the value of the state before token t, read at column P + t - 1 (the
    critic's output after the prompt and y<t). The reward r_t sits on token t itself; GAE pairs them."""
    return forward(value, seq, mask)[:, P - 1:-1, 0].float()


def exact_kl(ref, logp_all, s, sm, m, P, temperature, autocast):
    """(ours, --kl_loss_coef) The exact KL(pi || pi_ref) per token over the whole vocabulary,
    sum_v pi(v) (log pi(v) - log pi_ref(v)), its masked mean over the minibatch's response tokens."""
    with torch.no_grad(), autocast:
        ref_all = F.log_softmax(forward(ref, s, sm)[:, P - 1:-1].float() / temperature, -1)
    return masked_mean((logp_all.exp() * (logp_all - ref_all)).sum(-1), m)


def optimizer_step(opt, sched, model):
    """After a backward: clip the model's gradient norm to 1, step, advance the schedule, free the gradients.
    Returns the norm before clipping (logged: losses/*_grad_norm)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)  # free the gradients before the next forward
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()  # FSDP: a DTensor


# ------------------------------------------------------------------ value init (paper 4.1)
def init_value_model(args, load):
    """Value initialization (paper 4.1). --value_init prm: the critic starts as a copy of the PRM, body and
    scalar head. The PRM was trained to score the prefix through token t, R_phi(x, y<=t), at column P + t,
    and the critic reads V(s_t), the value of the state before token t, at column P + t - 1:

        column        P+t-1            P+t
        PRM reads     R_phi(x, y<t)    R_phi(x, y<=t)   <- y_t's line score, if y_t ends a line
        critic reads  V(s_t)           V(s_{t+1})

    so the copied critic starts at V(s_t) = R_phi(x, y<t), the PRM's score of everything written before token t.
    (ours) --value_scale returns maps the head's output from the labels' [-1, 1] to the outcome reward's [0, 1]
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


# ------------------------------------------------------------------ the loop
def main():
    args = sandbox.parse_args(Args, device="device", out="out")
    ranks, problems = run.start(args, RESUME_MAY_CHANGE)  # torchrun's ranks, every check before anything loads, the seeds
    device = ranks.device
    tok, eos = sandbox.load_tokenizer(args.policy, args.revision)
    def load(cls, path, dtype, **kw):
        return sandbox.load_model(cls, path, device, dtype, args.revision, args.fsdp, args.bf16, **kw)
    frozen = torch.bfloat16 if args.bf16 else torch.float32  # trained models keep fp32 weights (--bf16 autocasts:
    # bf16 weights would round small AdamW updates away), frozen ones are stored in bf16; FSDP: each rank a shard
    Scorer = AutoModelForTokenClassification  # a scalar per token: the PRM, the value model

    # The four models of PPO with a PRM
    policy = load(AutoModelForCausalLM, args.policy, torch.float32)               # pi_theta: trained by PPO
    ref = run.freeze(load(AutoModelForCausalLM, args.policy, frozen), args)      # pi_ref: the SFT policy, the KL's anchor
    prm = run.freeze(load(Scorer, args.prm, frozen), args) if run.scores_lines(args) else None  # R_phi (Eq. 3)
    value = init_value_model(args, load)                                          # V: the critic, value init (4.1)
    train_policy, train_value = run.for_training(policy, value, args, ranks)  # no dropout; DDP replicas over the ranks
    policy_opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, eps=1e-5)
    value_opt = torch.optim.AdamW(value.parameters(), lr=args.value_lr, eps=1e-5)
    policy_sched = sandbox.lr_schedule(policy_opt, args.warmup)  # a linear warm-up, then constant
    value_sched = sandbox.lr_schedule(value_opt, args.warmup)
    trained = run.Trained(policy, value, policy_opt, value_opt, policy_sched, value_sched)  # what a checkpoint holds

    # --resume: the newest ckpt-NNNN/ in --out gives the models' weights, the optimizers, schedules, RNGs and log
    start_it, log_rows = run.resume(trained, args, ranks)
    log, stop = run.Log(args, log_rows, ranks), run.stop_on_signals()
    autocast = torch.autocast(device.split(":")[0], torch.bfloat16, enabled=args.bf16)
    micro = args.micro_batch_size or args.minibatch_size // ranks.world  # sequences per rank per forward/backward
    sampler_gap = run.check_on_policy(sampler_check, policy, tok, run.share(rollout_batch(problems, start_it, args), ranks)[:4],
                                      eos, args, ranks)

    bar = tqdm(range(start_it, args.iterations), "psgpo", initial=start_it, total=args.iterations, disable=ranks.rank != 0)
    for it in bar:
        laps = run.Laps(device)  # each phase's seconds (time/<phase> in the log)
        # 1. Rollout: this rank's share of the batch, one response per prompt, sampled with the KV cache from left-padded
        #    prompts; phases 2-4 work on the share too
        ro = rollout(policy, tok, eos, rollout_batch(problems, it, args), it, args, ranks, autocast)
        B, P = len(ro.batch), ro.P
        laps("generate")

        # 2. Outcome reward: 1 if the program passes all its tests, 0 otherwise, on the response's last token
        verdicts = sandbox.check_many(list(zip(ro.batch, ro.texts)), args.workers, args.timeout)
        passed = torch.tensor([v.passed for v in verdicts], dtype=torch.float, device=device)  # [B]
        outcome = torch.zeros(B, ro.response.shape[1], device=device)                        # [B, R]
        outcome[torch.arange(B), torch.tensor(ro.lengths, device=device) - 1] = passed
        laps("judge")

        # 3. Dense reward (Eq. 3): the PRM's score of each code line, r_m = lam * R_phi(x, y<=m) / T on its last token
        dense, step_scores = torch.zeros_like(outcome), []
        if args.dense_reward:
            with torch.no_grad(), autocast:
                scores = forward(prm, ro.seq, ro.seq_mask)[:, P:, 0].float() if prm is not None else None  # [B, R]
            dense, step_scores = place_dense_rewards(tok, ro, scores, passed, args)
        laps("dense")

        # 4. The rollout under the models: log pi_old (PPO's ratio), log pi_ref (the KL) and the values V(s_t)
        chunks = torch.arange(B, device=device).split(micro)
        with torch.no_grad(), autocast:  # in micro-batches: [B, R, V] logits need not fit at once
            old_logp = torch.cat([token_logp(policy, ro.seq[i], ro.seq_mask[i], P, args.temperature) for i in chunks])
            ref_logp = torch.cat([token_logp(ref, ro.seq[i], ro.seq_mask[i], P, args.temperature) for i in chunks])
            old_values = torch.cat([token_values(value, ro.seq[i], ro.seq_mask[i], P) for i in chunks]) * ro.rmask
        # The whole batch on every rank (each sampled, judged and scored its share): from here on every rank sees the
        # same rows whatever the number of ranks, so do the advantages, their whitening, the minibatches and the log
        ro, (verdicts, step_scores), (outcome, dense, old_logp, ref_logp, old_values) = run.whole_batch(
            ro, (verdicts, step_scores), (outcome, dense, old_logp, ref_logp, old_values), tok.pad_token_id, ranks)
        B, P = len(ro.batch), ro.P
        laps("score")

        # 5. The KL penalty per token in the reward (Eq. 3's beta, --kl_coef; the demo's is 0: its KL is in the loss,
        #    --kl_loss_coef), then the advantages (GAE over the critic's values), whitened
        kl = (old_logp - ref_logp) * ro.rmask                                                    # [B, R]
        rewards = (outcome + dense - args.kl_coef * kl) * ro.rmask                               # [B, R]
        advantages, returns = advantages_and_returns(rewards, old_values, ro.rmask, args)
        shares = advantage_shares(outcome, dense, -args.kl_coef * kl, old_values, advantages, ro.rmask, args)
        advantages = masked_whiten(advantages, ro.rmask)
        laps("advantages")

        # 6. PPO epochs over minibatches: the clipped policy loss (+ the exact KL to the reference), the clipped
        #    value loss, each a token mean over the whole minibatch; each rank takes its share of the minibatch in
        #    micro-batches, accumulating gradients; then each model clips its gradient norm to 1 and steps
        actor = it >= args.critic_warmup  # (ours) --critic_warmup: the first iterations train the value model alone
        stats = []
        policy.train(), value.train()  # train mode for the update (gradient checkpointing needs it)
        for epoch in range(args.ppo_epochs):
            for idx in minibatches(B, it, epoch, args):  # [M] rows of the whole batch, the same on every rank
                n_tokens = ro.rmask[idx].sum()  # the minibatch's response tokens, over all ranks
                parts = []
                for i in run.share(idx, ranks).to(device).split(micro):
                    s, sm, m = ro.seq[i], ro.seq_mask[i], ro.rmask[i]
                    with autocast, torch.set_grad_enabled(actor):
                        logits = forward(train_policy, s, sm)[:, P - 1:-1].float() / args.temperature  # [b, R, V]
                    with autocast:
                        vpred = token_values(train_value, s, sm, P)                                    # [b, R]: V(s_t)
                    logp_all = F.log_softmax(logits, -1)                                               # [b, R, V]
                    logp = torch.gather(logp_all, 2, ro.response[i][..., None])[..., 0]                # [b, R]
                    pg, clipfrac = policy_loss(logp, old_logp[i], advantages[i], m, args.clip)
                    actor_loss, kl_exact = pg, None
                    if args.kl_loss_coef:  # (ours) the exact KL to the reference in the loss
                        kl_exact = exact_kl(ref, logp_all, s, sm, m, P, args.temperature, autocast)
                        actor_loss = pg + args.kl_loss_coef * kl_exact
                    vf = value_loss(vpred, old_values[i], returns[i], m, args.vf_clip)
                    # these tokens' share of the minibatch's: the token means over micro-batches and ranks add up to
                    # the minibatch's (x world: DDP and FSDP average the ranks' gradients)
                    share = m.sum() / n_tokens
                    ((actor_loss + vf if actor else vf) * share * ranks.world).backward()  # one backward serves both
                    parts.append(minibatch_stats(logp, old_logp[i], logp_all, m, pg, vf, clipfrac, kl_exact, share))
                norms = {"policy_grad_norm": optimizer_step(policy_opt, policy_sched, policy)} if actor else {}
                norms["value_grad_norm"] = optimizer_step(value_opt, value_sched, value)
                stats.append(run.over_ranks(parts, ranks) | norms)
        laps("update")

        row = log_row(it, args, ro, verdicts, dense=dense, step_scores=step_scores, kl=kl, returns=returns,
                      values=old_values, shares=shares, stats=stats)
        log.write(row | laps.seconds | ({"charts/sampler_gap": sampler_gap} if it == start_it else {}))
        bar.set_postfix(pass_rate=f"{log.rows[-1]['train/pass_rate']:.2f}", kl=f"{log.rows[-1]['charts/kl_per_seq']:.2f}")
        if run.save_or_stop(it, stop, trained, tok, log, args, ranks):  # a signal: saved, stop
            break
    log.summary()


# ------------------------------------------------------------------ phase 1, and the prompts each iteration draws
def rollout(policy, tok, eos, batch, it, args, ranks, autocast):
    """Phase 1: one response per problem of this rank's share of `batch` (iteration it's, run.share), in generate calls
    of --generate_batch_size, each sampling under its own seed, a function of (seed, iteration, its first row in the
    batch): the rollouts depend on neither the number of ranks nor anything sampled before."""
    rows = run.share(range(len(batch)), ranks)
    n = args.generate_batch_size or len(rows)
    policy.eval()  # eval mode for the rollout: generate keeps its KV cache
    with torch.no_grad(), autocast, run.gathered(policy, args.fsdp):  # FSDP: weights gathered once for every call
        parts = []
        for first in rows[::n]:
            torch.manual_seed(random.Random(f"{args.seed}/{it}/{first}").getrandbits(63))
            parts.append(sample_responses(policy, tok, eos, batch[first:min(first + n, rows.stop)], args))
    return run.join(parts, tok.pad_token_id)


def sample_responses(policy, tok, eos, batch, args):
    """One generate call: a response per problem, sampled from softmax(logits / T); each ends at its first EOS or stop
    string (sandbox.end_response: a stop may begin in the prompt); trimmed to the longest."""
    prompts = [sandbox.prompt_ids(tok, p.prompt, args.chat_template) for p in batch]
    stops = [sandbox.stop_strings(p, args.chat_template) for p in batch]
    seq, qmask = sandbox.generate(policy, tok, prompts, eos, sorted({s for st in stops for s in st}), args.fsdp,
                                  do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                                  max_new_tokens=args.max_new_tokens)  # FSDP: every rank steps until all are done
    P = qmask.shape[1]
    texts, lengths = zip(*[sandbox.end_response(tok, row, eos, st, pr) for row, st, pr in zip(seq[:, P:].tolist(), stops, prompts)])
    R = max(lengths)  # every later pass runs at this width
    rmask = (torch.arange(R, device=seq.device)[None] < torch.tensor(lengths, device=seq.device)[:, None]).float()
    return Rollout(batch, seq[:, :P + R], torch.cat([qmask, rmask.long()], 1), P, seq[:, P:P + R], rmask,
                   list(texts), list(lengths), [sandbox.split_steps(x) for x in texts])


def draw_prompts(n, it, batch_size, seed):
    """Indices of the prompts of iteration `it`: the next batch_size entries of one shuffle of the n prompts per epoch
    (seeded by seed and epoch). A function of the iteration alone: no prompt twice in a batch (within an epoch), and a
    resumed run draws what an uninterrupted one would."""
    ks = range(it * batch_size, (it + 1) * batch_size)
    shuffles = {epoch: random.Random(f"{seed}/{epoch}").sample(range(n), n) for epoch in {k // n for k in ks}}
    return [shuffles[k // n][k % n] for k in ks]


def rollout_batch(problems, it, args):
    """Iteration it's batch, one response per problem (draw_prompts); (ours) --advantage group: each prompt
    --group_size times, side by side. Each rank samples its share of it (run.share)."""
    g = args.group_size if args.advantage == "group" else 1
    return [problems[i] for i in draw_prompts(len(problems), it, args.batch_size // g, args.seed) for _ in range(g)]


def minibatches(B, it, epoch, args):
    """Phase 6's minibatches in one epoch: the B rows in a shuffle seeded by (seed, iteration, epoch), the same on every
    rank, cut into --minibatch_size rows each."""
    g = torch.Generator().manual_seed(random.Random(f"{args.seed}/{it}/{epoch}").getrandbits(63))
    return torch.randperm(B, generator=g).split(args.minibatch_size)


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
        out, qmask = sandbox.generate(policy, tok, rows, eos, synced_gpus=fsdp, do_sample=True, temperature=temperature,
                                      top_k=0, top_p=1.0, max_new_tokens=new_tokens, output_scores=True,
                                      output_logits=True, return_dict_in_generate=True)
    P, response = qmask.shape[1], out.sequences[:, qmask.shape[1]:]
    def logp(scores):  # [B, R]
        return torch.stack(scores, 1).float().log_softmax(-1).gather(2, response[..., None])[..., 0]
    is_eos = torch.isin(response, torch.tensor(eos, device=response.device)).long()
    valid = (is_eos.cumsum(1) - is_eos) == 0  # through the first EOS
    sampler = logp(out.scores)
    trainer = token_logp(policy, out.sequences, torch.cat([qmask, torch.ones_like(response)], 1), P, temperature)
    worst = lambda d: torch.where(valid, d.abs(), 0).max().item()  # noqa: E731
    return worst(sampler - logp([x / temperature for x in out.logits])), worst(sampler - trainer)


# ------------------------------------------------------------------ what an iteration logs (docs/metrics.md)
@torch.no_grad()
def advantage_shares(outcome, dense, kl, values, advantages, mask, args):
    """How much of the advantage's variance each term carries: is Eq. 3's lam/T a whisper next to the outcome
    reward? GAE (and the group estimator) is linear in the rewards and the values, so the advantages split exactly
    into A = A(outcome) + A(dense) + A(KL) + A(critic), each computed alone (the rewards of the others 0; the
    critic's part is GAE's -V(s_t) + gamma V(s_{t+1}) terms); share_k = Cov(A_k, A) / Var(A) over the response
    tokens, the four summing to 1 (whitening scales them alike)."""
    zero = torch.zeros_like(values)
    parts = {k: advantages_and_returns(r * mask, zero, mask, args)[0] for k, r in (("outcome", outcome), ("dense", dense), ("kl", kl))}
    parts["critic"] = advantages - sum(parts.values())
    centred = lambda x: (x - masked_mean(x, mask)) * mask  # noqa: E731
    var = masked_mean(centred(advantages) ** 2, mask).clamp(min=1e-12)
    return {f"advantage/share_{k}": (masked_mean(centred(a) * centred(advantages), mask) / var).item() for k, a in parts.items()}


@torch.no_grad()
def minibatch_stats(logp, old_logp, logp_all, m, pg, vf, clipfrac, kl_exact, share):
    """A micro-batch's part of one optimizer step's statistics (CleanRL's names; run.over_ranks adds the parts up):
    the losses, how far the step moved the policy (approx_kl = mean of (r - 1) - log r, r = pi / pi_old, CleanRL's
    low-variance estimator), the entropy, each a token mean times `share`, these tokens' share of the minibatch's;
    and the largest |log r| (0 before the first step: the rollout is on-policy; "max_" parts are maxima)."""
    log_ratio = logp - old_logp
    means = {"pg": pg, "vf": vf, "clipfrac": clipfrac, "approx_kl": masked_mean(log_ratio.exp() - 1 - log_ratio, m),
             "entropy": masked_mean(-(logp_all.exp() * logp_all).sum(-1), m), **({"exact_kl": kl_exact} if kl_exact is not None else {})}
    return {k: (v * share).item() for k, v in means.items()} | {"max_ratio_error": (log_ratio.abs() * m).max().item()}


def log_row(it, args, ro, verdicts, *, dense, step_scores, kl, returns, values, shares, stats):
    """One iteration's metrics (docs/metrics.md); the phases' seconds and the GPU's peak memory are run.Laps'."""
    passed = torch.tensor([v.passed for v in verdicts], dtype=torch.float)  # as phase 2's, float32: the same means
    n_steps = max(1, sum(len(s) for s in ro.steps))
    var_returns = masked_mean((returns - masked_mean(returns, ro.rmask)) ** 2, ro.rmask)
    residual = returns - values
    mean = lambda k: float(np.mean([s[k] for s in stats if k in s]))  # noqa: E731  over the gradient steps
    row = {"iteration": it + 1, "train/pass_rate": passed.mean().item(),
           "rewards/outcome": passed.mean().item(), "rewards/dense": dense.sum(1).mean().item(),
           "charts/kl_per_seq": kl.sum(1).mean().item(), "charts/approx_kl": mean("approx_kl"),
           "charts/clipfrac": mean("clipfrac"), "charts/entropy": mean("entropy"),
           "losses/policy_loss": mean("pg"), "losses/value_loss": mean("vf"),
           "charts/explained_variance": (1 - masked_mean((residual - masked_mean(residual, ro.rmask)) ** 2, ro.rmask)
                                         / var_returns.clamp(min=1e-8)).item(),
           "response/steps": float(np.mean([len(s) for s in ro.steps])), "response/tokens": float(np.mean(ro.lengths)),
           "response/neutral_share": sum(n for st in ro.steps for _, _, n in st) / n_steps,
           "response/prm_negative_share": sum(s < 0 for sc in step_scores for s in sc) / n_steps}
    row |= {f"verdicts/{s}": sum(v.status == s for v in verdicts) / len(verdicts) for s in sandbox.VERDICTS}
    row |= {f"losses/{k}": mean(k) for k in ("policy_grad_norm", "value_grad_norm", "exact_kl") if any(k in s for s in stats)}
    if "losses/exact_kl" in row:
        row["charts/exact_kl"] = row.pop("losses/exact_kl")
    row |= shares
    # the first minibatch runs before any step: its ratios must be 1 (|log ratio| ~1e-7 in fp32) and none clipped
    row["charts/first_log_ratio"], row["charts/first_clipfrac"] = stats[0]["max_ratio_error"], stats[0]["clipfrac"]
    if sandbox.is_demo(args.dataset):  # demo: how often each planted mistake is still written
        counts = [sandbox.demo.planted_mistakes(p, t) for p, t in zip(ro.batch, ro.texts)]
        for kind in sandbox.demo.PLANTED_RATES:
            row[f"planted/{kind}"] = sum(c[kind][0] for c in counts) / max(1, sum(c[kind][1] for c in counts))
    return row


if __name__ == "__main__":
    main()
    sandbox.stop_ranks()  # torchrun: all ranks leave together, once main()'s models are gone
