"""experiments/ablation.py end to end at tiny sizes: settings x seeds, a hack run, the relabeled PRM,
evaluation, the table and plots; a re-run skips what is done."""
import json
import os
import shutil
import subprocess
import sys

import torch

import label_prm_data as lp
import sandbox

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def labeled_row(p, policy):
    """The reference with one comment line and a wrong second code line: correct_steps = 1."""
    lines = ["    # start"] + p.solution.rstrip("\n").split("\n")
    code = [j for j, l in enumerate(lines) if l.strip() and not l.lstrip().startswith("#")]
    lines[code[1]] = lines[code[1]].replace("=", "= 1 +", 1)
    response = "\n".join(lines) + "\n"
    steps = sandbox.split_steps(response)
    labels = lp.step_labels(steps, False, 1)
    return {"task_id": p.task_id, "policy": policy, "prompt": p.prompt, "response": response, "steps": [list(s) for s in steps],
            "labels": labels, "passed": False, "correct_steps": 1, "first_error": labels.index(-1)}


def test_ablation_end_to_end(tmp_path, tiny_policy):
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    runs, out = tmp_path / "runs", tmp_path / "ablation"
    shutil.copytree(tiny_policy("gpt2"), runs / "sft")
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_pretrained(runs / "sft", num_labels=1).save_pretrained(runs / "prm")
    AutoTokenizer.from_pretrained(runs / "sft").save_pretrained(runs / "prm")
    (runs / "prm_data").mkdir()
    rows = [labeled_row(p, str(runs / "sft")) for p in sandbox.load_problems("demo", "test") if p.meta["n_steps"] >= 3][:24]
    for name in ("rows.jsonl", "labels.jsonl"):
        (runs / "prm_data" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "experiments/ablation.py", "--runs", str(runs), "--out", str(out), "--settings", "sparse", "both",
           "--seeds", "0", "1", "--hacks", "no_length_norm", "--iterations", "1", "--parallel", "2",
           "--ppo", "--kl_coef 0 --batch_size 4 --minibatch_size 2 --max_new_tokens 12 --warmup 1",
           "--evaluate", "--n 2 --max_problems 6 --max_new_tokens 12", "--quality_problems", "6"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("$ ") == 5 + 6 + 2  # 5 PPO runs, 6 evaluations, the PRM's quality, each printed
    table = (out / "results.md").read_text()
    for setting in ("| SFT |", "| sparse | 2 |", "| both | 2 |", "| no_length_norm | 1 |", "| no_length_norm (seed 0) |", "| both | ", "| step_auc |"):
        assert setting in table
    results = json.loads((out / "results.json").read_text())
    assert len(results["settings"]["sparse"]["greedy_pass@1"]) == 2 and results["settings"]["sparse"]["seeds"] == [0, 1]
    assert len(results["settings"]["both"]["best_of_k"]) == 2 and results["settings"]["both"]["best_of_k"][0][0] >= 0
    assert results["prm_quality"]["responses"] == 3 * 6 * 2  # SFT, sparse and both on 6 valid prompts, 2 samples each
    for png in ("bestofk.png", "gain_by_steps.png", "training.png", "hacks.png"):
        assert (out / png).stat().st_size > 0
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert again.returncode == 0 and "$ " not in again.stdout  # everything done: nothing re-run
    # the PRM's quality against labeled volume, on the ablation's valid-split samples
    cmd = [sys.executable, "experiments/prm_volume.py", "--runs", str(runs), "--eval", str(out / "prm_eval" / "eval.json"),
           "--out", str(tmp_path / "volume"), "--prompts", "4", "24"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("$ ") == 4 and "| 4 | 4 | " in r.stdout and "| 24 | 24 | " in r.stdout
    assert (tmp_path / "volume" / "prm_volume.png").stat().st_size > 0
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert again.returncode == 0 and "$ " not in again.stdout and "| 24 | 24 | " in again.stdout


def test_curves_mean_over_seeds_then_running_mean():
    sys.path.insert(0, os.path.join(HERE, "experiments"))
    import ablation
    logs = [[{"k": v} for v in (0, 1, 2, 3, 4, 5)], [{"k": v} for v in (2, 3, 4, 5, 6, 7)]]  # mean over seeds: 1..6
    x, y = ablation.curves(logs, "k", w=5)
    assert list(x) == [5, 6] and list(y) == [3.0, 4.0]
    x, y = ablation.curves([logs[0][:1]], "k")  # fewer iterations than the window: no smoothing
    assert list(x) == [1] and list(y) == [0.0]


def test_missing_inputs_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "experiments/ablation.py", "--runs", str(tmp_path)], capture_output=True, text=True, cwd=HERE)
    assert r.returncode != 0 and "run `bash run_demo.sh` first" in r.stderr and "Traceback" not in r.stderr
