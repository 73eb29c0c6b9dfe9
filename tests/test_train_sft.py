"""train_sft.py: the BPE tokenizer round-trips, examples carry the loss on the completion only,
length-grouped batches cover the data, and a few steps on a handful of demo tasks write a loadable checkpoint."""
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sandbox
import train_sft


@pytest.fixture(scope="module")
def demo_train():
    return sandbox.load_problems("demo", "train")[:300]


@pytest.fixture(scope="module")
def tok(demo_train):
    return train_sft.train_tokenizer([p.prompt + p.meta["flawed_solution"] for p in demo_train], 400)


def test_tokenizer_round_trips_and_pads_left(tok, demo_train):
    for p in demo_train[:50] + [sandbox.Problem("x", "def g():\n\t'é ☃'  # tab\n\n  \n", "    return 1\n")]:
        text = p.prompt + p.solution
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    # whole words and variable names are single tokens
    for word in (" minus", " times", " plus", " x1", " x8", " return"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    batch = tok(["def f(a):\n", "def f(a, b, c):\n"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][0][-1] == 1


def test_encode_example_masks_the_prompt(tok):
    prompt, completion = "def f(a):\n", "    x1 = a + 1\n    return x1\n"
    ids, labels = train_sft.encode_example(tok, prompt, completion, 1024)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    assert ids == p + c + [tok.eos_token_id]                      # tokenized separately, then joined
    assert labels == [-100] * len(p) + c + [tok.eos_token_id]     # loss on the completion and its eos
    assert train_sft.encode_example(tok, prompt, completion, len(ids) - 1) is None


def test_sft_target_planted_or_correct(demo_train):
    p = next(p for p in demo_train if p.meta["planted"])
    assert train_sft.sft_target(p, True) == p.meta["flawed_solution"] != p.solution
    assert train_sft.sft_target(p, False) == p.solution
    assert train_sft.sft_target(sandbox.Problem("t", "x", "y"), True) == "y"  # no flawed version: the reference


def test_length_grouped_batches_cover_each_example_once():
    lengths = [random.Random(i).randint(5, 200) for i in range(1000)]
    batches = train_sft.length_grouped_batches(lengths, 32, random.Random(0), group=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and max(len(b) for b in batches) == 32
    # grouping by length wastes less padding than a plain shuffle
    waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    idx = list(range(1000))
    random.Random(0).shuffle(idx)
    plain = [idx[j:j + 32] for j in range(0, 1000, 32)]
    assert waste < 0.5 * sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in plain)


def test_collate_right_pads(tok):
    ex = [([1, 2, 3], [-100, 2, 3]), ([4], [4])]
    ids, mask, labels = train_sft.collate(ex, tok.pad_token_id)
    assert ids.tolist() == [[1, 2, 3], [4, tok.pad_token_id, tok.pad_token_id]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and labels.tolist() == [[-100, 2, 3], [4, -100, -100]]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sft_end_to_end_writes_a_loadable_checkpoint(tmp_path, monkeypatch, arch):
    out = str(tmp_path / "sft")
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--max_problems", "40", "--steps", "25", "--batch_size", "8",
                                      "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--vocab_size", "300",
                                      "--lr", "3e-3", "--warmup", "5", "--arch", arch, "--out", out])
    train_sft.main()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.padding_side == "left" and tok.pad_token_id is not None and tok.eos_token_id is not None
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["steps"] == 25 and summary["final_loss"] < 5.0  # uniform over ~300 tokens would be 5.7
    p = sandbox.load_problems("demo", "train")[0]
    assert tok.decode(tok(p.prompt + p.solution)["input_ids"]) == p.prompt + p.solution
    enc = tok([p.prompt, "def f(a):\n"], return_tensors="pt", padding=True)
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[0] == 2 and gen.shape[1] <= enc["input_ids"].shape[1] + 5


def test_fine_tunes_a_given_model_on_a_benchmark(tmp_path, monkeypatch, tiny_policy, arch="qwen2"):
    """--model PATH --dataset NAME: the path users take with a real Hugging Face model (Llama: the FSDP2 test)."""
    out = str(tmp_path / "ft")
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--model", tiny_policy(arch), "--dataset", "humaneval", "--split", "test",
                                      "--max_problems", "8", "--steps", "3", "--batch_size", "4", "--warmup", "1",
                                      "--gradient_checkpointing", "true", "--out", out])
    train_sft.main()
    before = AutoModelForCausalLM.from_pretrained(tiny_policy(arch))
    after = AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))  # it trained
    assert json.load(open(os.path.join(out, "summary.json")))["steps"] == 3


def test_fsdp_two_processes(tmp_path, tiny_policy):
    """--fsdp on 2 gloo processes (FSDP2): fine-tunes a tiny Llama and writes a folder plain from_pretrained loads; one
    process taking each step's batch of 4 in micro-batches of 1 (gradients accumulated) makes the same first step."""
    def sft(out, launch, *flags):
        r = subprocess.run([*launch, "train_sft.py", "--model", tiny_policy("llama"), "--dataset", "humaneval", "--split", "test",
                            "--max_problems", "8", "--steps", "10", "--batch_size", "4", "--warmup", "1", "--out", str(out), *flags],
                           capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(train_sft.__file__)), timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return [json.loads(l) for l in open(out / "log.jsonl")]
    out = tmp_path / "ft"
    two = sft(out, [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], "--fsdp", "true")
    before = AutoModelForCausalLM.from_pretrained(tiny_policy("llama"))
    after = AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))  # it trained
    assert json.load(open(out / "summary.json"))["steps"] == 10 and len(two) == 10
    one = sft(tmp_path / "one", [sys.executable], "--micro_batch_size", "1")
    for k in ("loss", "grad_norm"):  # from the same weights (Adam's later steps amplify rounding near 0)
        assert one[0][k] == pytest.approx(two[0][k], rel=1e-5), k


def test_a_bf16_model_is_trained_with_fp32_weights(tmp_path, monkeypatch, tiny_policy):
    """Most hub checkpoints are stored in bf16; --bf16 autocasts, the weights (and updates) stay fp32."""
    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_policy("llama"), dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_policy("llama")).save_pretrained(bf16)
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--model", str(bf16), "--dataset", "humaneval", "--split", "test",
                                      "--max_problems", "4", "--steps", "2", "--batch_size", "2", "--warmup", "1",
                                      "--out", str(tmp_path / "ft")])
    train_sft.main()
    assert next(AutoModelForCausalLM.from_pretrained(tmp_path / "ft", dtype="auto").parameters()).dtype == torch.float32


def test_shipped_demo_policy_is_intact_and_writes_demo_code():
    """checkpoints/demo-sft (run_demo.sh's starting point): its files match SHA256SUMS, it loads as a causal
    LM, and its greedy completion of a demo test prompt assigns the first step's variable."""
    import hashlib
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints", "demo-sft")
    with open(os.path.join(folder, "SHA256SUMS")) as f:
        sums = [line.split() for line in f if line.strip()]
    assert {name for _, name in sums} >= {"model.safetensors", "tokenizer.json", "config.json"}
    for digest, name in sums:
        with open(os.path.join(folder, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    p = sandbox.load_problems("demo", "test")[0]
    out = model.generate(**tok(p.prompt, return_tensors="pt"), max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0], skip_special_tokens=True)[len(p.prompt):].lstrip().startswith(("x1 =", "# "))
