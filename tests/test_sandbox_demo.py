"""sandbox/demo.py: the demo task family - deterministic, disjoint splits, planted mistakes at their rates, every
one-line mutation caught by the tests, the exact step scorer."""
import gc
import os
import re

import pytest

import sandbox
import sandbox.demo as demo
from sandbox import check_many, load_problems, split_steps


@pytest.fixture(scope="module")
def demo_test():
    return load_problems("demo", "test")


@pytest.fixture(scope="module")
def demo_valid():
    return load_problems("demo", "valid")


@pytest.fixture(scope="module")
def demo_train():
    return load_problems("demo", "train")


def test_demo_deterministic_distinct_and_disjoint(demo_train, demo_test, demo_valid, monkeypatch, tmp_path):
    assert len(demo_test) >= 1000 and len(demo_train) >= 5000
    assert len({p.prompt for p in demo_test}) == len(demo_test)
    assert not {p.prompt for p in demo_train} & {p.prompt for p in demo_test}
    assert len({p.prompt for p in demo_valid}) == len(demo_valid) and not {p.prompt for p in demo_valid} & (
        {p.prompt for p in demo_train} | {p.prompt for p in demo_test})
    # the same task lengths in both splits from 2 steps on (there are few distinct one-step tasks: the test
    # and valid splits take most of the likely ones, and train may repeat what is left)
    for n in range(3, demo.MAX_STEPS + 2):
        share = lambda ps: sum(p.meta["n_steps"] == n for p in ps) / len(ps)  # noqa: E731
        assert abs(share(demo_train) - share(demo_test)) < 0.04, n  # the test share's standard error is ~0.011
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # built anew, not read from the cache, then read from it
    again, cached = demo.load("test"), demo.load("test")
    assert os.listdir(tmp_path / "psgpo") and cached == again
    for on in (False, True):  # the collector, paused while the cache is read, is left as it was
        (gc.enable if on else gc.disable)()
        assert demo.load("test") == cached and gc.isenabled() == on
    assert [(p.prompt, p.solution, p.test) for p in again] == [(p.prompt, p.solution, p.test) for p in demo_test]
    steps = [p.meta["n_steps"] - 1 for p in demo_test]
    assert min(steps) == 1 and max(steps) == demo.MAX_STEPS
    assert any("    #" in p.solution for p in demo_test) and any("\n\n" in p.solution for p in demo_test)


def test_demo_planted_rates(demo_train):
    # each planted kind appears at its documented rate among the lines where it can appear
    total = {k: [0, 0] for k in demo.PLANTED_RATES}
    for p in demo_train[:3000]:
        flawed = demo.planted_mistakes(p, p.meta["flawed_solution"])
        assert all(made == 0 for made, _ in demo.planted_mistakes(p, p.solution).values())
        assert sum(made for made, _ in flawed.values()) == len(p.meta["planted"])
        for kind, (made, possible) in flawed.items():
            total[kind][0] += made
            total[kind][1] += possible
    for kind, rate in demo.PLANTED_RATES.items():
        assert abs(total[kind][0] / total[kind][1] - rate) < 0.03, (kind, total[kind])
    # the flawed target differs from the reference exactly on the planted lines
    for p in demo_train[:200]:
        bad, good = p.meta["flawed_solution"].split("\n"), p.solution.split("\n")
        assert [i for i in range(len(good)) if bad[i] != good[i]] == [i for i, _ in p.meta["planted"]]
    # the counter reads a model's spacing too
    p = next(p for p in demo_train if p.meta["planted"])
    line = p.meta["flawed_solution"].split("\n")[p.meta["planted"][0][0]]
    assert demo.planted_mistakes(p, line.replace(" ", ""))[p.meta["planted"][0][1]][0] == 1


def test_demo_references_pass_and_planted_fail(demo_test, demo_train):
    assert all(v.passed for v in check_many([(p, p.solution) for p in demo_test]))
    # one planted mistake always fails (two can cancel out, as two sign errors do)
    sample = [p for p in demo_train[:1500] if len(p.meta["planted"]) <= 1]
    verdicts = check_many([(p, p.meta["flawed_solution"]) for p in sample])
    assert len(sample) > 400 and all(v.passed == (not p.meta["planted"]) for p, v in zip(sample, verdicts))


def mutations(solution):
    """Every one-line mutation of a demo solution: per code line, change its operator or a constant."""
    lines = solution.split("\n")
    for i, line in enumerate(lines):
        if not line.strip() or line.strip().startswith("#"):
            continue
        for a, b in ((" + ", " - "), (" - ", " + "), (" * ", " + ")):
            if a in line:
                yield "\n".join(lines[:i] + [line.replace(a, b, 1)] + lines[i + 1:])
        m = re.search(r"\b\d\b", line.split("=", 1)[-1])
        if m:
            k = m.start() + line.index("=") + 1
            yield "\n".join(lines[:i] + [line[:k] + str(int(line[k]) % 9 + 1) + line[k + 1:]] + lines[i + 1:])
        if line.strip().startswith("return x"):
            n = int(line.split("x")[-1])
            if n > 1:
                yield "\n".join(lines[:i] + [f"    return x{n - 1}"] + lines[i + 1:])


def test_demo_every_one_line_mutation_fails(demo_test):
    items = [(p, m) for p in demo_test[:150] for m in mutations(p.solution)]
    assert len(items) > 1000
    verdicts = check_many(items)
    survivors = [m for (p, m), v in zip(items, verdicts) if v.passed]
    assert not survivors, survivors[:3]


def test_oracle_step_scores(demo_train):
    for p in demo_train[:1000]:
        assert all(s >= 0 for s in demo.oracle_step_scores(p, p.solution))
        flawed = p.meta["flawed_solution"]
        scores, steps = demo.oracle_step_scores(p, flawed), split_steps(flawed)
        lines = [flawed[:a].count("\n") for a, _, _ in steps]
        assert [s == 0 for s in scores] == [c for _, _, c in steps]  # comments are neutral
        if p.meta["planted"]:  # +1 before the first planted line, -1 on it and on every code line after
            first = lines.index(p.meta["planted"][0][0])
            assert all(s >= 0 for s in scores[:first]) and all(s == -1 or c for s, (_, _, c) in zip(scores[first:], steps[first:]))
        else:
            assert all(s >= 0 for s in scores)
    p = demo_train[0]
    assert demo.oracle_step_scores(p, "    import os\n" + p.solution)[0] == -1  # not arithmetic: wrong
    assert demo.oracle_step_scores(p, "") == []


def test_reached_as_sandbox_demo():
    assert sandbox.demo is demo and sandbox.demo.load is demo.load


def test_demo_long_is_the_long_tasks_of_each_split(demo_test, demo_valid):
    """demo-long: exactly the split's tasks of at least LONG_LINES lines, the same tasks with the same ids."""
    for split, full in [("test", demo_test), ("valid", demo_valid)]:
        long = load_problems("demo-long", split)
        assert long == [p for p in full if p.meta["n_steps"] >= demo.LONG_LINES]
        assert {p.meta["n_steps"] for p in long} == set(range(demo.LONG_LINES, demo.MAX_STEPS + 2)) and len(long) > 400
