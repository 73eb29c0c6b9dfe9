"""Does a training set hold the benchmarks' problems? The share of each benchmark's problems whose text shares a run of
N words (13: the n-gram test of the Codex and Llama reports' decontamination) with some training problem's prompt,
and the first few of them. Run it where the sets are in the Hugging Face cache (or the network reaches the Hub):

    python checks/contamination.py --train acecode --against humaneval mbpp:test livecodebench:release_v6
    python checks/contamination.py --train FILE.jsonl --against humaneval --n 10

A set is NAME or NAME:SPLIT (sandbox.load_problems). Texts are compared lower-cased, as words (letters, digits, _).
"""
import os
import re
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import sandbox  # noqa: E402


@dataclass
class Args:
    train: str = field(metadata={"help": "the training set, NAME[:SPLIT]"})
    against: list[str] = field(metadata={"help": "benchmarks, NAME[:SPLIT] each"})
    n: int = field(default=13, metadata={"help": "words in a shared run"})

    def __post_init__(self):
        sandbox.check_flags(self, positive="n")


def ngrams(text, n):
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def overlap(train, bench, n):
    """[(benchmark task id, a shared n-gram)] of the benchmark problems sharing an n-gram with any training prompt."""
    seen = set().union(*(ngrams(p.prompt, n) for p in train)) if train else set()
    hits = []
    for p in bench:
        shared = ngrams(p.prompt, n) & seen
        if shared:
            hits.append((p.task_id, min(shared)))
    return hits


def load(spec):
    name, _, split = spec.partition(":")
    with sandbox.bad_data_exits():
        return sandbox.load_problems(name, split or None)


def main():
    a = sandbox.parse_args(Args)
    train = load(a.train)
    rows = []
    for spec in a.against:
        bench = load(spec)
        hits = overlap(train, bench, a.n)
        rows.append([spec, len(bench), len(hits), f"{100 * len(hits) / len(bench):.1f}%",
                     "; ".join(f"{t}: '{g}'" for t, g in hits[:3]) or "-"])
    print(sandbox.table([f"benchmark (against {a.train}, {len(train)} problems)", "problems", f"sharing {a.n} words",
                         "share", "first ones"], rows))


if __name__ == "__main__":
    main()
