"""Sampling speed on the CPU: the demo policy's sandbox.generate with SDPA against eager attention, side by side.

    python benchmarks/bench_generate.py [--batch_size 64 256] [--threads 2] [--repeats 3]

Each stage samples through sandbox.generate (PPO's rollouts and evaluate.py at batch 64, label_prm_data.py at
256). At the demo's sizes (4 layers, width 128, ~90-token prompts) the attention kernel's own overhead is a
large share of a decoding step, and sandbox_models.CPU_ATTENTION chooses the one the CPU samples with. This
draws the same valid-split prompts at temperature 1 from the same seed with each implementation, alternating
(so a machine's load drifts over both), and reports the best time of each, the speed-up, and whether the
sampled tokens are identical (the same tokens: the stages' numbers do not depend on the choice).
"""
import argparse
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
import sandbox_models  # noqa: E402

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
print("| batch | sdpa s | eager s | speed-up | same tokens |\n|---|---|---|---|---|")
for batch in args.batch_size:
    rows = [sandbox.prompt_ids(tok, p.prompt, False) for p in problems[:batch]]
    best, tokens = {}, {}
    for impl in ["sdpa", "eager"] * args.repeats:
        sandbox_models.CPU_ATTENTION = impl
        torch.manual_seed(0)
        t = time.perf_counter()
        seq, _ = sandbox.generate(model, tok, rows, eos, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens)
        best[impl] = min(best.get(impl, float("inf")), time.perf_counter() - t)
        assert torch.equal(tokens.setdefault(impl, seq), seq), f"{impl}: the same seed sampled other tokens on a second run"
    same = torch.equal(tokens["sdpa"], tokens["eager"])  # False for other shapes too
    print(f"| {batch} | {best['sdpa']:.2f} | {best['eager']:.2f} | {best['sdpa'] / best['eager']:.2f}x | {same} |", flush=True)
print(f"({args.threads} threads, {args.max_new_tokens} new tokens at most, {os.cpu_count()} cores)")
