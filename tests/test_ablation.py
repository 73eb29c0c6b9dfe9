"""experiments/ablation.py: two whole chains at tiny sizes (every stage once per seed), the claims' paired
intervals on hand numbers, results.json's fields, the plots; a re-run does nothing."""
import json
import os
import re
import subprocess
import sys
import threading
import time

from dataclasses import asdict

import numpy as np
import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "experiments"))
import ablation  # noqa: E402
import pool_seeds  # noqa: E402
import studies  # noqa: E402


def why(r):
    """A failed run's output tails and, where ablation.py named the failing stage's log, that log's tail."""
    logs = re.findall(r"\(see (\S+)\)", r.stderr)
    return r.stdout[-2000:] + r.stderr[-2000:] + "".join(f"\n--- {log}:\n" + open(os.path.join(HERE, log)).read()[-3000:] for log in logs if os.path.exists(os.path.join(HERE, log)))


def test_paired_intervals_on_hand_numbers():
    a = {0: {"t1": 0.5, "t2": 1.0}, 1: {"t1": 0.75, "t2": 0.75}, 2: {"t1": 1.0, "t2": 1.0}}
    b = {0: {"t1": 0.5, "t2": 0.5}, 1: {"t1": 0.25, "t2": 0.75}, 2: {"t1": 0.5, "t2": 0.5}}
    p = ablation.paired(a, b, np.random.default_rng(0), 500)
    assert p["diffs"] == [0.25, 0.25, 0.5] and p["mean"] == pytest.approx(1 / 3)
    half = 4.303 * np.std([0.25, 0.25, 0.5], ddof=1) / np.sqrt(3)  # t(0.975, df 2)
    assert p["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half])
    assert 0 <= p["bootstrap95"][0] <= 1 / 3 <= p["bootstrap95"][1] <= 0.5  # every resample's mean lies in [0, 0.5]
    assert ablation.reach([2, 4, 6], [0.1, 0.3, 0.5], 0.3) == 4 and ablation.reach([2, 4], [0.1, 0.2], 0.3) is None


def test_p_values_holm_and_power_on_hand_numbers():
    """df 2 has a closed form: two-sided p = 1 - t / sqrt(2 + t^2); Holm on three p values; the power of a paired t
    test is its size (0.05) at no effect and ~29% for 1 point at sd 2.0 over 10 seeds (the claims'
    study's spread: docs/results/demo.md)."""
    t = 2 / (1 / np.sqrt(3))  # diffs 1, 2, 3: mean 2, sd 1
    assert ablation.t_p_value([1, 2, 3]) == pytest.approx(1 - t / np.sqrt(2 + t * t), abs=1e-6)
    assert ablation.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert ablation.power(0, 2.0, 10, reps=200_000) == pytest.approx(0.05, abs=0.003)
    assert ablation.power(1, 2.0, 10, reps=200_000) == pytest.approx(0.294, abs=0.005)


def test_a_comparison_is_a_claim_only_when_a_plan_names_it():
    claims, planned = [("both", "sparse_warm_critic")], [("dense_orm", "sparse")]
    assert ablation.role(("both", "sparse_warm_critic"), "pass@1", "PLAN.md", claims, planned) == "claim"
    assert ablation.role(("dense_orm", "sparse"), "pass@1", "PLAN.md", claims, planned) == "planned"
    assert ablation.role(("both", "dense"), "pass@1", "PLAN.md", claims, planned) == "exploratory"
    assert ablation.role(("both", "sparse_warm_critic"), "greedy_pass@1", "PLAN.md", claims, planned) == "exploratory"  # not the plan's metric
    assert ablation.role(("both", "sparse_warm_critic"), "pass@1", "", claims, planned) == "exploratory"  # no plan, no claim


def test_provenance_needs_a_plan_committed_before_the_run(tmp_path):
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n"), (tmp_path / "PLAN.md").write_text("claims\n")
    git("add", "code.py"), git("commit", "-qm", "code")
    with pytest.raises(SystemExit, match=r"^ablation.py: --plan .*PLAN.md: not a committed file"):  # written, never committed
        ablation.provenance(str(tmp_path / "PLAN.md"), root=tmp_path)
    git("add", "PLAN.md"), git("commit", "-qm", "plan")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert ablation.provenance(str(tmp_path / "PLAN.md"), root=tmp_path) == {"code_commit": head, "code_dirty": False, "plan": "PLAN.md", "plan_commit": head}
    (tmp_path / "code.py").write_text("x = 2\n")
    dirty = ablation.provenance("", root=tmp_path)
    assert dirty["code_commit"] == head and dirty["code_dirty"] and len(dirty["code_diff_sha256"]) == 64  # which changes, to compare runs by
    (tmp_path / "code.py").write_text("x = 3\n")
    assert ablation.provenance("", root=tmp_path)["code_diff_sha256"] != dirty["code_diff_sha256"]
    (tmp_path / "PLAN.md").write_text("claims, edited after the fact\n")
    with pytest.raises(SystemExit, match="changed since its commit"):
        ablation.provenance(str(tmp_path / "PLAN.md"), root=tmp_path)


def test_the_evaluations_noise_on_hand_numbers(tmp_path):
    """Two tasks of 4 samples, 2 and 4 passing: per-sample variances 1/3 and 0, se = sqrt((1/3 + 0) / 4) / 2."""
    samples = [{"task_id": t, "kind": k, "passed": p} for t, k, p in [("a", "greedy", True)] + [("a", "sample", p) for p in (1, 1, 0, 0)]
               + [("b", "sample", True)] * 4]
    (tmp_path / "eval.json").write_text(json.dumps({"models": {"m": {"samples": samples}}}))
    assert ablation.eval_noise(tmp_path / "eval.json") == pytest.approx(np.sqrt(1 / 3 / 4) / 2)


def test_schedule_runs_each_job_after_its_needs_and_stops_on_needs_never_met():
    order = []
    jobs = {"labels": (["sparse"], lambda: order.append("labels")), "sparse": ([], lambda: order.append("sparse")),
            "prm": (["labels"], lambda: order.append("prm")), "warm": ([], lambda: order.append("warm"))}
    ablation.schedule(jobs, 2)
    assert sorted(order) == sorted(jobs) and order.index("sparse") < order.index("labels") < order.index("prm")
    with pytest.raises(SystemExit, match=r"needs are never met: \['warm'\]"):
        ablation.schedule({"warm": (["prm"], lambda: None)}, 2)


def test_a_command_runs_in_the_warm_process_as_in_a_fresh_interpreter(tmp_path, tiny_policy):
    """ablation.run's forked runner: the same argv, cwd, sys.path[0], thread count and exit handlers as `python SCRIPT`,
    the same evaluation byte for byte (timings aside), and a failing script is its own last line (the stage's
    reason, on the screen) and the log's name."""
    probe = tmp_path / "probe.py"
    probe.write_text("import atexit, os, sys, torch\natexit.register(lambda: print('exit handler', flush=True))\n"
                     "print(__name__, sys.argv[1:], os.getcwd(), sys.path[0], torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])\n"
                     "sys.exit(int(sys.argv[1]))\n")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    fresh = subprocess.run([sys.executable, str(probe), "0", "a b"], capture_output=True, text=True, cwd=HERE, env=env).stdout
    ablation.run([sys.executable, str(probe), 0, "a b"], tmp_path / "probe.log", 1)
    assert (tmp_path / "probe.log").read_text() == fresh and fresh.endswith("exit handler\n")
    with pytest.raises(SystemExit, match=r"^ablation.py: failed \(exit code 3\): .*probe.py 3\n  exit handler\n  \(the whole output: .*probe3.log\)$"):
        ablation.run([sys.executable, str(probe), 3], tmp_path / "probe3.log", 1)
    cmd = ["evaluate.py", "--model", tiny_policy("gpt2"), "--split", "valid", "--n", "2", "--max_problems", "4", "--max_new_tokens", "8",
           "--workers", "1", "--threads", "1", "--out"]
    subprocess.run([sys.executable, *cmd, str(tmp_path / "fresh")], capture_output=True, cwd=HERE, env=env, check=True)
    ablation.run([sys.executable, *cmd, tmp_path / "warm"], tmp_path / "eval.log", 1)
    a, b = (json.loads((tmp_path / d / "eval.json").read_text())["models"][tiny_policy("gpt2")] for d in ("fresh", "warm"))
    assert a["metrics"] == b["metrics"] and a["samples"] == b["samples"]


def test_two_threads_reading_exit_codes_at_once_do_not_turn_a_success_into_a_failure(tmp_path, monkeypatch):
    """schedule()'s two threads: one joins its ended stage while the other starts the next stage (start() polls every
    ended child). Here the first read of an exit code is held for a second, until the other thread's start() has
    polled: unguarded, one thread reads the code and the other the empty pipe, exit code 255 (CPython gh-130895)."""
    import multiprocessing.forkserver as forkserver
    ok, read, first_read = tmp_path / "ok.py", forkserver.read_signed, threading.Event()
    ok.write_text("")
    ablation.run([sys.executable, str(ok)], tmp_path / "warm.log", 1)  # the forkserver up, before the slow reads

    def slow_first_read(fd):  # read_signed reads a child's pid at start, its exit code in poll(): slow the first exit code
        if sys._getframe(1).f_code.co_name == "poll" and not first_read.is_set():
            first_read.set(), time.sleep(1.0)
        return read(fd)
    monkeypatch.setattr(forkserver, "read_signed", slow_first_read)
    errors = []

    def stage(name, after=None):
        try:
            after and after.wait(30)
            ablation.run([sys.executable, str(ok)], tmp_path / f"{name}.log", 1)
        except SystemExit as e:
            errors.append(str(e))
    threads = [threading.Thread(target=stage, args=("a",)), threading.Thread(target=stage, args=("b", first_read))]
    [t.start() for t in threads], [t.join() for t in threads]
    assert first_read.is_set() and errors == []


TINY = ["--iterations", "8", "--warm", "1", "--n", "2", "--curve_problems", "3", "--bootstrap", "50",
        "--ppo", "--batch_size 2 --minibatch_size 2 --max_new_tokens 8 --warmup 1 --workers 1 --group_size 2",
        "--label", "--max_prompts 3 --samples 1 --k 2 --max_new_tokens 8 --select full --workers 1",
        "--prm_flags", "--epochs 1 --holdout 0", "--evaluate", "--max_problems 5 --max_new_tokens 8 --workers 1"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_policy):
    """The ablation's whole chain for seeds 0 and 1 at tiny sizes (the studies build on it): (out, cmd, first run)."""
    out = tmp_path_factory.mktemp("ablation") / "study"
    cmd = [sys.executable, "experiments/ablation.py", "--seeds", "0", "1", "--out", str(out), "--policy", tiny_policy("gpt2"),
           "--settings", "sparse", "sparse_warm_critic", "value_init_orm", "both", "both_orm", *TINY]
    return out, cmd, subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)


def test_the_study_end_to_end_at_tiny_sizes(tiny_study):
    out, cmd, r = tiny_study
    assert r.returncode == 0, why(r)
    # per seed: 5 PPO runs, labels, PRM, ORM, 5 final evaluations, 4 curves, the PRM's quality; the SFT policy twice
    assert r.stdout.count("$ ") == 2 * (5 + 3 + 5 + 4 + 1) + 2
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and len(results["settings"]["both"]["pass@1"]) == 2
    assert [(c["setting"], c["baseline"]) for c in results["paired"]] == [("both", "sparse_warm_critic"), ("both", "both_orm")]
    assert all(len(c["diffs"]) == 2 and c["ci95"][0] <= c["mean"] <= c["ci95"][1] for c in results["paired"])
    # no --plan: nothing is a claim; each run's end of training and the evaluation's noise are recorded
    assert {c["role"] for c in results["paired"] + results["secondary"]} == {"exploratory"} and "No plan file" in (out / "results.md").read_text()
    assert results["provenance"]["code_commit"] and "plan" not in results["provenance"]
    # every flag as given, each stage's problem set, every stage's command as printed (here all of them ran)
    assert results["args"]["ppo"] == TINY[TINY.index("--ppo") + 1] and results["args"]["evaluate"] == TINY[TINY.index("--evaluate") + 1]
    assert results["dataset"] == {"train_psgpo.py": "demo", "label_prm_data.py": "demo", "evaluate.py": "demo"}
    assert sorted(results["commands"].values()) == sorted(line[2:] for line in r.stdout.splitlines() if line.startswith("$ "))
    both = results["settings"]["both"]
    assert len(both["end/entropy"]) == 2 and all(0 < x < 10 for x in both["end/entropy"]) and len(both["eval_se"]) == 2
    assert len(results["paired"][0]["eval_se_of_diff"]) == 2
    assert results["curves"]["both"]["iterations"] == [2, 4, 6, 8] and np.array(results["curves"]["both"]["pass@1"]).shape == (4, 2)
    assert len(results["prm_quality"]) == 2 and "step_auc" in results["prm_quality"][0]
    assert "| both - sparse_warm_critic |" in (out / "results.md").read_text()
    # each setting - sparse, two metrics; the contrasts whose settings ran: both - value_init_orm, both_orm - value_init_orm
    assert len(results["secondary"]) == 4 * 2 + 2
    assert os.path.exists(out / "s1" / "sparse_warm_critic" / "ckpt-0009") and not os.path.exists(out / "s1" / "sparse" / "ckpt-0009")
    assert json.load(open(out / "s0" / "orm" / "metrics.json"))["labels"] == "outcome"
    for png in ("curves.png", "bestofk.png", "gain_by_steps.png"):
        assert (out / png).stat().st_size > 0
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert again.returncode == 0 and "$ " not in again.stdout, why(again)  # everything done: nothing re-run


def test_the_ppo_mechanism_from_the_tiny_study(tiny_study, tmp_path):
    """experiments/ppo_mechanism.py on the tiny chain: every series per seed, the advantage shares summing to 1 in each
    iteration, the written-wrong curves from iteration 0 (the SFT policy), each reward model scored, one table, one plot."""
    out, _, first = tiny_study
    assert first.returncode == 0, why(first)
    cmd = [sys.executable, "experiments/ppo_mechanism.py", "--run", str(out), "--settings", "sparse", "value_init_orm", "both",
           "--against", "value_init_orm", "--out", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, why(r)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["run"]["seeds"] == [0, 1] and res["run"]["provenance"]["code_commit"]
    both = res["per_seed"]["both"]["seeds"]["0"]
    assert both["valid"]["iterations"] == [0, 2, 4, 6, 8] and len(both["log"]["advantage/share_dense"]) == 8
    shares = np.array([both["log"][f"advantage/share_{p}"] for p in ("outcome", "dense", "kl", "critic")])
    assert np.allclose(shares.sum(0), 1, atol=1e-4)  # the four parts are the whole advantage
    assert res["per_seed"]["sparse"]["seeds"]["1"]["log"]["advantage/share_dense"] == [0.0] * 8  # no Eq. 3 in the baseline
    assert {res["summary"][st]["model"] for st in ("sparse", "value_init_orm", "both")} == {None, "orm", "prm"}
    assert (out / "s0" / "orm_quality_sft.json").exists() and "drop_on_first_wrong" in both["scorer"]  # by kind: only kinds the samples hold
    diffs = res["both_minus_value_init_orm"]
    assert len(diffs["final/pass@1"]["diffs"]) == 2 and "scorer/drop_on_first_wrong/xor_pow" in diffs
    assert len(res["minus_sparse"]["both - sparse: last valid/written/true_div"]["diffs"]) == 2  # each setting against the sparse run
    md = (tmp_path / "results.md").read_text()
    assert md.count("| both (prm) |") == 1 and md.count("| sparse (no reward model) |") == 1 and "| final/pass@1 |" in md
    assert (tmp_path / "mechanism.png").stat().st_size > 0


def test_pooling_a_studys_seeds_from_two_runs_gives_the_one_runs_numbers(tiny_study, tmp_path):
    """experiments/pool_seeds.py: the tiny study's results.json cut into its two seeds' runs and pooled again has the
    same per-seed numbers, paired differences and t intervals; each run's bootstrap kept; other designs refused."""
    out, _, first = tiny_study
    assert first.returncode == 0, why(first)
    whole = json.loads((out / "results.json").read_text())

    def one_seed(i):  # the run seed i alone would have written (its bootstrap aside)
        r = json.loads(json.dumps(whole)) | {"seeds": [whole["seeds"][i]], "prm_quality": [whole["prm_quality"][i]],
                                           "labeling": [whole["labeling"][i]]}
        r["settings"] = {st: {k: v if st == "sft" else [v[i]] for k, v in m.items()} for st, m in whole["settings"].items()}
        r["curves"] = {c: {m: v if m == "iterations" else [[x[i]] for x in v] for m, v in cv.items()} for c, cv in whole["curves"].items()}
        return r
    for i in (0, 1):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "results.json").write_text(json.dumps(one_seed(i)))
    cmd = [sys.executable, "experiments/pool_seeds.py", "--runs", str(tmp_path / "run0"), str(tmp_path / "run1"), "--out", str(tmp_path / "pooled")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, r.stderr[-2000:]
    pooled = json.loads((tmp_path / "pooled" / "results.json").read_text())
    assert pooled["seeds"] == whole["seeds"] and pooled["settings"] == whole["settings"] and pooled["curves"] == whole["curves"]
    for p, w in zip(pooled["paired"] + pooled["secondary"], whole["paired"] + whole["secondary"]):
        assert (p["setting"], p["baseline"], p["metric"]) == (w["setting"], w["baseline"], w["metric"])
        assert p["diffs"] == pytest.approx(w["diffs"]) and p["ci95"] == pytest.approx(w["ci95"], nan_ok=True)
        assert list(p["bootstrap95_by_run"]) == ["0", "1"]
    assert "| both - sparse_warm_critic |" in (tmp_path / "pooled" / "results.md").read_text()
    assert pooled["args"]["seeds"] == whole["seeds"] and pooled["commands"] == whole["commands"]
    with pytest.raises(SystemExit, match=r"^pool_seeds.py: the runs differ in iterations \(a: 8; b: 16\): not one design$"):
        pool_seeds.pool([one_seed(0), one_seed(1) | {"iterations": 16}], ["a", "b"])
    with pytest.raises(SystemExit, match="appears in two runs"):
        pool_seeds.pool([one_seed(0), one_seed(0)])


def a_run(seed, **changes):
    """A one-seed results.json as ablation.py writes it now (the keys pool_seeds.py reads), with `changes` applied."""
    args = asdict(ablation.Args(seeds=[seed], out=f"runs/s{seed}", settings=["sparse", "both"], curves=[], claims=["both:sparse"],
                                ppo="--batch_size 2 --max_new_tokens 8"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    r = {"seeds": [seed], "split": "test", "iterations": 16, "warm": 4, "n": 4, "curve_problems": 200, "curves": {}, "prm_quality": [],
         "settings": {"sft": {"pass@1": [0.3]}, "sparse": {"pass@1": [0.6]}, "both": {"pass@1": [0.7]}}, "paired": [], "secondary": [],
         "provenance": {"code_commit": head, "code_dirty": False}, "args": args,
         "dataset": {"train_psgpo.py": "demo", "label_prm_data.py": "demo", "evaluate.py": "demo"}, "commands": {f"s{seed}/both": "python ..."}}
    for key, value in changes.items():  # "args.ppo": "...", "provenance": {...}, "dataset": None (an older run: no such key)
        top, _, sub = key.partition(".")
        target = r[top] if sub else r
        target.pop(sub or top) if value is None else target.__setitem__(sub or top, value)
    return r


def test_pooling_refuses_runs_that_differ_in_anything_but_their_seeds():
    """pool_seeds.same_design: one line naming the key and both runs for each thing that makes a number; the flags
    that do not (--parallel, --bootstrap, --out) may differ; an older run's missing key matches only another's."""
    pool = lambda *runs: pool_seeds.pool(list(runs), ["A", "B"])  # noqa: E731
    assert pool(a_run(0), a_run(1, **{"args.parallel": 4, "args.bootstrap": 50}))["seeds"] == [0, 1]
    assert pool(a_run(0), a_run(1, **{"args.ppo": " --batch_size 2   --max_new_tokens 8"}))["seeds"] == [0, 1]  # the same tokens
    for key, value, shown in [("args.ppo", "--batch_size 4 --max_new_tokens 8", "args.ppo"), ("args.label", "--dataset demo-long", "args.label"),
                              ("dataset", {"train_psgpo.py": "demo-long", "label_prm_data.py": "demo", "evaluate.py": "demo"}, "dataset"),
                              ("args.policy", "runs/other-sft", "args.policy"), ("args.claims", ["both:both_orm"], "args.claims"),
                              ("args.device", "cuda", "args.device"), ("provenance", {"code_commit": "0" * 40, "code_dirty": False}, "code_commit"),
                              ("provenance", {"code_commit": a_run(0)["provenance"]["code_commit"], "code_dirty": True, "code_diff_sha256": "x"}, "code_commit"),
                              ("provenance", a_run(0)["provenance"] | {"plan": "PLAN.md", "plan_commit": "1" * 40}, "plan")]:
        with pytest.raises(SystemExit, match=rf"^pool_seeds.py: the runs differ in {re.escape(shown)} \(A: .*; B: .*\)"):
            pool(a_run(0), a_run(1, **{key: value}))
    with pytest.raises(SystemExit, match=r"differ in code_commit .*: a commit is not in this repository$"):
        pool(a_run(0), a_run(1, provenance={"code_commit": "0" * 40, "code_dirty": False}))
    old = dict(args=None, dataset=None, commands=None, provenance={})  # a results.json from before these keys were recorded
    with pytest.raises(SystemExit, match=r'differ in args.settings \(A: \["both", "sparse"\]; B: "unrecorded"\)'):
        pool(a_run(0), a_run(1, **old))
    assert pool(a_run(0, **old), a_run(1, **old))["seeds"] == [0, 1]  # as they pooled before
    dirty = a_run(0)["provenance"] | {"code_dirty": True, "code_diff_sha256": "x"}
    assert pool(a_run(0, provenance=dirty), a_run(1, provenance=dirty))["seeds"] == [0, 1]  # one commit, the same changes


def test_two_commits_are_the_same_code_when_no_stage_file_differs(tmp_path):
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    head = lambda: subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()  # noqa: E731
    git("init", "-q")
    commits = []
    for name, text in [("train_prm.py", "x = 1\n"), ("README.md", "words\n"), ("train_prm.py", "x = 2  # a comment is a change too\n")]:
        (tmp_path / name).write_text(text), git("add", name), git("commit", "-qm", name)
        commits.append({"code_commit": head(), "code_dirty": False})
    assert pool_seeds.same_code(commits[0], commits[1], root=tmp_path) is None  # README only: the same stage code
    assert pool_seeds.same_code(commits[1], commits[2], root=tmp_path) == "their stage code differs between the commits"


def test_every_reviewers_study_at_tiny_sizes(tiny_study, tiny_policy, tmp_path):
    """experiments/studies.py: all six studies on the tiny chain: each variant's labels, PRM, PPO run and evaluation,
    the reports; a re-run does nothing."""
    base, _, first = tiny_study
    assert first.returncode == 0, why(first)
    cmd = [sys.executable, "experiments/studies.py", "--study", *studies.STUDIES, "--seeds", "0", "--base", str(base),
           "--out", str(tmp_path), "--policy", tiny_policy("gpt2"), *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert r.returncode == 0, why(r)
    assert "ablation.py" not in r.stdout  # the chain was there: not run again
    # one seed (the CI's time): 10 variants' PPO runs and evaluations, 5 with labels, PRM and quality, one curve
    assert r.stdout.count("$ ") == 2 * 10 + 3 * 5 + 1
    for study in studies.STUDIES:
        result = json.loads((tmp_path / f"{study}.json").read_text())
        assert result["seeds"] == [0] and (tmp_path / f"{study}.png").stat().st_size > 0
        first_pair = result["paired"][0]
        assert (first_pair["setting"], first_pair["baseline"]) == studies.STUDIES[study][1][0] and len(first_pair["diffs"]) == 1
    assert [r["k"] for r in json.loads((tmp_path / "k.json").read_text())["labeling"]] == [1, 4, 2, 4]  # the tiny chain's K is 2
    assert json.load(open(tmp_path / "s0" / "group_dense" / "args.json"))["advantage"] == "group"
    hacks = json.loads((tmp_path / "hacks.json").read_text())["hacks"]
    assert hacks["no_length_norm"]["iterations"] == [2, 4, 6, 8] and np.array(hacks["sparse"]["dead"]).shape == (4, 1)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    assert again.returncode == 0 and "$ " not in again.stdout, why(again)


def test_hack_forms_on_hand_examples():
    assert studies.hack_forms("    x1 = a + 1\n    return x1\n") == {"try": False, "dead": False, "code_lines": 2, "neutral_lines": 0}
    assert studies.hack_forms("    x1 = a + 1\n    x2 = x1 * 2\n    return x1\n")["dead"]  # x2 is never read: a padding line
    guarded = studies.hack_forms("    try:\n        return a // b\n    except Exception:\n        return 0\n")
    assert guarded["try"] and not guarded["dead"]
    assert studies.hack_forms("    # a plus 1\n    return a + 1\n")["neutral_lines"] == 1
    assert studies.hack_forms("    x = (\n") == {"try": False, "dead": False, "code_lines": 1, "neutral_lines": 0}  # does not parse


def test_unknown_settings_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "experiments/ablation.py", "--settings", "nope", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=HERE)
    assert r.returncode != 0 and "unknown settings ['nope']" in r.stderr and "Traceback" not in r.stderr


def test_unknown_studies_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "experiments/studies.py", "--study", "nope", "--out", str(tmp_path)], capture_output=True, text=True, cwd=HERE)
    assert r.returncode != 0 and "unknown studies ['nope']" in r.stderr and "Traceback" not in r.stderr


def test_a_stages_bad_flag_is_one_line_on_the_screen(tmp_path):
    """A bad flag passed through --ppo stops the study with the stage's own reason, not only in the stage's log."""
    r = subprocess.run([sys.executable, "experiments/ablation.py", "--ppo", "--gamma 2", "--seeds", "1", "--settings", "sparse",
                        "--out", str(tmp_path / "study")], capture_output=True, text=True, cwd=HERE)
    assert r.returncode != 0 and "train_psgpo.py: --gamma must be between 0 and 1, not 2.0" in r.stderr and "Traceback" not in r.stderr
