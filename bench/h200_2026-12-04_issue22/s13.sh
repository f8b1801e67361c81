#!/bin/bash
# call 1: the product's train.unroll_layers vs the layer scan at 0.6B and 1.7B, the reference in the same call
pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING | tail -1
export PYTHONPATH=/tmp/site:.
R=/tmp/r13; mkdir -p $R
trap 'tar czf $OUT/r13.tgz -C /tmp r13' EXIT
t() { name=$1; limit=$2; shift 2; s=$(date +%s); timeout $limit "$@" > $R/$name.log 2>&1; rc=$?; echo "$name rc=$rc $(( $(date +%s)-s ))s $(date -u +%H:%M:%S)" | tee -a $R/summary.txt; tail -1 $R/$name.log | cut -c1-200; }
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/gpu.txt; date -u >> $R/gpu.txt
git log --oneline -1 > $R/commit.txt 2>&1; git status --short | head -20 >> $R/commit.txt
S="python bench/train_step.py --token_stats pallas"
t scan06 60 $S --model qwen3-0.6b --output $R/scan06.json
t unroll06 110 $S --model qwen3-0.6b --unroll_layers --output $R/unroll06.json
t torch06 60 python bench/torch_reference.py --model qwen3-0.6b --gen-batch --json $R/t06.json
t unroll06b 110 $S --model qwen3-0.6b --unroll_layers --output $R/unroll06b.json
t scan17 70 $S --model qwen3-1.7b --output $R/scan17.json
t unroll17 140 $S --model qwen3-1.7b --unroll_layers --output $R/unroll17.json
t torch17 70 python bench/torch_reference.py --model qwen3-1.7b --gen-batch --json $R/t17.json
t unroll17h 140 $S --model qwen3-1.7b --unroll_layers --teacher_dtype bfloat16 --mu_dtype bfloat16 --output $R/unroll17h.json
for f in $R/*.json; do echo "$f $(python -c "import json,sys; d=json.load(open('$f')); print({k: v for k, v in d.items() if k in ('step_s','first_step_s','peak_gib_per_device','peak_gib','unroll_layers','loss','mfu')})")"; done | tee $R/table.txt
