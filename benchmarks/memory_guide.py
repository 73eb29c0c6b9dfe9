"""Memory and time per GPU of one PSGPO (PPO) rank, computed component by component, for DDP and FSDP2.

Every figure here is *computed* from the model's shape; the measured ones are in docs/real_scale.md
(benchmarks/bench_psgpo.py on one H200, one process). The components, bytes per GPU:

  trained models (policy N_p, value N_v parameters): fp32 weights 4, fp32 gradients 4, AdamW moments 8
  frozen reference (N_p) and PRM (N_v), stored in bf16: 2 each
  DDP: all of the above on every GPU; its gradient buckets add 4 per trained parameter unless
       gradient_as_bucket_view=True (train_psgpo.py sets it: the gradients are the buckets); --bf16
       autocast keeps a bf16 copy of each trained weight during forward and backward: 2 (N_p + N_v)
  FSDP2 (fully_shard every decoder layer, then the root; MixedPrecisionPolicy(param bf16, reduce fp32)):
       all states / W, plus the layers gathered at a time in bf16 (the root's embeddings and head for the
       whole pass, two decoder layers with prefetch), plus, around `generate`, the whole policy gathered in
       bf16 (2 N_p) when it is not resharded after forward
  activations of one minibatch (mb sequences of T tokens), bf16, for a Llama/Qwen2 layer with SDPA,
       per token per layer: ~16 H + 4 kv_dim + 8 I bytes (RMSNorm inputs in fp32, q/k/v, attention
       output, the MLP's gate, up, activation and product); with gradient checkpointing only each layer's
       input (2 H) is kept, plus one layer recomputed at a time
  logits of one minibatch: mb T V (2 bf16 logits + 4 fp32 copy + 4 log-softmax + 4 its gradient) = 14 mb T V
  generation: the KV cache, 2 (k, v) L kv_dim 2 bytes per token of the rollout batch (b sequences of T)

Time per iteration, per phase, for the same per-GPU load (--batch_size and --minibatch_size count over
all ranks, so each GPU's work is the same at any GPU count; only communication grows):
  generate  S decoding steps, each a pass over L layers at c_gen seconds per layer (eager PyTorch:
            kernel launches, not FLOPs, bound it at these sizes) plus reading the bf16 policy once,
            2 N_p / HBM bandwidth
  score     (train_psgpo.py's time/dense + time/score) forwards of policy, reference, PRM and value over b x T tokens, 2 N FLOPs per token, at F
            FLOP/s, plus c_pass per layer per forward call, plus t_cpu (the dense reward's per-token
            decoding on the CPU)
  update    epochs x (policy + value) over b x T tokens, 8 N FLOPs per token with gradient checkpointing
            (forward, recomputed forward, backward), at F, plus c_pass per layer per pass (3 per step)
  c_gen, F, c_pass and t_cpu are fitted (least squares) to the four phases measured on one H200 at
  0.5B and 1.5B (MEASURED, from docs/real_scale.md); the script prints the fit beside the measurements.
  7B is an extrapolation of that fit.
  communication, if none of it overlapped compute, over links of --link_gbps GB/s per GPU (ring):
            DDP: all-reduce of the fp32 gradients per optimizer step, 2 (W-1)/W x 4 (N_p + N_v) bytes;
            FSDP2: all-gather of the bf16 weights per forward, recompute and backward, (W-1)/W x 2 N, and
            reduce-scatter of the fp32 gradients per step, (W-1)/W x 4 N; generate gathers the policy once.

    python benchmarks/memory_guide.py                         # 0.5B, 1.5B, 7B on 1, 2, 4, 8 GPUs
    python benchmarks/memory_guide.py --mb 4 --tokens 1024    # another load per GPU
"""
import itertools
from dataclasses import dataclass, field

import numpy as np
from transformers import HfArgumentParser

# Qwen2.5-Coder's published configs: hidden H, intermediate I, layers L, heads, kv heads, vocab V, tied embeddings
SHAPES = {"0.5B": (896, 4864, 24, 14, 2, 151936, True), "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
          "3B": (2048, 11008, 36, 16, 2, 151936, True), "7B": (3584, 18944, 28, 28, 4, 152064, False)}
GIB = 2 ** 30
# benchmarks/bench_psgpo.py on one H200 (docs/real_scale.md): seconds of generate, score, update per iteration
# at 64 prompts, minibatch 8, 2 epochs, 512 new tokens (~540 per sequence)
MEASURED = {"0.5B": (13.3, 3.3, 7.8), "1.5B": (15.1, 3.8, 11.1)}
HBM = 4.8e12  # H200 memory bandwidth, bytes/s


@dataclass
class Args:
    shapes: list[str] = field(default_factory=lambda: ["0.5B", "1.5B", "7B"], metadata={"help": "model shapes (Qwen2.5-Coder's): 0.5B 1.5B 3B 7B"})
    gpus: list[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata={"help": "GPU counts"})
    mb: int = field(default=8, metadata={"help": "sequences per minibatch per GPU (--minibatch_size / GPUs)"})
    rollout: int = field(default=64, metadata={"help": "prompts per iteration per GPU (--batch_size / GPUs)"})
    tokens: int = field(default=540, metadata={"help": "tokens per sequence, prompt + response (bench_psgpo.py's: ~540)"})
    checkpointing: bool = field(default=True, metadata={"help": "--gradient_checkpointing"})
    new_tokens: int = field(default=512, metadata={"help": "decoding steps per rollout (--max_new_tokens)"})
    epochs: int = field(default=2, metadata={"help": "PPO epochs (--ppo_epochs)"})
    link_gbps: float = field(default=360.0, metadata={"help": "GPU-to-GPU bandwidth per GPU per direction, GB/s (NVLink 4: ~360 achieved)"})
    disk_gbps: float = field(default=1.0, metadata={"help": "write bandwidth of the checkpoint folder, GB/s"})
    checkpoints: int = field(default=4, metadata={"help": "checkpoints a run keeps (README's PPO: 100 iterations, --save_every 25)"})


def params(H, I, L, heads, kv, V, tied):
    """(policy, value/PRM) parameter counts: embeddings, L x (attention with q/k/v biases + SwiGLU MLP + 2 norms),
    final norm; the policy's LM head unless tied, the value model's one-output head instead."""
    kv_dim = H // heads * kv
    layer = H * H + 2 * H * kv_dim + H + 2 * kv_dim + H * H + 3 * H * I + 2 * H
    body = V * H + L * layer + H
    return body + (0 if tied else V * H), body + H + 1


def components(shape, W, engine, a):
    """{component: bytes per GPU} for one PPO rank."""
    H, I, L, heads, kv, V, tied = SHAPES[shape]
    Np, Nv = params(H, I, L, heads, kv, V, tied)
    kv_dim = H // heads * kv
    per_layer_token = 16 * H + 4 * kv_dim + 8 * I
    toks = a.mb * a.tokens
    act = (L * toks * 2 * H + toks * per_layer_token) if a.checkpointing else L * toks * per_layer_token
    shard = W if engine == "fsdp" else 1
    c = {"weights fp32 (trained)": 4 * (Np + Nv) / shard, "gradients fp32": 4 * (Np + Nv) / shard,
         "AdamW moments": 8 * (Np + Nv) / shard, "reference + PRM bf16": 2 * (Np + Nv) / shard}
    if engine == "ddp":
        c["bf16 autocast copies"] = 2 * (Np + Nv)
        c["DDP buckets (bucket view: 0)"] = 0
    else:
        layer = (H * H + 2 * H * kv_dim + H * H + 3 * H * I) * 2
        c["gathered bf16: root + 2 layers"] = 2 * V * H * (1 if tied else 2) + 2 * layer
        c["generate: whole policy gathered"] = 2 * Np if W > 1 else 0
    c["activations (1 minibatch x 2 models)"] = 2 * act
    c["logits (1 minibatch)"] = 14 * toks * V
    c["KV cache (rollout)"] = 2 * L * kv_dim * 2 * a.rollout * a.tokens
    return c


def peak(c):
    """The states plus the larger phase: the update (activations + logits) or the rollout (KV cache + gathered policy)."""
    phases = ("activations", "logits", "KV", "generate")
    states = sum(v for n, v in c.items() if not n.startswith(phases))
    update = c["activations (1 minibatch x 2 models)"] + c["logits (1 minibatch)"]
    return states + max(update, c["KV cache (rollout)"] + c.get("generate: whole policy gathered", 0))


def passes(a):
    """Model calls per iteration (each a forward, a recomputed forward or a backward over one model): score,
    the PRM once then policy, reference and value per minibatch; update, forward, recomputed forward and
    backward of policy and value per optimizer step."""
    chunks = a.rollout // a.mb
    return 1 + 3 * chunks, a.epochs * chunks * 2 * 3


def time_terms(shape, a):
    """Per phase: the coefficients of (c_gen, 1/F, c_pass, t_cpu) and the constant (HBM reads), in the
    time model of the docstring, at a rollout of a.rollout prompts and minibatch a.mb per GPU."""
    L = SHAPES[shape][2]
    Np, Nv = params(*SHAPES[shape])
    tokens, (score_passes, update_passes) = a.rollout * a.tokens, passes(a)
    return {"generate": ([a.new_tokens * L, 0, 0, 0], a.new_tokens * 2 * Np / HBM),
            "score": ([0, 2 * tokens * 2 * (Np + Nv), score_passes * L, 1], 0),
            "update": ([0, a.epochs * tokens * 8 * (Np + Nv), update_passes * L, 0], 0)}


def fit(a, measured=MEASURED):
    """Least squares of the four constants on the measured phases (6 numbers, 4 unknowns)."""
    rows, ys = [], []
    for shape, secs in measured.items():
        for (coef, const), y in zip(time_terms(shape, a).values(), secs):
            rows.append(coef), ys.append(y - const)
    A = np.array(rows, float)
    scale = np.linalg.norm(A, axis=0)  # columns span 15 orders of magnitude: solve on unit columns
    return np.linalg.lstsq(A / scale, np.array(ys), rcond=None)[0] / scale


def fit_range(shape, W, engine, a, noise=0.05):
    """(lowest, highest) seconds per iteration of `shape` (phases, without communication) over refits with each
    of the 6 measured phases moved by -noise, 0 or +noise (3^6 fits), keeping the physical ones (positive
    constants, F below the H200's dense bf16 peak of 989 TFLOP/s). Four constants from six numbers do not pin
    an extrapolation down: this is the spread they allow, not a confidence interval."""
    totals = []
    for moves in itertools.product((-noise, 0, noise), repeat=3 * len(MEASURED)):
        moved = iter(moves)
        measured = {s: tuple(y * (1 + next(moved)) for y in secs) for s, secs in MEASURED.items()}
        x = fit(a, measured)
        if all(c > 0 for c in x) and 1 / x[1] < 989e12:
            totals.append(sum(v for k, v in seconds(shape, W, engine, a, x).items() if not k.startswith("communication")))
    return min(totals), max(totals)


def seconds(shape, W, engine, a, x):
    """{phase: seconds} per iteration for one rank."""
    t = {phase: float(np.dot(coef, x) + const) for phase, (coef, const) in time_terms(shape, a).items()}
    Np, Nv = params(*SHAPES[shape])
    ring, steps = (W - 1) / W, a.epochs * (a.rollout // a.mb)
    if engine == "ddp":
        comm = steps * 2 * ring * 4 * (Np + Nv)
    else:
        comm = sum(passes(a)) * ring * (Np + Nv) + steps * ring * 4 * (Np + Nv) + ring * 2 * Np  # a pass gathers 2 N, N_p ~ N_v
    t["communication (not overlapped)"] = comm / (a.link_gbps * 1e9)
    return t


def main():
    a = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
    x = fit(Args())  # the constants, from the measured load
    print(f"Time model fitted on {len(MEASURED) * 3} phases measured on one H200: c_gen {1e3 * x[0]:.2f} ms per layer per "
          f"decoding step, F {1 / x[1] / 1e12:.0f} TFLOP/s, c_pass {1e3 * x[2]:.2f} ms per layer per pass, t_cpu {x[3]:.2f} s")
    print("| shape: phase | measured s | fitted s |\n|---|---|---|")
    for shape, secs in MEASURED.items():
        for (phase, (coef, const)), y in zip(time_terms(shape, Args()).items(), secs):
            print(f"| {shape}: {phase} | {y:.1f} | {np.dot(coef, x) + const:.1f} |")
    print()
    print(f"PPO rank, per GPU, GiB (computed): minibatch {a.mb} x {a.tokens} tokens, rollout {a.rollout} prompts, "
          f"gradient checkpointing {a.checkpointing}; the peak holds the states plus the largest phase "
          f"(update: activations + logits; rollout: KV cache + generate's gathered policy)\n")
    for shape in a.shapes:
        Np, Nv = params(*SHAPES[shape])
        print(f"### {shape}: policy {Np / 1e9:.2f} B parameters, value/PRM {Nv / 1e9:.2f} B\n")
        cols = [(e, W) for e in ("ddp", "fsdp") for W in a.gpus if not (e == "ddp" and W > 1)]  # DDP: the same on any W
        rows = {e_w: components(shape, e_w[1], e_w[0], a) for e_w in cols}
        names = list(dict.fromkeys(k for c in rows.values() for k in c))
        print("| component | " + " | ".join(f"{'DDP, any' if e == 'ddp' else f'FSDP2, {W}'} GPU{'s' if W > 1 or e == 'ddp' else ''}" for e, W in cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for n in names:
            print(f"| {n} | " + " | ".join(f"{rows[k].get(n, 0) / GIB:.1f}" for k in cols) + " |")
        print("| **peak (states + largest phase)** | " + " | ".join(f"**{peak(rows[k]) / GIB:.1f}**" for k in cols) + " |\n")
        cols = [("ddp", max(a.gpus))] + cols[1:]  # DDP's time does depend on the GPU count: its all-reduce
        times = {e_w: seconds(shape, e_w[1], e_w[0], a, x) for e_w in cols}
        print("| seconds per iteration | " + " | ".join(f"{'DDP' if e == 'ddp' else 'FSDP2'}, {W}" for e, W in cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for n in times[cols[0]]:
            print(f"| {n} | " + " | ".join(f"{times[k][n]:.1f}" for k in cols) + " |")
        print("| **total (+ judging)** | " + " | ".join(f"**{sum(times[k].values()):.1f}**" for k in cols) + " |")
        ckpt = 4 * (Np + Nv)  # policy and value, fp32 from_pretrained folders (rank 0), plus both AdamW moments, sharded
        print(f"| checkpoint (computed, --fsdp, {max(a.gpus)} GPUs): rank 0 writes {ckpt / 1e9:.0f} GB of weights, every rank "
              f"{2 * ckpt / max(a.gpus) / 1e9:.0f} GB of AdamW shards: ~{(ckpt + 2 * ckpt / max(a.gpus)) / (a.disk_gbps * 1e9):.0f} s at "
              f"{a.disk_gbps:g} GB/s | " + " | ".join("" for _ in cols) + " |")
        older, k = 4 * Np, a.checkpoints  # an older checkpoint keeps the policy alone; the newest everything
        print(f"| disk (computed): the newest checkpoint {3 * ckpt / 1e9:.0f} GB (policy, value, AdamW moments), each older one "
              f"{older / 1e9:.0f} GB (the policy: train_psgpo.py drops value/ and the optimizers once a newer one is complete): "
              f"{k} checkpoints {((k - 1) * older + 3 * ckpt) / 1e9:.0f} GB, {((k - 2) * older + 6 * ckpt) / 1e9:.0f} GB at the "
              f"peak, while the last one is written beside the one before | " + " | ".join("" for _ in cols) + " |")
        if shape not in MEASURED:  # an extrapolation: the range that refits within 5% of the measurements give
            print("| phases, refits with each measured phase +-5% | " + " | ".join("{:.0f}-{:.0f}".format(*fit_range(shape, W, e, a)) for e, W in cols) + " |")
        print()


if __name__ == "__main__":
    main()
