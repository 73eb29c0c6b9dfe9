"""sandbox - problems, code steps (lines), the rules every stage shares, and judging untrusted code.

The one package the psgpo stages share; this file is its face: every name a stage uses is `sandbox.<name>`,
imported here from the module that holds it. Imports go one way: rules <- problems <- demo, models, judge, cli <- here.

  rules.py      the rules two stages must apply identically, each written once: a step is a line (`split_steps`,
                paper section 3), what a model is fed (`prompt_ids`), where a response stops (`stop_strings`,
                `end_response`), which token ends a line (`line_end_tokens`, `prefix_through_line`)
  problems.py   one schema (`Problem`) for every benchmark: humaneval, mbpp, livecodebench, a local .jsonl
  demo.py       the built-in demo family (`sandbox.demo`): generated tasks, planted mistakes, the exact step scorer
  models.py     models found, loaded, sharded, sampled and saved alike by every stage; torchrun's ranks
  judge.py      `check` / `check_many`: model output run against the tests as untrusted code (worker.py)
  cli.py        the command line alike in every stage: flags checked before anything loads, one-line errors, tables
"""
from . import demo
from .cli import bad_data_exits, check_flags, check_here, data_line, fail, guard_out, parse_args, table  # noqa: F401
from .judge import VERDICTS, Verdict, check, check_many, cores_per_rank, self_test  # noqa: F401
from .models import (checkpoint_activations, find_model, generate, load_model, load_tokenizer, load_weights, lr_schedule, sample,  # noqa: F401
                     save_model, shard, start_ranks, stop_ranks)
from .problems import HUMANEVAL_STOP, DataError, Problem, load_benchmark, need, read_jsonl  # noqa: F401
from .rules import (CHAT_REQUEST, CHAT_STOP, cut_at_stop, end_response, line_end_tokens, prefix_through_line,  # noqa: F401
                    prompt_ids, split_steps, stop_strings)

DEMO = ("demo", "demo-long")  # the built-in family; demo-long: its tasks of 6 to 9 lines, where the sparse reward is rarest


def is_demo(dataset):
    """Is `dataset` (a stage's --dataset) the built-in demo family, whose tasks the exact step scorer knows?"""
    return dataset in DEMO


def load_problems(name, split=None):
    """Problems from `name`: demo | demo-long | humaneval | mbpp | livecodebench | a path to a .jsonl(.gz) file."""
    if is_demo(name):
        return demo.load(split or "test", long=name == "demo-long")
    return load_benchmark(name, split)
