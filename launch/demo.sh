#!/usr/bin/env bash
# Sets up .venv and runs the project's main job: the CaOPD demo on the built-in arithmetic task (CPU is fine).
# It builds a small base model, trains plain OPD and CaOPD from it, evaluates all three on held-out problems,
# prints the table and writes runs/demo/{results.md,reliability.png,curves.png}. Extra arguments go to the demo,
# e.g. `bash launch/demo.sh --config.demo.fast=True` (the CI budget) or `--config.demo.output_dir=runs/x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
exec .venv/bin/python -m caopd_jax.demo --config=configs/demo.py "$@"
