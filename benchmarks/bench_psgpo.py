"""One PSGPO iteration at a real model's shape: seconds per phase, tokens/s, peak GPU memory.

README's memory and time guide ("At real scale") comes from this script. It builds, with random
weights and no model hub, a Qwen2 model of Qwen2.5-Coder-0.5B's (or 1.5B's) shape from its config, a
PRM of the same shape, and a byte-level BPE grown to the same vocabulary size (151,936 entries, so the
logits are as large as the real model's and every sampled id decodes to text); then it runs
train_psgpo.py with the dense reward and value init (every phase), bf16 autocast, gradient
checkpointing, and reports the phases of the iterations after the first from its log.jsonl. Random
weights write random tokens, so every response runs to --max_new_tokens: the longest rollout the
settings allow. The prompts are the demo's (short); the judge only sees text that fails.

    python benchmarks/bench_psgpo.py --shape 0.5B --device cuda --out runs/bench_0.5B   # on a GPU
    python benchmarks/bench_psgpo.py --shape 1.5B --nproc 8 --fsdp true --out runs/bench_1.5B_fsdp   # torchrun, FSDP2
    python benchmarks/bench_psgpo.py --shape tiny --out runs/bench_tiny                 # CPU, seconds
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from itertools import product

import torch
from transformers import (AutoModelForCausalLM, AutoModelForTokenClassification, HfArgumentParser,
                          PreTrainedTokenizerFast, Qwen2Config)

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import sandbox  # noqa: E402
from train_sft import train_tokenizer  # noqa: E402

# Qwen2.5-Coder's published configs (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings)
SHAPES = {"tiny": (64, 128, 2, 4, 2, 4096, True), "0.5B": (896, 4864, 24, 14, 2, 151936, True),
          "1.5B": (1536, 8960, 28, 12, 2, 151936, True), "3B": (2048, 11008, 36, 16, 2, 151936, True),
          "7B": (3584, 18944, 28, 28, 4, 152064, False)}


@dataclass
class Args:
    shape: str = field(default="0.5B", metadata={"help": "tiny | 0.5B | 1.5B | 3B | 7B (Qwen2.5-Coder's shapes)"})
    out: str = field(default="runs/bench_psgpo", metadata={"help": "folder: model/, prm/, run/ (train_psgpo.py's), bench.json"})
    device: str = field(default="cuda", metadata={"help": "cuda | cpu"})
    iterations: int = field(default=3, metadata={"help": (
        "PPO iterations; the first (warm-up) is left out of the report, unless it is the only one (a memory probe)")})
    batch_size: int = field(default=64, metadata={"help": "prompts per iteration per GPU"})
    minibatch_size: int = field(default=8, metadata={"help": "sequences per gradient step per GPU"})
    nproc: int = field(default=1, metadata={"help": "GPUs: > 1 (or --fsdp) runs train_psgpo.py under torchrun, DDP or FSDP2"})
    fsdp: bool = field(default=False, metadata={"help": "train_psgpo.py --fsdp true (FSDP2)"})
    max_new_tokens: int = field(default=512, metadata={"help": "response length (random weights always reach it)"})
    workers: int = field(default=8, metadata={"help": "judge worker processes"})


def grow_tokenizer(tok, size):
    """The demo's byte-level BPE grown to `size` entries by merging pairs of its tokens: every id decodes."""
    from tokenizers import Tokenizer
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    base = [t for t in vocab if t not in tok.all_special_tokens]
    while len(vocab) < size:  # pairs of base tokens, then a base token before any token, ...
        for a, b in product(base, [t for t in vocab if t not in tok.all_special_tokens]):
            if len(vocab) >= size:
                break
            if a + b not in vocab:
                vocab[a + b] = len(vocab)
                merges.append([a, b])
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token=tok.eos_token,
                                   bos_token=tok.bos_token, pad_token=tok.pad_token, padding_side="left")


def build(args):
    """model/ (causal LM) and prm/ (token classification, one output) of the shape, random weights."""
    hidden, inter, layers, heads, kv, vocab, tied = SHAPES[args.shape]
    tok = train_tokenizer([p.prompt + p.solution for p in sandbox.load_problems("demo", "train")[:2000]], 400)
    tok = grow_tokenizer(tok, vocab)
    assert len(tok) == vocab, (len(tok), vocab)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
                         rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=tied, bos_token_id=tok.eos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    for cls, folder, extra in ((AutoModelForCausalLM, "model", {}), (AutoModelForTokenClassification, "prm", {"num_labels": 1})):
        path = os.path.join(args.out, folder)
        if not os.path.exists(os.path.join(path, "config.json")):
            model = cls.from_config(Qwen2Config(**config.to_dict() | extra))
            n_params = sum(p.numel() for p in model.parameters())
            model.to(torch.bfloat16).save_pretrained(path)  # bf16 on disk; train_psgpo.py loads trained models in fp32
            tok.save_pretrained(path)
            print(f"{path}: {n_params / 1e9:.3f} B parameters")
    return tok


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    if args.shape not in SHAPES:
        raise SystemExit(f"bench_psgpo.py: --shape must be one of {', '.join(SHAPES)}, not {args.shape!r}")
    build(args)
    run = os.path.join(args.out, "run")
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc)] if args.nproc > 1 or args.fsdp else []
    cmd = [sys.executable, *launch, "train_psgpo.py", "--policy", f"{args.out}/model", "--prm", f"{args.out}/prm", "--out", run,
           "--dense_reward", "true", "--value_init", "prm", "--device", args.device, "--iterations", str(args.iterations),
           "--batch_size", str(args.batch_size * args.nproc), "--minibatch_size", str(args.minibatch_size * args.nproc),
           "--fsdp", str(args.fsdp), "--max_new_tokens",
           str(args.max_new_tokens), "--save_every", "1000000", "--workers", str(args.workers), "--lr", "1e-6",
           "--value_lr", "5e-6", "--warmup", "1", "--kl_coef", "0.05", "--kl_loss_coef", "0"]  # README's real-scale PPO flags
    if args.device == "cuda":
        cmd += ["--bf16", "true", "--gradient_checkpointing", "true"]
    print("$ " + " ".join(cmd[1 + len(launch):]), flush=True)
    subprocess.run(cmd, cwd=HERE, check=True)
    with open(os.path.join(run, "log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    rows = rows[1:] or rows  # the first iteration warms up (allocator, kernels); alone, it is the report
    with open(os.path.join(run, "args.json")) as f:
        epochs = json.load(f)["ppo_epochs"]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k.startswith(("time/", "memory/")) or k == "response/tokens"}
    tokens = args.batch_size * mean["response/tokens"]  # response tokens per iteration per GPU
    report = {"shape": args.shape, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
              "gpus": args.nproc, "engine": "fsdp2" if args.fsdp else "ddp" if args.nproc > 1 else "one process",
              "iterations_averaged": len(rows), "batch_size": args.batch_size, "minibatch_size": args.minibatch_size,
              "max_new_tokens": args.max_new_tokens, "seconds_per_iteration": sum(v for k, v in mean.items() if k.startswith("time/")),
              "generated_tokens_per_s": tokens / mean["time/generate"],
              "updated_tokens_per_s": epochs * tokens / mean["time/update"]} | mean  # policy + value, forward + backward
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("\n" + sandbox.table(["metric", "value"], report.items()))


if __name__ == "__main__":
    main()
