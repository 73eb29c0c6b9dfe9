"""README's commands run as pasted: every `python SCRIPT ...` / `torchrun ... SCRIPT ...` line of its bash
blocks, expanded by bash itself ($PPO, {a,b} braces), names flags that SCRIPT's Args dataclass has."""
import importlib.util
import os
import re
import subprocess

import pytest
from transformers import HfArgumentParser

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    """[(script, [args])] of every python/torchrun command in README's bash blocks, as bash expands them."""
    text = open(os.path.join(HERE, "README.md")).read()
    stub = 'python() { printf "%s\\x1f" "$@"; printf "\\x1e"; }; torchrun() { python "$@"; }\n'
    out, assigned = [], []  # a reader pastes the blocks in order into one shell: earlier blocks' variables hold
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):  # only its commands and assignments are run, stubbed
        assign = r'[A-Z_]+=("[^"]*"|\S+)'  # an assignment alone (not `VAR=1 command`, which would run the command)
        assigned += [l for l in block.splitlines() if re.fullmatch(f"{assign}(; {assign})*", l)]
        lines = assigned + [l for l in block.splitlines() if re.match(r"(python|torchrun) ", l)]
        expanded = subprocess.run(["bash", "-c", stub + "\n".join(lines)], capture_output=True, text=True, cwd=HERE,
                                  check=True, timeout=60).stdout
        for cmd in filter(None, expanded.split("\x1e")):
            argv = cmd.split("\x1f")[:-1]
            script = next((i for i, a in enumerate(argv) if a.endswith(".py")), None)
            if script is not None:
                out.append((argv[script], argv[script + 1:]))
    return out


COMMANDS = readme_commands()


def test_readme_names_every_stage():
    assert {s for s, _ in COMMANDS} >= {"train_sft.py", "train_psgpo.py", "label_prm_data.py", "train_prm.py", "evaluate.py",
                                        "experiments/ablation.py"}


@pytest.mark.parametrize("script, argv", COMMANDS, ids=[f"{i}-{s}" for i, (s, _) in enumerate(COMMANDS)])
def test_readme_command_parses(script, argv, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU commands, parsed on a machine without one
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    spec = importlib.util.spec_from_file_location(os.path.basename(script)[:-3], os.path.join(HERE, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (args,) = HfArgumentParser(module.Args).parse_args_into_dataclasses(args=argv)  # unknown flags raise
    for flag in ("policy", "model"):  # brace expansion gave distinct checkpoints, e.g. ckpt-{0025,...,0100}
        value = getattr(args, flag, None)
        if isinstance(value, list):
            assert len(set(value)) == len(value) and not any(re.search(r"ckpt-(?!\d{4}$)", v) for v in value), value
