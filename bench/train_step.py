"""Training-step throughput of the CaOPD trainer on random weights, in the shape of the PyTorch baseline
(`../shared/bench/torch_reference.py`): full-vocabulary forward KL on completion positions, a teacher
forward without gradient, AdamW, bf16 weights.

    python bench/train_step.py --model qwen3-0.6b --token_stats pallas --json out.json

One backend per process, so that the peak memory (`memory_stats()["peak_bytes_in_use"]`, like
torch's max_memory_allocated) is that backend's. Student tokens/s counts prompt + completion tokens
of every row per step, as the baseline does; MFU counts 6 N per student token + 2 N per teacher token
against --peak_tflops.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from caopd_jax.train.config import TOKEN_STATS
from caopd_jax.train.loss import LossBatch, LossSettings
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer
from caopd_jax.train.step import init_state, make_train_step


def random_batch(vocab, batch, prompt, teacher_prompt, completion, seed=0) -> LossBatch:
  """Full rows of random tokens; every completion position counts."""
  rng = np.random.default_rng(seed)
  completion_ids = rng.integers(0, vocab, (batch, completion))
  student = np.concatenate([rng.integers(0, vocab, (batch, prompt)), completion_ids], 1)
  teacher = np.concatenate([rng.integers(0, vocab, (batch, teacher_prompt)), completion_ids], 1)
  ones = lambda shape: jnp.ones(shape, jnp.float32)  # noqa: E731
  return LossBatch(jnp.asarray(student, jnp.int32), ones(student.shape).astype(jnp.int32),
                   jnp.asarray(teacher, jnp.int32), ones(teacher.shape).astype(jnp.int32),
                   jnp.asarray(completion_ids, jnp.int32), ones(completion_ids.shape), jnp.zeros(completion_ids.shape))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="qwen3-0.6b", choices=sorted(models.PRESETS))
  p.add_argument("--token_stats", default="pallas", choices=TOKEN_STATS)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--prompt", type=int, default=512)
  p.add_argument("--teacher_prompt", type=int, default=768)
  p.add_argument("--completion", type=int, default=512)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--peak_tflops", type=float, default=792.0)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  config = models.preset(args.model)
  student = models.init(config, jax.random.key(0), jnp.bfloat16)
  optimizer = make_optimizer(2e-5, 1000)
  state = init_state(student, optimizer, teacher_dtype=jnp.bfloat16)
  settings = LossSettings(divergence="forward_kl", skip_first=0, token_stats=args.token_stats)
  step = make_train_step(config, settings, optimizer, learning_rate_schedule(2e-5, 1000), 0.01, args.micro_batches)
  batch = random_batch(config.vocab_size, args.batch, args.prompt, args.teacher_prompt, args.completion)
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / args.steps
  n_params = config.num_params()
  student_tokens = args.batch * (args.prompt + args.completion)
  teacher_tokens = args.batch * (args.teacher_prompt + args.completion)
  stats = jax.devices()[0].memory_stats() or {}
  out = {"model": args.model, "token_stats": args.token_stats, "batch": args.batch, "prompt": args.prompt,
         "teacher_prompt": args.teacher_prompt, "completion": args.completion, "step_s": round(step_s, 4),
         "first_step_s": round(compile_s, 1), "student_tokens_per_s": round(student_tokens / step_s),
         "mfu": round((6 * n_params * student_tokens + 2 * n_params * teacher_tokens) / step_s
                      / (args.peak_tflops * 1e12), 3),
         "peak_gib": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2), "loss": float(metrics["loss"]),
         "device": str(jax.devices()[0]), "jax": jax.__version__}
  print(json.dumps(out), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
