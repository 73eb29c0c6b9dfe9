#!/usr/bin/env bash
# On a GPU machine: one PSGPO iteration at Qwen2.5-Coder-0.5B's shape (benchmarks/bench_psgpo.py), every
# stage once on CUDA in bf16 at tiny size (the demo's policy, a few steps each; PPO under torchrun, so
# DDP's NCCL path runs), then the 1.5B shape, then both shapes again under torchrun with --fsdp true on
# NPROC GPUs (default: all). README's GPU numbers come from this script.
#   bash benchmarks/gpu_check.sh [RUNS]      (default runs/gpu_check; python3 must have torch with CUDA)
#   DEVICE=cpu SHAPES=tiny bash benchmarks/gpu_check.sh /tmp/check     # the same steps on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
SHAPES=${SHAPES:-0.5B 1.5B}
NPROC=${NPROC:-$( [ "$DEVICE" = cuda ] && python3 -c "import torch; print(torch.cuda.device_count())" || echo 2)}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
G="--device $DEVICE"
[ "$DEVICE" = cuda ] && G="$G --bf16 true"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
ok=0
step() { printf '\n=== %s\n' "$*"; timeout 400 "$@" || { echo "FAILED ($?): $*"; ok=1; }; }
bench() { step python3 benchmarks/bench_psgpo.py --shape "$1" --device $DEVICE --out $R/bench_$1; }
bench ${SHAPES%% *}
step python3 train_sft.py $G --steps 300 --out $R/sft
step python3 label_prm_data.py $G --policy $R/sft --max_prompts 16 --k 4 --select full --out $R/prm_data
step python3 train_prm.py $G --data $R/prm_data --init $R/sft --epochs 1 --out $R/prm
step python3 -m torch.distributed.run --nproc_per_node 1 train_psgpo.py $G --policy $R/sft --prm $R/prm --iterations 2 --batch_size 32 --out $R/psgpo
step python3 evaluate.py $G --model $R/sft $R/psgpo/ckpt-0002 --max_problems 64 --n 2 --out $R/eval
for shape in ${SHAPES#* }; do
  [ "$shape" = "${SHAPES%% *}" ] || bench $shape
done
for shape in $SHAPES; do
  step python3 benchmarks/bench_psgpo.py --shape $shape --device $DEVICE --nproc $NPROC --fsdp true --out $R/bench_${shape}_fsdp
done
exit $ok
