"""Training-step throughput of the CaOPD trainer on random weights, in the shape of the PyTorch baseline
(`../shared/bench/torch_reference.py`): full-vocabulary forward KL on completion positions (`--divergence`
picks another, e.g. the default sampled_token estimator: every token taken as sampled, no support cut), a teacher
forward without gradient, AdamW, bf16 weights.

    python bench/train_step.py --model qwen3-0.6b --token_stats pallas --output out.json
    python bench/train_step.py --model qwen3-8b --mesh=fsdp:2 --batch 16 --prompt 1024 --teacher_prompt 1024 \
        --completion 1024 --micro_batches 8

One backend per process, so that the peak memory (`memory_stats()["peak_bytes_in_use"]`, like
torch's max_memory_allocated; the largest over this process's devices) is that backend's. Student
tokens/s counts prompt + completion tokens of every row per step, as the baseline does; MFU counts
6 N per student token + 2 N per teacher token against --peak_tflops per device of the mesh.
`--profile DIR` traces two more steps and reports the GPU time by kernel kind.
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from caopd_jax.distill.loss import LossBatch
from caopd_jax.distill.rounding import ROUNDING
from caopd_jax.distill.settings import DIVERGENCES, REMAT
from caopd_jax.kernels.registry import NAMES as TOKEN_STATS
from caopd_jax.train import setup
from caopd_jax.train.config import DTYPES, default_config
from trace_summary import summarize, table


# the fields a benchmark sets; every other field keeps the trainer's default (tests/test_bench_config.py), so the
# step timed here is the step a run of the same shape takes
BENCH_FIELDS = ("mesh", "model.dtype", "model.teacher_dtype", "optim.mu_dtype", "train.update_rounding",
                "distill.token_stats", "distill.divergence", "distill.skip_first_tokens",
                "distill.max_completion_tokens", "train.remat", "train.unroll_layers", "train.steps",
                "train.batch_size", "train.micro_batch_size", "rollout.prompts_per_step", "rollout.num_samples")


def bench_config(args):
  """The trainer's config for this benchmark: a bf16 student, the flags' teacher storage, moments and rounding
  (the trainer's defaults unless set), lr 2e-5 over 1,000 steps, the flags' model-independent settings (the step
  is then built by train/setup.py, as a run builds it)."""
  c = default_config()
  c.mesh, c.model.dtype, c.model.teacher_dtype = args.mesh, "bfloat16", args.teacher_dtype
  c.optim.mu_dtype, c.train.update_rounding = args.mu_dtype, args.rounding
  c.distill.token_stats, c.distill.divergence, c.distill.skip_first_tokens = args.token_stats, args.divergence, 0
  c.distill.max_completion_tokens, c.train.remat, c.train.steps = args.completion, args.remat, 1000
  c.train.unroll_layers = args.unroll_layers
  c.train.batch_size, c.train.micro_batch_size = args.batch, args.batch // args.micro_batches
  c.rollout.prompts_per_step, c.rollout.num_samples = args.batch, 1
  return c


def random_batch(spec: LossBatch, vocab: int, seed: int = 0) -> LossBatch:
  """NumPy arrays of `spec`'s shapes and dtypes: full rows of random tokens, every completion position a sampled
  loss token (log q = 0, no support cut), no confidence tokens."""
  rng = np.random.default_rng(seed)
  completion = rng.integers(0, vocab, spec.completion.shape)
  side = lambda x: np.concatenate([rng.integers(0, vocab, (x.shape[0], x.shape[1] - completion.shape[1])),  # noqa
                                   completion], 1)
  fill = {"student_tokens": side(spec.student_tokens), "teacher_tokens": side(spec.teacher_tokens),
          "completion": completion, "confidence_mask": 0, "sample_logprob": 0, "sample_threshold": -np.inf}
  return LossBatch(**{name: np.broadcast_to(fill.get(name, 1), x.shape).astype(x.dtype)
                      for name, x in spec._asdict().items()})


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="qwen3-0.6b", choices=sorted(models.PRESETS))
  p.add_argument("--vocab_size", type=int, default=0, help="the preset's with another vocabulary (0: the preset's)")
  p.add_argument("--token_stats", default="pallas", choices=TOKEN_STATS)
  p.add_argument("--divergence", default="forward_kl", choices=DIVERGENCES)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--remat", default="dots", choices=REMAT,
                 help="as config train.remat (dots: what train.remat=auto picks on GPUs, the fastest step measured)")
  p.add_argument("--mesh", default="1", help="as for training: 1, auto, data:2,fsdp:4,tensor:1 or a preset")
  defaults = default_config()
  p.add_argument("--teacher_dtype", default=defaults.model.teacher_dtype, choices=DTYPES,
                 help="as config model.teacher_dtype (the EMA teacher's storage; its forward runs in bfloat16)")
  p.add_argument("--mu_dtype", default=defaults.optim.mu_dtype, choices=DTYPES, help="as config optim.mu_dtype")
  p.add_argument("--rounding", default=defaults.train.update_rounding, choices=ROUNDING,
                 help="as config train.update_rounding")
  p.add_argument("--unroll_layers", action="store_true", help="as config train.unroll_layers (else a layer scan)")
  p.add_argument("--prompt", type=int, default=512)
  p.add_argument("--teacher_prompt", type=int, default=768)
  p.add_argument("--completion", type=int, default=512)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--peak_tflops", type=float, default=792.0)
  p.add_argument("--profile", default=None, metavar="DIR",
                 help="after timing, trace 2 more steps into DIR and add GPU time by kernel kind "
                 "(bench/trace_summary.py)")
  p.add_argument("--output", default=None, help="also write the results as JSON to this file")
  args = p.parse_args()
  config = models.preset(args.model)
  if args.vocab_size:
    config = dataclasses.replace(config, vocab_size=args.vocab_size)
  program = setup.build(bench_config(args), config, 1000)
  layout = program.layout
  student = jax.jit(models.init, static_argnums=(0, 2), out_shardings=program.shardings.student)(
      config, jax.random.key(0), jnp.bfloat16)
  state = setup.initial_state(program, student)
  del student
  step = program.step_fn
  batch = setup.place_batch(program, random_batch(setup.batch_spec(program, args.prompt, args.teacher_prompt),
                                                  config.vocab_size))
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
  out = {"model": args.model, "vocab_size": config.vocab_size, "mesh": args.mesh, "devices": devices,
         "token_stats": args.token_stats, "divergence": args.divergence, "remat": args.remat,
         "unroll_layers": args.unroll_layers, "teacher_dtype": args.teacher_dtype, "mu_dtype": args.mu_dtype,
         "rounding": args.rounding,
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
  if args.output:
    with open(args.output, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
