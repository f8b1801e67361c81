"""In-kernel tile arithmetic of the fused token-stats kernels: tile logits, online softmax, the forward
kernel, and the logits' cotangent of one tile.

Shapes: a program holds a block of `block_n` rows (h [bn, Dp]) and walks vocabulary tiles of `block_v`
columns of W [Dp, Vp]. A tile's logits [bn, bv] are accumulated over D in chunks of `block_d` (on GPUs
the whole [bn, D] x [D, bv] product does not fit in shared memory; on TPU block_d = D, one chunk).
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
  """a[:, k:k+1] of a [bn, STATS] value, as a masked row sum (GPU Pallas cannot slice register values)."""
  return jnp.sum(jnp.where(jax.lax.broadcasted_iota(jnp.int32, a.shape, 1) == k, a, 0.0), axis=1, keepdims=True)


def stack(columns):
  """[bn, STATS] from up to STATS columns [bn, 1] (the rest 0), without a concatenate."""
  index = jax.lax.broadcasted_iota(jnp.int32, (1, STATS), 1)
  return sum(jnp.where(index == k, c, 0.0) for k, c in enumerate(columns))


def dot(a, b, contract):
  """float32-accumulated a . b over dims `contract` ((lhs,), (rhs,)), in the operands' dtype (float32 at HIGHEST)."""
  precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision, preferred_element_type=jnp.float32)


def d_chunks(h_ref, tiling: Tiling):
  """The number of block_d chunks of D."""
  return h_ref.shape[1] // tiling.block_d


def tile_logits(h_ref, w_ref, j, tiling: Tiling):
  """float32 [bn, bv] logits / T of vocabulary tile j, masked past V, and the tile's column ids [1, bv]."""
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
  ids = j * bv + jax.lax.broadcasted_iota(jnp.int32, (1, bv), 1)
  return jnp.where(ids < tiling.vocab, s / tiling.temperature, MASKED_LOGIT), ids


def _online(m, total, extra, s):
  """Folds logits s [bn, bv] into (running max m, sum of exp, sum of exp * (s - m)).

  Returns the new three, the shifted logits s - m_new and their exp.
  """
  m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
  shift, x = m - m_new, s - m_new
  e, a = jnp.exp(x), jnp.exp(m - m_new)
  return (m_new, a * total + jnp.sum(e, 1, keepdims=True),
          a * (extra + shift * total) + jnp.sum(e * x, 1, keepdims=True), x, e)


def forward_kernel(*refs, tiling: Tiling):
  """Per-row statistics [bn, STATS] of one row block, in one pass over the vocabulary tiles."""
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if tiling.teacher else (None, None)
  out_ref = refs[-1]
  y = y_ref[...]
  bn = h_ref.shape[0]
  low = jnp.full((bn, 1), MASKED_LOGIT, jnp.float32)
  zero = jnp.zeros((bn, 1), jnp.float32)

  def body(j, carry):
    m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = carry
    s, ids = tile_logits(h_ref, w_ref, j, tiling)
    hit = ids == y
    tgt_s = tgt_s + jnp.sum(jnp.where(hit, s, 0.0), 1, keepdims=True)
    old_ms, old_sum_s = m_s, sum_s
    m_s, sum_s, ent_s, x_s, e_s = _online(m_s, sum_s, ent_s, s)
    if tiling.teacher:
      t, _ = tile_logits(ht_ref, wt_ref, j, tiling)
      tgt_t = tgt_t + jnp.sum(jnp.where(hit, t, 0.0), 1, keepdims=True)
      old_mt, old_sum_t = m_t, sum_t
      m_t, sum_t, _, x_t, e_t = _online(m_t, sum_t, zero, t)
      if tiling.with_kl:
        d_s, d_t = old_ms - m_s, old_mt - m_t
        dif_t = jnp.exp(d_t) * (dif_t + (d_t - d_s) * old_sum_t) + jnp.sum(e_t * (x_t - x_s), 1, keepdims=True)
        dif_s = jnp.exp(d_s) * (dif_s + (d_s - d_t) * old_sum_s) + jnp.sum(e_s * (x_s - x_t), 1, keepdims=True)
    return m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s

  n_tiles = w_ref.shape[1] // tiling.block_v
  m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = jax.lax.fori_loop(
      0, n_tiles, body, (low, zero, zero, zero, low, zero, zero, zero, zero))
  log_sum_s = jnp.log(sum_s)
  lse_s = m_s + log_sum_s
  columns = [lse_s, tgt_s - lse_s, log_sum_s - ent_s / sum_s]
  if tiling.teacher:
    log_sum_t = jnp.log(sum_t)
    lse_t = m_t + log_sum_t
    kl_ts = dif_t / sum_t + log_sum_s - log_sum_t if tiling.with_kl else zero
    kl_st = dif_s / sum_s + log_sum_t - log_sum_s if tiling.with_kl else zero
    columns += [tgt_t - lse_t, kl_ts, kl_st, lse_t]
  out_ref[...] = stack(columns)


def logits_cotangent(h_ref, ht_ref, w_ref, wt_ref, y, res, g, j, tiling: Tiling):
  """float32 [bn, bv]: dLoss/d(logits / T) of vocabulary tile j; res, g: the rows' residuals and cotangents.

      dS = p (g_lse - g_logp - g_ent (log p + H) + g_kts + g_kst (log p - log q - KL_st))
           + g_logp [v = y] - g_kts q
  """
  s, ids = tile_logits(h_ref, w_ref, j, tiling)
  logp = s - column(res, LSE)
  coef = column(g, LSE) - column(g, LOGP) - column(g, ENT) * (logp + column(res, ENT))
  ds = jnp.where(ids == y, column(g, LOGP), 0.0)
  if tiling.teacher:
    t, _ = tile_logits(ht_ref, wt_ref, j, tiling)
    logq = t - column(res, LSE_T)
    coef = coef + column(g, KL_TS) + column(g, KL_ST) * (logp - logq - column(res, KL_ST))
    ds = ds - column(g, KL_TS) * jnp.exp(logq)
  return jnp.where(ids < tiling.vocab, jnp.exp(logp) * coef + ds, 0.0)
