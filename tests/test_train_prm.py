"""train_prm.py: targets on each line's last token, the loss, the metrics, the script end to end."""
import json
import shutil
import os
import random
import subprocess
import sys

import pytest
import torch

import label_prm_data as lp
import sandbox
import train_prm as tp
from train_sft import train_tokenizer

HERE = tp.__file__.rsplit("/", 1)[0]
I = tp.IGNORE


def row(prompt, response, passed, correct):
    steps = sandbox.split_steps(response)
    labels = lp.step_labels(steps, passed, correct)
    return {"task_id": prompt, "prompt": prompt, "response": response, "steps": [list(s) for s in steps],
            "labels": labels, "passed": passed, "first_error": next((m for m, l in enumerate(labels) if l == -1), None)}


def test_targets_exact_with_a_byte_tokenizer():
    tok = train_tokenizer(["ab\n#c\nd"], 258)  # 256 bytes + 2 specials, no merges: one token per character
    r = row("P:\n", "ab\n\n#c\nd", passed=False, correct=1)
    assert r["labels"] == [1, 0, -1]
    ids, targets, positions = tp.prm_example(tok, r)
    #                 P  :  \n  a  b  \n  \n  #  c  \n  d
    assert targets == [I, I, I, I, I, 1., I, I, I, 0., -1.]
    assert positions == [5, 9, 10] and len(ids) == 11


def test_targets_sit_on_the_token_holding_the_newline(tiny_tokenizer):
    tok = tiny_tokenizer
    p = sandbox.load_problems("demo", "test")[3]
    response = "    x1 = a + 1\n\n    # note\n        x2 = x1 * 2\n    return x2"
    r = row(p.prompt, response, passed=False, correct=1)
    ids, targets, positions = tp.prm_example(tok, r)
    enc = tok(response, add_special_tokens=False, return_offsets_mapping=True)
    start = len(ids) - len(enc["input_ids"])
    assert [targets[t] for t in positions] == [1., 0., -1., -1.]
    assert sum(t != I for t in targets) == 4
    for (a, b, _), t in zip(r["steps"], positions):
        lo, hi = enc["offset_mapping"][t - start]
        assert lo < b <= hi or (lo <= b - 1 < hi), (response[a:b], response[lo:hi])


def test_prm_loss():
    scores = torch.tensor([[0.5, 9.0, -1.0], [7.0, 0.0, 2.0]])
    targets = torch.tensor([[1.0, I, -1.0], [I, 0.0, I]])
    assert tp.prm_loss(scores, targets).item() == pytest.approx((0.25 + 0 + 0) / 3)


def test_auc_matches_all_pairs():
    rng = random.Random(0)
    for _ in range(20):
        scores = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(40)]
        pos = [rng.random() < 0.4 for _ in scores]
        pairs = [(p > n) + 0.5 * (p == n) for p, yp in zip(scores, pos) if yp for n, yn in zip(scores, pos) if not yn]
        assert tp.auc(scores, pos) == pytest.approx(sum(pairs) / len(pairs))
    assert tp.auc([1, 2], [True, True]) != tp.auc([1, 2], [True, True])  # nan without negatives


def test_prm_metrics_exact():
    a = row("a", "x\n# c\ny\nz\n", passed=False, correct=1)   # labels [1, 0, -1, -1]
    b = row("b", "x\ny\n", passed=True, correct=2)             # labels [1, 1]
    m = tp.prm_metrics([a, b], [[0.9, 5.0, -0.5, 0.2], [0.3, 0.8]])
    # code steps: a: (0.9,+) (-0.5,-) (0.2,-); b: (0.3,+) (0.8,+). Positives beat negatives in 6 pairs of 6.
    assert m["step_auc"] == 1.0 and m["step_accuracy"] == pytest.approx(4 / 5)
    assert m["first_error_accuracy"] == 1.0 and m["failing_with_first_error"] == 1  # first < 0 is step 2
    assert m["last_step_verdict_auc"] == 1.0  # last scores: a 0.2 (fails), b 0.8 (passes)
    assert m["neutral_mean_score"] == 5.0  # a's comment line


def labeled_rows(n):
    rows = []
    for p in sandbox.load_problems("demo", "test")[:n]:
        rows.append(row(p.prompt, p.solution, True, 0) | {"task_id": p.task_id})
        lines = p.solution.split("\n")
        code = [j for j, l in enumerate(lines) if l.strip() and not l.lstrip().startswith("#")]
        j = code[len(code) // 2]
        lines[j] = lines[j].replace("=", "= 1 +", 1)
        rows.append(row(p.prompt, "\n".join(lines), False, code.index(j)) | {"task_id": p.task_id})
    return rows


def train(monkeypatch, *argv):
    """train_prm.py in this process, as its command line runs it."""
    monkeypatch.setattr(sys, "argv", ["train_prm.py", *map(str, argv)])
    tp.main()


@pytest.mark.parametrize("arch, labels", [("gpt2", "process"), ("llama", "outcome")])
def test_script_end_to_end(monkeypatch, capsys, tmp_path, tiny_policy, arch, labels):
    """The PRM (or, --labels outcome, the ORM: every code line labeled with the verdict) trains and reports on
    held-out rows with the search's labels; args.json and metrics.json beside a PRM from_pretrained loads."""
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labeled_rows(30)))
    out = tmp_path / "prm"
    train(monkeypatch, "--data", data, "--init", tiny_policy(arch), "--out", out, "--epochs", 1, "--holdout", 0.3, "--show", 1,
          "--labels", labels)
    stdout = capsys.readouterr().out
    assert "| step_auc |" in stdout and "== demo/test/" in stdout
    metrics = json.load(open(out / "metrics.json"))
    assert metrics["rows"] > 0 and 0 <= metrics["step_auc"] <= 1 and metrics["labels"] == labels
    assert json.load(open(out / "args.json"))["labels"] == labels
    from transformers import AutoModelForTokenClassification
    prm = AutoModelForTokenClassification.from_pretrained(out)
    assert prm.config.num_labels == 1


def test_outcome_labels():
    r = row("P:\n", "    a = 1\n    # c\n    b = 2\n    return b\n", passed=False, correct=1)
    assert r["labels"] == [1, 0, -1, -1] and tp.outcome_labels(r) == [-1, 0, -1, -1]
    assert tp.outcome_labels(r | {"passed": True}) == [1, 0, 1, 1]


def test_fsdp_two_processes(monkeypatch, tmp_path, tiny_policy):
    """--fsdp on 2 gloo processes (FSDP2): trains, reports, and writes a PRM that plain from_pretrained loads; one
    process taking each step's batch in micro-batches of 3 (gradients accumulated) makes the same first step."""
    from transformers import AutoConfig, AutoModelForTokenClassification
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labeled_rows(30)))
    init = tmp_path / "init"  # the policy with its scoring head's dropout off, so that the passes draw no masks
    shutil.copytree(tiny_policy("qwen2"), init)
    config = AutoConfig.from_pretrained(init)
    config.classifier_dropout = 0.0
    config.save_pretrained(init)
    run = lambda out, launch, *flags: subprocess.run([*launch, "train_prm.py", "--data", str(data), "--init", str(init),  # noqa: E731
                                                      "--out", str(tmp_path / out), "--epochs", "1", "--holdout", "0.3", "--show", "1",
                                                      *flags], capture_output=True, text=True, cwd=HERE, timeout=600)
    r = run("prm", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], "--fsdp", "true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("| step_auc |") == 1  # rank 0 reports
    prm = AutoModelForTokenClassification.from_pretrained(tmp_path / "prm")
    start = AutoModelForTokenClassification.from_pretrained(init, num_labels=1)
    body = [k for k in prm.state_dict() if "layers.0." in k]
    assert body and any(not torch.equal(prm.state_dict()[k], start.state_dict()[k]) for k in body)  # trained
    train(monkeypatch, "--data", data, "--init", init, "--out", tmp_path / "one", "--epochs", 1, "--holdout", 0.3, "--show", 1,
          "--micro_batch_size", 3)  # one process, in this one
    # the first step (from the same weights): the same loss and gradient norm; Adam's steps after it amplify rounding
    # in gradients near 0 too much for the weights to be compared
    logs = [[json.loads(l) for l in open(tmp_path / d / "log.jsonl")] for d in ("prm", "one")]
    assert len(logs[0]) == len(logs[1]) == 3  # 38 training rows in steps of 16
    for k in ("loss", "grad_norm"):
        assert logs[1][0][k] == pytest.approx(logs[0][0][k], rel=1e-5), k


def test_a_bf16_init_is_trained_with_fp32_weights(monkeypatch, tmp_path, tiny_policy):
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer
    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_policy("qwen2"), dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_policy("qwen2")).save_pretrained(bf16)
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labeled_rows(6)))
    train(monkeypatch, "--data", data, "--init", bf16, "--out", tmp_path / "prm", "--epochs", 1)
    prm = AutoModelForTokenClassification.from_pretrained(tmp_path / "prm", dtype="auto")
    assert next(prm.parameters()).dtype == torch.float32


def test_rows_without_a_step_are_left_out_and_mismatched_labels_stop(tmp_path):
    row = {"task_id": "t", "prompt": "p", "response": "", "steps": [], "labels": [], "passed": False, "first_error": None}
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [row, row | {"response": "x", "steps": [[0, 1, False]], "labels": [1]}]))
    assert [r["response"] for r in tp.read_rows(str(data))] == ["x"]
    data.write_text(json.dumps(row | {"steps": [[0, 1, False]]}))
    with pytest.raises(SystemExit, match=r"labels.jsonl:1: 1 steps but 0 labels$"):
        tp.read_rows(str(data))


def test_prm_quality_against_exact_labels():
    """experiments/prm_quality.quality: hand scores on a demo reference and on it with one planted mistake."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
    import prm_quality
    p = next(p for p in sandbox.load_problems("demo", "valid") if sum(k == "true_div" for k, _ in p.meta["wrong_forms"].values()) == 1
             and p.meta["n_steps"] >= 4 and "#" not in p.solution and "\n\n" not in p.solution)  # line i is step i
    var, (_, wrong) = next((v, kw) for v, kw in p.meta["wrong_forms"].items() if kw[0] == "true_div")
    lines = p.solution.split("\n")
    i = next(j for j, line in enumerate(lines) if line.strip().startswith(f"{var} ="))
    flawed = "\n".join(lines[:i] + [f"    {var} = {wrong}"] + lines[i + 1:])
    rows = [{"task_id": p.task_id, "response": r, "steps": sandbox.split_steps(r)} for r in (p.solution, flawed)]
    n = len(rows[0]["steps"])
    good = [0.5] * n
    bad = [0.5] * i + [-0.5] * (n - i)  # below 0 from the wrong line on: a perfect PRM
    q = prm_quality.quality(rows, [good, bad], {p.task_id: p})
    assert q["step_auc"] == 1.0 and q["correct_below_0"] == 0.0 and q["caught/true_div"] == 1.0 and q["first_errors/true_div"] == 1
    bad[i] = 0.5  # misses the wrong line itself (and so ranks it with the correct ones)
    q = prm_quality.quality(rows, [[-0.5] + good[1:], bad], {p.task_id: p})
    assert q["caught/true_div"] == 0.0 and q["correct_below_0"] == 1 / (n + i)  # n + i correct lines, one below 0


def test_prm_quality_reads_training_rows(tmp_path):
    """experiments/prm_quality.failing_rows: labels.jsonl's failing rows only; a row without its fields is one clear error."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
    import prm_quality
    row = {"task_id": "demo/train/0", "prompt": "def f(a):\n", "response": "    return a\n", "steps": [[0, 13, False]], "labels": [1],
           "first_error": None}
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(row | {"passed": True}) + "\n" + json.dumps(row | {"passed": False, "labels": [-1], "first_error": 0}) + "\n")
    rows, policies, split = prm_quality.failing_rows(str(path))
    assert [r["labels"] for r in rows] == [[-1]] and split == "train"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match=r"labels.jsonl:1: missing field\(s\) passed$"):
        prm_quality.failing_rows(str(path))
