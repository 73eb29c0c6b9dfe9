"""train_prm.py - step 3 of the pipeline: the Process Reward Model (paper section 3).

R_phi(x, y<=m): a causal LM with a scalar head on every token (AutoModelForTokenClassification, one
output), initialised from a policy checkpoint and trained by regression (MSE) against the line labels
of label_prm_data.py (+1 correct, -1 after the first unrecoverable line, 0 neutral: a comment). The
label of line m sits on the token holding the line's last character (its newline, when it has one:
sandbox.line_end_tokens, where train_psgpo.py reads the score); every other token is ignored.
`--labels outcome` trains an outcome reward model (ORM) on the same rows instead: every code line
labeled with the response's verdict, the control that tells process supervision from any trained critic.

    python train_prm.py --data runs/prm_data --init checkpoints/demo-sft --out runs/prm

--data is label_prm_data.py's folder (trains on labels.jsonl; held-out prompts are evaluated on all
their responses in rows.jsonl) or one .jsonl file. A share of the prompts (--holdout) is held out;
the held-out report: step-level AUC and accuracy (neutral lines excluded), first-error localisation (the
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
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm
from transformers import AutoModelForTokenClassification, set_seed

import sandbox

IGNORE = -100.0  # target on tokens that carry no label


@dataclass
class Args:
    data: str = field(default="runs/prm_data", metadata={"help": (
        "label_prm_data.py output folder, or a labels .jsonl file")})
    init: str = field(default="checkpoints/demo-sft", metadata={"help": (
        "policy checkpoint the PRM starts from (body; the scalar head is new)")})
    out: str = field(default="runs/prm", metadata={"help": (
        "output folder (save_pretrained PRM + tokenizer + metrics.json; log.jsonl: each step's loss and gradient norm); a "
        "finished one stops, one cut off is redone by the same command")})
    labels: str = field(default="process", metadata={"help": (
        "process: the binary search's line labels (a PRM); outcome: every code line labeled with the response's "
        "verdict (an outcome reward model, the control for value init)")})
    rows: str = field(default="selected", metadata={"help": (
        "with a label_prm_data.py folder: selected (labels.jsonl, the rows its --select kept) | all (rows.jsonl: "
        "every labeled response; with --labels outcome, an ORM on every verdict labeling bought)")})
    holdout: float = field(default=0.15, metadata={"help": "share of prompts held out for evaluation"})
    epochs: int = field(default=8, metadata={"help": "passes over the training rows"})
    batch_size: int = field(default=16, metadata={"help": "sequences per optimizer step (over all ranks)"})
    micro_batch_size: int = field(default=0, metadata={"help": (
        "sequences per forward/backward on a rank: a step's gradients are accumulated over them (0: the rank's whole "
        "share of a batch)")})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (linear warm-up, cosine decay)"})
    warmup: int = field(default=20, metadata={"help": "warm-up steps"})
    max_len: int = field(default=1024, metadata={"help": "drop rows longer than this many tokens"})
    show: int = field(default=0, metadata={"help": "print this many held-out responses with every line's score"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    bf16: bool = field(default=False, metadata={"help": (
        "compute in bfloat16 (GPUs): the trained weights stay fp32 under autocast")})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory (large models)"})
    fsdp: bool = field(default=False, metadata={"help": (
        "under torchrun: shard the model with PyTorch FSDP2 (fully_shard), the batch split across ranks")})
    chat_template: bool = field(default=False, metadata={"help": (
        "prompts through the tokenizer's chat template, as the policy was sampled (sandbox.prompt_ids)")})
    revision: str = field(default=None, metadata={"help": (
        "Hub revision (branch, tag or commit) of a Hub id given as --init")})
    seed: int = field(default=1, metadata={"help": "random seed"})
    dist_timeout: float = field(default=60, metadata={"help": "under torchrun: minutes a rank waits for the others in a collective"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="epochs batch_size lr max_len dist_timeout", nonnegative="warmup show micro_batch_size",
                            below_one="holdout", at_most={"dist_timeout": 1440},  # a day
                            choices={"labels": ("process", "outcome"), "rows": ("selected", "all")},
                            seed="seed", device="device")


# What a re-run into the folder of a run cut off before its end may change (it trains again from the start): the
# ranks' patience, memory, and how many rows it shows; every other flag must be the cut-off run's (its args.json)
REDO_MAY_CHANGE = ("dist_timeout", "micro_batch_size", "gradient_checkpointing", "show")


def prm_example(tok, row, chat=False):
    """(input ids, targets, positions): the label of step m on the token holding its last character
    (sandbox.line_end_tokens, where train_psgpo.py reads the line's score), IGNORE elsewhere (TRL's
    layout); positions lists those tokens' indices. The prompt as the policy was fed it (sandbox.prompt_ids), the
    response as it sampled it (label_prm_data.py's response_ids; a row without them: its text tokenized), so the PRM
    learns on the token sequences PSGPO scores."""
    prompt = sandbox.prompt_ids(tok, row["prompt"], chat)
    response = row.get("response_ids") or tok(row["response"], add_special_tokens=False)["input_ids"]  # as sampled
    positions = [len(prompt) + t for t in sandbox.line_end_tokens(tok, response, row["steps"])]
    targets = [IGNORE] * (len(prompt) + len(response))
    for t, label in zip(positions, row["labels"]):
        targets[t] = float(label)
    return prompt + response, targets, positions


def outcome_labels(row):
    """An outcome reward model's targets (--labels outcome): every code line labeled with the response's
    verdict, +1 passes / -1 fails, neutral lines 0: the PRM's rows, positions and loss without the search."""
    return [0 if neutral else (1 if row["passed"] else -1) for _, _, neutral in row["steps"]]


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
    s_step, y_step, s_last, y_last, hits, located, s_neutral = [], [], [], [], 0, 0, []
    for row, scores in zip(rows, step_scores):
        code = [(s, l) for s, l, st in zip(scores, row["labels"], row["steps"]) if not st[2]]
        s_neutral += [s for s, st in zip(scores, row["steps"]) if st[2]]
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
            "neutral_mean_score": sum(s_neutral) / len(s_neutral) if s_neutral else float("nan")}


def read_rows(path):
    """Labeled rows of a .jsonl file (sandbox.read_jsonl), each checked as it is read, one line naming the file, the row
    and what is wrong: the fields the PRM needs, of their types; its steps the lines of its response ([start, end,
    neutral] triples with sandbox.split_steps' spans: the label of a step that is no line would sit on a wrong token);
    one label per step, in the labels' [-1, 1]. Rows without a step (an empty response) carry nothing to learn and
    are left out."""
    rows = []
    with sandbox.bad_data_exits():
        for i, row in sandbox.read_jsonl(path):
            need = ("task_id", "prompt", "response", "steps", "labels", "passed", "first_error")
            missing = [k for k in need if k not in row]
            if missing:
                raise sandbox.DataError(f"{path}:{i}: missing field(s) {', '.join(missing)}")
            check_row(row, f"{path}:{i}")
            if row["steps"]:
                rows.append(row)
    if not rows:
        sandbox.fail(f"{path}: no rows with at least one step")
    return rows


def check_row(row, where):
    """read_rows' checks of one row: a DataError naming `where` and the first thing wrong."""
    fields = [("task_id", str), ("prompt", str), ("response", str), ("steps", list), ("labels", list), ("passed", bool),
              ("first_error", (int, type(None)))] + [("response_ids", list)] * ("response_ids" in row)  # as sampled, if there
    for key, kind in fields:
        sandbox.need(row, key, kind, where, hint="")
    steps, labels = row["steps"], row["labels"]
    if len(steps) != len(labels):
        raise sandbox.DataError(f"{where}: {len(steps)} steps but {len(labels)} labels")
    for m, step in enumerate(steps):
        if not (isinstance(step, list) and len(step) == 3 and isinstance(step[2], bool)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in step[:2])):
            raise sandbox.DataError(f"{where}: step {m} is {json.dumps(step)[:40]}, not a [start, end, neutral] triple "
                                    f"(two character offsets, then true or false)")
    lines = [[a, b] for a, b, _ in sandbox.split_steps(row["response"])]
    if [s[:2] for s in steps] != lines:
        m = next((m for m, (s, l) in enumerate(zip(steps, lines)) if s[:2] != l), min(len(steps), len(lines)))
        raise sandbox.DataError(f"{where}: its steps are not the lines of its response (sandbox.split_steps): step {m} is "
                                f"{steps[m][:2] if m < len(steps) else 'missing'}, its line {lines[m] if m < len(lines) else 'none'} "
                                f"({len(steps)} steps, {len(lines)} lines)")
    for m, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not -1 <= label <= 1:
            raise sandbox.DataError(f"{where}: label {label!r} of step {m} is outside the labels' range [-1, 1]")
    if "response_ids" in row and not all(isinstance(t, int) and not isinstance(t, bool) for t in row["response_ids"]):
        raise sandbox.DataError(f"{where}: field 'response_ids' should be a list of token ids (whole numbers)")


def chunks(rows, n):
    return [rows[i:i + n] for i in range(0, len(rows), n)]


def collate_prm(examples, pad, device):
    """Right-pad (ids, targets) examples to [B, T] ids, targets (IGNORE on padding) and attention mask."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in examples], device=device)
    targets = torch.tensor([t + [IGNORE] * (width - len(t)) for _, t in examples], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in examples], device=device)
    return ids, targets, mask


@torch.no_grad()
def score_steps(model, tok, rows, args):
    """The PRM's score on every step of every row (one row at a time: no padding to reason about)."""
    out = []
    for row in tqdm(rows, desc="score", leave=False):
        ids, _, positions = prm_example(tok, row, args.chat_template)
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


def main():
    args = sandbox.parse_args(Args, device="device", out="out")
    given = asdict(args)  # the flags as given, args.json (args.device becomes this rank's GPU below)
    if args.fsdp != ("RANK" in os.environ):  # this stage's ranks exist to shard one model
        sandbox.fail("--fsdp true shards the model across torchrun's ranks: use both or neither")
    sandbox.guard_out(args, REDO_MAY_CHANGE, finished=("metrics.json",))  # a trained PRM there stops it; a cut-off run is redone
    with sandbox.bad_data_exits("--init "):  # a local folder, or a Hub id fetched by every rank before they meet
        sandbox.find_model(args.init, args.revision, kind="causal", chat=args.chat_template)
    rank, world, args.device = sandbox.start_ranks(args.device, timeout_minutes=args.dist_timeout)
    set_seed(args.seed)
    folder = os.path.isdir(args.data)
    every, kept = (os.path.join(args.data, f) for f in ("rows.jsonl", "labels.jsonl"))  # label_prm_data.py's two files
    train_rows = read_rows((every if args.rows == "all" else kept) if folder else args.data)
    if args.labels == "outcome":
        train_rows = [r | {"labels": outcome_labels(r)} for r in train_rows]
    all_rows = read_rows(every) if folder and os.path.exists(every) else train_rows
    # held out by prompt text, not task id: the demo's train split repeats a few short prompts
    held = lambda r: zlib.crc32(f"{args.seed}/{r['prompt']}".encode()) % 10000 < args.holdout * 10000  # noqa: E731
    train = [r for r in train_rows if not held(r)]
    if not train:
        sandbox.fail(f"--holdout {args.holdout} holds out the prompts of all {len(train_rows)} training rows: none is left to train on")
    sandbox.data_line(args.data, "labeled rows", len(train), args.epochs, "rows for training", quiet=rank != 0, warn=False)
    test = [r for r in all_rows if held(r)]
    tok, _ = sandbox.load_tokenizer(args.init, args.revision)
    examples = [e[:2] for e in (prm_example(tok, r, args.chat_template) for r in train) if len(e[0]) <= args.max_len]
    if not examples:
        shortest = min(len(prm_example(tok, r, args.chat_template)[0]) for r in train)
        sandbox.fail(f"--max_len {args.max_len} drops all {len(train)} training rows (the shortest is {shortest} tokens)")
    # fp32 weights (--bf16 autocasts); a fresh scalar head on the policy's body
    model = sandbox.load_model(AutoModelForTokenClassification, args.init, args.device, torch.float32, args.revision,
                               args.fsdp, args.bf16, num_labels=1)
    if args.gradient_checkpointing:
        sandbox.checkpoint_activations(model)
    pad = tok.pad_token_id
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = sandbox.lr_schedule(opt, args.warmup, total)  # linear warm-up, then a cosine decay to 0
    rng = random.Random(args.seed)
    model.train()
    bar = tqdm(total=total, desc="train PRM", disable=rank != 0)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:  # the run's flags first: a re-run after a cut-off compares them (sandbox.guard_out)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(given, f, indent=1)
    log = open(os.path.join(args.out, "log.jsonl"), "w", buffering=1) if rank == 0 else None  # a row per step
    for epoch in range(args.epochs):
        rng.shuffle(examples)
        for s in range(0, len(examples), args.batch_size):
            batch = examples[s:s + args.batch_size]
            n_labels = sum(t != IGNORE for _, targets in batch for t in targets)  # the step's labeled tokens, all ranks
            most = math.ceil(len(batch) / world)  # FSDP: the largest rank's share; every rank makes as many passes
            micro = args.micro_batch_size or most
            parts = chunks(batch[rank::world], micro)
            parts += [[]] * (math.ceil(most / micro) - len(parts))  # a pass for nothing (a share short of the others)
            step_loss = 0.0
            for part in parts:
                ids, targets, mask = collate_prm(part or batch[-1:], pad, args.device)                    # [b, T] each
                with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.bf16):
                    scores = model(input_ids=ids, attention_mask=mask).logits[..., 0].float()              # [b, T]
                # prm_loss is the mean over these labeled tokens: weighted by their share of the step's, the parts add
                # up to the mean over the step's (x world: FSDP averages the ranks' gradients)
                share = (targets != IGNORE).sum() / n_labels if part else 0.0
                loss = prm_loss(scores, targets) * share * world
                loss.backward()
                step_loss += loss.detach() / world
            if world > 1:  # the step's loss: every rank's parts
                torch.distributed.all_reduce(step_loss)
            step_loss = step_loss.item()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            norm = (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()  # FSDP: a DTensor
            if log is not None:
                log.write(json.dumps({"step": bar.n + 1, "epoch": epoch, "loss": step_loss,
                                      "grad_norm": norm, "lr": sched.get_last_lr()[0]}) + "\n")
            opt.step()
            sched.step()
            opt.zero_grad()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{step_loss:.3f}")
    bar.close()
    if log is not None:
        log.close()
    model.eval()
    # held-out rows keep the search's labels, whatever --labels trained on: a PRM and an ORM are measured alike
    metrics = prm_metrics(test, score_steps(model, tok, test, args)) if test else {}
    metrics |= {"train_rows": len(examples),
                "train_labeled_steps": sum(sum(t != IGNORE for t in e[1]) for e in examples),
                "final_loss": step_loss, "init": args.init, "labels": args.labels}
    shown = score_steps(model, tok, test[:args.show], args) if args.show and test else None
    sandbox.save_model(model, args.out, tok, args.fsdp)  # FSDP: every rank helps gather the weights (each scored above)
    if rank != 0:
        return
    with open(os.path.join(args.out, "metrics.json"), "w") as f:  # args.json was written before training
        json.dump(metrics, f, indent=1)
    if shown:
        show(test, shown, args.show)
    print("\n" + sandbox.table(["held-out metric", "value"], metrics.items()))


if __name__ == "__main__":
    main()
    sandbox.stop_ranks()  # torchrun: all ranks leave together, once main()'s models are gone
