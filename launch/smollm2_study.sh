#!/usr/bin/env bash
# The SmolLM2-135M-Instruct study: base vs plain OPD vs CaOPD (demo teacher) vs CaOPD (correct-solution teacher)
# on the arithmetic task (configs/smollm2_arith.py: levels 1-2 for training and the held-out split, level 3 as the
# out-of-distribution split), each model evaluated greedy and with K=8 samples at T=1, then compared.
#   bash launch/smollm2_study.sh                        # everything, into runs/smollm2-study (one GPU: --mesh=1)
#   STEPS=100 LIMIT=200 OUT=runs/s2 bash launch/smollm2_study.sh --config.optim.lr=2e-5   # extra train overrides
#   PARTS="train" / PARTS="eval report" bash launch/smollm2_study.sh                      # only some parts
# DRY_RUN=1 prints the commands. Same seed, budget and sampler settings for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/smollm2-study}
STEPS=${STEPS:-200}
LIMIT=${LIMIT:-300}
PARTS=${PARTS:-"train eval report"}
CFG=configs/smollm2_arith.py
GGUF=${GGUF:-$($PY -c "import importlib.util as u; s = u.spec_from_file_location('c', '$CFG'); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.smollm2_gguf())")}

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "$*"; else echo "[study] $*" >&2; "$@"; fi
}

if [[ " $PARTS " == *" train "* ]]; then
  train() { local name=$1; shift; run "$PY" -m caopd_jax.train --config=$CFG --config.train.steps="$STEPS" \
      --config.train.output_dir="$OUT/$name" --config.log.progress=false "$@"; }
  train opd --config.distill.calibrate=False "$@"
  train caopd_demo "$@"
  train caopd_solution --config.distill.teacher_mode=correct_solution "$@"
fi

if [[ " $PARTS " == *" eval "* ]]; then
  for model in base opd caopd_demo caopd_solution; do
    path=$OUT/$model
    [ "$model" = base ] && path=$GGUF
    for split in heldout:1,2 ood:3; do
      name=${split%%:*}
      common=(--model "$path" --prompts $CFG --dataset arithmetic --difficulty "${split#*:}" --limit "$LIMIT"
              --max_new_tokens 128 --no_progress)
      run "$PY" -m caopd_jax.eval "${common[@]}" --greedy --output "$OUT/eval/$name-greedy/$model"
      run "$PY" -m caopd_jax.eval "${common[@]}" --num_samples 8 --temperature 1.0 --output "$OUT/eval/$name-k8/$model"
    done
  done
fi

if [[ " $PARTS " == *" report "* ]]; then
  for table in heldout-greedy heldout-k8 ood-greedy ood-k8; do
    run "$PY" -m caopd_jax.eval.compare "$OUT/eval/$table/base" "$OUT/eval/$table/opd" "$OUT/eval/$table/caopd_demo" \
      "$OUT/eval/$table/caopd_solution" --names base,OPD,CaOPD-demo,CaOPD-solution --output "$OUT/reliability-$table.png"
  done
  run "$PY" -m caopd_jax.eval.curves "$OUT/opd" "$OUT/caopd_demo" "$OUT/caopd_solution" \
    --names OPD,CaOPD-demo,CaOPD-solution --output "$OUT/curves.png"
fi
