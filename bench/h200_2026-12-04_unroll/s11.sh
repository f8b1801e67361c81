#!/bin/bash
# the 0.6B / 1.7B step: layer scan vs unrolled layers (static weight slices), the reference in the same call.
# Run from the repository root on the GPU machine (through the device tool), with the Python 3.12 wheels of grain,
# ml-collections, tensorboardX and their dependencies in .whl/ (not in the repository). It ran as .devcarry/s11.sh
# with the experiment script at .devcarry/unroll.py; the paths below are the committed copies'. Only `A` ran.
pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:.
R=/tmp/r11$1; mkdir -p $R
trap "tar czf $OUT/r11$1.tgz -C /tmp r11$1" EXIT
t() { name=$1; limit=$2; shift 2; s=$(date +%s); timeout $limit "$@" > $R/$name.log 2>&1; rc=$?; echo "$name rc=$rc $(( $(date +%s)-s ))s $(date -u +%H:%M:%S)" | tee -a $R/summary.txt; tail -1 $R/$name.log | cut -c1-300; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $R/gpu.txt
if [ "$1" = A ]; then
t scan06 100 python bench/train_step.py --model qwen3-0.6b --token_stats pallas --output $R/scan06.json
t unroll06 150 python bench/h200_2026-12-04_unroll/unroll_experiment.py bench/train_step.py --model qwen3-0.6b --token_stats pallas --output $R/unroll06.json
t torch06 150 python bench/torch_reference.py --model qwen3-0.6b --gen-batch --json $R/t06.json
t scan06b 100 python bench/train_step.py --model qwen3-0.6b --token_stats pallas --output $R/scan06b.json
t unroll06b 150 python bench/h200_2026-12-04_unroll/unroll_experiment.py bench/train_step.py --model qwen3-0.6b --token_stats pallas --output $R/unroll06b.json
else
t unroll06p 150 python bench/h200_2026-12-04_unroll/unroll_experiment.py bench/train_step.py --model qwen3-0.6b --token_stats pallas --profile $R/prof_unroll06
t scan17 120 python bench/train_step.py --model qwen3-1.7b --token_stats pallas --output $R/scan17.json
t unroll17 180 python bench/h200_2026-12-04_unroll/unroll_experiment.py bench/train_step.py --model qwen3-1.7b --token_stats pallas --output $R/unroll17.json
t torch17 150 python bench/torch_reference.py --model qwen3-1.7b --gen-batch --json $R/t17.json
fi
for f in $R/*.json; do echo "$f $(python -c "import json,sys; d=json.load(open('$f')); print({k: v for k, v in d.items() if isinstance(v, (int, float))})")"; done | tee $R/table.txt
