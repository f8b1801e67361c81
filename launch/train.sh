#!/usr/bin/env bash
# Trains on this machine: one process driving every local accelerator (one GPU with --mesh=1, a multi-GPU
# host with --mesh=auto or an explicit --mesh=data:1,fsdp:4,tensor:2).
#   bash launch/train.sh --config=configs/smollm2_arith.py --mesh=1
#   bash launch/train.sh --config=configs/paper.py:qwen3-8b,science --mesh=auto --config.model.path=/models/Qwen3-8B
# DRY_RUN=1 prints the command instead of running it. NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and
# friends): on some H200 hosts it takes GPUs out of service.
set -euo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
PYTHON=${PYTHON:-.venv/bin/python}
cmd=("$PYTHON" -m caopd_jax.train "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "${cmd[@]}"
  exit 0
fi
[ -x "$PYTHON" ] || bash launch/setup_env.sh
exec "${cmd[@]}"
