#!/usr/bin/env bash
# PRM quality on an independent labeled set (README, stage 2): the data selections of paper Table 2,
# then what the PRM can learn at all from exactly labeled flawed references (benchmarks/prm_capacity.py),
# and which first mistakes the revised-only PRM and the 3000-prompt one catch (benchmarks/prm_first_errors.py).
#   bash benchmarks/prm_quality.sh [RUNS] [train_prm.py flags...]
# RUNS: a run_demo.sh folder (default runs) with sft/, baseline/ and prm_data/. The eval set, 200 other
# prompts with one response from each labeling checkpoint, is labeled once into RUNS/prm_eval; every PRM
# trains on all its prompts (--holdout 0) and is measured there. Results: RUNS/prm_quality/.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs}; shift || true
flags=("$@")  # passed to train_prm.py
export PATH="$PWD/.venv/bin:$PATH" TQDM_DISABLE=1
Q=$R/prm_quality
policies=$(python -c "import json,sys; print(' '.join(dict.fromkeys(json.loads(l)['policy'] for l in open(sys.argv[1]))))" $R/prm_data/rows.jsonl)
prompts=$(python -c "import json,sys; print(len({json.loads(l)['task_id'] for l in open(sys.argv[1])}))" $R/prm_data/rows.jsonl)
mkdir -p $Q
[ -f $R/prm_eval/summary.json ] || python label_prm_data.py --policy $policies --max_prompts 200 --n 1 --seed 7 --select full --out $R/prm_eval > $Q/prm_eval.log 2>&1
train() {  # NAME DATA: a PRM on DATA, one table row from its metrics on the eval set
  python train_prm.py --data $2 --init $R/sft --out $Q/$1/prm --holdout 0 --eval $R/prm_eval "${flags[@]}" > $Q/$1/train_prm.log 2>&1
  python -c "import json,sys; m=json.load(open(sys.argv[1])); print(f\"| {sys.argv[2]} | {m['train_rows']} | {len({json.loads(l)['prompt'] for l in open(sys.argv[3])})} | {m['eval/step_auc']:.3f} | {m['eval/step_accuracy']:.3f} | {m['eval/first_error_accuracy']:.3f} | {m['eval/last_step_verdict_auc']:.3f} |\")" $Q/$1/prm/metrics.json "$1" $2
}
echo "eval set: $(python -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['responses'], 'responses,', s['prompts'], 'prompts,', round(100 * s['share_passing'], 1), '% passing')" $R/prm_eval/summary.json)"
echo "| training data | rows | prompts | step AUC | step accuracy | first-error accuracy | last-line-vs-verdict AUC |"
echo "|---|---|---|---|---|---|---|"
for cfg in "full -1" "remove_hard -1" "medium_only -1" "revised_only -1" "revised_only 0"; do
  read -r select passing <<< "$cfg"
  name=$select; [ "$passing" = -1 ] || name=${select}_max_passing_$passing
  d=$Q/$name; mkdir -p $d; cp $R/prm_data/rows.jsonl $d/
  python label_prm_data.py --out $d --select $select --max_passing $passing --max_prompts $prompts --policy $policies > $d/label.log 2>&1
  train $name $d/labels.jsonl
done
for n in 600 3000; do  # not the method: exact labels on many prompts, the PRM's ceiling here
  mkdir -p $Q/capacity_$n
  python benchmarks/prm_capacity.py --n $n --exclude $R/prm_eval/rows.jsonl --out $Q/capacity_$n/labels.jsonl > /dev/null
  train capacity_$n $Q/capacity_$n/labels.jsonl
done
echo; echo "which first mistakes the PRMs catch (benchmarks/prm_first_errors.py, on the eval set):"
for m in revised_only capacity_3000; do
  python benchmarks/prm_first_errors.py --prm $Q/$m/prm --rows $R/prm_eval/rows.jsonl --exclude $Q/$m/labels.jsonl
done
