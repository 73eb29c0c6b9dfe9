#!/usr/bin/env bash
# On a GPU machine: what README's real-scale section rests on, on the GPUs present (one is enough).
#   1. one PSGPO iteration at Qwen2.5-Coder-0.5B's shape in one process (benchmarks/bench_psgpo.py)
#   2. every stage once on CUDA in bf16 at the demo's size (PPO under torchrun, so the NCCL path runs)
#   3. README's 7B flags at the demo's size: train_psgpo.py --fsdp true --bf16 true --gradient_checkpointing
#      on NPROC GPUs, stopped after one iteration and resumed (its log must match an uninterrupted run's)
#   4. the sharded load: peak GPU memory per rank while the four models load, the old way and
#      sandbox.load_model's (benchmarks/sharded_load.py)
#   5. the other shapes, then every shape under torchrun with FSDP2 on NPROC GPUs
# README's GPU numbers come from this script. Its full run took ~20 minutes on one H200 (2026-11-25); QUICK=1 runs
# 1-3 on one GPU at small sizes: one 0.5B iteration, every stage, the FSDP2 + bf16 resume; it is meant to fit in ~10
# minutes but has not yet run on a GPU (no GPU since; on the CPU at SHAPES=tiny it runs). What QUICK=1 does not
# check: traffic between ranks (one GPU), the sharded load (4), the 1.5B and 7B shapes (5).
# PROBE=7B: only the 7B memory probe, before a multi-hour run: one worst-case PSGPO iteration (random weights: every
#   response runs to all 512 tokens) of README's 7B flags with FSDP2 on NPROC GPUs (8: 64 prompts and minibatches of 8
#   per GPU), its peak GPU memory beside the ~50 GiB per GPU benchmarks/memory_guide.py computes; ~10 minutes (building
#   the random 7B model on the CPU is part of it).
#   bash checks/gpu_check.sh [RUNS]      (default runs/gpu_check; python3 must have torch with CUDA)
#   QUICK=1 bash checks/gpu_check.sh                     # one GPU, steps 1-3 at small sizes
#   NPROC=1 SHAPES="0.5B" bash checks/gpu_check.sh      # one GPU, the smallest shape
#   PROBE=7B bash checks/gpu_check.sh                        # 8 GPUs: one worst-case 7B iteration's memory
#   DEVICE=cpu SHAPES=tiny bash checks/gpu_check.sh /tmp/check     # the same steps on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
SHAPES=${SHAPES:-$( [ "$QUICK" = 1 ] && echo 0.5B || echo 0.5B 1.5B)}
NPROC=${NPROC:-$( [ "$QUICK" = 1 ] && echo 1 || { [ "$DEVICE" = cuda ] && python3 -c "import torch; print(torch.cuda.device_count())" || echo 2; })}
BENCH=$( [ "$QUICK" = 1 ] && echo "--iterations 2" )    # QUICK: the first iteration warms up, the second is timed
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
G="--device $DEVICE"
[ "$DEVICE" = cuda ] && G="$G --bf16 true"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
ok=0
step() { printf '\n=== %s\n' "$*"; timeout 500 "$@" || { echo "FAILED ($?): $*"; ok=1; }; }
TR="python3 -m torch.distributed.run --nproc_per_node $NPROC"
if [ "${PROBE:-}" = 7B ]; then
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # as README's 7B block
  step python3 benchmarks/bench_psgpo.py --shape 7B --device $DEVICE --nproc $NPROC --fsdp true --iterations 1 \
    --batch_size 64 --minibatch_size 8 --max_new_tokens 512 --out $R/probe_7B
  python3 -c "import json; r = json.load(open('$R/probe_7B/bench.json')); print('7B probe: peak', r.get('memory/peak_gib'), 'GiB per GPU (computed: ~50), an iteration', round(r['seconds_per_iteration']), 's')"
  exit $ok
fi
step python3 benchmarks/bench_psgpo.py --shape ${SHAPES%% *} --device $DEVICE $BENCH --out $R/bench_${SHAPES%% *}
step python3 train_sft.py $G --steps 300 --out $R/sft
step python3 label_prm_data.py $G --policy $R/sft --max_prompts 16 --k 4 --select full --out $R/prm_data
step python3 train_prm.py $G --data $R/prm_data --init $R/sft --epochs 1 --out $R/prm
step $TR train_psgpo.py $G --policy $R/sft --prm $R/prm --iterations 2 --batch_size 32 --out $R/psgpo
step python3 evaluate.py $G --model $R/sft $R/psgpo/ckpt-0002 --max_problems 64 --n 2 --out $R/eval
F="--fsdp true --gradient_checkpointing true --iterations 2 --save_every 1 --batch_size 32 --policy $R/sft --prm $R/prm $G"
step $TR train_psgpo.py $F --out $R/fsdp_whole
step $TR train_psgpo.py $F --iterations 1 --out $R/fsdp_resumed
step $TR train_psgpo.py $F --resume true --out $R/fsdp_resumed
step python3 -c "import json, sys; a, b = ([{k: v for k, v in json.loads(l).items() if not k.startswith(('time/', 'memory/', 'charts/sampler_gap'))} for l in open(f'$R/{d}/log.jsonl')] for d in ('fsdp_whole', 'fsdp_resumed')); print('FSDP2 + bf16 resume matches:', a == b); sys.exit(a != b)"
[ "$QUICK" = 1 ] && exit $ok
step python3 benchmarks/sharded_load.py --device $DEVICE --nproc $NPROC --out $R/sharded_load
for shape in ${SHAPES#* }; do
  [ "$shape" = "${SHAPES%% *}" ] || step python3 benchmarks/bench_psgpo.py --shape $shape --device $DEVICE --out $R/bench_$shape
done
for shape in $SHAPES; do
  step python3 benchmarks/bench_psgpo.py --shape $shape --device $DEVICE --nproc $NPROC --fsdp true --out $R/bench_${shape}_fsdp
done
exit $ok
