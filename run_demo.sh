#!/usr/bin/env bash
# The whole psgpo pipeline on the built-in demo tasks, in the paper's order, on the CPU:
#   SFT policy -> sparse RL baseline (saving checkpoints) -> PRM labels from 4 baseline checkpoints
#   -> PRM -> PSGPO from the SFT policy (dense reward + value init) -> evaluate all three.
# Every script's defaults are the demo's settings, so each step is the plain command a user would type.
# The steps are numbered 0-5 in the paper's order, as every script's docstring numbers them (README).
# Step 0 starts from the shipped SFT policy, checkpoints/demo-sft (train_sft.py's output with its defaults,
# sha256-checked), as a user starts from a pretrained model: the same starting point on every machine.
# SFT=train trains it here instead (8-24 min on 2 CPU cores). A re-run skips the steps whose outputs are
# complete (and a PPO run that was cut off resumes). RUNS=dir puts everything elsewhere; ITERS=N PPO iterations.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f .venv/.installed ]; then  # a fresh machine: make the venv first
  python3 -m venv .venv
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -r requirements.txt
  touch .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
R=${RUNS:-runs}
ITERS=${ITERS:-16}                                    # PPO iterations per run
PPO="--iterations $ITERS --save_every $((ITERS / 4))" # 4 evenly spaced baseline checkpoints for labeling
last() { printf '%s/ckpt-%04d' "$1" "$ITERS"; }
step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

step "0. SFT: the warm-up policy"
if [ "${SFT:-shipped}" = train ]; then
  SFT=$R/sft
  [ -f $SFT/model.safetensors ] || python train_sft.py --out $SFT
else
  SFT=checkpoints/demo-sft
  (cd $SFT && sha256sum -c --quiet SHA256SUMS)
fi

step "1. RL baseline: PPO with the unit-test reward only"
[ -d "$(last $R/baseline)" ] || python train_psgpo.py --policy $SFT --dense_reward false --value_init policy $PPO --resume true --out $R/baseline

step "2. PRM data: binary search from 4 checkpoints of the baseline run"
[ -f $R/prm_data/summary.json ] || python label_prm_data.py --out $R/prm_data --policy \
  $(for i in 1 2 3 4; do printf '%s/ckpt-%04d ' $R/baseline $((i * ITERS / 4)); done)

step "3. The PRM"
[ -f $R/prm/metrics.json ] || python train_prm.py --data $R/prm_data --init $SFT --out $R/prm

step "4. PSGPO: PPO from the SFT policy with the PRM as dense reward and value init"
[ -d "$(last $R/psgpo)" ] || python train_psgpo.py --policy $SFT --prm $R/prm $PPO --resume true --out $R/psgpo

step "5. Evaluate SFT, the baseline and PSGPO on the held-out demo tasks"
[ -f $R/eval/by_length.png ] || python evaluate.py --model $SFT "$(last $R/baseline)" "$(last $R/psgpo)" --n 4 --out $R/eval
step "done"
echo "plots: $R/eval/bestofk.png $R/eval/by_length.png"
