"""Stage 2: the Process Reward Model (paper section 3).

R_phi(x, y<=m): a causal LM with a scalar head on every token (AutoModelForTokenClassification, one
output), initialised from a policy checkpoint and trained by regression (MSE) against the line labels
of label_prm_data.py (+1 correct, -1 after the first unrecoverable line, 0 comment). The label of
line m sits on the line's last token (its newline, when it has one); every other token is ignored.

    python train_prm.py --data runs/prm_data --init runs/sft --out runs/prm

--data is label_prm_data.py's folder (trains on labels.jsonl; held-out prompts are evaluated on all
their responses in rows.jsonl) or one .jsonl file. A share of the prompts (--holdout) is held out;
the held-out report: step-level AUC and accuracy (comments excluded), first-error localisation (the
first line scored below 0 vs the labeled first error) and how well the last line's score predicts
the test verdict (AUC). `--show N` prints N held-out responses with every line's score. For models one GPU cannot train
(7B: ~120 GB of fp32 weights, gradients and AdamW moments), `torchrun --nproc_per_node 8 train_prm.py
--fsdp true ...` shards them with PyTorch FSDP2; each step's batch is split across the ranks.
Sequence layout (training, right padding): [prompt ids][response ids][pad ...], tokenized separately.
"""
import json
import math
import os
import random
import sys
import zlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from tqdm import tqdm
from transformers import AutoModelForTokenClassification, AutoTokenizer, HfArgumentParser, set_seed

import sandbox

IGNORE = -100.0  # target on tokens that carry no label


@dataclass
class Args:
    data: str = field(default="runs/prm_data", metadata={"help": "label_prm_data.py output folder, or a labels .jsonl file"})
    init: str = field(default="runs/sft", metadata={"help": "policy checkpoint the PRM starts from (body; the scalar head is new)"})
    out: str = field(default="runs/prm", metadata={"help": "output folder (save_pretrained PRM + tokenizer + metrics.json)"})
    holdout: float = field(default=0.15, metadata={"help": "share of prompts held out for evaluation"})
    eval: str = field(default="", metadata={"help": "also evaluate on another labeled set (a label_prm_data.py folder's rows.jsonl, or a .jsonl), minus the prompts trained on"})
    epochs: int = field(default=8, metadata={"help": "passes over the training rows"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (linear warm-up, cosine decay)"})
    warmup: int = field(default=20, metadata={"help": "warm-up steps"})
    max_len: int = field(default=1024, metadata={"help": "drop rows longer than this many tokens"})
    show: int = field(default=0, metadata={"help": "print this many held-out responses with every line's score"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    bf16: bool = field(default=False, metadata={"help": "autocast to bfloat16 (GPUs)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    fsdp: bool = field(default=False, metadata={"help": "under torchrun: shard the model with PyTorch FSDP2 (fully_shard), the batch split across ranks"})
    seed: int = field(default=0, metadata={"help": "random seed"})


def step_last_tokens(offsets, steps):
    """Index of each step's last token: the token holding the step's last character (end - 1)."""
    return [max(i for i, (a, b) in enumerate(offsets) if a < end) for _, end, _ in steps]


def prm_example(tok, row):
    """(input ids, targets, positions): the label of step m on its last token, IGNORE elsewhere
    (TRL's layout); positions lists those tokens' indices."""
    prompt = tok(row["prompt"])["input_ids"]  # with special tokens (a bos), as in SFT
    enc = tok(row["response"], add_special_tokens=False, return_offsets_mapping=True)
    positions = [len(prompt) + t for t in step_last_tokens(enc["offset_mapping"], row["steps"])]
    targets = [IGNORE] * (len(prompt) + len(enc["input_ids"]))
    for t, label in zip(positions, row["labels"]):
        targets[t] = float(label)
    return prompt + enc["input_ids"], targets, positions


def prm_loss(scores, targets):
    """MSE on labeled tokens only: mean over {t: target_t != IGNORE} of (R_phi(t) - l_t)^2.  [B, T]"""
    mask = targets != IGNORE
    return ((scores - targets)[mask] ** 2).mean()


def auc(scores, positive):
    """P(a random positive scores above a random negative), ties counting half: the Mann-Whitney U
    statistic from ranks, U = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)."""
    pairs = sorted(zip(scores, positive))
    n_pos = sum(1 for _, p in pairs if p)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(1 for _, p in pairs[i:j] if p)  # a tie group shares its mean rank
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def prm_metrics(rows, step_scores):
    """Held-out quality from each row's labels and the PRM's score on each of its steps."""
    s_step, y_step, s_last, y_last, hits, located, s_comment = [], [], [], [], 0, 0, []
    for row, scores in zip(rows, step_scores):
        code = [(s, l) for s, l, st in zip(scores, row["labels"], row["steps"]) if not st[2]]
        s_comment += [s for s, st in zip(scores, row["steps"]) if st[2]]
        s_step += [s for s, l in code]
        y_step += [l > 0 for s, l in code]
        if code:
            s_last.append(code[-1][0])
            y_last.append(row["passed"])
        if row["first_error"] is not None:
            located += 1
            predicted = next((m for m, (s, st) in enumerate(zip(scores, row["steps"])) if not st[2] and s < 0), None)
            hits += predicted == row["first_error"]
    return {"rows": len(rows), "steps": len(s_step), "step_auc": auc(s_step, y_step),
            "step_accuracy": sum((s > 0) == y for s, y in zip(s_step, y_step)) / max(1, len(s_step)),
            "first_error_accuracy": hits / max(1, located), "failing_with_first_error": located,
            "last_step_verdict_auc": auc(s_last, y_last),
            # what a comment line earns as a dense reward: near 0 with neutral labels (the comment hack's lever)
            "comment_mean_score": sum(s_comment) / len(s_comment) if s_comment else float("nan")}


def read_rows(path):
    rows = []
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"train_prm.py: {path}:{i}: not valid JSON ({e.msg})")
                missing = [k for k in ("task_id", "prompt", "response", "steps", "labels", "passed", "first_error") if k not in row]
                if missing:
                    raise SystemExit(f"train_prm.py: {path}:{i}: missing field(s) {', '.join(missing)}")
                if not row["steps"]:
                    continue  # an empty response carries no line to learn from
                if len(row["steps"]) != len(row["labels"]):
                    raise SystemExit(f"train_prm.py: {path}:{i}: {len(row['steps'])} steps but {len(row['labels'])} labels")
                rows.append(row)
    except OSError as e:
        raise SystemExit(f"train_prm.py: {path}: cannot read ({e.strerror})")
    if not rows:
        raise SystemExit(f"train_prm.py: {path}: no rows with at least one step")
    return rows


@torch.no_grad()
def score_steps(model, tok, rows, args):
    """The PRM's score on every step of every row (one row at a time: no padding to reason about)."""
    out = []
    for row in tqdm(rows, desc="score", leave=False):
        ids, _, positions = prm_example(tok, row)
        with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.bf16):
            scores = model(torch.tensor([ids], device=args.device)).logits[0, :, 0].float()  # [T]
        out.append(scores[positions].tolist())
    return out


def show(rows, step_scores, n):
    color = sys.stdout.isatty()
    for row, scores in list(zip(rows, step_scores))[:n]:
        print(f"\n== {row['task_id']}  ({'passes' if row['passed'] else 'fails'} its tests; label | PRM score)")
        for (a, b, _), label, s in zip(row["steps"], row["labels"], scores):
            mark = f"{label:+d} | {s:+.2f}"
            if color:
                mark = f"\033[{32 if s > 0 else 31}m{mark}\033[0m"
            print(f"{mark}  {row['response'][a:b].rstrip()}")


def shard(model, bf16):
    """FSDP2: every decoder layer its own unit, then the root; bf16 compute from fp32 weights, fp32 gradient reduction."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for m in model.modules():
        if type(m).__name__ in (model._no_split_modules or []):
            fully_shard(m, mp_policy=mp)
    return fully_shard(model, mp_policy=mp)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    rank, world = 0, 1
    if args.fsdp:
        if "RANK" not in os.environ:
            raise SystemExit("train_prm.py: --fsdp shards across ranks: run it under torchrun")
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.device == "cuda":
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
    set_seed(args.seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // world))
    folder = os.path.isdir(args.data)
    train_rows = read_rows(os.path.join(args.data, "labels.jsonl") if folder else args.data)
    all_rows = read_rows(os.path.join(args.data, "rows.jsonl")) if folder and os.path.exists(os.path.join(args.data, "rows.jsonl")) else train_rows
    # held out by prompt text, not task id: the demo's train split repeats a few short prompts
    held = lambda r: zlib.crc32(f"{args.seed}/{r['prompt']}".encode()) % 10000 < args.holdout * 10000  # noqa: E731
    train = [r for r in train_rows if not held(r)]
    test = [r for r in all_rows if held(r)]
    try:  # a local folder or a Hub id
        sandbox.find_model(args.init)
    except sandbox.DataError as e:
        raise SystemExit(f"train_prm.py: --init {e}")
    tok = AutoTokenizer.from_pretrained(args.init)
    if not tok.is_fast:
        raise SystemExit(f"train_prm.py: {args.init}: needs a fast tokenizer (character offsets map lines to tokens)")
    model = AutoModelForTokenClassification.from_pretrained(args.init, num_labels=1, dtype=torch.float32).to(args.device)  # fp32 weights; --bf16 autocasts
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if args.fsdp:
        shard(model, args.bf16)
    examples = [e[:2] for e in (prm_example(tok, r) for r in train) if len(e[0]) <= args.max_len]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    rng = random.Random(args.seed)
    model.train()
    bar = tqdm(total=total, desc="train PRM", disable=rank != 0)
    for epoch in range(args.epochs):
        rng.shuffle(examples)
        for s in range(0, len(examples), args.batch_size):
            batch = examples[s:s + args.batch_size]
            batch = batch[rank::world] or batch[-1:]  # FSDP: this rank's share (never empty: every rank steps together)
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=args.device)          # [B, T]
            targets = torch.tensor([t + [IGNORE] * (width - len(t)) for _, t in batch], device=args.device)        # [B, T]
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=args.device)     # [B, T]
            with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.bf16):
                scores = model(input_ids=ids, attention_mask=mask).logits[..., 0].float()                          # [B, T]
            loss = prm_loss(scores, targets)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    metrics = prm_metrics(test, score_steps(model, tok, test, args)) if test else {}
    if args.eval:  # an independent labeled set: more prompts than a share of the training data's
        seen = {r["prompt"] for r in train}
        extra = [r for r in read_rows(os.path.join(args.eval, "rows.jsonl") if os.path.isdir(args.eval) else args.eval) if r["prompt"] not in seen]
        metrics |= {f"eval/{k}": v for k, v in prm_metrics(extra, score_steps(model, tok, extra, args)).items()}
    metrics |= {"train_rows": len(examples), "train_labeled_steps": sum(sum(t != IGNORE for t in e[1]) for e in examples),
                "final_loss": loss.item(), "init": args.init}
    # FSDP: the full weights gathered on rank 0 (a plain from_pretrained folder); every rank scored above
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) if args.fsdp else None
    shown = score_steps(model, tok, test[:args.show], args) if args.show and test else None
    if args.fsdp:
        dist.destroy_process_group()
    if rank != 0:
        return
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, state_dict=weights)
    tok.save_pretrained(args.out)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    if shown:
        show(test, shown, args.show)
    print("\n| held-out metric | value |\n|---|---|")
    for key, value in metrics.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
