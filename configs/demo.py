"""The CPU demo (`bash launch/demo.sh`, or `python -m caopd_jax.demo --config=configs/demo.py`).

Builds a small character-level base model on the arithmetic task, then trains plain OPD and CaOPD
from it with the same budget (400 steps each), and evaluates all three on held-out problems. 10-13 minutes on
2 CPU cores (README, "The demo's result"); `--config.demo.fast=True` runs every stage with a tiny budget to check
the plumbing (what the tests run; its metrics mean nothing).
The training fields are the trainer's (caopd_jax/train/config.py); `demo.*` are the demo's own.
"""

import ml_collections

from caopd_jax.train.config import default_config


def get_config():
  c = default_config()
  c.target = "cpu"                  # the demo's hardware (python -m caopd_jax.train.aot checks the config fits it)
  with c.unlocked():
    c.demo = ml_collections.ConfigDict()
    c.demo.fast = False             # tiny budget for every stage (CI); results then mean nothing
    c.demo.output_dir = "runs/demo"  # base/, opd/, caopd/, eval/ and the report; "-fast" is appended in fast mode
    c.demo.base_examples = 4000     # training problems the base model is fine-tuned on
    c.demo.base_steps = 900         # SFT steps of the base model
    c.demo.base_batch_size = 32
    c.demo.base_lr = 5e-3
    c.demo.base_layers = 2
    c.demo.base_hidden = 64
    c.demo.base_heads = 4
    c.demo.base_teacher_fraction = 0.7  # share of SFT sequences in the teacher format (copy the demonstration)
    c.demo.eval_examples = 300      # held-out problems (the arithmetic eval split)
    c.demo.eval_samples = 4         # samples per problem in the sampled evaluation (rollout.temperature)
  c.data.difficulty = (1,)
  c.data.num_examples = 4000
  # Short wording: a character-level model pays for every character of the prompt.
  c.prompts.arithmetic_system = "Compute."
  c.prompts.confidence_instruction = "End with Confidence: p."
  c.prompts.demo_header = "Example:"
  c.prompts.demo_instruction = "Your turn."
  c.prompts.confidence_note = "Say Confidence: {confidence}."
  c.rollout.prompts_per_step = 4
  c.rollout.num_samples = 8
  c.distill.max_prompt_tokens = 256
  c.distill.max_completion_tokens = 48
  c.distill.token_stats = "naive"  # a 101-character vocabulary needs no streaming
  # The reference trainer's default (alpha=0): full-vocabulary KL(teacher || student). With a character
  # vocabulary the sampled-token estimator's signal on the confidence digits is too noisy for a few hundred steps.
  c.distill.divergence = "forward_kl"
  # A frozen teacher, not the paper's EMA (0.01). An EMA teacher follows the student; a base model this small then
  # lost the "Confidence:" line in both runs on one machine (OPD and CaOPD greedy format 0.000), README
  # "The demo's result". The frozen one kept it (1.000).
  c.distill.teacher_ema = 0.0
  c.optim.lr = 1e-4
  c.optim.warmup_fraction = 0.05
  c.train.steps = 400
  c.train.batch_size = 32
  c.train.micro_batch_size = 32
  c.checkpoint.every = 100
  c.checkpoint.keep = 2
  return c
