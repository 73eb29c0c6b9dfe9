"""checks/contamination.py: a training set that holds a benchmark's problem is found; one that does not is not."""
import json
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "checks"))


def test_contamination_finds_a_benchmark_problem_in_the_training_set(tmp_path, monkeypatch, capsys):
    import contamination
    import sandbox
    humaneval = sandbox.load_problems("humaneval")
    easy = sandbox.load_problems(os.path.join(HERE, "tests", "data", "easy_tasks.jsonl"))
    assert contamination.overlap(easy, humaneval, 13) == []
    leaked = tmp_path / "leaked.jsonl"  # the easy tasks and HumanEval/7's prompt, reworded at its start only
    rows = [json.loads(l) for l in open(os.path.join(HERE, "tests", "data", "easy_tasks.jsonl"))]
    rows.append(dict(rows[0], task_id="leak", prompt="# a task\n" + humaneval[7].prompt))
    leaked.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(sys, "argv", ["contamination.py", "--train", str(leaked), "--against", "humaneval"])
    contamination.main()
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| humaneval |"))
    assert "HumanEval/7: " in line  # and its near twins in HumanEval (filter by substring / by prefix) share the words
    assert 1 <= int(line.split("|")[3]) <= 3
