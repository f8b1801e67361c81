#!/usr/bin/env bash
# The SmolLM2-135M-Instruct study: base vs plain OPD vs CaOPD (demo teacher) vs CaOPD (correct-solution teacher)
# on the arithmetic task (configs/smollm2_arith.py: levels 1-2 for training and the held-out split, level 3 as the
# out-of-distribution split), each model evaluated greedy and with K=8 samples at T=1, then compared.
#   bash launch/smollm2_study.sh                        # everything, into runs/smollm2-study (one GPU: --mesh=1)
#   STEPS=100 LIMIT=200 OUT=runs/s2 bash launch/smollm2_study.sh --config.optim.lr=2e-5   # extra train overrides
#   PARTS="train" / PARTS="eval report" bash launch/smollm2_study.sh                      # only some parts
#   GPUS="0 1 2 3" bash launch/smollm2_study.sh    # one run (training, then its evaluations) per GPU, side by side;
#                                                  # logs in $OUT/logs/workerI-gpuN.log; a failure stops the
#                                                  # rest of that GPU's queue; Ctrl-C stops every worker
#   MODELS="opd caopd_demo" PARALLEL_EVALS=1 ...    # only these models; a model's four evaluations side by side
#                                                  # (each with EVAL_MEM_FRACTION of the GPU, default 0.2)
# DRY_RUN=1 prints the commands. Same seed, budget and sampler settings for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/smollm2-study}
STEPS=${STEPS:-200}
LIMIT=${LIMIT:-300}
PARTS=${PARTS:-"train eval report"}
GPUS=${GPUS:-}
MODELS=${MODELS:-"base opd caopd_demo caopd_solution"}
CFG=configs/smollm2_arith.py
[ "${DRY_RUN:-0}" = 1 ] || mkdir -p "$OUT/logs"
GGUF=${GGUF:-$($PY -c "from caopd_jax import weights; print(weights.smollm2_gguf())")}

run() {  # print the command (DRY_RUN=1) or run it and report its wall-clock time
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "$*"; return; fi
  echo "[study] $*" >&2
  local start=$SECONDS
  "$@"
  echo "[study] $(( SECONDS - start )) s: $*" >&2
}

train() {  # name, extra overrides...
  local name=$1; shift
  run "$PY" -m caopd_jax.train --config=$CFG --config.model.path="$GGUF" --config.train.steps="$STEPS" \
    --config.train.output_dir="$OUT/$name" \
    --config.log.progress=false "$@"
}

side_by_side() {  # commands in a "\n"-separated list: run together (PARALLEL_EVALS=1) or one after another
  local pids=() failed=0 line
  while IFS= read -r line; do
    [ -z "$line" ] && continue
    eval "set -- $line"
    if [ "${PARALLEL_EVALS:-0}" = 1 ] && [ "${DRY_RUN:-0}" != 1 ]; then
      XLA_PYTHON_CLIENT_MEM_FRACTION=${EVAL_MEM_FRACTION:-0.2} run "$@" & pids+=($!)
    else
      run "$@"
    fi
  done <<< "$1"
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return $failed
}

evaluate() {  # name: greedy and K=8 on the held-out and the OOD split
  local model=$1 path=$OUT/$1 commands=""
  [ "$model" = base ] && path=$GGUF
  for split in heldout:1,2 ood:3; do
    local name=${split%%:*}
    local common
    common=$(printf '%q ' "$PY" -m caopd_jax.eval --model "$path" --prompts $CFG --dataset arithmetic \
             --difficulty "${split#*:}" --limit "$LIMIT" --max_new_tokens 128 --no_progress)
    commands+="$common --greedy --output $(printf %q "$OUT/eval/$name-greedy/$model")"$'\n'
    commands+="$common --num_samples 8 --temperature 1.0 --output $(printf %q "$OUT/eval/$name-k8/$model")"$'\n'
  done
  side_by_side "$commands"
}

job() {  # name: train it (unless base), then evaluate it
  local name=$1 overrides=()
  case $name in
    opd) overrides=(--config.distill.calibrate=False) ;;
    caopd_solution) overrides=(--config.distill.teacher_mode=correct_solution) ;;
  esac
  if [[ " $PARTS " == *" train "* && $name != base ]]; then train "$name" "${overrides[@]}" "${EXTRA[@]}"; fi
  if [[ " $PARTS " == *" eval "* ]]; then evaluate "$name"; fi
}

EXTRA=("$@")
read -r -a models <<< "$MODELS"
for m in "${models[@]}"; do
  case $m in base|opd|caopd_demo|caopd_solution) ;; *) echo "MODELS: unknown model '$m' (base, opd, caopd_demo, caopd_solution)" >&2; exit 2 ;; esac
done
pids=()
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill -TERM "$1" 2>/dev/null || true; }
trap 'for pid in "${pids[@]}"; do kill_tree "$pid"; done; echo "[study] interrupted" >&2; exit 130' INT TERM
if [ -z "$GPUS" ]; then
  for m in "${models[@]}"; do job "$m"; done
else  # model i on GPU i mod |GPUS|, the models of one GPU in sequence, the GPUs side by side
  read -r -a gpu_list <<< "$GPUS"
  worker() { for i in "${!models[@]}"; do if (( i % ${#gpu_list[@]} == $1 )); then job "${models[$i]}"; fi; done; }
  for g in "${!gpu_list[@]}"; do
    if [ "${DRY_RUN:-0}" = 1 ]; then
      echo "# GPU ${gpu_list[$g]}:"; worker "$g"
    else
      (export CUDA_VISIBLE_DEVICES=${gpu_list[$g]}; worker "$g") > "$OUT/logs/worker$g-gpu${gpu_list[$g]}.log" 2>&1 &
      pids+=($!)
    fi
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ $failed = 1 ]; then echo "[study] a job failed; see $OUT/logs/worker*.log" >&2; exit 1; fi
fi

if [[ " $PARTS " == *" report "* ]]; then
  names=(base opd caopd_demo caopd_solution)
  labels=(base OPD CaOPD-demo CaOPD-solution)
  for table in heldout-greedy heldout-k8 ood-greedy ood-k8; do
    folders=() shown=()
    for i in "${!names[@]}"; do
      if [ "${DRY_RUN:-0}" = 1 ] || [ -d "$OUT/eval/$table/${names[$i]}" ]; then
        folders+=("$OUT/eval/$table/${names[$i]}"); shown+=("${labels[$i]}")
      fi
    done
    [ ${#folders[@]} -gt 0 ] || continue
    run "$PY" -m caopd_jax.eval.compare "${folders[@]}" --names "$(IFS=,; echo "${shown[*]}")" \
      --output "$OUT/reliability-$table.png"
  done
  runs=() shown=()
  for i in 1 2 3; do
    if [ "${DRY_RUN:-0}" = 1 ] || [ -f "$OUT/${names[$i]}/metrics.jsonl" ]; then
      runs+=("$OUT/${names[$i]}"); shown+=("${labels[$i]}")
    fi
  done
  if [ ${#runs[@]} -gt 0 ]; then
    run "$PY" -m caopd_jax.eval.curves "${runs[@]}" --names "$(IFS=,; echo "${shown[*]}")" --output "$OUT/curves.png"
  fi
fi
