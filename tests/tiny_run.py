"""A tiny training setup for end-to-end tests of the trainer: a random 1-layer character-level model saved as an
Orbax checkpoint and a config file (the demo's wording, tiny budgets: 8 steps of 2 prompts x 4 rollouts, a
checkpoint every 2 steps, rollouts shown every 4), run through `python -m caopd_jax.train` in subprocesses, as a user does."""

import os
import subprocess
import sys
import time

import jax

from caopd_jax import models, weights
from caopd_jax.run_folder import read_metrics
from caopd_jax.tokenizers.characters import character_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo's config (its short prompt wording suits the character vocabulary) with a tiny budget.
CONFIG = '''
import importlib.util
spec = importlib.util.spec_from_file_location("demo_config", {demo!r})
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)

def get_config():
  c = demo.get_config()
  c.model.path = {model!r}
  c.rollout.prompts_per_step, c.rollout.num_samples = 2, 4
  c.train.steps, c.train.batch_size, c.train.micro_batch_size = 8, 4, 2
  c.distill.max_completion_tokens = 24
  c.distill.teacher_ema = 0.01     # the trainer's moving teacher (the demo's is frozen): resumes must restore it
  c.optim.lr = 1e-2
  c.checkpoint.every, c.checkpoint.keep = 2, 3
  c.eval.every, c.eval.limit = 4, 4
  c.log.progress = False
  c.log.samples_every = 4
  return c
'''


def make_setup(root) -> str:
  """Writes root/base (the model) and root/config.py; returns the config file's path."""
  tokenizer = character_tokenizer()
  config = models.ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, tie_embeddings=True,
                              max_position_embeddings=512, eos_token_ids=(tokenizer.eos_id,))
  weights.save(os.path.join(root, "base"), config, models.init(config, jax.random.key(0)), tokenizer=tokenizer)
  path = os.path.join(root, "config.py")
  with open(path, "w") as f:
    f.write(CONFIG.format(demo=os.path.join(ROOT, "configs", "demo.py"), model=os.path.join(root, "base")))
  return path


def command(config_file, run_dir, *overrides) -> list[str]:
  return [sys.executable, "-m", "caopd_jax.train", f"--config={config_file}",
          f"--config.train.output_dir={run_dir}", *overrides]


def train(config_file, run_dir, *overrides, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(command(config_file, run_dir, *overrides), capture_output=True, text=True, timeout=600,
                        **kwargs)


def losses(run_dir) -> list[tuple]:
  """(step, loss, grad norm) of every metrics.jsonl record."""
  return [(r["step"], r["train/loss"], r["train/grad_norm"]) for r in read_metrics(run_dir)]


def wait_for_steps(run_dir, count: int, process) -> None:
  while len(read_metrics(run_dir)) < count:
    assert process.poll() is None, process.stderr.read()
    time.sleep(0.05)
