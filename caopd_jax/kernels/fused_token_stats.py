"""Pallas kernels: per-row softmax statistics of h @ W in one online pass over vocabulary tiles, and their VJP.

Same contract as `losses.token_stats` (the pure-JAX reference and fallback): from final hidden
states h [N, D], the unembedding W [D, V] and target ids y [N] (and the teacher's h_t, W_t) to
float32 per row: logsumexp, log p(y), entropy, and optionally log q(y), KL(q || p), KL(p || q),
never writing [N, V] to memory.

Forward: one program per block of `block_n` rows; a loop over vocabulary tiles of `block_v`
columns computes the tile's logits and folds them into online-softmax accumulators (values kept
relative to the running max, as in token_stats.py). Columns past V are masked to a finite
-1e30, so any V works (W is padded to a whole number of tiles in the wrapper).

Backward (custom_vjp): with the per-row residuals (lse_s, entropy, lse_t, kl_st), the logits'
cotangent of a tile is
    dS = p (g_lse - g_logp - g_ent (log p + H) + g_kts + g_kst (log p - log q - KL_st)) + g_logp [v = y] - g_kts q
recomputed tile by tile; one kernel accumulates dH = dS W^T / T over vocabulary tiles per row
block, a second accumulates dW = H^T dS / T over row blocks per vocabulary tile (float32
accumulators). The teacher gets no gradient. Rows past N are zero with zero cotangent.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from caopd_jax.losses.token_stats import TokenStats, _prepare

try:  # the Triton backend: Pallas' GPU path for kernels written with block specs and pl.ds slicing
  from jax.experimental.pallas import triton as pltriton
except ImportError:  # pragma: no cover - jaxlib without GPU Pallas
  pltriton = None

_MASKED = -1e30
# Columns of the forward's per-row output [N, 8].
LSE, LOGP, ENT, T_LOGP, KL_TS, KL_ST, LSE_T = range(7)
STATS = 8


def _column(a, k):
  """a[:, k:k+1] of a [bn, STATS] value, as a masked row sum (GPU Pallas cannot slice register values)."""
  return jnp.sum(jnp.where(jax.lax.broadcasted_iota(jnp.int32, a.shape, 1) == k, a, 0.0), axis=1, keepdims=True)


def _stack(columns):
  """[bn, STATS] from up to STATS columns [bn, 1] (the rest 0), without a concatenate."""
  index = jax.lax.broadcasted_iota(jnp.int32, (1, STATS), 1)
  return sum(jnp.where(index == k, c, 0.0) for k, c in enumerate(columns))


def _tile_logits(h, w_ref, j, block_v, vocab, temperature):
  """float32 [bn, bv] logits of vocabulary tile j, masked past `vocab`, and the tile's column ids [1, bv]."""
  w = w_ref[:, pl.ds(j * block_v, block_v)]
  s = _dot(h, w, (((1,), (0,)), ((), ()))) / temperature
  cols = j * block_v + jax.lax.broadcasted_iota(jnp.int32, (1, block_v), 1)
  return jnp.where(cols < vocab, s, _MASKED), cols


def _online(m, total, extra, s):
  """Folds logits s [bn, bv] into (running max m, sum of exp, sum of exp * (s - m)); returns them and the shift."""
  m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
  shift, x = m - m_new, s - m_new
  e, a = jnp.exp(x), jnp.exp(m - m_new)
  return m_new, a * total + jnp.sum(e, 1, keepdims=True), a * (extra + shift * total) + jnp.sum(e * x, 1,
                                                                                              keepdims=True), x, e


def _forward_kernel(*refs, vocab, block_v, temperature, teacher, with_kl):
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if teacher else (None, None)
  out_ref = refs[-1]
  h, y = h_ref[...], y_ref[...]
  ht = ht_ref[...] if teacher else None
  bn = h.shape[0]
  col = jnp.full((bn, 1), _MASKED, jnp.float32)
  zero = jnp.zeros((bn, 1), jnp.float32)

  def body(j, carry):
    m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = carry
    s, cols = _tile_logits(h, w_ref, j, block_v, vocab, temperature)
    hit = cols == y
    tgt_s = tgt_s + jnp.sum(jnp.where(hit, s, 0.0), 1, keepdims=True)
    old_ms, old_sum_s = m_s, sum_s
    m_s, sum_s, ent_s, x_s, e_s = _online(m_s, sum_s, ent_s, s)
    if teacher:
      t, _ = _tile_logits(ht, wt_ref, j, block_v, vocab, temperature)
      tgt_t = tgt_t + jnp.sum(jnp.where(hit, t, 0.0), 1, keepdims=True)
      old_mt, old_sum_t = m_t, sum_t
      m_t, sum_t, _, x_t, e_t = _online(m_t, sum_t, zero, t)
      if with_kl:
        d_s, d_t = old_ms - m_s, old_mt - m_t
        dif_t = jnp.exp(d_t) * (dif_t + (d_t - d_s) * old_sum_t) + jnp.sum(e_t * (x_t - x_s), 1, keepdims=True)
        dif_s = jnp.exp(d_s) * (dif_s + (d_s - d_t) * old_sum_s) + jnp.sum(e_s * (x_s - x_t), 1, keepdims=True)
    return m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s

  n_tiles = w_ref.shape[1] // block_v
  m_s, sum_s, ent_s, tgt_s, m_t, sum_t, tgt_t, dif_t, dif_s = jax.lax.fori_loop(
      0, n_tiles, body, (col, zero, zero, zero, col, zero, zero, zero, zero))
  log_sum_s = jnp.log(sum_s)
  lse_s = m_s + log_sum_s
  columns = [lse_s, tgt_s - lse_s, log_sum_s - ent_s / sum_s]
  if teacher:
    log_sum_t = jnp.log(sum_t)
    lse_t = m_t + log_sum_t
    kl_ts = dif_t / sum_t + log_sum_s - log_sum_t if with_kl else zero
    kl_st = dif_s / sum_s + log_sum_t - log_sum_s if with_kl else zero
    columns += [tgt_t - lse_t, kl_ts, kl_st, lse_t]
  out_ref[...] = _stack(columns)


def _logits_cotangent(h, ht, w_ref, wt_ref, y, res, g, j, *, block_v, vocab, temperature, teacher):
  """float32 [bn, bv]: dLoss/dlogits of vocabulary tile j (module docstring); res, g: [bn, STATS]."""
  s, cols = _tile_logits(h, w_ref, j, block_v, vocab, temperature)
  col = _column
  logp = s - col(res, LSE)
  p = jnp.exp(logp)
  coef = col(g, LSE) - col(g, LOGP) - col(g, ENT) * (logp + col(res, ENT))
  ds = jnp.where(cols == y, col(g, LOGP), 0.0)
  if teacher:
    t, _ = _tile_logits(ht, wt_ref, j, block_v, vocab, temperature)
    logq = t - col(res, LSE_T)
    coef = coef + col(g, KL_TS) + col(g, KL_ST) * (logp - logq - col(res, KL_ST))
    ds = ds - col(g, KL_TS) * jnp.exp(logq)
  return jnp.where(cols < vocab, p * coef + ds, 0.0)


def _dot(a, b, dimensions):
  """float32-accumulated dot_general in the operands' dtype (bf16 tiles stay bf16; float32 at full precision)."""
  precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return jax.lax.dot_general(a, b, dimensions, precision=precision, preferred_element_type=jnp.float32)


def _grad_h_kernel(*refs, vocab, block_v, temperature, teacher):
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if teacher else (None, None)
  res_ref, g_ref, dh_ref = refs[-3:]
  h, y, res, g = h_ref[...], y_ref[...], res_ref[...], g_ref[...]
  ht = ht_ref[...] if teacher else None

  def body(j, dh):
    ds = _logits_cotangent(h, ht, w_ref, wt_ref, y, res, g, j, block_v=block_v, vocab=vocab,
                           temperature=temperature, teacher=teacher)
    w = w_ref[:, pl.ds(j * block_v, block_v)]
    return dh + _dot(ds.astype(w.dtype), w, (((1,), (1,)), ((), ())))

  dh = jax.lax.fori_loop(0, w_ref.shape[1] // block_v, body, jnp.zeros(h.shape, jnp.float32))
  dh_ref[...] = (dh / temperature).astype(dh_ref.dtype)


def _grad_w_kernel(*refs, vocab, block_v, block_n, temperature, teacher):
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if teacher else (None, None)
  res_ref, g_ref, dw_ref = refs[-3:]
  j = pl.program_id(0)

  def body(i, dw):
    rows = pl.ds(i * block_n, block_n)
    h = h_ref[rows, :]
    ht = ht_ref[rows, :] if teacher else None
    ds = _logits_cotangent(h, ht, w_ref, wt_ref, y_ref[rows, :], res_ref[rows, :], g_ref[rows, :], j,
                           block_v=block_v, vocab=vocab, temperature=temperature, teacher=teacher)
    return dw + _dot(h, ds.astype(h.dtype), (((0,), (0,)), ((), ())))

  dw = jax.lax.fori_loop(0, h_ref.shape[0] // block_n, body, jnp.zeros(dw_ref.shape, jnp.float32))
  dw_ref[...] = (dw / temperature).astype(dw_ref.dtype)


def _pad_to(x, size, axis):
  return jnp.pad(x, [(0, size - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])


class _Static(NamedTuple):
  """Static (hashable) arguments of one call."""
  vocab: int
  block_n: int
  block_v: int
  temperature: float
  teacher: bool
  with_kl: bool
  interpret: bool


def _inputs(h, w, y, ht, wt, st: _Static):
  """Row-padded h [Np, D], y [Np, 1], W padded to whole tiles, and the teacher's, as kernel operands."""
  n_pad = -(-h.shape[0] // st.block_n) * st.block_n
  v_pad = -(-st.vocab // st.block_v) * st.block_v
  ops = [_pad_to(h, n_pad, 0), _pad_to(w, v_pad, 1), _pad_to(y.astype(jnp.int32)[:, None], n_pad, 0)]
  if st.teacher:
    ops += [_pad_to(ht, n_pad, 0), _pad_to(wt, v_pad, 1)]
  return ops


def _specs(ops, st: _Static, rows_blocked: bool):
  """BlockSpecs: row-blocked operands take block i of rows (grid over rows) or all rows (grid over tiles)."""
  full = lambda x: pl.BlockSpec(x.shape, lambda i: (0,) * x.ndim)  # noqa: E731
  rows = lambda x: pl.BlockSpec((st.block_n, x.shape[1]), lambda i: (i, 0))  # noqa: E731
  kinds = ["rows", "full", "rows"] + (["rows", "full"] if st.teacher else [])
  return [rows(x) if kind == "rows" and rows_blocked else full(x) for x, kind in zip(ops, kinds)]


def _compiler_params(st: _Static):
  """Triton on NVIDIA GPUs (see kernels/README.md for why not Mosaic GPU); the platform default elsewhere."""
  if st.interpret or pltriton is None or jax.default_backend() != "gpu":
    return None
  return pltriton.CompilerParams(num_warps=4, num_stages=2)


def _forward(h, w, y, ht, wt, st: _Static):
  """float32 [N, STATS] per-row statistics."""
  ops = _inputs(h, w, y, ht, wt, st)
  n_pad = ops[0].shape[0]
  kernel = functools.partial(_forward_kernel, vocab=st.vocab, block_v=st.block_v, temperature=st.temperature,
                             teacher=st.teacher, with_kl=st.with_kl)
  out = pl.pallas_call(kernel, grid=(n_pad // st.block_n,), in_specs=_specs(ops, st, True),
                       out_specs=pl.BlockSpec((st.block_n, STATS), lambda i: (i, 0)),
                       out_shape=jax.ShapeDtypeStruct((n_pad, STATS), jnp.float32), interpret=st.interpret, compiler_params=_compiler_params(st))(*ops)
  return out[:h.shape[0]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def fused_stats(h, w, y, ht, wt, st: _Static):
  """float32 [N, STATS] (columns LSE, LOGP, ENT, T_LOGP, KL_TS, KL_ST, LSE_T); differentiable in h and w."""
  return _forward(h, w, y, ht, wt, st)


def _fused_fwd(h, w, y, ht, wt, st):
  out = _forward(h, w, y, ht, wt, st)
  return out, (h, w, y, ht, wt, out)


def _fused_bwd(st, residuals, g):
  h, w, y, ht, wt, res = residuals
  ops = _inputs(h, w, y, ht, wt, st)
  n_pad, v_pad = ops[0].shape[0], ops[1].shape[1]
  extra = [_pad_to(res, n_pad, 0), _pad_to(g.astype(jnp.float32), n_pad, 0)]
  common = dict(vocab=st.vocab, block_v=st.block_v, temperature=st.temperature, teacher=st.teacher)
  stat_rows = pl.BlockSpec((st.block_n, STATS), lambda i: (i, 0))
  dh = pl.pallas_call(functools.partial(_grad_h_kernel, **common), grid=(n_pad // st.block_n,),
                      in_specs=_specs(ops, st, True) + [stat_rows, stat_rows],
                      out_specs=pl.BlockSpec((st.block_n, h.shape[1]), lambda i: (i, 0)),
                      out_shape=jax.ShapeDtypeStruct((n_pad, h.shape[1]), h.dtype),
                      interpret=st.interpret, compiler_params=_compiler_params(st))(*ops, *extra)
  stat_all = pl.BlockSpec((n_pad, STATS), lambda j: (0, 0))
  dw = pl.pallas_call(functools.partial(_grad_w_kernel, block_n=st.block_n, **common),
                      grid=(v_pad // st.block_v,), in_specs=_specs(ops, st, False) + [stat_all, stat_all],
                      out_specs=pl.BlockSpec((w.shape[0], st.block_v), lambda j: (0, j)),
                      out_shape=jax.ShapeDtypeStruct((w.shape[0], v_pad), w.dtype),
                      interpret=st.interpret, compiler_params=_compiler_params(st))(*ops, *extra)
  zeros = lambda x: None if x is None else jnp.zeros_like(x)  # noqa: E731
  return dh[:h.shape[0]], dw[:, :st.vocab], None, zeros(ht), zeros(wt)


fused_stats.defvjp(_fused_fwd, _fused_bwd)


def token_stats_pallas(h_s, w_s, targets, h_t=None, w_t=None, *, temperature=1.0, chunk_size=128, with_kl=False,
                       block_n=64, interpret=None) -> TokenStats:
  """`losses.token_stats` through the Pallas kernels; `chunk_size` is the vocabulary tile (block_v).

  interpret: run the kernels in Pallas' interpreter (default: on the CPU backend, where there is no
  compiled Pallas).
  """
  lead = targets.shape
  h_s, targets, h_t, w_t = _prepare(h_s, w_s, targets, h_t, w_t, with_kl)
  interpret = jax.default_backend() == "cpu" if interpret is None else interpret
  st = _Static(w_s.shape[1], block_n, min(chunk_size, w_s.shape[1]), float(temperature), h_t is not None,
               with_kl, interpret)
  out = fused_stats(h_s, w_s, targets, h_t, w_t, st)
  pick = lambda k: out[:, k].reshape(lead)  # noqa: E731
  fields = {"logsumexp": pick(LSE), "logprob": pick(LOGP), "entropy": pick(ENT)}
  if st.teacher:
    fields["teacher_logprob"] = pick(T_LOGP)
    if with_kl:
      fields.update(kl_ts=pick(KL_TS), kl_st=pick(KL_ST))
  return TokenStats(**fields)
