#!/usr/bin/env bash
# The SmolLM2-135M-Instruct study: base vs plain OPD vs CaOPD (demo teacher) vs CaOPD (correct-solution teacher)
# on the arithmetic task (configs/smollm2_arith.py: levels 1-2 for training and the held-out split, level 3 as the
# out-of-distribution split), each model evaluated greedy and with K=8 samples at T=1 (`--protocol strict`), then
# compared.
#   bash launch/smollm2_study.sh                        # everything, into runs/smollm2-study (one GPU: --mesh=1)
#   STEPS=100 LIMIT=200 OUT=runs/s2 bash launch/smollm2_study.sh --config.optim.lr=2e-5   # extra train overrides
#   PARTS="train" / PARTS="eval report" bash launch/smollm2_study.sh                      # only some parts
#   SEEDS="42 1 2" ...     # every model once per seed (config.seed and the evaluations' --seed), into $OUT/seedS/;
#                          # the report adds tables over the seeds (eval.compare: mean +- 95% t-interval) and
#                          # accuracy vs calibration with those intervals (eval.pareto), in $OUT
#   CONTINUAL=1 ...        # then continue each trained model on task B (level 3, STEPS_B steps, a fresh optimizer
#                          # and schedule) into $OUT/<model>_b and evaluate it on both tasks (held-out = task A)
#   GPUS="0 1 2 3" bash launch/smollm2_study.sh    # one run (training, then its evaluations) per GPU, side by side;
#                                                  # "0 0 0" runs three on GPU 0; logs in $OUT/logs/workerI-gpuN.log;
#                                                  # a failure stops the rest of that worker's queue; Ctrl-C stops all
#                                                  # (many runs on one GPU: XLA_FLAGS=--xla_gpu_enable_triton_gemm=false
#                                                  # keeps 9 side by side from compiling for minutes: RESULTS.md)
#   MODELS="opd caopd_demo" PARALLEL_EVALS=1 ...    # only these models; a model's four evaluations side by side
#                                                  # (each with EVAL_MEM_FRACTION of the GPU, default 0.2)
# DRY_RUN=1 prints the commands. Same seed, budget and sampler settings for every run. Running the same command
# again resumes: finished trainings load and stop, evaluations whose metrics.json exists are skipped. Compiled
# programs are kept in JAX_COMPILATION_CACHE_DIR (default $OUT/xla_cache) for every run and evaluation to reuse.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/smollm2-study}
STEPS=${STEPS:-200}
STEPS_B=${STEPS_B:-$STEPS}
SEEDS=${SEEDS:-}
CONTINUAL=${CONTINUAL:-0}
LIMIT=${LIMIT:-300}
PARTS=${PARTS:-"train eval report"}
GPUS=${GPUS:-}
MODELS=${MODELS:-"base opd caopd_demo caopd_solution"}
CFG=configs/smollm2_arith.py
[ "${DRY_RUN:-0}" = 1 ] || mkdir -p "$OUT/logs"
# every training and evaluation compiles the same programs: JAX's persistent compilation cache, shared by them
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/xla_cache}
GGUF=${GGUF:-$($PY -c "from caopd_jax import weights; print(weights.smollm2_gguf())")}

run() {  # print the command (DRY_RUN=1) or run it and report its wall-clock time
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "$*"; return; fi
  echo "[study] $*" >&2
  local start=$SECONDS
  "$@"
  echo "[study] $(( SECONDS - start )) s: $*" >&2
}

root_of() {  # seed -> the folder of that seed's runs and evaluations ($OUT itself without SEEDS)
  if [ -z "$1" ]; then echo "$OUT"; else echo "$OUT/seed$1"; fi
}

train() {  # seed, name, start model, extra overrides...
  local seed=$1 name=$2 start=$3; shift 3
  local seeded=()
  [ -z "$seed" ] || seeded=(--config.seed="$seed")
  run "$PY" -m caopd_jax.train --config=$CFG --config.model.path="$start" \
    --config.train.output_dir="$(root_of "$seed")/$name" --config.log.progress=false "${seeded[@]}" "$@"
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

evaluate() {  # seed, model: greedy and K=8 on the held-out and the OOD split (skipping finished ones)
  local seed=$1 model=$2 root commands=""
  root=$(root_of "$seed")
  local path=$root/$model seeded=""
  [ "$model" = base ] && path=$GGUF
  [ -z "$seed" ] || seeded="--seed $seed"
  for split in heldout:1,2 ood:3; do
    local name=${split%%:*} decoding
    for decoding in greedy k8; do
      local out=$root/eval/$name-$decoding/$model
      if [ "${DRY_RUN:-0}" != 1 ] && [ -f "$out/metrics.json" ]; then
        echo "[study] done already: $out" >&2; continue
      fi
      local flags="--greedy"
      [ $decoding = k8 ] && flags="--num_samples 8 --temperature 1.0"
      commands+="$(printf '%q ' "$PY" -m caopd_jax.eval --model "$path" --prompts $CFG --dataset arithmetic \
                   --difficulty "${split#*:}" --limit "$LIMIT" --max_new_tokens 128 --protocol strict \
                   --no_progress) $seeded"
      commands+=" $flags --output $(printf %q "$out")"$'\n'
    done
  done
  side_by_side "$commands"
}

job() {  # "seed:name": train it (unless base) and evaluate it; with CONTINUAL=1 then task B from it, evaluated
  local seed=${1%%:*} name=${1#*:} overrides=()
  case $name in
    opd) overrides=(--config.distill.calibrate=False) ;;
    caopd_solution) overrides=(--config.distill.teacher_mode=correct_solution) ;;
  esac
  local stages=("$name") root
  root=$(root_of "$seed")
  [ "$CONTINUAL" = 1 ] && [ "$name" != base ] && stages+=("${name}_b")
  for stage in "${stages[@]}"; do
    if [[ " $PARTS " == *" train "* && $stage == *_b ]]; then
      train "$seed" "$stage" "$root/$name" --config.train.steps="$STEPS_B" --config.data.difficulty=3 \
        "${overrides[@]}" "${EXTRA[@]}"
    elif [[ " $PARTS " == *" train "* && $stage != base ]]; then
      train "$seed" "$stage" "$GGUF" --config.train.steps="$STEPS" "${overrides[@]}" "${EXTRA[@]}"
    fi
    if [[ " $PARTS " == *" eval "* ]]; then evaluate "$seed" "$stage"; fi
  done
}

EXTRA=("$@")
read -r -a models <<< "$MODELS"
for m in "${models[@]}"; do
  case $m in base|opd|caopd_demo|caopd_solution) ;; *) echo "MODELS: unknown model '$m' (base, opd, caopd_demo, caopd_solution)" >&2; exit 2 ;; esac
done
read -r -a seeds <<< "$SEEDS"
for s in "${seeds[@]}"; do
  [[ $s =~ ^[0-9]+$ ]] || { echo "SEEDS: '$s' is not a non-negative integer" >&2; exit 2; }
done
jobs=()
for s in "${seeds[@]:-}"; do for m in "${models[@]}"; do jobs+=("$s:$m"); done; done
pids=()
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill -TERM "$1" 2>/dev/null || true; }
trap 'for pid in "${pids[@]}"; do kill_tree "$pid"; done; echo "[study] interrupted" >&2; exit 130' INT TERM
if [ -z "$GPUS" ]; then
  for j in "${jobs[@]}"; do job "$j"; done
else  # job i on worker i mod |GPUS| (worker w on GPU GPUS[w]), a worker's jobs in sequence, the workers side by side
  read -r -a gpu_list <<< "$GPUS"
  worker() { for i in "${!jobs[@]}"; do if (( i % ${#gpu_list[@]} == $1 )); then job "${jobs[$i]}"; fi; done; }
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

names=(base opd caopd_demo caopd_solution)
labels=(base OPD CaOPD-demo CaOPD-solution)
if [ "$CONTINUAL" = 1 ]; then
  names+=(opd_b caopd_demo_b caopd_solution_b); labels+=(OPD-then-B CaOPD-demo-then-B CaOPD-solution-then-B)
fi
present() {  # folder: true in a dry run or when it exists
  [ "${DRY_RUN:-0}" = 1 ] || [ -e "$1" ]
}
report() {  # root: reliability diagrams per table, training curves
  local root=$1 table i
  for table in heldout-greedy heldout-k8 ood-greedy ood-k8; do
    local folders=() shown=()
    for i in "${!names[@]}"; do
      if present "$root/eval/$table/${names[$i]}/metrics.json"; then
        folders+=("$root/eval/$table/${names[$i]}"); shown+=("${labels[$i]}")
      fi
    done
    [ ${#folders[@]} -gt 0 ] || continue
    run "$PY" -m caopd_jax.eval.compare "${folders[@]}" --names "$(IFS=,; echo "${shown[*]}")" \
      --output "$root/reliability-$table.png"
  done
  local runs=() shown=()
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" != base ] && present "$root/${names[$i]}/metrics.jsonl"; then
      runs+=("$root/${names[$i]}"); shown+=("${labels[$i]}")
    fi
  done
  if [ ${#runs[@]} -gt 0 ]; then
    run "$PY" -m caopd_jax.eval.curves "${runs[@]}" --names "$(IFS=,; echo "${shown[*]}")" --output "$root/curves.png"
  fi
}
across_seeds() {  # every table: each model's seeds as one (every metric's mean +- 95% t-interval; the Pareto view)
  local table i s
  for table in heldout-greedy heldout-k8 ood-greedy ood-k8; do
    local folders=() shown=()
    for i in "${!names[@]}"; do for s in "${seeds[@]}"; do
      if present "$(root_of "$s")/eval/$table/${names[$i]}/metrics.json"; then
        folders+=("$(root_of "$s")/eval/$table/${names[$i]}"); shown+=("${labels[$i]}")
      fi
    done; done
    [ ${#folders[@]} -gt 0 ] || continue
    run "$PY" -m caopd_jax.eval.compare "${folders[@]}" --names "$(IFS=,; echo "${shown[*]}")" \
      --output "$OUT/reliability-$table.png"
    run "$PY" -m caopd_jax.eval.pareto "${folders[@]}" --names "$(IFS=,; echo "${shown[*]}")" \
      --output "$OUT/pareto-$table.png" --json "$OUT/pareto-$table.json"
  done
}
if [[ " $PARTS " == *" report "* ]]; then
  for s in "${seeds[@]:-}"; do report "$(root_of "$s")"; done
  if [ ${#seeds[@]} -gt 1 ]; then across_seeds; fi
fi
