import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test needs the network: a Hub id fails at once, not after retries

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small byte-level BPE trained on a few hundred demo tasks (train_sft.py's tokenizer)."""
    import sandbox
    from train_sft import train_tokenizer
    tasks = sandbox.load_problems("demo", "train")[:300]
    return train_tokenizer([p.prompt + p.solution for p in tasks], 320)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, tiny_tokenizer):
    """tiny_policy(arch) -> folder of a random causal LM (gpt2 | llama | qwen2) with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    def make(arch):
        out = tmp_path_factory.getbasetemp() / f"tiny-{arch}"
        if not (out / "config.json").exists():
            tok = tiny_tokenizer
            ids = dict(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
            small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=1024)
            config = {"gpt2": lambda: GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=1024, **ids),
                      "llama": lambda: LlamaConfig(**small, **ids),
                      "qwen2": lambda: Qwen2Config(**small, **ids)}[arch]()
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(out)
            tok.save_pretrained(out)
        return str(out)
    return make
