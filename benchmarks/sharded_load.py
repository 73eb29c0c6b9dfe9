"""Peak memory per rank while train_psgpo.py --fsdp true loads its four models (policy, reference, PRM, value
model), the old way against sandbox.load_model's, on the CPU with 2 gloo processes.

  naive    every rank reads every model whole (from_pretrained), then shards it: each rank's peak holds the
           four full models (at 7B, ~88 GB per GPU before any sharding)
  sharded  sandbox.load_model: every rank builds each model on the meta device and shards it; rank 0 alone
           reads the weights (into CPU memory, one model at a time) and broadcasts them into the shards

On the CPU, "device" memory is the process's RSS. from_pretrained maps the checkpoint's file, and moving a
model to the CPU copies nothing, so the naive mode copies each loaded model once, as `.to("cuda")` does on a
GPU; and rank 0's figure includes the full model it reads (on GPUs that copy sits in host memory). On GPUs
(--device cuda) the figure is torch.cuda.max_memory_allocated.

    python benchmarks/sharded_load.py                       # a random ~220M-parameter Llama, both modes
"""
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, HfArgumentParser, LlamaConfig

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
import sandbox  # noqa: E402


@dataclass
class Args:
    out: str = field(default="runs/sharded_load", metadata={"help": "folder: the random model, results.json"})
    hidden: int = field(default=1024, metadata={"help": "the model's width (12 layers, vocab 32000: ~220M parameters at 1024)"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda (one GPU per rank)"})
    nproc: int = field(default=2, metadata={"help": "ranks (torchrun processes)"})
    mode: str = field(default="", metadata={"help": "(internal) naive | sharded: one rank's measurement under torchrun"})


def measure(mode, path, device):
    """Under torchrun: load the four models as train_psgpo.py --fsdp does (mode), print this rank's peak memory."""
    rank, world, device = sandbox.start_ranks(device)
    kinds = [(AutoModelForCausalLM, {}), (AutoModelForCausalLM, {}), (AutoModelForTokenClassification, {"num_labels": 1}),
             (AutoModelForTokenClassification, {"num_labels": 1})]
    t = time.time()
    if mode == "naive":  # the old train_psgpo.py: all four whole on every rank, then sharded
        models = [cls.from_pretrained(path, dtype=torch.float32, **kw).to(device) for cls, kw in kinds]
        if device == "cpu":  # what .to("cuda") does on a GPU: a copy of the whole model in the rank's memory
            models = [m._apply(torch.clone) for m in models]
        for m in models:
            sandbox.shard(m, bf16=False)
    else:
        models = [sandbox.load_model(cls, path, device, fsdp=True, **kw) for cls, kw in kinds]
    torch.distributed.barrier()
    shards = sum(p.to_local().numel() for m in models for p in m.parameters()) * 4 / 2**30
    peak = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "rank": rank, "peak_gib": peak / 2**30,
                      "shards_gib": shards, "seconds": time.time() - t}), flush=True)


def main():
    args = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    path = os.path.join(args.out, "model")
    if args.mode:
        return measure(args.mode, path, args.device)
    if not os.path.exists(os.path.join(path, "config.json")):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=32000, hidden_size=args.hidden, intermediate_size=int(2.75 * args.hidden), num_hidden_layers=12,
                             num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False)
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())
    rows = []
    for mode in ("naive", "sharded"):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc), __file__, "--out", args.out,
                            "--device", args.device, "--mode", mode], capture_output=True, text=True, cwd=HERE)
        if r.returncode:
            raise SystemExit(f"sharded_load.py: {mode} failed: {r.stderr[-2000:]}")
        rows += sorted((json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")), key=lambda x: x["rank"])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"params": params, "model_gib_fp32": params * 4 / 2**30, "device": args.device, "rows": rows}, f, indent=1)
    print(f"{params / 1e6:.0f}M parameters, {params * 4 / 2**30:.2f} GiB in fp32; four models per rank, {args.nproc} ranks\n")
    print(f"| mode | rank | peak {'GPU memory' if args.device == 'cuda' else 'RSS'} (GiB) | its shards (GiB) | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['rank']} | {r['peak_gib']:.2f} | {r['shards_gib']:.2f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
    sandbox.stop_ranks()  # --mode, under torchrun: all ranks leave together, once the models are gone
