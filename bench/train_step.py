"""Training-step throughput of the CaOPD trainer on random weights, in the shape of the PyTorch baseline
(`../shared/bench/torch_reference.py`): full-vocabulary forward KL on completion positions (`--divergence`
picks another, e.g. the default sampled_token estimator: every token taken as sampled, no support cut), a teacher
forward without gradient, AdamW, bf16 weights.

    python bench/train_step.py --model qwen3-0.6b --token_stats pallas --json out.json
    python bench/train_step.py --model qwen3-8b --mesh=fsdp:2 --batch 16 --prompt 1024 --teacher_prompt 1024 \
        --completion 1024 --micro_batches 8

One backend per process, so that the peak memory (`memory_stats()["peak_bytes_in_use"]`, like
torch's max_memory_allocated; the largest over this process's devices) is that backend's. Student
tokens/s counts prompt + completion tokens of every row per step, as the baseline does; MFU counts
6 N per student token + 2 N per teacher token against --peak_tflops per device of the mesh.
`--profile DIR` traces two more steps and reports the GPU time by kernel kind.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from trace_summary import summarize, table
from caopd_jax.sharding.distributed import place
from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout
from caopd_jax.train.config import DIVERGENCES, TOKEN_STATS
from caopd_jax.train.loss import LossBatch, LossSettings
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer
from caopd_jax.train.step import make_train_step, sharded_init_state


def random_batch(vocab, batch, prompt, teacher_prompt, completion, seed=0) -> LossBatch:
  """Full rows of random tokens; every completion position counts."""
  rng = np.random.default_rng(seed)
  completion_ids = rng.integers(0, vocab, (batch, completion))
  student = np.concatenate([rng.integers(0, vocab, (batch, prompt)), completion_ids], 1)
  teacher = np.concatenate([rng.integers(0, vocab, (batch, teacher_prompt)), completion_ids], 1)
  ones = lambda shape, dtype=np.float32: np.ones(shape, dtype)  # noqa: E731
  return LossBatch(student.astype(np.int32), ones(student.shape, np.int32), teacher.astype(np.int32),
                   ones(teacher.shape, np.int32), completion_ids.astype(np.int32), ones(completion_ids.shape),
                   np.zeros(completion_ids.shape, np.float32), ones(completion_ids.shape, bool),
                   np.zeros(completion_ids.shape, np.float32), np.full(completion_ids.shape, -np.inf, np.float32))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="qwen3-0.6b", choices=sorted(models.PRESETS))
  p.add_argument("--token_stats", default="pallas", choices=TOKEN_STATS)
  p.add_argument("--divergence", default="forward_kl", choices=DIVERGENCES)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--remat", default="none", choices=["none", "layers", "dots"], help="as config train.remat")
  p.add_argument("--mesh", default="1", help="as for training: 1, auto, data:2,fsdp:4,tensor:1 or a preset")
  p.add_argument("--prompt", type=int, default=512)
  p.add_argument("--teacher_prompt", type=int, default=768)
  p.add_argument("--completion", type=int, default=512)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--peak_tflops", type=float, default=792.0)
  p.add_argument("--profile", default=None, metavar="DIR",
                 help="after timing, trace 2 more steps into DIR and add GPU time by kernel kind (bench/trace_summary.py)")
  p.add_argument("--json", default=None)
  args = p.parse_args()
  config = models.preset(args.model)
  layout = Layout(make_mesh(args.mesh))
  student = jax.jit(models.init, static_argnums=(0, 2), out_shardings=layout.params(
      config, models.param_shapes(config, jnp.bfloat16)))(config, jax.random.key(0), jnp.bfloat16)
  optimizer = make_optimizer(2e-5, 1000)
  state, shardings = sharded_init_state(layout, config, student, optimizer, jnp.bfloat16)
  del student
  settings = LossSettings(divergence=args.divergence, skip_first=0, token_stats=args.token_stats, remat=args.remat)
  step = make_train_step(config, settings, optimizer, learning_rate_schedule(2e-5, 1000), 0.01, args.micro_batches,
                         layout, shardings)
  batch = place(random_batch(config.vocab_size, args.batch, args.prompt, args.teacher_prompt, args.completion),
                layout.sharding(("batch",), (args.batch,)))
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
  devices = layout.mesh.devices.size
  peak = max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in layout.mesh.devices.flat)
  out = {"model": args.model, "mesh": args.mesh, "devices": devices, "token_stats": args.token_stats,
         "divergence": args.divergence, "remat": args.remat,
         "batch": args.batch, "micro_batches": args.micro_batches, "prompt": args.prompt,
         "teacher_prompt": args.teacher_prompt, "completion": args.completion, "step_s": round(step_s, 4),
         "first_step_s": round(compile_s, 1), "student_tokens_per_s": round(student_tokens / step_s),
         "mfu": round((6 * n_params * student_tokens + 2 * n_params * teacher_tokens) / step_s
                      / (args.peak_tflops * 1e12 * devices), 3),
         "peak_gib_per_device": round(peak / 2**30, 2), "loss": float(metrics["loss"]),
         "device": str(jax.devices()[0]), "jax": jax.__version__}
  if args.profile:
    with jax.profiler.trace(args.profile):
      for _ in range(2):
        state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
    out["profile"] = summarize(args.profile, steps=2)
    print(table(out["profile"]), flush=True)
  print(json.dumps(out), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
