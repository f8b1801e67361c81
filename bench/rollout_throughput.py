"""Rollout (sampling) throughput of `caopd_jax.rollout.sample` against the decode roofline.

    python bench/rollout_throughput.py --model qwen3-0.6b --batch 64 256 --prompt 128 --new 256 --output out.json
    python bench/rollout_throughput.py --model qwen3-8b --mesh=data:4 --batch 256   # 4 GPUs, weights replicated
    python bench/rollout_throughput.py --batch 32 256 --samples_per_prompt 8 --new 1024 --lengths lognormal:300:0.6 \
        --compaction on off     # rows stop at drawn lengths; the batch shrinks as they finish, or not

Random weights of a preset shape (bf16, or `--dtype float32`); prompts of random tokens, all `--prompt` long;
`--new` tokens sampled at temperature 1 with no stop tokens (EOS ignored), so every
row decodes the full length, like HF `generate(min_new_tokens=...)` in the PyTorch
baseline; `--lengths lognormal:MEDIAN:SIGMA` gives each row its own length instead (`bench/lengths.py`:
`rollout.sample(row_budgets=...)`), and `--compaction on off` times the sampler shrinking its batch as rows
finish against decoding every row to the longest. `--profile DIR` traces one more call of each run and adds its
GPU time per decode step by kernel kind (bench/trace_summary.py) and the share of the wall time the GPU was busy.
`--mesh` lays the weights and the decode rows out as training does (`fsdp:4` gathers the
weights at every decode step; `data:4` keeps a copy per device and splits the rows). One warm-up call compiles (its wall time is reported as
`first_call_seconds`); the timed call includes prefill and the final
transfer to the host. The roofline divides the bytes a decode step must read
(every weight once per device + the KV cache at the mean context) by the devices' copy bandwidth.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models, rollout
from lengths import draw
from trace_summary import summarize, table
from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout

COPY_BANDWIDTH = 4.13e12  # bytes/s, H200 device copy, measured 2026-11-28 (../shared/docs/ENGINEERING.md)


def roofline_tokens_per_s(config, batch: int, prompt: int, new: int, bytes_per_value: int = 2,
                          devices: int = 1) -> float:
  """Tokens/s if each decode step only had to read the weights and the KV cache once, at full bandwidth.

  With `devices` > 1 the rows (and their KV cache) split evenly and each device reads every weight
  once (the data-parallel bound; FSDP must also move the weights between devices)."""
  weights = config.num_params() * bytes_per_value
  mean_context = prompt + new / 2
  kv = 2 * config.num_layers * batch * config.num_kv_heads * mean_context * config.head_dim * bytes_per_value
  return batch / ((weights + kv / devices) / COPY_BANDWIDTH)


def run(config, params, batch: int, prompt: int, new: int, samples_per_prompt: int, layout: Layout,
        lengths: str = "full", compact: bool = True, chunk: int = 64, profile: str | None = None) -> dict:
  rng = np.random.default_rng(0)
  prompts = rng.integers(0, config.vocab_size, size=(batch // samples_per_prompt, prompt)).tolist()
  budgets = draw(lengths, (len(prompts), samples_per_prompt), new, seed=batch)
  kwargs = dict(num_samples=samples_per_prompt, max_new_tokens=new, temperature=1.0,
                chunk=new if lengths == "full" else chunk, layout=layout, row_budgets=budgets, compact=compact)
  start = time.perf_counter()
  rollout.sample(config, params, prompts, jax.random.key(0), **kwargs)  # compiles
  first_call = time.perf_counter() - start
  start = time.perf_counter()
  out = rollout.sample(config, params, prompts, jax.random.key(1), **kwargs)
  seconds = time.perf_counter() - start
  np.testing.assert_array_equal(out.lengths, budgets)   # no stop tokens: every row runs to its budget
  tokens_per_s = int(out.lengths.sum()) / seconds
  roof = roofline_tokens_per_s(config, batch, prompt, new, jnp.dtype(params["embed"].dtype).itemsize,
                               devices=layout.mesh.devices.size)
  result = {"batch": batch, "samples_per_prompt": samples_per_prompt, "lengths": lengths, "compaction": compact,
            "mean_length": float(out.lengths.mean()), "max_length": int(out.lengths.max()), "seconds": seconds,
            "first_call_seconds": first_call, "tokens_per_s": tokens_per_s, "roofline_tokens_per_s": roof,
            "fraction_of_roofline": tokens_per_s / roof if lengths == "full" else None}
  if profile:
    folder = f"{profile}/batch{batch}_k{samples_per_prompt}_{'compact' if compact else 'whole'}"
    with jax.profiler.trace(folder):
      rollout.sample(config, params, prompts, jax.random.key(1), **kwargs)
    steps = int(out.lengths.max())
    result["profile"] = summarize(folder, steps=steps)
    result["profile"]["wall_ms_per_step"] = 1e3 * seconds / steps
    result["profile"]["gpu_busy_share"] = result["profile"]["total_ms"] / result["profile"]["wall_ms_per_step"]
    print(table(result["profile"]), flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="qwen3-0.6b", choices=sorted(models.PRESETS))
  parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new", type=int, default=256)
  parser.add_argument("--samples_per_prompt", type=int, nargs="+", default=[1, 8],
                      help="K: prompts = batch / K, each prefilled once and sampled K times")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="weight dtype")
  parser.add_argument("--lengths", default="full", help="full, or lognormal:MEDIAN:SIGMA (per-row lengths)")
  parser.add_argument("--compaction", nargs="+", default=["on"], choices=["on", "off"],
                      help="shrink the decode batch as rows finish (on), or decode all rows to the longest (off)")
  parser.add_argument("--mesh", default="1", help="as for training: 1, auto, data:4, fsdp:4, ...")
  parser.add_argument("--profile", default=None, metavar="DIR", help="also trace each run (GPU kernel time by kind)")
  parser.add_argument("--output", default=None, help="also write the results as JSON to this file")
  args = parser.parse_args()
  config = models.preset(args.model)
  layout = Layout(make_mesh(args.mesh))
  dtype = jnp.dtype(args.dtype)
  params = jax.jit(models.init, static_argnums=(0, 2), out_shardings=layout.params(
      models.logical_axes(config), models.param_shapes(config, dtype)))(config, jax.random.key(0), dtype)
  results = {"model": args.model, "mesh": args.mesh, "devices": layout.mesh.devices.size,
             "device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "runs": []}
  for batch in args.batch:
    for k in args.samples_per_prompt:
      for compact in args.compaction:
        r = run(config, params, batch, args.prompt, args.new, k, layout, args.lengths, compact == "on",
                profile=args.profile)
        results["runs"].append(r)
        share = (f"{100 * r['fraction_of_roofline']:.0f}% of the {r['roofline_tokens_per_s']:,.0f} tok/s roofline"
                 if r["fraction_of_roofline"] is not None else
                 f"lengths {args.lengths}: mean {r['mean_length']:.0f}, longest {r['max_length']}; compaction {compact}")
        print(f"{args.model} mesh {args.mesh} batch {batch:4d} K={k}: {r['tokens_per_s']:10,.0f} tok/s  "
              f"({r['seconds']:.2f} s; first call, compiling, {r['first_call_seconds']:.1f} s; {share})", flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
