"""sandbox/models.py - models, found, loaded, sharded, sampled and saved the same way by every stage.

Part of sandbox (the stages call these as `sandbox.load_model`, ...): the pad and EOS rules (`load_tokenizer`),
exact sampling (`generate`) and the batched sampler built on it (`sample`), a model checked before any stage spends
time on it (`find_model`), torchrun's ranks (`start_ranks`, `stop_ranks`), FSDP2 without any rank holding a whole model
on its device (`load_model`, `shard`, `save_model`), and the one learning-rate schedule (`lr_schedule`).
"""
import gc
import importlib.util
import itertools
import json
import math
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer, DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer
from transformers.generation.utils import ALL_CACHE_NAMES

from .problems import DataError
from .rules import end_response


HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]  # a Hub model's config, weights, tokenizer


KINDS = {"causal": ("a causal LM (a policy)", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
         "token": ("a token-classification model with one output (a PRM, as train_prm.py writes one)",
                   "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES")}  # what a stage loads with Auto*ForCausalLM / ForTokenClassification


def find_model(path, revision=None, tokenizer=True, kind=None, chat=False):
    """Check, before a stage spends time on it, that `path` - a local folder or a Hugging Face Hub id (at
    `revision`) - has a config, whole weights (each safetensors file's header read against its size: a truncated
    copy) and (unless tokenizer=False) a tokenizer, with a chat template if `chat`; with `kind` ("causal" or "token"),
    that its config's architectures are that kind of model (a PRM folder given as a policy would load as a causal LM
    with a fresh head, and run). DataError with one line if not. A path that looks local fails at once, not after the
    Hub client's retries; a Hub id is downloaded into the local cache here, before torchrun's ranks wait on each other.
    Returns the config."""
    from huggingface_hub import snapshot_download
    from safetensors import SafetensorError, safe_open
    from transformers.models.auto import modeling_auto
    from transformers.utils import cached_file
    looks_local = os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1 or os.path.isdir(path.split("/")[0])
    if looks_local and not os.path.isfile(os.path.join(path, "config.json")):
        raise DataError(f"{path}: {'not a model folder (no config.json)' if os.path.isdir(path) else 'no such model folder'}")
    try:
        if not looks_local:  # a Hub id: fetched into this node's cache now, by every rank before any collective (the Hub's
            snapshot_download(path, revision=revision, allow_patterns=HUB_FILES)  # file locks share one download per node)
        config = AutoConfig.from_pretrained(path, revision=revision)
        tok = AutoTokenizer.from_pretrained(path, revision=revision) if tokenizer else None
        if tok is not None and not tok.vocab_size:  # no files: an empty one
            raise OSError("no tokenizer files")
    except Exception as e:  # offline, unknown id, broken config or tokenizer: one line
        raise DataError(f"{path}: neither a local model folder nor reachable on the Hugging Face Hub, or its config or "
                        f"tokenizer does not load ({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})") from None
    if chat and not getattr(tok, "chat_template", None):
        raise DataError(f"{path}: --chat_template true, but its tokenizer has no chat template (a base model: --chat_template false)")
    archs = config.architectures or []  # none recorded: nothing to check
    if kind and archs:
        kinds = {k for k, (_, names) in KINDS.items() if set(archs) & set(getattr(modeling_auto, names).values())}
        if kind not in kinds or (kind == "token" and config.num_labels != 1):
            other = kinds - {kind}
            was = f" ({KINDS[other.pop()][0]})" if other else f" with {config.num_labels} outputs" if kind in kinds else ""
            raise DataError(f"{path}: {'/'.join(archs)}{was}, where {KINDS[kind][0]} is needed")
    files = {f: cached_file(path, f, revision=revision, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
             for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")}
    if not any(files.values()):
        raise DataError(f"{path}: no model weights ({', '.join(files)}: none found)")
    shards = [files["model.safetensors"]] if files["model.safetensors"] else []
    if files["model.safetensors.index.json"]:
        with open(files["model.safetensors.index.json"]) as f:
            names = sorted(set(json.load(f).get("weight_map", {}).values()))
        shards += [cached_file(path, n, revision=revision, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False) or os.path.join(path, n) for n in names]
    for shard in shards:  # the header only (memory-mapped): its tensors' offsets against the file's length
        try:
            with safe_open(shard, "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise DataError(f"{path}: {os.path.basename(shard)} is not a whole safetensors file ({' '.join(str(e).split())[:120]}): "
                            f"copy or save it again") from None
    return config


def load_tokenizer(path, revision=None):
    """(tokenizer, EOS ids): the pad and EOS rules of every stage. Left padding: prompts are left-padded for
    generation, so every response starts at the same column. A tokenizer without a pad token pads with its
    EOS. The EOS ids: the tokenizer's and every one the checkpoint's generation_config.json lists (an
    instruct model may end its turn with either of two), and nothing else from that file."""
    tok = AutoTokenizer.from_pretrained(path, revision=revision)
    try:
        listed = GenerationConfig.from_pretrained(path, revision=revision).eos_token_id
    except OSError:  # no generation_config.json
        listed = None
    eos = sorted({tok.eos_token_id, *(listed if isinstance(listed, list) else [listed])} - {None})
    if not eos:
        raise DataError(f"{path}: the tokenizer has no EOS token: a response could never end")
    if tok.pad_token_id is None:
        print(f"warning: {path}: the tokenizer has no pad token; padding with EOS", file=sys.stderr)
        tok.pad_token_id = eos[0]
    tok.padding_side = "left"
    return tok, eos


CPU_ATTENTION = "eager"  # what the CPU samples with: faster than SDPA at the demo's sizes, same tokens (benchmarks/bench_generate.py)


class GrowingLayer(DynamicLayer):
    """A DynamicLayer (one layer's keys and values) that holds them in a buffer doubled when full, instead of
    copying the whole cache into a new tensor at every token (torch.cat): the same keys and values, as views of
    the buffer, so the same tokens; on the CPU at the demo's sizes 1.1x (batch 64) to 1.25x (256) faster
    sampling (benchmarks/bench_generate.py)."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.get_seq_length(), key_states.shape[-2]
        if n == 0 or n + m > self.buffers[0].shape[-2]:  # the first call, or full: buffers twice the length
            grown = [x.new_empty(*x.shape[:-2], 2 * (n + m), x.shape[-1]) for x in (key_states, value_states)]
            for b, x in zip(grown, (self.keys, self.values) if n else ()):
                b[..., :n, :] = x
            self.buffers = grown
        for b, x in zip(self.buffers, (key_states, value_states)):
            b[..., n:n + m, :] = x
        self.keys, self.values = (b[..., :n + m, :] for b in self.buffers)
        return self.keys, self.values


CACHE_ARG = "cache" if "cache" in ALL_CACHE_NAMES else "past_key_values"  # generate's name for it (renamed in 5.x)


def kv_cache(model):
    """The cache generate fills: on the CPU, GrowingLayer in place of every DynamicLayer (a model whose config
    asks for other layers, e.g. sliding windows, keeps transformers' own); None on GPUs, where it was not
    measured (generate's default)."""
    if model.device.type != "cpu":
        return None
    cache = DynamicCache(config=model.config)
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


@torch.no_grad()
def generate(model, tok, rows, eos, stops=(), synced_gpus=False, **sampling):
    """Continue each token-id list in `rows`, batched with left padding: (sequences [B, P + R], prompt mask
    [B, P]); every response starts at column P. Exact sampling: the checkpoint's own generation_config.json
    (a repetition penalty, top-k/p, ... that instruct checkpoints ship; generate would take every field a call
    leaves unset from it) is replaced by pad and EOS alone, so rows are drawn from softmax(logits /
    temperature) with the given settings and nothing else. Rows stop at an EOS or a stop string (to save
    time; end_response says exactly where each response ends). On the CPU it samples with CPU_ATTENTION's
    kernel (the model's own given back after) and kv_cache's growing buffers."""
    model.generation_config = GenerationConfig(pad_token_id=tok.pad_token_id, eos_token_id=eos)
    P = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (P - len(r)) + r for r in rows], device=model.device)
    mask = torch.tensor([[0] * (P - len(r)) + [1] * len(r) for r in rows], device=model.device)
    own = model.config._attn_implementation
    switch = model.device.type == "cpu" and own != CPU_ATTENTION
    if switch:
        model.set_attn_implementation(CPU_ATTENTION)
    try:
        seq = model.generate(input_ids=ids, attention_mask=mask, stop_strings=list(stops) or None, tokenizer=tok,
                             synced_gpus=synced_gpus, **{CACHE_ARG: kv_cache(model)}, **sampling)
    finally:
        if switch:
            model.set_attn_implementation(own)
    return seq, mask


def sample(model, tok, eos, rows, stops, batch_size, progress=True, desc="sample", **sampling):
    """One continuation of each token-id list in `rows` (the one batched sampler of the stages that need text; PPO's
    rollout calls generate itself, for the tensors): batch_size rows at a time in the order given (a caller orders
    them by length, to pad less), each ended where end_response ends every stage's responses: its first EOS, or the
    first of that row's `stops`. `sampling`: generate's settings (do_sample, temperature, ...). Returns [(text, ids)]:
    the completion judged and the response's token ids as sampled, through its EOS or the stop string's first token."""
    out = []
    for s in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False, disable=not progress):
        st = stops[s:s + batch_size]
        seq, mask = generate(model, tok, rows[s:s + batch_size], eos, sorted({x for row in st for x in row}), **sampling)
        for ids, row_stops, prompt in zip(seq[:, mask.shape[1]:].tolist(), st, rows[s:s + batch_size]):  # from column P
            text, n = end_response(tok, ids, eos, row_stops, prompt)
            out.append((text, ids[:n]))
    return out


def lr_schedule(opt, warmup, total=None, floor=0.0):
    """The one learning-rate schedule: a linear warm-up over `warmup` optimizer steps (0: none), then constant, or with
    `total` steps a cosine decay from the peak to floor x peak. Every stage's: PPO constant, the PRM to 0, SFT to 1/10."""
    def factor(s):
        warm = min(1.0, (s + 1) / max(1, warmup))
        return warm * (1.0 if total is None else floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def start_ranks(device, meet_only=False, threads=None, timeout_minutes=60):
    """(rank, world, device) of this process. Under torchrun (RANK set) it joins the process group: NCCL on
    GPUs, gloo on the CPU or when the ranks work apart and only `meet_only` to merge results (no time limit on
    the wait); a collective waits up to `timeout_minutes` for the slowest rank (NCCL's default, 10 minutes, is
    shorter than rank 0 writing a 7B checkpoint); --device cuda becomes this rank's own GPU. One process: (0, 1,
    device). CPU threads: `threads`, or the 2 cores the demo is made for, shared among the ranks."""
    rank, world = 0, 1
    if "RANK" in os.environ:
        dist.init_process_group("gloo" if meet_only or device != "cuda" else "nccl",
                                timeout=timedelta(hours=24) if meet_only else timedelta(minutes=timeout_minutes))
        rank, world = dist.get_rank(), dist.get_world_size()
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    torch.set_num_threads(threads or max(1, min(2, torch.get_num_threads()) // world))
    return rank, world, device


def stop_ranks():
    """Leave torchrun's process group, all ranks together (no-op in one process). Each stage calls it after
    main() returns, when its sharded or DDP models are unreachable but not yet freed: FSDP2's hooks and DDP's
    reducer keep a model in reference cycles (the last loss's graph holds them too), so it lives on until the
    cycle collector runs - at exit that is during interpreter shutdown, where freeing its gloo state aborts
    the process ("terminate called without an active exception", seen in CI) or deadlocks. So: collect those
    cycles now, wait for every rank, then leave."""
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def shard(model, bf16):
    """FSDP2: every decoder layer its own unit, then the root (embeddings, final norm, head): each rank keeps
    1/world of every weight, gradient and AdamW moment. bf16 compute from fp32 master weights (--bf16),
    gradients reduced in fp32."""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for m in model.modules():
        if type(m).__name__ in (model._no_split_modules or []):
            fully_shard(m, mp_policy=mp)
    return fully_shard(model, mp_policy=mp)


def checkpoint_activations(model):
    """Recompute activations in the backward pass (--gradient_checkpointing): transformers 5.24 calls it
    activation_checkpointing_enable (gradient_checkpointing_enable is its deprecated alias), 5.0 only the latter."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def load_model(cls, path, device, dtype=torch.float32, revision=None, fsdp=False, bf16=False, **kw):
    """`cls.from_pretrained(path)` (kw: e.g. num_labels=1) with weights in `dtype`, on `device`. fsdp (under
    torchrun): sharded with FSDP2 without any rank ever holding the whole model on its device: every rank
    builds it on the meta device and shards it, rank 0 alone reads the weights (into CPU memory), and they are
    broadcast into each rank's shards one tensor at a time; then the buffers (RoPE's inv_freq is not in the
    state dict, and to_empty leaves it undefined)."""
    if not fsdp:  # straight to its device when accelerate is installed (transformers' device_map needs it)
        placed = {"device_map": device} if importlib.util.find_spec("accelerate") else {}
        model = cls.from_pretrained(path, dtype=dtype, revision=revision, **placed, **kw).to(device)
        for t in itertools.chain(model.parameters(), model.buffers()):  # fresh memory for every tensor: CPU kernels round
            t.data = t.data.clone()  # by alignment, and a tensor left where the safetensors file put it broke exact resume
        return model
    with torch.device("meta"):
        model = cls.from_config(AutoConfig.from_pretrained(path, revision=revision, **kw), dtype=dtype)
    shard(model, bf16).to_empty(device=device)
    load_weights(model, cls, path, True, revision, buffers=True, **kw)
    return model.eval()


def load_weights(model, cls, path, fsdp=False, revision=None, buffers=False, **kw):
    """Copy the weights of the from_pretrained folder `path` (read with `cls`, an Auto class) into `model` as it stands
    (a resume: the models were built from their starting weights). fsdp: rank 0 alone reads them (into CPU memory) and they are broadcast into
    each rank's shards one tensor at a time; `buffers`: also the buffers (RoPE's inv_freq is not in the state dict,
    and to_empty leaves it undefined)."""
    if not fsdp:
        model.load_state_dict(cls.from_pretrained(path, dtype=next(model.parameters()).dtype, revision=revision, **kw).state_dict())
        return
    full = cls.from_pretrained(path, dtype=next(model.parameters()).dtype, revision=revision, **kw) if dist.get_rank() == 0 else None
    set_model_state_dict(model, full.state_dict() if full else {}, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    if buffers:
        named = dict(full.named_buffers()) if full else {}
        for name, buf in model.named_buffers():
            if full:
                buf.copy_(named[name])
            dist.broadcast(buf, src=0)


def save_model(model, out, tok=None, fsdp=False):
    """A from_pretrained folder (and the tokenizer). FSDP: every rank takes part in gathering the full weights
    (to rank 0's CPU memory), and rank 0 writes them."""
    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) if fsdp else None
    if not dist.is_initialized() or dist.get_rank() == 0:
        model.save_pretrained(out, state_dict=weights)
        if tok is not None:
            tok.save_pretrained(out)

