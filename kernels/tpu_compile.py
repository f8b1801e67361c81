"""Compiles the TPU token-stats kernels (forward + backward) with the real TPU compiler at every preset's loss-head
shape, for TPU generations described by JAX's topology API (needs libtpu, no TPU: BUILD.md, "TPU without a TPU").

    JAX_PLATFORMS=cpu .venv-tpu/bin/python kernels/tpu_compile.py [--rows 4096] [--chips v5e v5p v6e]
        [--presets qwen3-8b ...] [--output table.md]

Per (chip, preset): the tiles token_stats_tpu.tiles_for picks within the chip's scoped VMEM (hardware.py), the
compile time of value-and-gradient, XLA's HBM temporaries, and each kernel's VMEM: the estimate
(token_stats_tpu.vmem_bytes) and the least limit Mosaic compiles them with (bisection, to 0.5 MiB). rows: loss-head rows per device (the paper recipe's micro-batch,
4 sequences x 1,024 completion tokens, on one device). Compile-time figures, not TPU measurements.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from caopd_jax import hardware, models
from caopd_jax.files import write_lines
from caopd_jax.kernels import token_stats_tpu
from caopd_jax.kernels.fused_token_stats import token_stats_pallas

TOPOLOGIES = {"v4": "v4:2x2x1", "v5e": "v5e:2x2", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2"}


def head_shapes(names=None) -> dict:
  """{(D, V): [preset names]} of the loss heads of `names` (default: every preset)."""
  shapes = {}
  for name in names or models.PRESETS:
    config = models.preset(name)
    shapes.setdefault((config.hidden_size, config.vocab_size), []).append(name)
  return shapes


def _device(chip: str):
  from jax.experimental import topologies
  return topologies.get_topology_desc(topology_name=TOPOLOGIES[chip], platform="tpu").devices[0]


def _specs(device, rows: int, dim: int, vocab: int):
  one = jax.sharding.SingleDeviceSharding(device)
  return (jax.ShapeDtypeStruct((rows, dim), jnp.bfloat16, sharding=one),
          jax.ShapeDtypeStruct((dim, vocab), jnp.bfloat16, sharding=one),
          jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=one))


def _compile(device, rows, dim, vocab, **kernel_args):
  """Value and gradient (h and W) of every statistic's sum, teacher present, compiled for `device`."""
  def loss(h, w, y, ht, wt):
    s = token_stats_pallas(h, w, y, ht, wt, with_kl=True, interpret=False, platform="tpu", **kernel_args)
    return sum(jnp.sum(x) for x in (s.logsumexp, s.logprob, s.entropy, s.teacher_logprob, s.kl_ts, s.kl_st))
  h, w, y = _specs(device, rows, dim, vocab)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).trace(h, w, y, h, w).lower(
      lowering_platforms=("tpu",)).compile()


def mosaic_vmem(device, rows, dim, vocab, tiles, limit: int) -> float:
  """The least scoped-VMEM limit (MiB, to 0.5) at which Mosaic compiles both kernels at `tiles`: bisection between
  1 MiB and `limit` (which compiled)."""
  block_n, block_v, block_d = tiles
  low, high = 2, 2 * limit // 2**20        # in half MiB: `low` fails (assumed), `high` compiles
  while high - low > 1:
    mid = (low + high) // 2
    try:
      _compile(device, rows, dim, vocab, block_n=block_n, chunk_size=block_v, block_d=block_d,
               vmem_limit=mid * 2**19)
      high = mid
    except Exception as e:  # noqa: BLE001  (Mosaic's over-limit error; anything else is re-raised)
      if "vmem" not in str(e).lower():
        raise
      low = mid
  return high / 2


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rows", type=int, default=4096)
  parser.add_argument("--chips", nargs="+", default=["v5e", "v5p", "v6e"], choices=sorted(TOPOLOGIES))
  parser.add_argument("--presets", nargs="+", default=None, choices=sorted(models.PRESETS))
  parser.add_argument("--output", default="", help="also write the table to this markdown file")
  args = parser.parse_args(argv)
  lines = [f"rows {args.rows}, bf16, teacher + both KLs; jax {jax.__version__}",
           "| chip | presets | D | V | tiles (bn, bv, bd) | VMEM limit MiB | VMEM est. MiB | Mosaic VMEM MiB "
           "| compile s | HBM temp GiB |", "|---|---|---|---|---|---|---|---|---|---|"]
  print("\n".join(lines), flush=True)
  for chip_name in args.chips:
    device = _device(chip_name)
    chip = hardware.chip_of(device)
    for (dim, vocab), names in head_shapes(args.presets).items():
      tiles = token_stats_tpu.tiles_for(args.rows, dim, 2, True, chip.vmem_limit)
      if tiles is None:
        lines.append(f"| {chip_name} | {', '.join(names)} | {dim} | {vocab} | none fits | | | | | |")
        print(lines[-1], flush=True)
        continue
      started = time.perf_counter()
      compiled = _compile(device, args.rows, dim, vocab, vmem_limit=chip.vmem_limit)
      seconds = time.perf_counter() - started
      estimate = token_stats_tpu.vmem_bytes(*tiles, dim, 2, True) / 2**20
      temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
      lines.append(f"| {chip_name} | {', '.join(names)} | {dim} | {vocab} | {tiles} | {chip.vmem_limit // 2**20} "
                   f"| {estimate:.1f} | {mosaic_vmem(device, args.rows, dim, vocab, tiles, chip.vmem_limit):.1f} | {seconds:.1f} "
                   f"| {temp:.2f} |")
      print(lines[-1], flush=True)
  if args.output:
    write_lines(args.output, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
