"""In-kernel tile arithmetic of the fused token-stats kernels: tile logits, online softmax, the forward
kernel, and the logits' cotangent of one tile.

Shapes: a program holds a block of `block_n` rows (h [bn, Dp]) and walks vocabulary tiles of `block_v`
columns of W [Dp, Vp]. A tile's logits [bn, bv] are accumulated over D in chunks of `block_d` (on GPUs
the whole [bn, D] x [D, bv] product does not fit in shared memory). GPU programs loop over a run of the
tiles (forward_kernel; merge_carries joins the runs); TPU programs are one tile each (token_stats_tpu.py)
and keep the accumulators in VMEM.
Columns past V get the finite logit MASKED_LOGIT = -1e30 (losses/token_stats.py: exp is exactly 0;
finite). All accumulators hold values relative to the running max, as in `losses/token_stats.py`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from caopd_jax.losses.token_stats import MASKED_LOGIT

# Columns of the per-row statistics [N, STATS] (forward output and backward residual).
LSE, LOGP, ENT, T_LOGP, KL_TS, KL_ST, LSE_T = range(7)
STATS = 8


class Tiling(NamedTuple):
  """Static (hashable) shape and mode of one call; block_d divides the padded D."""
  vocab: int
  block_n: int
  block_v: int
  block_d: int
  temperature: float
  teacher: bool
  with_kl: bool


def column(a, k):
  """a[:, k:k+1] of a [bn, STATS] (or wider) value, as a masked row sum (GPU Pallas cannot slice register values)."""
  return jnp.sum(jnp.where(jax.lax.broadcasted_iota(jnp.int32, a.shape, 1) == k, a, 0.0), axis=1, keepdims=True)


def stack(columns: dict, width: int):
  """[bn, width] with columns {k: [bn, 1]} at k (the rest 0), without a concatenate."""
  index = jax.lax.broadcasted_iota(jnp.int32, (1, width), 1)
  return sum(jnp.where(index == k, c, 0.0) for k, c in columns.items())


def dot(a, b, contract):
  """float32-accumulated a . b over dims `contract` ((lhs,), (rhs,)), in the operands' dtype (float32 at HIGHEST)."""
  precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=jnp.float32)


def d_chunks(h_ref, tiling: Tiling):
  """The number of block_d chunks of D."""
  return h_ref.shape[1] // tiling.block_d


def masked_logits(product, j, tiling: Tiling):
  """float32 [bn, bv] logits / T of vocabulary tile j from its product h W [bn, bv], masked past V, and the tile's
  column ids [1, bv]."""
  ids = j * tiling.block_v + jax.lax.broadcasted_iota(jnp.int32, (1, tiling.block_v), 1)
  return jnp.where(ids < tiling.vocab, product / tiling.temperature, MASKED_LOGIT), ids


def tile_logits(h_ref, w_ref, j, tiling: Tiling):
  """masked_logits of vocabulary tile j, its product computed here (over D in block_d chunks)."""
  bd, bv = tiling.block_d, tiling.block_v
  cols = pl.ds(j * bv, bv)
  if d_chunks(h_ref, tiling) == 1:
    s = dot(h_ref[...], w_ref[:, cols], ((1,), (0,)))
  else:
    def chunk(k, acc):
      d = pl.ds(k * bd, bd)
      return acc + dot(h_ref[:, d], w_ref[d, cols], ((1,), (0,)))
    s = jax.lax.fori_loop(0, d_chunks(h_ref, tiling), chunk,
                          jnp.zeros((h_ref.shape[0], bv), jnp.float32))
  return masked_logits(s, j, tiling)


def _online(m, total, extra, s):
  """Folds logits s [bn, bv] into (running max m, sum of exp, sum of exp * (s - m)).

  Returns the new three, the shifted logits s - m_new and their exp.
  """
  m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
  shift, x = m - m_new, s - m_new
  e, a = jnp.exp(x), jnp.exp(m - m_new)
  return (m_new, a * total + jnp.sum(e, 1, keepdims=True),
          a * (extra + shift * total) + jnp.sum(e * x, 1, keepdims=True), x, e)


# The rows' running accumulators [bn, 1] over the vocabulary tiles, in this order (a tuple, or slots of a TPU
# kernel's scratch): student max, sum of exp, sum of exp * shifted logit, target logit; teacher max, sum of exp,
# target logit; the two KLs' exp-weighted sums of (x_t - x_s) and (x_s - x_t).
M_S, SUM_S, ENT_S, TGT_S, M_T, SUM_T, TGT_T, DIF_T, DIF_S = range(9)
CARRY = 9
CARRY_WIDTH = 16   # the slots as the columns of a GPU program's output block (a power of two)


def initial_carry(rows: int) -> tuple:
  """The accumulators before the first tile: maxes at MASKED_LOGIT, the rest 0."""
  return tuple(jnp.full((rows, 1), MASKED_LOGIT if k in (M_S, M_T) else 0.0, jnp.float32) for k in range(CARRY))


def fold_tile(carry: tuple, s, t, ids, y, tiling: Tiling) -> tuple:
  """The accumulators after one vocabulary tile: logits s (and the teacher's t) [bn, bv] / T, masked past V, column
  ids [1, bv], targets y [bn, 1]."""
  m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = carry
  hit = ids == y
  tgt_s = tgt_s + jnp.sum(jnp.where(hit, s, 0.0), 1, keepdims=True)
  old_ms, old_sum_s = m_s, sum_s
  m_s, sum_s, ent_s, x_s, e_s = _online(m_s, sum_s, ent_s, s)
  if tiling.teacher:
    tgt_t = tgt_t + jnp.sum(jnp.where(hit, t, 0.0), 1, keepdims=True)
    old_mt, old_sum_t = m_t, sum_t
    m_t, sum_t, _, x_t, e_t = _online(m_t, sum_t, jnp.zeros_like(sum_t), t)
    if tiling.with_kl:   # each old term's value (x_t - x_s) moves by d_t - d_s when the maxes move
      d_s, d_t = old_ms - m_s, old_mt - m_t
      dif_t = jnp.exp(d_t) * (dif_t + (d_t - d_s) * old_sum_t) + jnp.sum(e_t * (x_t - x_s), 1, keepdims=True)
      dif_s = jnp.exp(d_s) * (dif_s + (d_s - d_t) * old_sum_s) + jnp.sum(e_s * (x_s - x_t), 1, keepdims=True)
  return m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s


def row_statistics(carry: tuple, tiling: Tiling) -> dict:
  """{column (LSE ... LSE_T): [bn, 1]} from the accumulators after the last tile."""
  m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = carry
  log_sum_s = jnp.log(sum_s)
  lse_s = m_s + log_sum_s
  columns = {LSE: lse_s, LOGP: tgt_s - lse_s, ENT: log_sum_s - ent_s / sum_s}
  if tiling.teacher:
    log_sum_t = jnp.log(sum_t)
    lse_t = m_t + log_sum_t
    columns.update({T_LOGP: tgt_t - lse_t, LSE_T: lse_t})
    if tiling.with_kl:
      columns.update({KL_TS: dif_t / sum_t + log_sum_s - log_sum_t, KL_ST: dif_s / sum_s + log_sum_t - log_sum_s})
  return columns


def merge_carries(carries: tuple) -> tuple:
  """The accumulators of the whole vocabulary from those of disjoint runs of its tiles: each slot [runs, N, 1]
  (one row of accumulators per run) to [N, 1]. Every run's values are moved to the common maxes, as fold_tile moves
  a row's when a tile raises them."""
  m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = carries
  top_s, top_t = jnp.max(m_s, axis=0), jnp.max(m_t, axis=0)
  d_s, d_t = m_s - top_s, m_t - top_t                # <= 0 for every run
  a_s, a_t = jnp.exp(d_s), jnp.exp(d_t)
  total = lambda x: jnp.sum(x, axis=0)  # noqa: E731
  return (top_s, total(a_s * sum_s), total(a_s * (ent_s + d_s * sum_s)), total(tgt_s),
          top_t, total(a_t * sum_t), total(tgt_t),
          total(a_t * (dif_t + (d_t - d_s) * sum_t)), total(a_s * (dif_s + (d_s - d_t) * sum_s)))


def forward_kernel(*refs, tiling: Tiling, tiles_per_run: int):
  """GPU program (i, r): the accumulators [bn, CARRY_WIDTH] (slots M_S ... DIF_S) of row block i over run r of the
  vocabulary tiles (tiles r * tiles_per_run ... (r + 1) * tiles_per_run - 1). merge_carries joins the runs."""
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if tiling.teacher else (None, None)
  y, first = y_ref[...], pl.program_id(1) * tiles_per_run

  def body(k, carry):
    s, ids = tile_logits(h_ref, w_ref, first + k, tiling)
    t = tile_logits(ht_ref, wt_ref, first + k, tiling)[0] if tiling.teacher else None
    return fold_tile(carry, s, t, ids, y, tiling)

  carry = jax.lax.fori_loop(0, tiles_per_run, body, initial_carry(h_ref.shape[0]))
  refs[-1][...] = stack(dict(enumerate(carry)), CARRY_WIDTH)


def cotangent_of_logits(s, t, ids, y, res, g, tiling: Tiling):
  """float32 [bn, bv]: dLoss/d(h W) of one tile (the cotangent of the logits s = h W / T, divided by T) from its
  logits s (and the teacher's t) [bn, bv], column ids [1, bv], targets y [bn, 1], the rows' residuals `res` and
  cotangents `g` ([bn, STATS] or wider):

      dS = (p (g_lse - g_logp - g_ent (log p + H) + g_kts + g_kst (log p - log q - KL_st))
            + g_logp [v = y] - g_kts q) / T
  """
  logp = s - column(res, LSE)
  coef = column(g, LSE) - column(g, LOGP) - column(g, ENT) * (logp + column(res, ENT))
  ds = jnp.where(ids == y, column(g, LOGP), 0.0)
  if tiling.teacher:
    logq = t - column(res, LSE_T)
    coef = coef + column(g, KL_TS) + column(g, KL_ST) * (logp - logq - column(res, KL_ST))
    ds = ds - column(g, KL_TS) * jnp.exp(logq)
  return jnp.where(ids < tiling.vocab, jnp.exp(logp) * coef + ds, 0.0) / tiling.temperature


def logits_cotangent(h_ref, ht_ref, w_ref, wt_ref, y, res, g, j, tiling: Tiling):
  """float32 [bn, bv]: the cotangent (cotangent_of_logits) of vocabulary tile j, its logits computed here."""
  s, ids = tile_logits(h_ref, w_ref, j, tiling)
  t = tile_logits(ht_ref, wt_ref, j, tiling)[0] if tiling.teacher else None
  return cotangent_of_logits(s, t, ids, y, res, g, tiling)
