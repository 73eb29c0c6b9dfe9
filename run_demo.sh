#!/usr/bin/env bash
# The whole psgpo pipeline on the built-in demo tasks, in the paper's order, on the CPU:
#   SFT policy -> sparse RL baseline (saving checkpoints) -> PRM labels from 4 baseline checkpoints
#   -> PRM -> PSGPO from the SFT policy (dense reward + value init) -> evaluate all three.
# Stage 0 starts from the shipped SFT policy, checkpoints/demo-sft (made by train_sft.py, README gives the
# command and its sha256), as a user starts from a pretrained model: the same starting point on every
# machine. SFT=train trains it here instead (8-24 min on 2 CPU cores).
# Each stage is the plain command a user would type; a re-run skips the stages whose outputs are
# complete (and a PPO run that was cut off resumes). RUNS=dir puts everything elsewhere.
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
ITERS=${ITERS:-8}                           # PPO iterations per run
EVERY=$((ITERS / 4))                        # 4 evenly spaced baseline checkpoints for labeling
PPO="--kl_coef 0 --kl_loss_coef 0.25 --batch_size 64 --warmup 20 --iterations $ITERS --save_every $EVERY --resume true"
last() { printf '%s/ckpt-%04d' "$1" "$ITERS"; }
stage() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

stage "0. SFT: the warm-up policy"
if [ ! -f $R/sft/model.safetensors ]; then
  if [ "${SFT:-shipped}" = train ]; then
    python train_sft.py --out $R/sft
  else
    (cd checkpoints/demo-sft && sha256sum -c --quiet SHA256SUMS)
    mkdir -p $R && cp -r checkpoints/demo-sft $R/sft
  fi
fi

stage "1. RL baseline: PPO with the unit-test reward only"
[ -d "$(last $R/baseline)" ] || python train_psgpo.py --policy $R/sft --dense_reward false --value_init policy --out $R/baseline $PPO

stage "2. PRM data: binary search from 4 checkpoints of the baseline run"
[ -f $R/prm_data/summary.json ] || python label_prm_data.py --out $R/prm_data --policy \
  $(for i in 1 2 3 4; do printf '%s/ckpt-%04d ' $R/baseline $((i * EVERY)); done)

stage "3. The PRM"
[ -f $R/prm/metrics.json ] || python train_prm.py --data $R/prm_data --init $R/sft --out $R/prm

stage "4. PSGPO: PPO from the SFT policy with the PRM as dense reward and value init"
[ -d "$(last $R/psgpo)" ] || python train_psgpo.py --policy $R/sft --prm $R/prm --dense_reward true --value_init prm --out $R/psgpo $PPO

stage "5. Evaluate SFT, the baseline and PSGPO on the held-out demo tasks"
[ -f $R/eval/by_length.png ] || python evaluate.py --model $R/sft "$(last $R/baseline)" "$(last $R/psgpo)" --n 4 --out $R/eval
stage "done"
echo "plots: $R/eval/bestofk.png $R/eval/by_length.png"
