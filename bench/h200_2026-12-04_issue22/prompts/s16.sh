#!/bin/bash
# call 4: more prompts per iteration (256 rollout rows, still 32 sequences per optimizer step) against the paper's 4
pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING | tail -1
export PYTHONPATH=/tmp/site:.
R=/tmp/r16; mkdir -p $R
trap 'tar czf $OUT/r16.tgz -C /tmp r16' EXIT
t() { name=$1; limit=$2; shift 2; s=$(date +%s); timeout $limit "$@" > $R/$name.log 2>&1; rc=$?; echo "$name rc=$rc $(( $(date +%s)-s ))s $(date -u +%H:%M:%S)" | tee -a $R/summary.txt; grep -E "^run |stopped|Error" $R/$name.log | tail -2 | cut -c1-400; }
date -u > $R/gpu.txt
I="python bench/iteration.py --tokenizer .devcarry/qwen3_tok --vocab_size 151936 --lengths lognormal:300:0.6 --iterations 3"
t p4_06 150 $I --model qwen3-0.6b --prompts 4 --output $R/p4_06.json
t p32_06 170 $I --model qwen3-0.6b --prompts 32 --output $R/p32_06.json
t p32_17 200 $I --model qwen3-1.7b --prompts 32 --output $R/p32_17.json
