"""experiments/prm_quality.py's threshold-free measures and experiments/prm_volume.py's subsets, on hand numbers."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "experiments"))
import prm_quality  # noqa: E402
import prm_volume  # noqa: E402
import sandbox  # noqa: E402


def a_reference_and_its_slip():
    """A valid demo task whose line i (i >= 1) is a true_div step, its reference and the reference with that slip."""
    p = next(p for p in sandbox.load_problems("demo", "valid") if p.meta["n_steps"] >= 4 and "#" not in p.solution and "\n\n" not in p.solution
             and any(k == "true_div" and v != "x1" for v, (k, _) in p.meta["wrong_forms"].items()))
    var, (_, wrong) = next((v, kw) for v, kw in p.meta["wrong_forms"].items() if kw[0] == "true_div" and v != "x1")
    lines = p.solution.split("\n")
    i = next(j for j, line in enumerate(lines) if line.strip().startswith(f"{var} ="))
    rows = [{"task_id": p.task_id, "response": r, "steps": sandbox.split_steps(r)}
            for r in (p.solution, "\n".join(lines[:i] + [f"    {var} = {wrong}"] + lines[i + 1:]))]
    return p, rows, i, len(rows[0]["steps"])


def test_the_largest_drop_and_the_levels_on_hand_scores():
    p, rows, i, n = a_reference_and_its_slip()
    good, bad = [0.5] * n, [0.5] * i + [-0.5] * (n - i)  # a scorer that drops on the slip
    q = prm_quality.quality(rows, [good, bad], {p.task_id: p}, starts=[0.0, 0.0])
    assert q["wrong_responses"] == 1 and q["drop_on_first_wrong"] == 1 and q["drop_auc"] == 1 and q["drop_on_first_wrong_after_correct"] == 1
    assert q["level/correct_before"] == 0.5 and q["level/wrong"] == -0.5 and q["level/all_correct"] == 0.5 and q["level/start"] == 0
    assert q["drop_on_first_wrong/true_div"] == 1 and q["first_error_auc/true_div"] == 1
    late = [0.5] * i + [0.4] + [-0.5] * (n - i - 1)  # the score falls one line late: the largest drop is not on the slip
    q = prm_quality.quality(rows, [good, late], {p.task_id: p}, starts=[0.0, 0.0])
    assert q["drop_on_first_wrong"] == 0 and q["drop_auc"] == pytest.approx((n - 2) / (n - 1))  # beats the n - 1 other drops but the late one
    flat = [-0.6] * n  # an outcome model that says "fails" everywhere: every drop 0, the tie split over the n drops
    q = prm_quality.quality(rows, [flat, flat], {p.task_id: p}, starts=[-0.6, -0.6])
    assert q["drop_on_first_wrong"] == pytest.approx(1 / n) and q["drop_auc"] == 0.5 and q["step_auc"] == 0.5
    assert q["caught/true_div"] == 1.0  # what the threshold at 0 reads for it: everything caught
    assert "drop_auc" not in prm_quality.quality(rows, [good, bad], {p.task_id: p})  # no R(x): no drop measures


def test_volume_subsets_are_the_first_labeled_prompts(tmp_path):
    rows = [{"task_id": t, "prompt": f"p{t}", "passed": ok} for t, ok in [("a", False), ("a", True), ("b", False), ("c", False), ("c", True)]]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] != "b"))  # b: no row kept
    subsets = prm_volume.subsets(str(tmp_path), [1, 2, 3])
    assert [len(subsets[n]) for n in (1, 2, 3)] == [2, 2, 4]  # b counts as a labeled prompt though none of its rows was kept
    with pytest.raises(SystemExit, match=r"--prompts \[4\]: .* labeled only 3 prompts"):
        prm_volume.subsets(str(tmp_path), [4])
