"""Bad input, as a new user gives it, to every stage: one line `<script>.py: <message naming the flag or file>`, exit
status 1, no traceback, before any model loads wherever the check can be made then, and nothing created or changed
in --out. The stages run in-process (main() under a monkeypatched sys.argv: the one line is its SystemExit, and a
model load fails the test); one subprocess for the real command line's stderr. By kind: flags, the models given
(their kind, weights, tokenizer), problem sets and labeled rows, used output folders and resumes, the judge's
self-test and the lines that name a cause."""
import dataclasses
import importlib
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest
import torch

import label_prm_data
import sandbox
import train_psgpo
import train_sft

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--batch_size", "4", "--minibatch_size", "2", "--max_new_tokens", "8", "--iterations", "2", "--warmup", "1", "--workers", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_policy):
    """The models and files the table's commands name: a policy, a PRM (token classification), a policy whose
    model.safetensors was cut in half, a PRM with another tokenizer; problem sets and labeled rows gone wrong."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    d = tmp_path_factory.mktemp("inputs")
    policy = tiny_policy("gpt2")
    AutoModelForTokenClassification.from_pretrained(policy, num_labels=1).save_pretrained(d / "prm")
    AutoTokenizer.from_pretrained(policy).save_pretrained(d / "prm")
    shutil.copytree(d / "prm", d / "other-tok-prm")
    train_sft.train_tokenizer(["completely different text"], 300).save_pretrained(d / "other-tok-prm")
    shutil.copytree(policy, d / "cut")
    os.truncate(d / "cut" / "model.safetensors", os.path.getsize(d / "cut" / "model.safetensors") // 2)
    task = {"task_id": "a", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
            "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}
    (d / "one.jsonl").write_text(json.dumps(task) + "\n")  # a problem set to load fast
    (d / "dup.jsonl").write_text(json.dumps(task) + "\n" + json.dumps(task | {"prompt": "def f(y):\n"}) + "\n")
    (d / "latin1.jsonl").write_bytes(json.dumps(task | {"prompt": "def f(x):  # caf\u00e9\n"}, ensure_ascii=False).encode("latin-1") + b"\n")
    (d / "wrong_reference.jsonl").write_text(json.dumps(task | {"task_id": "wrong/0", "canonical_solution": "    return -x\n"}) + "\n")
    row = {"task_id": "t", "prompt": "def f(a):\n", "response": "    b = a\n    return b\n", "steps": [[0, 10, False], [10, 23, False]],
           "labels": [1, 1], "passed": True, "first_error": None}
    for name, bad in [("good", {}), ("string_steps", {"steps": ["    b = a\n", "    return b\n"]}),
                      ("steps_off_the_lines", {"steps": [[0, 23, False], [23, 23, False]]}), ("label_2", {"labels": [1, 2]}),
                      ("no_prompt", {"prompt": ...}), ("pair_steps", {"steps": [[0, 10], [10, 23]]})]:
        (d / f"{name}.jsonl").write_text(json.dumps({k: v for k, v in (row | bad).items() if v is not ...}) + "\n")
    (d / "not_json.jsonl").write_text("{oops\n")
    (d / "empty.jsonl").write_text("")
    (d / "a_file").write_text("keep me")
    return {k: str(v) for k, v in [("policy", policy), ("tmp", d)] + [(p.name.split(".")[0], p) for p in d.iterdir()]}


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA takes --device cuda")
STAGES = ["train_sft", "train_psgpo", "label_prm_data", "train_prm", "evaluate"]

BAD = [  # (script, argv with {input} names, what the one line says)
    # flags: their ranges, before anything loads or is written
    *[(s, ["--seed", "-1"], "--seed must be a whole number from 0 to 2147483647, not -1") for s in STAGES],
    *[pytest.param(s, ["--device", "cuda"], "--device cuda, but torch sees no CUDA GPU here", marks=NO_CUDA) for s in STAGES],
    *[(s, ["--out", "{a_file}"], "--out .*a_file: is a file, not a folder") for s in STAGES],
    ("train_psgpo", ["--out", "/proc/psgpo/run"], "--out /proc/psgpo/run: cannot be written: /proc refuses a new folder"),
    ("train_psgpo", ["--out", "{a_file}/run"], "--out .*a_file/run: cannot be made: .*a_file is a file"),
    ("train_psgpo", ["--timeout", "1e30"], "--timeout must be at most 86400, not 1e"),
    ("evaluate", ["--timeout", "1e30"], "--timeout must be at most 86400"),
    ("train_prm", ["--dist_timeout", "1e30"], "--dist_timeout must be at most 1440"),
    ("train_psgpo", ["--iterations", "-3"], "--iterations must be > 0, not -3"),
    ("train_psgpo", ["--batch_size", "0"], "--batch_size must be > 0, not 0"),
    ("train_psgpo", ["--temperature", "0"], "--temperature must be > 0, not 0.0"),
    ("train_psgpo", ["--gamma", "1.5"], "--gamma must be between 0 and 1, not 1.5"),
    ("train_psgpo", ["--gae_lambda", "nan"], "--gae_lambda must be between 0 and 1, not nan"),
    ("train_psgpo", ["--advantage", "group", "--batch_size", "6"], r"--batch_size \(6\) must be a multiple of --group_size x the ranks \(4\)"),
    ("train_psgpo", ["--iterations", "three"], "argument --iterations: invalid int value: 'three'"),
    ("train_psgpo", ["--value_init", "critic"], "--value_init must be prm or policy"),
    ("train_psgpo", ["--critic_warmup", "16"], r"--critic_warmup \(16\) must be below --iterations \(2\): the policy would never move"),
    ("train_psgpo", ["--fsdp", "true"], "--fsdp shards across ranks: run it under torchrun"),
    ("label_prm_data", ["--k", "0"], "--k must be > 0, not 0"),
    ("label_prm_data", ["--k_first", "30"], r"--k_first \(30\) must be at most --k \(20\)"),
    ("label_prm_data", ["--max_prompts", "0"], r"--max_prompts must be >= 1 or -1 \(all\), not 0"),
    ("label_prm_data", ["--samples", "-2"], "--n must be > 0, not -2"),
    ("label_prm_data", ["--select", "best"], "--select must be full or remove_hard or medium_only or revised_only, not 'best'"),
    ("train_prm", ["--epochs", "0"], "--epochs must be > 0, not 0"),
    ("train_prm", ["--holdout", "1.0"], "--holdout must be >= 0 and below 1, not 1.0"),
    ("train_prm", ["--labels", "lines"], "--labels must be process or outcome, not 'lines'"),
    ("evaluate", ["--max_new_tokens", "0"], "--max_new_tokens must be > 0, not 0"),
    ("evaluate", ["--n", "-1"], "--n must be >= 0, not -1"),
    ("evaluate", ["--length_edges", "50,a"], "--length_edges must be increasing whole numbers"),
    ("train_sft", ["--steps", "0"], "--steps must be > 0, not 0"),
    ("train_sft", ["--arch", "rnn"], "--arch must be llama or gpt2, not 'rnn'"),
    ("train_sft", ["--n_embd", "130"], r"--n_embd \(130\) must be a multiple of 2 x --n_head \(4\)"),
    ("train_sft", ["--arch", "gpt2", "--n_embd", "130"], r"--n_embd \(130\) must be a multiple of --n_head \(4\)"),
    # the models given: a PRM where a policy is needed and the reverse, cut weights, a missing chat template, ...
    ("train_psgpo", ["--policy", "{prm}"], r"--policy .*prm: GPT2ForTokenClassification \(a token-classification model .*\), where a causal LM \(a policy\) is needed"),
    ("label_prm_data", ["--policy", "{policy}", "{prm}", "--dataset", "{one}"], r"--policy .*prm: GPT2ForTokenClassification .* where a causal LM"),
    ("evaluate", ["--model", "{prm}"], r"prm: GPT2ForTokenClassification .* where a causal LM"),
    ("train_sft", ["--model", "{prm}"], r"--model .*prm: GPT2ForTokenClassification .* where a causal LM"),
    ("train_prm", ["--init", "{prm}"], r"--init .*prm: GPT2ForTokenClassification .* where a causal LM"),
    ("train_psgpo", ["--policy", "{policy}", "--prm", "{policy}", "--dataset", "{one}"], r"need a PRM: --prm .*: GPT2LMHeadModel \(a causal LM \(a policy\)\), where a token-classification model"),
    ("train_psgpo", ["--policy", "{policy}", "--prm", "{tmp}/missing", "--dataset", "{one}"], "need a PRM: --prm .*missing: no such model folder"),
    ("train_psgpo", ["--policy", "{policy}", "--prm", "{other-tok-prm}", "--dataset", "{one}"], "different tokenizers"),
    ("train_psgpo", ["--policy", "{cut}"], r"--policy .*cut: model.safetensors is not a whole safetensors file"),
    ("label_prm_data", ["--policy", "{cut}", "--dataset", "{one}"], r"--policy .*cut: model.safetensors is not a whole safetensors file"),
    ("evaluate", ["--model", "{cut}"], r"cut: model.safetensors is not a whole safetensors file"),
    ("train_psgpo", ["--policy", "{policy}", "--chat_template", "true"], "--policy .*: --chat_template true, but its tokenizer has no chat template"),
    ("label_prm_data", ["--policy", "{policy}", "--chat_template", "true", "--dataset", "{one}"], "has no chat template"),
    ("evaluate", ["--model", "{policy}", "--chat_template", "true"], "has no chat template"),
    ("train_prm", ["--init", "{policy}", "--chat_template", "true"], "--init .*: --chat_template true, but its tokenizer has no chat template"),
    ("evaluate", ["--model", "{tmp}/missing"], "no such model folder"),
    ("evaluate", ["--model", "{tmp}"], r"not a model folder \(no config.json\)"),
    # problem sets and labeled rows, checked as read: one line naming the file and the row
    ("train_sft", ["--dataset", "{dup}"], r"dup.jsonl:2: task_id 'a' again \(first at line 1\)"),
    ("train_psgpo", ["--policy", "{policy}", "--dataset", "{latin1}"], r"latin1.jsonl:1: not UTF-8 text \(byte 0xe9"),
    ("train_sft", ["--dataset", "{tmp}/nope.jsonl"], "nope.jsonl: no such file"),
    ("evaluate", ["--oracle", "--dataset", "nosuch"], "unknown problem set 'nosuch'"),
    ("train_prm", ["--init", "{policy}", "--data", "{string_steps}"], r'string_steps.jsonl:1: step 0 is "    b = a\\n", not a \[start, end, neutral\] triple'),
    ("train_prm", ["--init", "{policy}", "--data", "{pair_steps}"], r"pair_steps.jsonl:1: step 0 is \[0, 10\], not a \[start, end, neutral\] triple"),
    ("train_prm", ["--init", "{policy}", "--data", "{steps_off_the_lines}"], r"steps_off_the_lines.jsonl:1: its steps are not the lines of its response .* step 0 is \[0, 23\], its line \[0, 10\]"),
    ("train_prm", ["--init", "{policy}", "--data", "{label_2}"], r"label_2.jsonl:1: label 2 of step 1 is outside the labels' range \[-1, 1\]"),
    ("train_prm", ["--init", "{policy}", "--data", "{no_prompt}"], r"no_prompt.jsonl:1: missing field\(s\) prompt"),
    ("train_prm", ["--init", "{policy}", "--data", "{not_json}"], "not_json.jsonl:1: not valid JSON"),
    ("train_prm", ["--init", "{policy}", "--data", "{empty}"], "empty.jsonl: no rows"),
    ("train_prm", ["--init", "{policy}", "--data", "{good}", "--holdout", "0", "--max_len", "3"], r"--max_len 3 drops all 1 training rows \(the shortest is \d+ tokens\)"),
    # the judge's self-test names the cause
    ("evaluate", ["--oracle", "--dataset", "{wrong_reference}"], "task wrong/0's own reference solution fails its tests, judged failed"),
    # judge/add's reference can finish within the 0.1 ms (seen once under the suite's load): a demo task's is then named
    ("evaluate", ["--oracle", "--timeout", "0.0001"], r"self-test: (judge/add|demo/test/\d+)'s reference solution ran out of time \(no verdict within 0.0001s\): --timeout 0.0001 is too small for it"),
]


def state(path):
    """What is at `path`: None, a file's bytes, or a folder's {relative path: bytes} (its files)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return open(path, "rb").read()
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read() for d, _, fs in os.walk(path) for f in fs}


def stops(monkeypatch, script, argv):
    """Run `script`'s main() in-process with `argv` (a default --out under a fresh folder unless given); a model load
    fails the test. Returns the one line it stopped with."""
    def no_load(*a, **kw):
        raise AssertionError("a model loaded before the check")
    monkeypatch.setattr(sandbox, "load_model", no_load)
    monkeypatch.setattr(train_sft, "load_policy", no_load)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    with pytest.raises(SystemExit) as e:
        importlib.import_module(script).main()
    line = str(e.value)
    assert line.startswith(f"{script}.py: ") and "\n" not in line and e.value.code not in (0, None), line
    return line


@pytest.mark.parametrize("script, argv, message", BAD)
def test_bad_input_is_one_line_before_any_model_loads_and_writes_nothing(monkeypatch, tmp_path, inputs, script, argv, message):
    argv = [a.format(**inputs) for a in argv]
    out = argv[argv.index("--out") + 1] if "--out" in argv else str(tmp_path / "out")
    before = state(out)
    line = stops(monkeypatch, script, ["--out", out, *SMALL * (script == "train_psgpo"), *argv])
    assert re.search(message, line), line
    assert state(out) == before  # nothing created or changed


def test_the_real_command_line_prints_one_line_and_no_traceback(tmp_path):
    """A negative seed reached numpy's ValueError as a traceback; now the one line is all stderr holds, exit status 1."""
    r = subprocess.run([sys.executable, "train_psgpo.py", "--seed", "-1", "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, cwd=HERE)
    assert (r.returncode, r.stderr) == (1, "train_psgpo.py: --seed must be a whole number from 0 to 2147483647, not -1\n")
    assert not (tmp_path / "o").exists()


def test_check_flags_names_the_flag_and_what_it_takes(tmp_path):
    from types import SimpleNamespace as NS
    sandbox.check_flags(NS(a=1, b=0.0, c=0.5, d="x", e=0.0, s=0, t=5.0, x="cuda"), positive="a", nonnegative="b", fraction="c",
                        below_one="e", choices={"d": ("x", "y")}, seed="s", at_most={"t": 10}, device="x")  # a GPU command parses
    sandbox.check_here(NS(x="cpu", o=str(tmp_path / "new" / "run")), device="x", out="o")  # here: a GPU, a writable --out
    assert os.listdir(tmp_path) == []  # the write check leaves nothing behind
    for args, kw, message in [(NS(a=0), dict(positive="a"), "--a must be > 0, not 0"),
                              (NS(a=float("nan")), dict(positive="a"), "--a must be > 0, not nan"),
                              (NS(a=True), dict(positive="a"), "--a must be > 0, not True"),
                              (NS(b=-1), dict(nonnegative="b"), "--b must be >= 0, not -1"),
                              (NS(c=1.5), dict(fraction="c"), "--c must be between 0 and 1, not 1.5"),
                              (NS(e=1.0), dict(below_one="e"), "--e must be >= 0 and below 1, not 1.0"),
                              (NS(d="z"), dict(choices={"d": ("x", "y")}), "--d must be x or y, not 'z'"),
                              (NS(s=2**32), dict(seed="s"), "--s must be a whole number from 0 to 2147483647, not 4294967296"),
                              (NS(s=1.5), dict(seed="s"), "--s must be a whole number"),
                              (NS(t=11), dict(at_most={"t": 10}), "--t must be at most 10, not 11"),
                              (NS(x="gpu"), dict(device="x"), "--x must be cpu or cuda, not 'gpu'")]:
        with pytest.raises(ValueError, match=message):
            sandbox.check_flags(args, **kw)


@pytest.mark.parametrize("content, message", [
    ("{not json}\n", r"bad\.jsonl:1: not valid JSON"),
    ('{"task_id": "a", "prompt": "p"}\n', r"bad\.jsonl:1: missing or non-string field 'test'"),
    ('{"task_id": "a"}\n', r"bad\.jsonl:1: missing or non-string field 'prompt'"),
    ("[1, 2]\n", r"bad\.jsonl:1: expected a JSON object"),
    ("\n\n", r"bad\.jsonl: no rows"),
    ('{"task_id": "a", "prompt": "p", "io_tests": []}\n', r"'io_tests' must be a non-empty list"),
    ('{"task_id": "a", "prompt": "p", "io_tests": [{"input": "", "output": "1"}]}\n\n'
     '{"task_id": "a", "prompt": "q", "io_tests": [{"input": "", "output": "2"}]}\n', r"bad\.jsonl:3: task_id 'a' again \(first at line 1\)"),
    (b'{"task_id": "a", "prompt": "\xff"}\n', r"bad\.jsonl:1: not UTF-8 text \(byte 0xff at column 29\)"),
])
def test_a_bad_problem_file_names_the_file_and_line(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(sandbox.DataError, match=message) as e:
        sandbox.load_problems(str(f))
    assert "\n" not in str(e.value)
    (tmp_path / "bad.jsonl.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(sandbox.DataError, match=r"bad.jsonl.gz: cannot read"):
        sandbox.read_jsonl(str(tmp_path / "bad.jsonl.gz"))


# ------------------------------------------------------------------ output folders: used ones stop, a resume continues only the same run
def record(out, Args, argv):
    """A folder as a stage's run left it: args.json of these flags (parsed as the stage parses them)."""
    from transformers import HfArgumentParser
    args = HfArgumentParser(Args).parse_args_into_dataclasses(args=["--out", str(out), *argv])[0]
    os.makedirs(out, exist_ok=True)
    (out / "args.json").write_text(json.dumps(dataclasses.asdict(args)))
    return args


def test_a_used_ppo_folder_stops_and_a_resume_names_every_changed_flag(monkeypatch, tmp_path, inputs):
    out, flags = tmp_path / "run", ["--policy", inputs["policy"], "--dense_reward", "false", "--value_init", "policy", *SMALL]
    record(out, train_psgpo.Args, flags)
    (out / "log.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    before = state(out)
    line = stops(monkeypatch, "train_psgpo", ["--out", str(out), *flags])
    assert re.search(r"run already holds a run \(log.jsonl\): --resume true continues it", line), line
    changed = ["--batch_size", "8", "--lam_fail", "0.5", "--dense_reward", "true", "--prm", "oracle"]
    line = stops(monkeypatch, "train_psgpo", ["--out", str(out), *flags, *changed, "--iterations", "3", "--workers", "2", "--resume", "true"])
    assert re.search(r"holds a run with other flags: --prm runs/prm -> oracle; --dense_reward False -> True; --lam_fail 0.25 -> 0.5; "
                     r"--batch_size 4 -> 8 \(only --iterations, --save_every, --resume, .* may change\)", line), line
    assert state(out) == before
    # the same run with another --iterations goes on, as far as the resumed checkpoint's check (weights cut in half)
    shutil.copytree(inputs["cut"], out / "ckpt-0001")
    line = stops(monkeypatch, "train_psgpo", ["--out", str(out), *flags, "--iterations", "3", "--resume", "true"])
    assert re.search(r"--resume: .*ckpt-0001: model.safetensors is not a whole safetensors file", line), line


def test_a_start_that_failed_before_its_first_result_does_not_block_the_fixed_command(tmp_path):
    """args.json and an empty log.jsonl (and TensorBoard's empty events): no result there, the folder is the new run's."""
    out = tmp_path / "run"
    args = record(out, train_psgpo.Args, ["--lam_fail", "0.5"])
    (out / "log.jsonl").write_text("")
    (out / "events.out.tfevents.1.host").write_bytes(b"")
    fixed = record(tmp_path / "elsewhere", train_psgpo.Args, ["--lam_fail", "0.3"])
    assert sandbox.guard_out(dataclasses.replace(fixed, out=str(out))) is False
    (out / "log.jsonl").write_text(json.dumps({"iteration": 1}) + "\n")
    with pytest.raises(SystemExit, match="already holds a run"):
        sandbox.guard_out(dataclasses.replace(fixed, out=str(out)), resume=False)
    assert sandbox.guard_out(args, train_psgpo.RESUME_MAY_CHANGE, resume=True) is True


def test_labeling_resumes_only_rows_of_the_same_labeling(monkeypatch, tmp_path, inputs):
    """label_prm_data.py resumes rows.jsonl by design: another --dataset, --k or --policy list there stops it, naming
    each; a larger --max_prompts (the same seeded sample, extended) or another --select goes on."""
    out, flags = tmp_path / "labels", ["--policy", inputs["policy"], "--max_prompts", "2"]
    record(out, label_prm_data.Args, flags)
    (out / "rows.jsonl").write_text(json.dumps({"policy": inputs["policy"], "task_id": "demo/train/0", "sample": 0}) + "\n")
    before = state(out)
    line = stops(monkeypatch, "label_prm_data", ["--out", str(out), "--policy", inputs["policy"], inputs["cut"], "--dataset", "humaneval",
                                                 "--split", "test", "--k", "4"])
    assert re.search(rf"holds a run with other flags: --policy {inputs['policy']} -> {inputs['policy']} {inputs['cut']}; --dataset demo "
                     rf"-> humaneval; --split train -> test; --k 20 -> 4 \(only --max_prompts, .* may change\)", line), line
    assert state(out) == before
    again = record(tmp_path / "x", label_prm_data.Args, [*flags, "--max_prompts", "5", "--select", "full"])
    assert sandbox.guard_out(dataclasses.replace(again, out=str(out)), label_prm_data.RESUME_MAY_CHANGE) is True


@pytest.mark.parametrize("script, finished", [("evaluate", "by_length.png"), ("train_prm", "metrics.json"), ("train_sft", "summary.json")])
def test_a_finished_run_stops_and_one_cut_off_is_redone_only_by_the_same_command(monkeypatch, tmp_path, inputs, script, finished):
    """The stages that cannot continue a run: a finished one there always stops (evaluate.py replaced eval.json); one cut
    off before its end is redone from the start by the same command (run_demo.sh, ablation.py re-run it), and stops
    any other, naming the difference."""
    module, out = importlib.import_module(script), tmp_path / "run"
    args = record(out, module.Args, [])
    (out / "log.jsonl").write_text('{"step": 1}\n')
    assert sandbox.guard_out(args, module.REDO_MAY_CHANGE, finished=(finished,)) is True  # redone
    before = state(out)
    line = stops(monkeypatch, script, ["--out", str(out), "--seed", "2"])
    assert re.search(r"holds a run with other flags: --seed 1 -> 2", line), line
    (out / finished).write_text("{}")
    assert re.search(rf"run already holds a finished run \({finished}\): choose another --out", stops(monkeypatch, script, ["--out", str(out)]))
    assert state(out) == before | {finished: b"{}"}


def test_a_folder_of_something_else_stops(monkeypatch, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    line = stops(monkeypatch, "evaluate", ["--out", str(tmp_path)])
    assert re.search(r"holds notes.txt but no args.json of the run that wrote them", line), line


# ------------------------------------------------------------------ lines that name the real cause
def test_ctrl_c_while_labeling_is_one_line(monkeypatch, tmp_path, inputs):
    """Ctrl-C in label_prm_data.py printed a traceback; its rows are intact (written per chunk), and the line says so."""
    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(sandbox, "self_test", interrupted)
    monkeypatch.setattr(sys, "argv", ["label_prm_data.py", "--out", str(tmp_path / "o"), "--dataset", inputs["one"]])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(HERE, "label_prm_data.py"), run_name="__main__")
    assert str(e.value).startswith("label_prm_data.py: interrupted: every chunk labeled so far is in --out's rows files; the same command resumes")


def test_too_few_rows_blames_empty_responses_not_the_prefixes():
    """Labeling all-empty responses said "no completion of any prefix passed"; an empty response has no prefix to search."""
    def row(steps, correct=0):
        return {"passed": False, "steps": steps, "correct_steps": correct}
    empty, one, two = [], [[0, 5, False], [5, 9, True]], [[0, 5, False], [5, 9, False]]
    assert label_prm_data.too_few([row(empty)] * 3, [], "revised_only") == (
        "--select revised_only kept 0 of 3 labeled responses: 0 of 3 failing responses have a correct prefix; 3 have no prefix "
        "to search (3 without a code line, 0 with one: is the policy writing code? its stop strings, --max_new_tokens, --chat_template)")
    assert label_prm_data.too_few([row(empty), row(one), row(two), row(two, 1)], [], "revised_only").endswith(
        "1 of 4 failing responses have a correct prefix; 2 have no prefix to search (1 without a code line, 1 with one: is the policy "
        "writing code? its stop strings, --max_new_tokens, --chat_template); in 1 no completion of any prefix passed: the policy "
        "cannot recover from their first line")
