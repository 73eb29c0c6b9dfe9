"""Sampling speed on the CPU: the demo policy's sandbox.generate with each attention kernel and key-value cache, side by side.

    python benchmarks/bench_generate.py [--batch_size 64 256] [--threads 2] [--repeats 3]

Each stage samples through sandbox.generate (PPO's rollouts and evaluate.py at batch 64, label_prm_data.py at
256). At the demo's sizes (4 layers, width 128, ~90-token prompts) a decoding step is mostly overhead: the
attention kernel's own (sandbox/models.py's CPU_ATTENTION chooses the one the CPU samples with) and copying the
whole cache at every token (transformers' DynamicLayer, torch.cat; sandbox.models.GrowingLayer writes into
buffers that double instead). This draws the same valid-split prompts at temperature 1 from the same seed
with SDPA + torch.cat (transformers' defaults), eager + torch.cat, and eager + growing buffers (what the stages
use), alternating (so a machine's load drifts over all), and reports the best time of each, the speed-up over
the first, and whether the sampled tokens are identical (the same tokens: the stages' numbers do not depend
on the choice).
"""
import argparse
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
import sandbox.models as sandbox_models  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--policy", default="checkpoints/demo-sft")
ap.add_argument("--batch_size", type=int, nargs="+", default=[64, 256])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--max_new_tokens", type=int, default=192)
ap.add_argument("--repeats", type=int, default=3, help="timed runs of each implementation; the best is reported")
args = ap.parse_args()

torch.set_num_threads(args.threads)
tok, eos = sandbox.load_tokenizer(args.policy)
model = AutoModelForCausalLM.from_pretrained(args.policy).eval()
problems = sandbox.load_problems("demo", "valid")
VARIANTS = {"sdpa + cat": ("sdpa", lambda model: None), "eager + cat": ("eager", lambda model: None),
            "eager + growing": ("eager", sandbox_models.kv_cache)}
print("| batch | " + " | ".join(f"{v} s" for v in VARIANTS) + " | speed-up | same tokens |\n|---|---|---|---|---|---|")
for batch in args.batch_size:
    rows = [sandbox.prompt_ids(tok, p.prompt, False) for p in problems[:batch]]
    best, tokens = {}, {}
    for name in list(VARIANTS) * args.repeats:
        sandbox_models.CPU_ATTENTION, sandbox_models.kv_cache = VARIANTS[name]
        torch.manual_seed(0)
        t = time.perf_counter()
        seq, _ = sandbox.generate(model, tok, rows, eos, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens)
        best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        assert torch.equal(tokens.setdefault(name, seq), seq), f"{name}: the same seed sampled other tokens on a second run"
    first, last = list(VARIANTS)[0], list(VARIANTS)[-1]
    same = all(torch.equal(tokens[first], tokens[v]) for v in VARIANTS)  # False for other shapes too
    print(f"| {batch} | " + " | ".join(f"{best[v]:.2f}" for v in VARIANTS) + f" | {best[first] / best[last]:.2f}x | {same} |", flush=True)
print(f"({args.threads} threads, {args.max_new_tokens} new tokens at most, {os.cpu_count()} cores)")
