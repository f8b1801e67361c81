#!/bin/bash
# call 2: the paper's 8B iteration, ours (one H200) and the PyTorch pipeline's, in one call
pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING | tail -1
export PYTHONPATH=/tmp/site:.
R=/tmp/r14; mkdir -p $R
trap 'tar czf $OUT/r14.tgz -C /tmp r14' EXIT
t() { name=$1; limit=$2; shift 2; s=$(date +%s); timeout $limit "$@" > $R/$name.log 2>&1; rc=$?; echo "$name rc=$rc $(( $(date +%s)-s ))s $(date -u +%H:%M:%S)" | tee -a $R/summary.txt; tail -3 $R/$name.log | cut -c1-300; }
nvidia-smi --query-gpu=name,driver_version --format=csv > $R/gpu.txt; date -u >> $R/gpu.txt
git log --oneline -1 > $R/commit.txt 2>&1; git status --short | head -20 >> $R/commit.txt
t torch8 330 python bench/torch_reference.py --model qwen3-8b --vocab-size 151936 --iteration --prompts 4 --samples 8 --prompt 384 --teacher-prompt 512 --completion 1024 --lengths lognormal:300:0.6 --micro-batch 2 --batch 32 --iterations 2 --json $R/t8.json
nvidia-smi --query-gpu=memory.used --format=csv >> $R/gpu.txt
t ours8 200 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 python bench/iteration.py --model qwen3-8b --tokenizer .devcarry/qwen3_tok --vocab_size 151936 --lengths lognormal:300:0.6 --teacher_dtype bfloat16 --mu_dtype bfloat16 --remat layers --micro_batch_size 4 --iterations 3 --output $R/ours8.json
