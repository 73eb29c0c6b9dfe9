"""Memory per GPU of one PSGPO (PPO) rank, computed component by component, for DDP and FSDP2.

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

    python benchmarks/memory_guide.py                         # 0.5B, 1.5B, 7B on 1, 2, 4, 8 GPUs
    python benchmarks/memory_guide.py --mb 4 --tokens 1024    # another load per GPU
"""
from dataclasses import dataclass, field

from transformers import HfArgumentParser

# Qwen2.5-Coder's published configs: hidden H, intermediate I, layers L, heads, kv heads, vocab V, tied embeddings
SHAPES = {"0.5B": (896, 4864, 24, 14, 2, 151936, True), "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
          "3B": (2048, 11008, 36, 16, 2, 151936, True), "7B": (3584, 18944, 28, 28, 4, 152064, False)}
GIB = 2 ** 30


@dataclass
class Args:
    shapes: list[str] = field(default_factory=lambda: ["0.5B", "1.5B", "7B"], metadata={"help": "model shapes (Qwen2.5-Coder's): 0.5B 1.5B 3B 7B"})
    gpus: list[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata={"help": "GPU counts"})
    mb: int = field(default=8, metadata={"help": "sequences per minibatch per GPU (--minibatch_size / GPUs)"})
    rollout: int = field(default=64, metadata={"help": "prompts per iteration per GPU (--batch_size / GPUs)"})
    tokens: int = field(default=540, metadata={"help": "tokens per sequence, prompt + response (bench_psgpo.py's: ~540)"})
    checkpointing: bool = field(default=True, metadata={"help": "--gradient_checkpointing"})


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


def main():
    a = HfArgumentParser(Args).parse_args_into_dataclasses()[0]
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


if __name__ == "__main__":
    main()
