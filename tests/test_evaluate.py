"""evaluate.py: pass@k against the exact formula, metrics on fixed fake verdicts, the planted-mistake
detector, the oracle (100% on demo and HumanEval), and end to end on tiny GPT-2, Llama and Qwen2 models."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

import evaluate
import sandbox
import train_sft


def test_pass_at_k_matches_the_combinatorial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert evaluate.pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)
    assert evaluate.pass_at_k(10, 0, 1) == 0.0 and evaluate.pass_at_k(10, 10, 1) == 1.0
    assert evaluate.pass_at_k(10, 3, 1) == pytest.approx(0.3)


def P(true_div, missing_parens, xor_pow):
    """A sandbox.demo.planted_mistakes result: [times made, times possible] per kind."""
    return {"true_div": [true_div, 2], "missing_parens": [missing_parens, 2], "xor_pow": [xor_pow, 2]}


def test_compute_metrics_on_fixed_fake_samples():
    results = [
        {"greedy": True, "samples": [True, False, False, False], "tokens": [10, 50, 80, 120], "n_steps": 2,
         "planted": [P(0, 0, 0), P(1, 0, 0), P(1, 0, 1), P(0, 0, 0)]},
        {"greedy": False, "samples": [False] * 4, "tokens": [30] * 4, "n_steps": 2,
         "planted": [P(0, 0, 0), P(0, 0, 0), P(0, 0, 0), P(0, 1, 0)]},
        {"greedy": True, "samples": [True, True, True, False], "tokens": [45, 45, 100, 150], "n_steps": 5,
         "planted": [P(0, 0, 0), P(0, 0, 0), P(0, 0, 0), P(1, 0, 0)]},
    ]
    m = evaluate.compute_metrics(results, [40, 70, 100])
    assert m["problems"] == 3 and m["n"] == 4
    assert m["greedy_pass@1"] == pytest.approx(2 / 3)
    assert m["pass@1"] == pytest.approx((1 / 4 + 0 + 3 / 4) / 3) and "pass@5" not in m
    # K=2: problem 1 gives 1 - C(3,2)/C(4,2) = 1/2, problem 3 gives 1; K=3: 3/4 and 1; K=4: 1 and 1
    assert m["best_of_k"] == pytest.approx([1 / 3, 1.5 / 3, 1.75 / 3, 2 / 3])
    assert m["by_tokens"] == {"<40": {"pass@1": pytest.approx(0.2), "responses": 5},
                              "40-70": {"pass@1": pytest.approx(2 / 3), "responses": 3},
                              "70-100": {"pass@1": 0.0, "responses": 1},
                              ">=100": {"pass@1": pytest.approx(1 / 3), "responses": 3}}
    assert list(m["by_tokens"]) == ["<40", "40-70", "70-100", ">=100"]
    assert m["by_steps"] == {2: {"greedy_pass@1": 0.5, "pass@1": 0.125, "problems": 2},
                             5: {"greedy_pass@1": 1.0, "pass@1": 0.75, "problems": 1}}
    # each response could have made each mistake twice (P's second numbers): 24 chances per kind
    assert m["planted"] == pytest.approx({"missing_parens": 1 / 24, "xor_pow": 1 / 24, "true_div": 3 / 24,
                                          "failures_with_a_planted_kind": 4 / 8})


def run(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *map(str, argv)])
    evaluate.main()


@pytest.mark.parametrize("dataset,max_problems", [("demo", 200), ("humaneval", 0)])
def test_oracle_is_perfect(tmp_path, monkeypatch, dataset, max_problems):
    run(monkeypatch, "--oracle", "--dataset", dataset, "--max_problems", max_problems, "--out", tmp_path)
    report = json.load(open(tmp_path / "eval.json"))
    m = report["models"]["oracle"]["metrics"]
    assert m["greedy_pass@1"] == 1.0 and m["pass@1"] == 1.0
    assert report["problems"] == (max_problems or 164)


@pytest.fixture(scope="module")
def tok():
    train = sandbox.load_problems("demo", "train")[:200]
    return train_sft.train_tokenizer([p.prompt + p.solution for p in train], 300)


def tiny(kind, tok, path, pad=True):
    """A random 2-layer model of one architecture, saved with the tokenizer."""
    ids = dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    config = {"gpt2": lambda: GPT2Config(n_layer=2, n_embd=32, n_head=2, **ids),
              "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1, **ids),
              "qwen2": lambda: Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, num_key_value_heads=1, **ids)}[kind]()
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    if not pad:
        tok = train_sft.PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_end_to_end_on_tiny_models(tmp_path, monkeypatch, capsys, tok, kind):
    path = tiny(kind, tok, tmp_path / kind, pad=kind != "llama")  # llama: a tokenizer without a pad token
    out = tmp_path / "eval"
    run(monkeypatch, "--model", path, "--max_problems", 3, "--n", 2, "--max_new_tokens", 16, "--out", out)
    captured = capsys.readouterr()
    report = json.load(open(out / "eval.json"))
    r = report["models"][path]
    assert len(r["samples"]) == 3 * (1 + 2) and {s["kind"] for s in r["samples"]} == {"greedy", "sample"}
    assert all(s["status"] in ("passed", "failed", "error", "timeout") for s in r["samples"])
    assert all(0 <= s["n_tokens"] <= 16 for s in r["samples"])
    assert r["metrics"]["n"] == 2 and len(r["metrics"]["best_of_k"]) == 2 and "by_steps" in r["metrics"]
    assert r["timing"]["samples_per_s"] > 0 and r["timing"]["programs_per_s"] > 0
    assert os.path.getsize(out / "bestofk.png") > 0 and os.path.getsize(out / "by_length.png") > 0
    assert "| greedy pass@1 |" in captured.out
    assert ("no pad token; padding with EOS" in captured.err) == (kind == "llama")


def test_two_models_side_by_side_and_same_seed_same_samples(tmp_path, monkeypatch, tok):
    a = tiny("gpt2", tok, tmp_path / "a")
    b = tiny("llama", tok, tmp_path / "b")
    args = ["--model", a, b, "--max_problems", 2, "--n", 3, "--max_new_tokens", 12, "--temperature", 1.5]
    run(monkeypatch, *args, "--out", tmp_path / "e1")
    run(monkeypatch, *args, "--out", tmp_path / "e2")
    r1, r2 = (json.load(open(tmp_path / e / "eval.json"))["models"] for e in ("e1", "e2"))
    assert list(r1) == [a, b]
    for name in (a, b):
        assert [s["completion"] for s in r1[name]["samples"]] == [s["completion"] for s in r2[name]["samples"]]
    samples = [s["completion"] for s in r1[a]["samples"] if s["kind"] == "sample"]
    assert len(set(samples)) > 1  # sampling, not greedy


def test_greedy_only_draws_no_empty_best_of_k(tmp_path, monkeypatch, capsys, recwarn, tok):
    """--n 0 has no samples: by_length.png (greedy pass@1) is drawn, bestofk.png is not, and no plot warns."""
    path, out = tiny("gpt2", tok, tmp_path / "m"), tmp_path / "e"
    run(monkeypatch, "--model", path, "--max_problems", 3, "--n", 0, "--max_new_tokens", 8, "--out", out)
    assert (out / "by_length.png").stat().st_size > 0 and not (out / "bestofk.png").exists()
    assert not [w for w in recwarn if "No artists" in str(w.message)]
    assert capsys.readouterr().out.strip().endswith(f"wrote {out / 'eval.json'}, {out / 'by_length.png'}")


def test_torchrun_splits_the_problems_and_merges_them_in_order(tmp_path, monkeypatch, tok):
    """2 gloo ranks: every problem once, in order; greedy completions as one process writes them (batch 1:
    no padding), 3 sampled ones per problem."""
    path = tiny("qwen2", tok, tmp_path / "m")
    args = ["--model", path, "--max_problems", 5, "--samples", 3, "--max_new_tokens", 12, "--batch_size", 1, "--workers", 1]
    run(monkeypatch, *args, "--out", tmp_path / "one")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "evaluate.py",
                        *map(str, args), "--out", str(tmp_path / "two")], capture_output=True, text=True,
                       cwd=os.path.dirname(evaluate.__file__), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("| greedy pass@1 |") == 1  # rank 0 alone reports
    one, two = (json.load(open(tmp_path / e / "eval.json")) for e in ("one", "two"))
    assert two["ranks"] == 2 and two["problems"] == 5
    s1, s2 = one["models"][path]["samples"], two["models"][path]["samples"]
    ids = [p.task_id for p in sandbox.load_problems("demo", "test")[:5]]
    assert [s["task_id"] for s in s2] == [t for t in ids for _ in range(4)]
    assert [s["completion"] for s in s2 if s["kind"] == "greedy"] == [s["completion"] for s in s1 if s["kind"] == "greedy"]
    m = two["models"][path]["metrics"]
    assert m["problems"] == 5 and m["greedy_pass@1"] == one["models"][path]["metrics"]["greedy_pass@1"]


def test_every_eos_id_of_the_checkpoint_ends_a_completion(tmp_path, monkeypatch, tok):
    """An instruct checkpoint lists two EOS ids in generation_config.json; a completion ends at either. Here the
    second is the token the model writes first (an ordinary token), so every greedy completion is empty."""
    from transformers import GenerationConfig
    path = tiny("qwen2", tok, tmp_path / "m")
    problems = sandbox.load_problems("demo", "test")[:3]
    model = AutoModelForCausalLM.from_pretrained(path)
    first = {model(torch.tensor([tok(p.prompt)["input_ids"]])).logits[0, -1].argmax().item() for p in problems}
    assert len(first) == 1 and first != {tok.eos_token_id}
    GenerationConfig(eos_token_id=[tok.eos_token_id, *first]).save_pretrained(path)
    run(monkeypatch, "--model", path, "--max_problems", 3, "--n", 0, "--max_new_tokens", 16, "--out", tmp_path / "e")
    samples = json.load(open(tmp_path / "e" / "eval.json"))["models"][path]["samples"]
    assert [(s["completion"], s["n_tokens"]) for s in samples] == [("", 1)] * 3
