"""train_sft.py - step 0 of the pipeline: the supervised starting policy (the paper's "SFT policy", section 5,
Table 1).

The paper starts every RL run from a supervised policy. With a real instruct model you skip this stage;
the offline demo needs it. Two modes:

  default   train a byte-level BPE tokenizer on the demo training split, build a tiny Llama from a
            config (0.9M parameters; --arch gpt2 a GPT-2) and train it on prompt -> reference completion (on the
            demo: the
            *flawed* reference, `meta["flawed_solution"]`, whose planted systematic mistakes RL is
            later meant to fix; `--planted false` trains on the correct one). 8-24 minutes on 2 CPU cores;
            run_demo.sh starts from checkpoints/demo-sft, which is this command's output (README).
                python train_sft.py                         # -> runs/sft/
  --model   fine-tune any Hugging Face causal LM on a problem set's reference solutions:
                python train_sft.py --model Qwen/Qwen2.5-0.5B --dataset mbpp --split train \
                    --device cuda --bf16 --gradient_checkpointing --lr 1e-5 --batch_size 8
            (a model one GPU cannot train: torchrun --nproc_per_node 8 train_sft.py --fsdp true ..., FSDP2)

Sequence layout (right padding, training only): [prompt ids][completion ids][eos][pad ...]. Prompt and
completion are tokenized separately and concatenated, so the boundary is the same one generation sees;
labels are -100 on the prompt and the padding: the loss is on the completion (and its eos) only.
The saved tokenizer has pad and eos tokens and padding_side="left", for batched generation later.
"""
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import (AutoModelForCausalLM, GPT2Config, LlamaConfig,
                          PreTrainedTokenizerFast, set_seed)

import sandbox


@dataclass
class Args:
    # common
    out: str = field(default="runs/sft", metadata={"help": (
        "output folder (save_pretrained model + tokenizer; log.jsonl: each step's loss and gradient norm); a finished one "
        "stops, one cut off is redone by the same command")})
    seed: int = field(default=1, metadata={"help": "seed for init, data order and dropout"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    # data
    dataset: str = field(default="demo", metadata={"help": (
        "demo | demo-long | humaneval | mbpp | livecodebench | FILE.jsonl")})
    split: str = field(default="train", metadata={"help": "split of the problem set to train on"})
    planted: bool = field(default=True, metadata={"help": (
        "demo: train on the flawed reference (planted mistakes); false: the correct one")})
    max_problems: int = field(default=0, metadata={"help": "use only the first N problems (0: all)"})
    max_len: int = field(default=1024, metadata={"help": "drop examples longer than this many tokens"})
    # model: a tiny Llama (or GPT-2) from a config, or a pretrained one
    model: str = field(default="", metadata={"help": (
        "Hugging Face causal LM name or folder; empty: a tiny model + BPE trained here")})
    revision: str = field(default=None, metadata={"help": (
        "Hub revision (branch, tag or commit) of a Hub id given as --model")})
    arch: str = field(default="llama", metadata={"help": (
        "tiny model: llama (RoPE: learns to copy from the docstring faster) | gpt2")})
    vocab_size: int = field(default=512, metadata={"help": (
        "tiny model: BPE vocabulary size (256 bytes + merges + specials)")})
    n_layer: int = field(default=4, metadata={"help": "tiny model: transformer layers"})
    n_embd: int = field(default=128, metadata={"help": "tiny model: width"})
    n_head: int = field(default=4, metadata={"help": "tiny model: attention heads"})
    # optimisation
    steps: int = field(default=6400, metadata={"help": (
        "optimizer steps (the copy skill appears late: shorter runs broke the demo, docs/results/demo.md)")})
    batch_size: int = field(default=16, metadata={"help": "sequences per optimizer step (over all ranks)"})
    micro_batch_size: int = field(default=0, metadata={"help": (
        "sequences per forward/backward on a rank: a step's gradients are accumulated over them (0: the rank's whole "
        "share of a batch)")})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate"})
    warmup: int = field(default=50, metadata={"help": "linear warmup steps, then cosine decay to lr/10"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    bf16: bool = field(default=False, metadata={"help": (
        "compute in bfloat16 (GPUs): the trained weights stay fp32 under autocast")})
    gradient_checkpointing: bool = field(default=False, metadata={"help": (
        "GPU: trade compute for memory on big models")})
    save_every: int = field(default=0, metadata={"help": "also save a checkpoint every N steps (0: only at the end)"})
    fsdp: bool = field(default=False, metadata={"help": (
        "under torchrun: shard the model with PyTorch FSDP2 (fully_shard), each batch split across ranks")})
    dist_timeout: float = field(default=60, metadata={"help": "under torchrun: minutes a rank waits for the others in a collective"})

    def __post_init__(self):  # a value out of range stops here, in one line naming the flag, before anything loads
        sandbox.check_flags(self, positive="threads max_len vocab_size n_layer n_embd n_head steps batch_size lr "
                                           "max_grad_norm dist_timeout",
                            nonnegative="max_problems warmup weight_decay save_every micro_batch_size",
                            at_most={"dist_timeout": 1440}, choices={"arch": ("llama", "gpt2")},  # a day
                            seed="seed", device="device")
        rope = self.arch == "llama"  # RoPE rotates pairs of dimensions: a head's must be even
        if not self.model and (self.n_embd % self.n_head or (rope and self.n_embd // self.n_head % 2)):
            raise ValueError(f"--n_embd ({self.n_embd}) must be a multiple of {'2 x ' if rope else ''}--n_head ({self.n_head}): "
                             f"each head takes n_embd / n_head dimensions{', an even number (RoPE)' if rope else ''}")


# What a re-run into the folder of a run cut off before its end may change (it trains again from the start): threads,
# the ranks' patience, memory, how often it saves; every other flag must be the cut-off run's (its args.json)
REDO_MAY_CHANGE = ("threads", "dist_timeout", "micro_batch_size", "gradient_checkpointing", "save_every")


def train_tokenizer(texts, vocab_size, specials=("<|endoftext|>", "<|pad|>")):
    """Byte-level BPE (GPT-2's scheme: every byte is a token, so any text round-trips exactly),
    wrapped as a transformers fast tokenizer with eos, pad and left padding."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    bpe = Tokenizer(models.BPE())
    # GPT-2's split, except that an identifier keeps its digits (" x12" can become one token)
    words = Regex(r"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z_][A-Za-z_0-9]*| ?[0-9]+| ?[^\sA-Za-z_0-9]+|\s+(?!\S)|\s+")
    bpe.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(words, behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=specials[0], bos_token=specials[0],
                                   pad_token=specials[1], padding_side="left")


def sft_target(problem, planted):
    """The completion trained on: the demo's flawed reference when `planted`, else the reference."""
    if planted and "flawed_solution" in problem.meta:
        return problem.meta["flawed_solution"]
    return problem.solution


def encode_example(tok, prompt, completion, max_len):
    """(input_ids, labels): prompt and completion tokenized separately, eos appended, loss on completion."""
    p = sandbox.prompt_ids(tok, prompt)  # special tokens (a bos, for tokenizers that add one) as generation sees them
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if len(p) + len(c) > max_len:
        return None
    return p + c, [-100] * len(p) + c


def length_grouped_batches(lengths, batch_size, rng, group=64):
    """One epoch of batches of similar length (little padding): shuffle, sort within groups of
    `group` batches, cut, shuffle the batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    span = batch_size * group
    batches = []
    for s in range(0, len(idx), span):
        chunk = sorted(idx[s:s + span], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples, pad_id):
    """Right-pad a list of (ids, labels) to [B, T] tensors; labels -100 on padding."""
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(ids)] = 1
    return input_ids, mask, labels


def policy_tokenizer(args, texts):
    """The policy's tokenizer: a pretrained model's, or a byte-level BPE trained on `texts` (the tiny model's)."""
    return sandbox.load_tokenizer(args.model, args.revision)[0] if args.model else train_tokenizer(texts, args.vocab_size)


def load_policy(args, tok):
    """A pretrained causal LM, or a tiny Llama (or GPT-2) for the tokenizer `tok`."""
    if not args.model:
        ids = dict(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        if args.arch == "gpt2":  # no dropout: on CPU it costs about half of each step
            config = GPT2Config(vocab_size=len(tok), n_positions=args.max_len, n_embd=args.n_embd, n_layer=args.n_layer,
                                n_head=args.n_head, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                                attn_pdrop=0.0, **ids)
        else:
            config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=args.max_len, hidden_size=args.n_embd,
                                 intermediate_size=3 * args.n_embd, num_hidden_layers=args.n_layer,
                                 num_attention_heads=args.n_head, num_key_value_heads=args.n_head,
                                 tie_word_embeddings=True, **ids)
        model = AutoModelForCausalLM.from_config(config).to(args.device)
        return sandbox.shard(model, args.bf16) if args.fsdp else model
    # fp32 weights (--bf16 autocasts); FSDP: sharded as they load
    return sandbox.load_model(AutoModelForCausalLM, args.model, args.device, torch.float32, args.revision, args.fsdp, args.bf16)


def save(model, tok, flags, out, summary=None):
    """A save_pretrained folder with args.json (`flags`, as given) and summary.json; FSDP: every rank helps gather the
    weights."""
    sandbox.save_model(model, out, tok, flags["fsdp"])
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    for name, content in (("args.json", flags), ("summary.json", summary)):
        if content is not None:
            with open(os.path.join(out, name), "w") as f:
                json.dump(content, f, indent=1)


def main():
    args = sandbox.parse_args(Args, device="device", out="out")
    given = asdict(args)  # the flags as given, args.json (args.device becomes this rank's GPU below)
    if args.fsdp != ("RANK" in os.environ):  # this stage's ranks exist to shard one model
        sandbox.fail("--fsdp true shards the model across torchrun's ranks: use both or neither")
    sandbox.guard_out(args, REDO_MAY_CHANGE, finished=("summary.json",))  # a trained policy there stops it; a cut-off run is redone
    with sandbox.bad_data_exits("--model "):  # a local folder, or a Hub id fetched by every rank before they meet
        if args.model:
            sandbox.find_model(args.model, args.revision, kind="causal")
    threads = max(1, args.threads // int(os.environ.get("WORLD_SIZE", 1)))
    rank, world, args.device = sandbox.start_ranks(args.device, threads=threads, timeout_minutes=args.dist_timeout)
    set_seed(args.seed)
    t0 = time.time()
    with sandbox.bad_data_exits():
        problems = sandbox.load_problems(args.dataset, args.split)
    if args.max_problems:
        problems = problems[:args.max_problems]
    pairs = [(p.prompt, sft_target(p, args.planted)) for p in problems if sft_target(p, args.planted)]
    if not pairs:
        sandbox.fail(f"{args.dataset}: no problem has a reference solution to train on")
    sandbox.data_line(args.dataset, args.split, len(pairs), args.steps * args.batch_size / len(pairs),
                      "problems with a reference solution", quiet=rank != 0)

    # 1. tokenizer; 2. encode (prompt | completion + eos), loss on the completion; 3. the model
    tok = policy_tokenizer(args, [p + c for p, c in pairs])
    examples = [e for e in (encode_example(tok, p, c, args.max_len) for p, c in pairs) if e]
    if not examples:
        sandbox.fail(f"every example is longer than --max_len {args.max_len}")
    model = load_policy(args, tok)
    lengths = [len(ids) for ids, _ in examples]
    if args.gradient_checkpointing:
        sandbox.checkpoint_activations(model)
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(examples)} examples ({len(pairs) - len(examples)} too long), {sum(lengths) / len(lengths):.0f} "
          f"tokens each on average, vocab {len(tok)}, {n_params / 1e6:.2f}M parameters")

    # 4. AdamW, weight decay on matrices only; linear warmup then cosine to lr/10
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    sched = sandbox.lr_schedule(opt, args.warmup, args.steps, floor=0.1)

    # 5. the loop
    rng = random.Random(args.seed)
    batches, epoch, losses = [], 0, []
    model.train()
    bar = tqdm(range(1, args.steps + 1), desc="sft", unit="step", disable=rank != 0)
    t_train = time.time()
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:  # the run's flags first: a re-run after a cut-off compares them (sandbox.guard_out)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(given, f, indent=1)
    log = open(os.path.join(args.out, "log.jsonl"), "w", buffering=1) if rank == 0 else None  # a row per step
    for step in bar:
        if not batches:
            batches, epoch = length_grouped_batches(lengths, args.batch_size, rng), epoch + 1
        idx = batches.pop()
        n_tokens = sum(sum(l != -100 for l in examples[i][1]) for i in idx)  # the step's trained tokens, all ranks
        most = -(-len(idx) // world)  # FSDP: the largest rank's share; every rank makes as many passes
        micro = args.micro_batch_size or most
        parts = [idx[rank::world][s:s + micro] for s in range(0, most, micro)]
        loss = 0.0
        for part in parts:
            input_ids, mask, labels = (t.to(args.device) for t in collate([examples[i] for i in part or idx[-1:]], tok.pad_token_id))
            with torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
                part_loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss  # mean over its tokens
            # weighted by these tokens' share of the step's, the parts add up to the mean over the step's tokens
            # (x world: FSDP averages the ranks' gradients); a part for nothing where a share is short of the others
            share = (labels[:, 1:] != -100).sum() / n_tokens if part else 0.0
            (part_loss * share * world).backward()
            loss += part_loss.detach() * share
        if world > 1:
            dist.all_reduce(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        grad_norm = (grad_norm.full_tensor() if args.fsdp else grad_norm).item()  # FSDP: a DTensor
        if log is not None:
            log.write(json.dumps({"step": step, "loss": loss.item(), "grad_norm": grad_norm, "lr": sched.get_last_lr()[0]}) + "\n")
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", gnorm=f"{grad_norm:.2f}", epoch=epoch)
        if args.save_every and step % args.save_every == 0 and step < args.steps:
            save(model, tok, given, os.path.join(args.out, f"step{step}"))
    train_s = time.time() - t_train
    if log is not None:
        log.close()

    model.config.use_cache = True
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    tail = losses[-50:]
    summary = {"steps": args.steps, "epochs": round(args.steps * args.batch_size / len(examples), 2),
               "final_loss": round(sum(tail) / len(tail), 4), "train_s": round(train_s, 1),
               "steps_per_s": round(args.steps / train_s, 2), "total_s": round(time.time() - t0, 1),
               "params_M": round(n_params / 1e6, 3), "vocab": len(tok),
               "tokens_per_example": round(sum(lengths) / len(lengths), 1)}
    save(model, tok, given, args.out, summary)
    if rank != 0:
        return
    print("\n" + sandbox.table(list(summary), [list(summary.values())]))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
    sandbox.stop_ranks()  # torchrun: all ranks leave together, once main()'s models are gone
