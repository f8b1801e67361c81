#!/bin/bash
# call 3: the 32-row decode under XLA GEMM flags (is the M=32 GEMM time a choice of the autotuner?)
pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING | tail -1
export PYTHONPATH=/tmp/site:.
R=/tmp/r15; mkdir -p $R
trap 'tar czf $OUT/r15.tgz -C /tmp r15' EXIT
t() { name=$1; limit=$2; shift 2; s=$(date +%s); timeout $limit "$@" > $R/$name.log 2>&1; rc=$?; echo "$name rc=$rc $(( $(date +%s)-s ))s $(date -u +%H:%M:%S)" | tee -a $R/summary.txt; grep -E "roofline|Error|error" $R/$name.log | tail -2 | cut -c1-250; }
date -u > $R/gpu.txt
B="python bench/rollout_throughput.py --model qwen3-0.6b --batch 32 --samples_per_prompt 8 --prompt 256 --new 1024"
t base 70 $B --output $R/base.json
t cublaslt 70 env XLA_FLAGS=--xla_gpu_enable_cublaslt=true $B --output $R/cublaslt.json
t notriton 70 env XLA_FLAGS=--xla_gpu_enable_triton_gemm=false $B --output $R/notriton.json
t tritonany 90 env XLA_FLAGS=--xla_gpu_triton_gemm_any=true $B --output $R/tritonany.json
t nocmdbuf 70 env XLA_FLAGS=--xla_gpu_enable_command_buffer= $B --output $R/nocmdbuf.json
t base2 70 $B --output $R/base2.json
