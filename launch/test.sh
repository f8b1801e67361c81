#!/usr/bin/env bash
# Sets up .venv with the test requirements and runs the whole test suite on CPU.
#   bash launch/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh test
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
exec .venv/bin/python -m pytest -q "$@"
