#!/usr/bin/env bash
# PRM held-out quality by data selection (paper Table 2): the same labeled responses, re-selected by
# label_prm_data.py (a re-run resumes: nothing is sampled again) and each used to train a PRM with the
# same held-out prompts. Usage: bash benchmarks/prm_selection.sh [RUNS] [train_prm.py flags...]
#   RUNS: a run_demo.sh folder with prm_data/ (default runs); results in RUNS/prm_selection/
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs}; shift || true
flags=("$@")  # passed to train_prm.py
export PATH="$PWD/.venv/bin:$PATH"
policies=$(python -c "import json,sys; print(' '.join(dict.fromkeys(json.loads(l)['policy'] for l in open(sys.argv[1]))))" $R/prm_data/rows.jsonl)
prompts=$(python -c "import json,sys; print(len({json.loads(l)['task_id'] for l in open(sys.argv[1])}))" $R/prm_data/rows.jsonl)
echo "| --select | --max_passing | training rows | step AUC | step accuracy | first-error accuracy | last-line-vs-verdict AUC |"
echo "|---|---|---|---|---|---|---|"
for cfg in "full -1" "remove_hard -1" "medium_only -1" "revised_only -1" "revised_only 0" "revised_only 1" "revised_only 2"; do
  read -r select passing <<< "$cfg"
  d=$R/prm_selection/${select}_$passing; mkdir -p $d; cp $R/prm_data/rows.jsonl $d/
  python label_prm_data.py --out $d --select $select --max_passing $passing --max_prompts $prompts --policy $policies > $d/label.log 2>&1
  python train_prm.py --data $d --init $R/sft --out $d/prm "${flags[@]}" > $d/train_prm.log 2>&1
  python -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"| $select | $passing | {m['train_rows']} | {m['step_auc']:.3f} | {m['step_accuracy']:.3f} | {m['first_error_accuracy']:.3f} | {m['last_step_verdict_auc']:.3f} |\")" $d/prm/metrics.json
done
