#!/usr/bin/env bash
# Sets up .venv with the test requirements (and .venv-tpu with libtpu) and runs the whole test suite on CPU.
#   bash launch/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh test
# the TPU compile checks (tests/test_tpu_compile.py) run their commands in a venv with libtpu (Linux x86-64 only)
if [ "$(uname -sm)" = "Linux x86_64" ]; then VENV=.venv-tpu bash launch/setup_env.sh tpu; fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
exec .venv/bin/python -m pytest -q "$@"
