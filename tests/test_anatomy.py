"""experiments/anatomy.py end to end on tiny random models (the tasks' own reference and flawed solutions: a random
policy never passes): the picture is written, and the printed tables obey the method - the exact labels, the binary
search's labels and probes (replayed through label_prm_data.binary_search_first_error), Eq. 3, the outcome
reward, and the copied critic reading the PRM one token late."""
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForTokenClassification

import sandbox
from label_prm_data import binary_search_first_error

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, K_FIRST = 2, 1


@pytest.fixture(scope="module")
def models(tiny_policy, tmp_path_factory):
    """(policy, PRM, PSGPO checkpoint): random models; the checkpoint is a policy folder with a value/ critic."""
    policy, out = tiny_policy("llama"), tmp_path_factory.mktemp("anatomy")
    torch.manual_seed(1)
    AutoModelForTokenClassification.from_pretrained(policy, num_labels=1).save_pretrained(out / "prm")
    shutil.copytree(policy, out / "psgpo")
    torch.manual_seed(2)
    AutoModelForTokenClassification.from_pretrained(policy, num_labels=1).save_pretrained(out / "psgpo" / "value")
    return policy, str(out / "prm"), str(out / "psgpo")


def anatomy(models, out, *extra):
    policy, prm, psgpo = models
    cmd = [sys.executable, "experiments/anatomy.py", "--sft", policy, "--label_policy", policy, "--prm", prm, "--psgpo", psgpo,
           "--orm", prm,  # any token-classification model shows the ORM's columns
           "--out", str(out), "--split", "train", "--responses", "task", "--k", str(K), "--k_first", str(K_FIRST),
           "--max_new_tokens", "8", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env=dict(os.environ, OMP_NUM_THREADS="1"))


def panels(stdout):
    """[(header, search line, [row dicts])] of the printed markdown tables."""
    out = []
    for block in stdout.split("\n### ")[1:]:
        lines = block.strip().split("\n")
        names = [c.strip() for c in lines[4].strip("|").split("|")]
        rows = [dict(zip(names, (c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]))) for line in lines[6:] if line.startswith("|")]
        out.append((lines[0], lines[2], rows))
    return out


def test_anatomy_end_to_end(models, tmp_path):
    png = tmp_path / "anatomy.png"
    r = anatomy(models, png, "--failing", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    import matplotlib.image
    assert png.stat().st_size > 50_000 and matplotlib.image.imread(png).shape[1] > 1000
    problems = {p.task_id: p for p in sandbox.load_problems("demo", "train")}
    shown = panels(r.stdout)
    assert [("passes its tests" in h) for h, _, _ in shown] == [True, False, False]
    for head, search, rows in shown:
        task_id, source = re.match(r"(\S+) \((.*?)\)", head).groups()
        passed, T, lam = "passes its tests" in head, int(re.search(r"T = (\d+) code lines", head)[1]), float(re.search(r"lam = ([\d.]+)", head)[1])
        problem = problems[task_id]
        text = problem.solution if source == "reference solution" else problem.meta["flawed_solution"]
        lines, end = rows[:-1], rows[-1]
        code = [row for row in lines if not row["text"].startswith("`#")]
        assert [row["text"].split("`")[1] for row in lines] == [text[b:e].strip() for b, e, _ in sandbox.split_steps(text)]
        assert len(code) == T and lam == (0.025 if passed else 0.25)
        # the exact labels are the demo's exact scorer's; a planted slip is a wrong line
        assert [int(row["exact (yardstick)"]) for row in lines] == sandbox.demo.oracle_step_scores(problem, text)
        assert passed or any("(slip: " in row["text"] and row["exact (yardstick)"] == "-1" for row in lines)
        # search labels: neutral lines 0, code lines +1 through the correct prefix and -1 after; a passing response is not searched
        assert all(row["search label"] == "0" for row in lines if row not in code)
        correct = T if passed else int(re.search(r"Correct prefix: (\d+) code line", search)[1])
        assert [int(row["search label"]) for row in code] == [1] * correct + [-1] * (T - correct)
        probes = {}  # order -> (m, yes, completions judged)
        for m, row in enumerate(code, 1):
            if row["probe (order: answer, of completions)"]:
                i, answer, k = re.fullmatch(r"(\d+)\w\w: (yes|no) of (\d+)", row["probe (order: answer, of completions)"]).groups()
                probes[int(i)] = (m, answer == "yes", int(k))
        assert not (passed and probes)
        if not passed:  # the probes replay as binary_search_first_error's questions, in order, with its answer and its bound
            asked = [probes[i] for i in sorted(probes)]
            assert sorted(probes) == list(range(1, len(probes) + 1))
            calls, answers = [], {m: yes for m, yes, _ in asked}
            assert binary_search_first_error(T - 1, lambda m: calls.append(m) or answers[m]) == correct
            assert calls == [m for m, _, _ in asked] and len(calls) <= math.ceil(math.log2(T - 1 + 1))
            assert all(k in (K_FIRST, K) if yes else k == K for _, yes, k in asked)  # best-of-K in two waves: a no takes all K
        # Eq. 3: r_m = lam * clip(R_phi, -1, 1) / T on each code line, nothing on neutral ones; the outcome on the last token
        for row in lines:
            if row in code:
                assert float(row["r_t"]) == pytest.approx(lam * min(1.0, max(-1.0, float(row["R_phi"]))) / T, abs=3e-6)
            else:
                assert row["r_t"] == ""
        assert float(end["r_t"]) == (1.0 if passed else 0.0)
        # the critic as PSGPO starts it is the PRM read one token late: V(s_EOS) = R_phi(x, y<EOS), the last line's score
        assert float(end["V at start (PRM copy)"]) == pytest.approx(float(lines[-1]["R_phi"]), abs=2e-5)
        assert any(row["V at start (PRM copy)"] != row["V trained"] for row in rows)
        assert all(math.isfinite(float(row[k])) for row in rows for k in ("A with V at start", "A with V trained"))
        # the ORM's columns: Eq. 3 on its scores (here the same model as the PRM: the same numbers)
        assert all(row["R_orm"] == row["R_phi"] and row["r_t (ORM)"] == row["r_t"] for row in lines)
        assert [row["m (code line)"] for row in code] == [str(m) for m in range(1, T + 1)]


def test_a_missing_critic_or_response_is_one_line(models, monkeypatch):
    """In-process (the script's own functions): a PSGPO folder without value/ stops before any model loads; tasks
    that cannot give the responses asked for stop with one line."""
    spec = importlib.util.spec_from_file_location("anatomy", os.path.join(HERE, "experiments", "anatomy.py"))
    anatomy_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anatomy_py)
    policy, prm, _ = models
    monkeypatch.setattr(sys, "argv", ["anatomy.py", "--sft", policy, "--label_policy", policy, "--prm", prm, "--psgpo", policy, "--orm", prm])
    with pytest.raises(SystemExit, match=r"^anatomy.py: --psgpo .*value: no such model folder"):
        anatomy_py.main()
    a = anatomy_py.Args(split="train", responses="task", failing=2)
    tok, eos = sandbox.load_tokenizer(policy)
    with pytest.raises(SystemExit, match=r"^anatomy.py: found 1 of 2 failing responses with a planted slip"):
        anatomy_py.pick(None, tok, eos, sandbox.load_problems("demo", "train")[:1], a)  # one task: one flawed solution
