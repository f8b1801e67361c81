"""Per-token statistics of LM-head softmaxes, streamed over vocabulary chunks.

The distillation losses need, for every completion position, a few numbers from
the student's (and the teacher's) softmax over the vocabulary: the log-partition,
the log-prob of the sampled token, the entropy and the two KL directions. The
full float32 logits [N, V] of two models are the largest tensors of a training
step (N = 32k positions x V = 150k is about 18 GiB each), so `token_stats` never
builds them: a `lax.scan` walks the vocabulary in chunks of `chunk_size`
columns, computes the [N, chunk] logits of the chunk and folds them into
online-softmax accumulators (running max, sum of exp, exp-weighted sums). Each
chunk step is wrapped in `jax.checkpoint`, so the backward pass recomputes a
chunk's logits instead of keeping them.

All accumulators hold values relative to the running max, e.g.
sum_v exp(s_v - m) * (s_v - m), so the entropy log S - E/S and the KLs are
differences of O(log V) numbers rather than of raw logits: no cancellation for
peaky (large-magnitude) logits. The running max is a stop-gradient constant;
every formula below is exact for any constant shift, so gradients are exact.

`token_stats_naive` materialises the logits: the reference implementation, and
the choice for small vocabularies. The configured implementation (naive, xla_chunked, the Pallas kernels,
or auto) is picked by kernels/registry.py.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

# Logit of a padded vocabulary column: its exp is exactly 0 and differences of two
# masked logits stay finite (never -inf - -inf = NaN). Also the running max's start value. The Pallas kernels
# (kernels/token_stats_tiles.py) mask with the same constant.
MASKED_LOGIT = -1e30


class TokenStats(NamedTuple):
  """float32 per-row statistics, each of the targets' shape (rows N: flattened positions).

  logsumexp: log sum_v exp(s_v) of the student logits s; logprob: log p_s(target);
  entropy: -sum_v p_s log p_s (nats). With a teacher: teacher_logprob: log p_t(target);
  with `with_kl` also kl_ts = KL(p_t || p_s) and kl_st = KL(p_s || p_t) (nats); with a `threshold`
  (a raw logit per row; the tail is every v whose raw logit h . w_v is below it): tail_mass = sum_tail p_s
  and tail_kl = sum_tail p_s (log p_s - log p_t), the tail's part of kl_st.
  Fields that were not asked for are None. Values are not clipped: entropy and KLs
  can be a rounding error below 0.
  """
  logsumexp: jax.Array
  logprob: jax.Array
  entropy: jax.Array
  teacher_logprob: jax.Array | None = None
  kl_ts: jax.Array | None = None
  kl_st: jax.Array | None = None
  tail_mass: jax.Array | None = None
  tail_kl: jax.Array | None = None


def _logits(h, w, temperature):
  """float32 [N, V'] logits (h @ w) / temperature of h [N, D] and w [D, V'], accumulated in float32."""
  return jnp.matmul(h, w, preferred_element_type=jnp.float32) / temperature


def _target_logit(h, w, targets, temperature):
  """float32 [N] logit of each row's target: h[n] . w[:, targets[n]] / temperature."""
  columns = jnp.take(w, targets, axis=1)
  return jnp.einsum("nd,dn->n", h, columns, preferred_element_type=jnp.float32) / temperature


def prepare_inputs(h_s, w_s, targets, h_t, w_t, with_kl, threshold=None):
  """Checks the inputs of every token-stats implementation (ValueError naming the mismatch); flattens rows;
  stop-gradients the teacher. Returns (h_s [N, D], targets [N], h_t [N, D_t] or None, w_t or None)."""
  if (h_t is None) != (w_t is None):
    raise ValueError("give both teacher inputs h_t and w_t, or neither")
  if (with_kl or threshold is not None) and h_t is None:
    raise ValueError("with_kl=True and a threshold need the teacher inputs h_t and w_t")
  if threshold is not None and threshold.shape != targets.shape:
    raise ValueError(f"threshold has shape {threshold.shape}, targets {targets.shape}; they must match")
  if h_s.shape[:-1] != targets.shape or h_s.shape[-1] != w_s.shape[0]:
    raise ValueError(f"shapes do not fit: h_s {h_s.shape}, w_s {w_s.shape}, targets {targets.shape}")
  if h_t is not None:
    if h_t.shape[:-1] != targets.shape or h_t.shape[-1] != w_t.shape[0] or w_t.shape[1] != w_s.shape[1]:
      raise ValueError(f"teacher shapes do not fit: h_t {h_t.shape}, w_t {w_t.shape}, w_s {w_s.shape}")
    h_t = jax.lax.stop_gradient(h_t.reshape(-1, h_t.shape[-1]))
    w_t = jax.lax.stop_gradient(w_t)
  return h_s.reshape(-1, h_s.shape[-1]), targets.reshape(-1), h_t, w_t


def token_stats_naive(h_s, w_s, targets, h_t=None, w_t=None, *, temperature=1.0, chunk_size=4096,
                      with_kl=False, threshold=None) -> TokenStats:
  """`token_stats` computed from the full float32 logits [N, V] (`chunk_size` is ignored)."""
  lead = targets.shape
  h_s, targets, h_t, w_t = prepare_inputs(h_s, w_s, targets, h_t, w_t, with_kl, threshold)
  logits_s = _logits(h_s, w_s, temperature)
  logp_s = jax.nn.log_softmax(logits_s, axis=-1)
  pick = lambda logp: jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0].reshape(lead)
  p_s = jnp.exp(logp_s)
  out = {"logsumexp": jax.nn.logsumexp(logits_s, axis=-1).reshape(lead),
         "logprob": pick(logp_s), "entropy": -jnp.sum(p_s * logp_s, axis=-1).reshape(lead)}
  if h_t is not None:
    logp_t = jax.nn.log_softmax(_logits(h_t, w_t, temperature), axis=-1)
    out["teacher_logprob"] = pick(logp_t)
    if with_kl:
      out["kl_ts"] = jnp.sum(jnp.exp(logp_t) * (logp_t - logp_s), axis=-1).reshape(lead)
      out["kl_st"] = jnp.sum(p_s * (logp_s - logp_t), axis=-1).reshape(lead)
    if threshold is not None:
      tail = logits_s < threshold.reshape(-1, 1) / temperature
      out["tail_mass"] = jnp.sum(jnp.where(tail, p_s, 0.0), axis=-1).reshape(lead)
      out["tail_kl"] = jnp.sum(jnp.where(tail, p_s * (logp_s - logp_t), 0.0), axis=-1).reshape(lead)
  return TokenStats(**out)


def _shift(m_old, logits):
  """Online-softmax step: (m_new, m_old - m_new, logits - m_new, exp(logits - m_new)).

  m_old [N]; logits float32 [N, C]. The new running max is a stop-gradient constant.
  """
  m_new = jax.lax.stop_gradient(jnp.maximum(m_old, jnp.max(logits, axis=-1)))
  x = logits - m_new[:, None]
  return m_new, m_old - m_new, x, jnp.exp(x)


def _chunk_step(carry, chunk, *, h_s, h_t, temperature, with_kl, threshold):
  """Folds one vocabulary chunk into the accumulators (see `_init` for their meaning)."""
  w_s_chunk, valid = chunk[:2]
  s = jnp.where(valid, _logits(h_s, w_s_chunk, temperature), MASKED_LOGIT)
  m_s, d_s, x_s, e_s = _shift(carry["m_s"], s)
  a_s = jnp.exp(d_s)
  new = {"m_s": m_s, "sum_s": a_s * carry["sum_s"] + jnp.sum(e_s, axis=-1),
         "ent_s": a_s * (carry["ent_s"] + d_s * carry["sum_s"]) + jnp.sum(e_s * x_s, axis=-1)}
  if h_t is None:
    return new, None
  t = jnp.where(valid, _logits(h_t, chunk[2], temperature), MASKED_LOGIT)
  m_t, d_t, x_t, e_t = _shift(carry["m_t"], t)
  a_t = jnp.exp(d_t)
  new.update(m_t=m_t, sum_t=a_t * carry["sum_t"] + jnp.sum(e_t, axis=-1))
  if with_kl:
    # Each old term's value (x_t - x_s) moves by d_t - d_s when the maxes move.
    new["dif_t"] = a_t * (carry["dif_t"] + (d_t - d_s) * carry["sum_t"]) + jnp.sum(e_t * (x_t - x_s), axis=-1)
    new["dif_s"] = a_s * (carry["dif_s"] + (d_s - d_t) * carry["sum_s"]) + jnp.sum(e_s * (x_s - x_t), axis=-1)
  if threshold is not None:
    e_tail = jnp.where(s < threshold[:, None], e_s, 0.0)
    new["tail_s"] = a_s * carry["tail_s"] + jnp.sum(e_tail, axis=-1)
    new["tail_dif"] = (a_s * (carry["tail_dif"] + (d_s - d_t) * carry["tail_s"])
                       + jnp.sum(e_tail * (x_s - x_t), axis=-1))
  return new, None


def _init(n, teacher, with_kl, tail):
  """Accumulators, float32 [N] each, for running maxes m_s, m_t (of logits s, t):

  sum_s = sum_v exp(s - m_s); ent_s = sum_v exp(s - m_s) (s - m_s);
  sum_t = sum_v exp(t - m_t); dif_t = sum_v exp(t - m_t) ((t - m_t) - (s - m_s));
  dif_s = sum_v exp(s - m_s) ((s - m_s) - (t - m_t));
  tail_s, tail_dif: sum_s and dif_s over the tail (s below the row's threshold) only.
  The maxes start at MASKED_LOGIT, so the first chunk's rescale factor is exactly 0.
  """
  names = (["sum_s", "ent_s"] + (["sum_t"] if teacher else []) + (["dif_t", "dif_s"] if with_kl else [])
           + (["tail_s", "tail_dif"] if tail else []))
  carry = {name: jnp.zeros((n,), jnp.float32) for name in names}
  carry.update({m: jnp.full((n,), MASKED_LOGIT, jnp.float32) for m in (["m_s", "m_t"] if teacher else ["m_s"])})
  return carry


def token_stats(h_s, w_s, targets, h_t=None, w_t=None, *, temperature=1.0, chunk_size=4096,
                with_kl=False, threshold=None) -> TokenStats:
  """Student (and teacher) softmax statistics per row without materialising the [N, V] logits.

  h_s [..., D] student final hidden states (any float dtype); w_s [D, V] student unembedding;
  targets int [...] token ids in [0, V) (the tokens whose log-probs are wanted);
  h_t [..., D_t], w_t [D_t, V]: the teacher's, optional, stop-gradient.
  threshold float32 [...] (needs the teacher): raw logits; the vocabulary below a row's is its tail
  (TokenStats.tail_mass, tail_kl). A constant: no gradient flows into it.
  Logits are (h @ w) / temperature in float32. The vocabulary is scanned in chunks of
  min(chunk_size, V) columns; W is padded with zero columns up to a multiple of the chunk
  and the padded logits are masked to a large finite negative. Peak extra memory: a few
  float32 [N, chunk] per model. Differentiable w.r.t. h_s and w_s (autodiff through the
  scan, chunk logits recomputed in the backward). Returns `TokenStats` (shapes as targets).
  """
  lead = targets.shape
  h_s, targets, h_t, w_t = prepare_inputs(h_s, w_s, targets, h_t, w_t, with_kl, threshold)
  teacher = h_t is not None
  scaled_threshold = None if threshold is None else jax.lax.stop_gradient(threshold.reshape(-1)) / temperature
  vocab = w_s.shape[1]
  chunk = min(chunk_size, vocab)
  n_chunks = -(-vocab // chunk)

  def chunked(w):  # [D, V] -> [n_chunks, D, chunk]
    w = jnp.pad(w, ((0, 0), (0, n_chunks * chunk - vocab)))
    return w.reshape(w.shape[0], n_chunks, chunk).swapaxes(0, 1)

  valid = (jnp.arange(n_chunks * chunk) < vocab).reshape(n_chunks, chunk)
  xs = (chunked(w_s), valid) + ((chunked(w_t),) if teacher else ())
  step = jax.checkpoint(functools.partial(_chunk_step, h_s=h_s, h_t=h_t, temperature=temperature,
                                          with_kl=with_kl, threshold=scaled_threshold))
  acc, _ = jax.lax.scan(step, _init(h_s.shape[0], teacher, with_kl, threshold is not None), xs)

  log_sum_s = jnp.log(acc["sum_s"])
  lse_s = acc["m_s"] + log_sum_s
  out = {"logsumexp": lse_s, "logprob": _target_logit(h_s, w_s, targets, temperature) - lse_s,
         "entropy": log_sum_s - acc["ent_s"] / acc["sum_s"]}
  if teacher:
    log_sum_t = jnp.log(acc["sum_t"])
    out["teacher_logprob"] = _target_logit(h_t, w_t, targets, temperature) - (acc["m_t"] + log_sum_t)
    if with_kl:
      out["kl_ts"] = acc["dif_t"] / acc["sum_t"] + log_sum_s - log_sum_t
      out["kl_st"] = acc["dif_s"] / acc["sum_s"] + log_sum_t - log_sum_s
    if threshold is not None:
      out["tail_mass"] = acc["tail_s"] / acc["sum_s"]
      out["tail_kl"] = acc["tail_dif"] / acc["sum_s"] + (log_sum_t - log_sum_s) * out["tail_mass"]
  return TokenStats(**{k: v.reshape(lead) for k, v in out.items()})

