"""The fused token-stats kernels for TPUs (Mosaic): W tiled over V and D, so VMEM use does not grow with V (the GPU
kernels hold all of W as one block: a GPU block is a pointer, a TPU block is a copy in VMEM).

Forward: a grid (row block i, vocabulary tile j, D chunk k), k innermost: the logits [bn, bv] of tile j accumulate
over the D chunks in a float32 scratch (student and teacher); at the last chunk they are folded into the rows'
online-softmax accumulators (running max, sum of exp, exp-weighted sums: the same arithmetic as
losses/token_stats.py), kept in VMEM scratch across the tiles; after the last tile the row block's statistics are
written. Backward ("dlogits"): per chunk of rows a kernel on the same grid writes the logits' cotangent dS
[rows, V] in h's dtype (recomputing each tile's logits), and two float32-accumulated XLA matmuls give dH = dS W^T
and the chunk's share of dW = H^T dS.

VMEM per program (vmem_bytes): per model the row block of h [bn, D] (all of D, one buffer: fetched once per row
block) and a W tile [bd, bv] (two buffers), two [bn, bv] float32 logit scratches, a few lane-wide [bn, 128] row
statistics and the tile arithmetic's temporaries. It grows with bn and D, so tiles_for picks the largest row block
(up to 512: W's reuse) within the chip's scoped-VMEM limit (hardware.Chip.vmem_limit). Teacher and student share
D (one network). Columns past V and rows past N are masked / zero, as in the GPU kernels.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from caopd_jax.kernels.token_stats_tiles import (CARRY, Tiling, cotangent_of_logits, dot, fold_tile, initial_carry,
                                                 masked_logits, row_statistics, stack)

DEFAULT_VMEM_LIMIT = 16 * 2**20   # scoped VMEM on a TPU of unknown kind (the smallest default: v4, v5e, v5p)
BUDGET_SHARE = 0.75               # of the limit, what tiles_for lets vmem_bytes estimate (the rest: the compiler's)
LANES = 128   # the rows' statistics are stored lane-replicated [bn, LANES] (TPU vregs are 8 x 128)


def _tile_logits(s_acc, t_acc, j, tiling: Tiling):
  """(student logits, teacher logits or None, column ids) of tile j from its accumulated products (masked_logits)."""
  s, ids = masked_logits(s_acc[...], j, tiling)
  return s, masked_logits(t_acc[...], j, tiling)[0] if tiling.teacher else None, ids


def _accumulate(refs, k, tiling: Tiling):
  """Adds chunk k of D to the tile's logit accumulators (student, and teacher when present)."""
  h_ref, w_ref, ht_ref, wt_ref, s_acc, t_acc = refs
  chunk = pl.ds(pl.multiple_of(k * tiling.block_d, tiling.block_d), tiling.block_d)

  @pl.when(k == 0)
  def _():
    s_acc[...] = jnp.zeros_like(s_acc)
    if tiling.teacher:
      t_acc[...] = jnp.zeros_like(t_acc)

  s_acc[...] += dot(h_ref[:, chunk], w_ref[...], ((1,), (0,)))
  if tiling.teacher:
    t_acc[...] += dot(ht_ref[:, chunk], wt_ref[...], ((1,), (0,)))


def _forward_kernel(*refs, tiling: Tiling):
  """Program (i, j, k): chunk k of tile j's logits for row block i; statistics out after the last tile."""
  n_in = 5 if tiling.teacher else 3
  y_ref = refs[2]
  out_ref, s_acc, t_acc, carry_ref = refs[n_in:n_in + 4]
  j, k = pl.program_id(1), pl.program_id(2)
  load = lambda: tuple(carry_ref[slot][:, :1] for slot in range(CARRY))  # noqa: E731  ([bn, 1] each)

  def store(carry):
    for slot, value in enumerate(carry):
      carry_ref[slot] = jnp.broadcast_to(value, carry_ref.shape[1:])

  @pl.when((j == 0) & (k == 0))
  def _():
    store(initial_carry(carry_ref.shape[1]))

  _accumulate(refs[:2] + (refs[3:5] if tiling.teacher else (None, None)) + (s_acc, t_acc), k, tiling)

  @pl.when(k == pl.num_programs(2) - 1)
  def _():
    s, t, ids = _tile_logits(s_acc, t_acc, j, tiling)
    store(fold_tile(load(), s, t, ids, y_ref[...], tiling))

    @pl.when(j == pl.num_programs(1) - 1)
    def _():
      out_ref[...] = stack(row_statistics(load(), tiling), LANES)


def _dlogits_kernel(*refs, tiling: Tiling):
  """Program (i, j, k): chunk k of tile j's logits; at the last chunk the tile's cotangent dS / T [bn, bv]."""
  n_in = 5 if tiling.teacher else 3
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if tiling.teacher else (None, None)
  res_ref, g_ref, ds_ref, s_acc, t_acc = refs[n_in:n_in + 5]
  j, k = pl.program_id(1), pl.program_id(2)
  _accumulate((h_ref, w_ref, ht_ref, wt_ref, s_acc, t_acc), k, tiling)

  @pl.when(k == pl.num_programs(2) - 1)
  def _():
    s, t, ids = _tile_logits(s_acc, t_acc, j, tiling)
    ds_ref[...] = cotangent_of_logits(s, t, ids, y_ref[...], res_ref[...], g_ref[...], tiling).astype(ds_ref.dtype)


def _call(kernel, ops, extra, out_spec, out_shape, tiling: Tiling, interpret: bool, vmem_limit: int, scratch):
  """pallas_call of `kernel` on the (row block, vocabulary tile, D chunk) grid of `ops` (h, W, y[, h_t, W_t]),
  padded to whole blocks (fused_token_stats._operands)."""
  (n_pad, d_pad), v_pad = ops[0].shape, ops[1].shape[1]
  bn, bv, bd = tiling.block_n, tiling.block_v, tiling.block_d
  # all of D, fetched once per row block: one buffer (the fetch stalls once per row block, not per tile)
  rows = pl.BlockSpec((bn, d_pad), lambda i, j, k: (i, 0), pipeline_mode=pl.Buffered(1))
  cols = pl.BlockSpec((bd, bv), lambda i, j, k: (k, j))
  targets = pl.BlockSpec((bn, 1), lambda i, j, k: (i, 0))
  stats = pl.BlockSpec((bn, LANES), lambda i, j, k: (i, 0))
  in_specs = [rows, cols, targets] + ([rows, cols] if tiling.teacher else []) + [stats] * len(extra)
  grid_spec = pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=0, grid=(n_pad // bn, v_pad // bv, d_pad // bd),
                                           in_specs=in_specs, out_specs=out_spec, scratch_shapes=scratch)
  params = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary", "arbitrary"),
                                vmem_limit_bytes=vmem_limit)
  return pl.pallas_call(kernel, grid_spec=grid_spec, out_shape=out_shape, interpret=interpret,
                        compiler_params=None if interpret else params)(*ops, *extra)


def forward(ops, tiling: Tiling, interpret: bool, vmem_limit: int):
  """float32 [Np, LANES] per-row statistics (columns as token_stats_tiles' LSE ... LSE_T; the rest 0)."""
  bn, bv = tiling.block_n, tiling.block_v
  scratch = [pltpu.VMEM((bn, bv), jnp.float32), pltpu.VMEM((bn, bv), jnp.float32),
             pltpu.VMEM((CARRY, bn, LANES), jnp.float32)]
  return _call(functools.partial(_forward_kernel, tiling=tiling), ops, [],
               pl.BlockSpec((bn, LANES), lambda i, j, k: (i, 0)),
               jax.ShapeDtypeStruct((ops[0].shape[0], LANES), jnp.float32), tiling, interpret, vmem_limit,
               scratch)


def dlogits(ops, res, g, tiling: Tiling, interpret: bool, vmem_limit: int):
  """dS / T [Np, Vp] in h's dtype: the logits' cotangent, from residuals `res` and cotangents `g` [Np, LANES]."""
  bn, bv = tiling.block_n, tiling.block_v
  scratch = [pltpu.VMEM((bn, bv), jnp.float32), pltpu.VMEM((bn, bv), jnp.float32)]
  return _call(functools.partial(_dlogits_kernel, tiling=tiling), ops, [res, g],
               pl.BlockSpec((bn, bv), lambda i, j, k: (i, j)),
               jax.ShapeDtypeStruct((ops[0].shape[0], ops[1].shape[1]), ops[0].dtype), tiling, interpret, vmem_limit,
               scratch)


def block_d_for(dim: int, largest: int = 1024) -> int:
  """The D chunk: the largest multiple of 128 that divides D rounded up to 128 and is at most `largest` (D 4096:
  1024; 3584: 896; 2560: 640; 576: 640), so that padding D costs at most 127 columns."""
  lanes = -(-dim // LANES)
  return LANES * max(m for m in range(1, largest // LANES + 1) if lanes % m == 0)


def vmem_bytes(block_n: int, block_v: int, block_d: int, dim: int, itemsize: int, teacher: bool) -> int:
  """Estimated VMEM of the larger kernel (dlogits) per program: per model h [bn, Dp] (one buffer) and W [bd, bv]
  (two), two float32 [bn, bv] logit scratches, lane-wide row statistics, the dS block (two buffers) and about
  six float32 [bn, bv] temporaries of the tile arithmetic."""
  models = 2 if teacher else 1
  d_pad = -(-dim // block_d) * block_d
  inputs = models * (block_n * d_pad + 2 * block_d * block_v) * itemsize
  rows = (2 * 2 + 2 + CARRY) * block_n * LANES * 4            # res, g (two buffers each), y, the forward's carry
  return inputs + rows + 2 * block_n * block_v * itemsize + (2 + 6) * block_n * block_v * 4


def tiles_for(rows: int, dim: int, itemsize: int, teacher: bool, vmem_limit: int, block_v: int = 512) -> tuple | None:
  """(block_n, block_v, block_d) for h [rows, dim] of `itemsize` bytes: the largest row block up to 512 (a multiple
  of 8, at most the rows rounded up to 8) whose vmem_bytes is within BUDGET_SHARE of `vmem_limit`; None if not
  even 8 rows fit. W is streamed once per row block, so the row block is the tile's FLOPs per byte of W."""
  block_d = block_d_for(dim)
  for block_n in (512, 256, 128, 64, 32, 16, 8):
    block_n = min(block_n, -(-rows // 8) * 8)
    if vmem_bytes(block_n, block_v, block_d, dim, itemsize, teacher) <= BUDGET_SHARE * vmem_limit:
      return block_n, block_v, block_d
  return None


__all__ = ["DEFAULT_VMEM_LIMIT", "LANES", "block_d_for", "dlogits", "forward", "tiles_for", "vmem_bytes"]
