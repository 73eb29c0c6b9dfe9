"""label_prm_data.py: the binary search, labels, data selection, the batched search, the script."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

import label_prm_data as lp
import sandbox


def test_binary_search_matches_exhaustive_scan_with_log_calls():
    for n in range(17):
        for correct in range(n + 1):  # every monotone labeling of n prefixes: ok up to `correct`
            calls = []

            def prefix_ok(m):
                calls.append(m)
                assert 1 <= m <= n
                return m <= correct
            exhaustive = max([0] + [m for m in range(1, n + 1) if m <= correct])
            assert lp.binary_search_first_error(n, prefix_ok) == exhaustive == correct
            assert len(calls) <= math.ceil(math.log2(n + 1)), (n, correct, calls)


def test_paper_figure_2():
    calls = []
    assert lp.binary_search_first_error(5, lambda m: calls.append(m) or m <= 3) == 3
    assert calls == [3, 4]  # m=3 accepted -> [4, 5]; m=4 rejected -> lines 1-3 correct


def test_step_labels():
    steps = [(0, 5, False), (5, 9, True), (9, 15, False), (15, 20, False), (20, 24, True)]
    assert lp.step_labels(steps, passed=True, correct=3) == [1, 0, 1, 1, 0]
    assert lp.step_labels(steps, passed=False, correct=1) == [1, 0, -1, -1, 0]
    assert lp.step_labels(steps, passed=False, correct=0) == [-1, 0, -1, -1, 0]
    # without neutral labeling a comment takes the label of the code before it (the hack's labels)
    assert lp.step_labels(steps, passed=False, correct=1, neutral_comments=False) == [1, 1, -1, -1, -1]
    assert lp.step_labels(steps, passed=True, correct=3, neutral_comments=False) == [1, 1, 1, 1, 1]
    first_comment = [(0, 3, True), (3, 8, False)]
    assert lp.step_labels(first_comment, passed=False, correct=0, neutral_comments=False) == [1, -1]


def test_oracle_agreement():
    rows = [{"steps": [[0, 1, False], [1, 2, True], [2, 3, False], [3, 4, False]], "labels": [1, 0, -1, -1], "oracle": [1, 0, 1, -1], "passed": False},
            {"steps": [[0, 1, False]], "labels": [1], "oracle": [-1], "passed": True},
            {"steps": [[0, 1, False]], "labels": [1], "passed": False}]  # not a demo task: no oracle, not counted
    m = lp.oracle_agreement(rows)  # code lines: (1, 1) (-1, 1) (-1, -1) | passing: (1, -1)
    assert m == {"labels_agree_with_oracle": 0.5, "failing_labels_agree_with_oracle": 2 / 3,
                 "correct_lines_labeled_-1": 0.5, "wrong_lines_labeled_+1": 0.5}
    assert lp.oracle_agreement(rows[2:]) == {}


def test_select_rows():
    def row(task, passed, correct=0):
        return {"task_id": task, "prompt": task, "passed": passed, "correct_steps": correct}
    rows = [row("hard", False, 0), row("hard", False, 2),            # pass rate 0, one revised
            row("mid", True, 3), row("mid", False, 1), row("mid", True, 3),
            row("easy", True, 2), row("failed_at_1", False, 0)]
    ids = lambda rs: [(r["task_id"], r["passed"]) for r in rs]
    assert len(lp.select_rows(rows, "full")) == 7
    assert {r["task_id"] for r in lp.select_rows(rows, "remove_hard")} == {"mid", "easy"}
    assert {r["task_id"] for r in lp.select_rows(rows, "medium_only")} == {"mid"}
    assert ids(lp.select_rows(rows, "revised_only")) == [("hard", False), ("mid", False), ("mid", True), ("mid", True)]
    assert ids(lp.select_rows(rows, "revised_only", max_passing=1)) == [("hard", False), ("mid", False), ("mid", True)]


def test_batched_search_finds_the_planted_line(monkeypatch, tiny_tokenizer):
    """A fake policy whose completions of a prefix pass exactly when the prefix is a prefix of the
    reference: the search must find the mutated line, with at most ceil(log2(L)) checks."""
    tok = tiny_tokenizer
    problems = [p for p in sandbox.load_problems("demo", "test") if p.meta["n_steps"] >= 6][:6]
    responses, expected = [], []
    for i, p in enumerate(problems):
        lines = p.solution.split("\n")
        code = [j for j, l in enumerate(lines) if l.strip() and not l.strip().startswith("#")]
        wrong = code[i % (len(code) - 1)]  # a code line, never the return
        lines[wrong] = lines[wrong].replace("=", "= 1 +", 1)
        responses.append("\n".join(lines))
        expected.append(code.index(wrong))  # correct code lines before it
    calls = {"n": 0}

    def fake_sample(labeler, inputs, n, temperature, stops, desc):
        calls["n"] += 1
        if calls["n"] == 1:
            return [[(r, tok(r, add_special_tokens=False)["input_ids"])] * n for r in responses]
        out = []
        for ids in inputs:
            text = tok.decode(ids)
            p = next(p for p in problems if text.startswith(p.prompt))
            prefix = text[len(p.prompt):]
            text = p.solution[len(prefix):] if p.solution.startswith(prefix) else "    return 0\n"
            out.append([(text, tok(text, add_special_tokens=False)["input_ids"])] * n)
        return out
    monkeypatch.setattr(lp, "sample", fake_sample)
    args = lp.Args(n=1, k=3, k_first=1, workers=2)
    rows = lp.label_chunk(lp.Labeler("fake", None, tok, [tok.eos_token_id], args), problems, demo=True)
    assert [r["correct_steps"] for r in rows] == expected
    for r in rows:
        n_code = sum(1 for s in r["steps"] if not s[2])
        assert not r["passed"] and 1 <= r["checks"] <= math.ceil(math.log2(n_code))
        # two waves: a correct prefix passes with its first completion (1 program), a wrong one takes all K = 3
        asked = []
        lp.binary_search_first_error(n_code - 1, lambda m: asked.append(m) or m <= r["correct_steps"])
        assert r["checks"] == len(asked) and r["programs"] == sum(1 if m <= r["correct_steps"] else 3 for m in asked)
        assert r["labels"] == lp.step_labels([tuple(s) for s in r["steps"]], False, r["correct_steps"])
        first = r["labels"].index(-1)
        assert r["first_error"] == first and "= 1 +" in r["response"][r["steps"][first][0]:r["steps"][first][1]]


def label(monkeypatch, *argv):
    """label_prm_data.py in this process, as its command line runs it."""
    monkeypatch.setattr(sys, "argv", ["label_prm_data.py", *map(str, argv)])
    lp.main()


def test_script_end_to_end_and_resume(monkeypatch, tmp_path, tiny_policy):
    policy = tiny_policy("qwen2")  # the other architectures sample in test_evaluate.py
    cmd = ["--policy", policy, "--out", tmp_path, "--max_prompts", 3, "--n", 2, "--k", 2, "--max_new_tokens", 24, "--chunk", 2,
           "--select", "full"]
    label(monkeypatch, *cmd)
    rows = [json.loads(l) for l in open(tmp_path / "rows.jsonl")]
    assert len(rows) == 6 and {r["policy"] for r in rows} == {policy}
    for r in rows:
        assert len(r["labels"]) == len(r["steps"]) == len(sandbox.split_steps(r["response"]))
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["responses"] == 6 and summary["max_checks_minus_bound"] <= 0
    problems = {p.task_id: p for p in sandbox.load_problems("demo", "train")}
    for r in rows:  # demo tasks: the exact step scorer beside the labels
        assert r["oracle"] == sandbox.demo.oracle_step_scores(problems[r["task_id"]], r["response"])
    label(monkeypatch, *cmd, "--neutral_comments", "false")  # what a row is unchanged: resumed
    assert len(open(tmp_path / "rows.jsonl").readlines()) == 6  # nothing new
    resumed = json.load(open(tmp_path / "summary.json"))  # the first run's time is kept, not reset
    assert resumed["seconds_sampling"] == summary["seconds_sampling"] > 0 and resumed["neutral_comments"] is False
    relabeled = [json.loads(l) for l in open(tmp_path / "labels.jsonl")]
    assert [r["labels"] for r in relabeled] == [lp.step_labels(r["steps"], r["passed"], r["correct_steps"], False) for r in rows]


def test_torchrun_splits_the_prompts_and_resumes_from_rank_files(monkeypatch, tmp_path, tiny_policy):
    """2 gloo ranks each label their share of the prompts; rank 0 merges rows.jsonl in prompt order and
    removes the rank files. A run killed under torchrun (rank files, one cut-short line) resumes: only the
    prompts missing from every file are labeled again."""
    policy = tiny_policy("llama")
    cmd = lambda n: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "label_prm_data.py",  # noqa: E731
                     "--policy", policy, "--out", str(tmp_path), "--max_prompts", str(n), "--samples", "2", "--k", "2",
                     "--max_new_tokens", "24", "--select", "full", "--workers", "1"]
    r = subprocess.run(cmd(3), capture_output=True, text=True, cwd=lp.__file__.rsplit("/", 1)[0], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l) for l in open(tmp_path / "rows.jsonl")]
    problems = sandbox.load_problems("demo", "train")
    lp.random.Random(1).shuffle(problems)  # --seed 1, the default
    assert [(r["task_id"], r["sample"]) for r in rows] == [(p.task_id, j) for p in problems[:3] for j in range(2)]
    assert sorted(os.listdir(tmp_path)) == ["args.json", "labels.jsonl", "rows.jsonl", "summary.json"]
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["responses"] == 6 and summary["seconds_sampling"] > 0
    assert summary["labeled_this_run_by_rank"] == [4, 2]  # prompts 1 and 3 on rank 0, prompt 2 on rank 1
    # as if killed before any merge: prompts 1 and 2 in the rank files, 3 missing, a cut-short line at the end
    os.remove(tmp_path / "rows.jsonl")
    (tmp_path / "rows.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    (tmp_path / "rows.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[2:4]) + json.dumps(rows[4])[:50])
    os.remove(tmp_path / "summary.json")
    r = subprocess.run(cmd(4), capture_output=True, text=True, cwd=lp.__file__.rsplit("/", 1)[0], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    again = [json.loads(l) for l in open(tmp_path / "rows.jsonl")]
    assert again[:4] == rows[:4] and [(r["task_id"], r["sample"]) for r in again] == [(p.task_id, j) for p in problems[:4] for j in range(2)]
    assert not list(tmp_path.glob("rows.rank*")) and json.load(open(tmp_path / "summary.json"))["labeled_this_run_by_rank"] == [2, 2]
    (tmp_path / "rows.rank0.jsonl").write_text("{not json\n")
    with pytest.raises(SystemExit, match=r"^label_prm_data.py: .*rows.rank0.jsonl:1: not a labeled row"):  # one line
        label(monkeypatch, *cmd(4)[6:])


def test_a_run_that_keeps_no_rows_says_why(monkeypatch, tmp_path, tiny_policy):
    """A random policy fails every response from its first line: revised_only keeps nothing to train a PRM on, and the
    run stops with one line saying so and why (before: exit 0 without a word); the summary's costs are never negative."""
    with pytest.raises(SystemExit) as e:
        label(monkeypatch, "--policy", tiny_policy("gpt2"), "--out", tmp_path, "--max_prompts", 2, "--n", 2, "--k", 2,
              "--max_new_tokens", 12, "--workers", 1)
    assert re.fullmatch(r"label_prm_data.py: --select revised_only kept 0 of 4 labeled responses: 0 of 4 failing responses have a "
                        r"correct prefix(; \d have no prefix to search \(.*\))?(; in \d no completion of any prefix passed: the "
                        r"policy cannot recover from their first line)?", str(e.value)) and ";" in str(e.value), str(e.value)
    summary = json.load(open(tmp_path / "summary.json"))
    costs = [k for k in summary if k.endswith("_per_failing")]
    assert summary["kept_rows"] == 0 and len(costs) == 4 and all(summary[k] >= 0 for k in costs)  # a response with no code line: 0
    assert all(len(row["probes"]) == row["checks"] for row in map(json.loads, open(tmp_path / "rows.jsonl")))


def test_a_response_without_code_costs_no_search():
    """An empty response (an instruct model that closes its code block at once) is searched over max(0, L - 1) = 0
    prefixes: the summary's linear-scan costs were negative before (L - 1 = -1)."""
    rows = [{"task_id": "t", "passed": False, "steps": [], "checks": 0, "programs": 0, "correct_steps": 0},
            {"task_id": "u", "passed": False, "steps": [[0, 5, False], [5, 9, True], [9, 15, False]], "checks": 1, "programs": 4,
             "correct_steps": 1}]
    s = lp.summarize(rows, {"sample": 0.0, "judge": 0.0})
    assert s["linear_checks_per_failing"] == 0.5 and s["linear_programs_per_failing"] == 2.0 and s["max_checks_minus_bound"] == 0
