"""Per-token distillation divergences and the masked token mean (CAOPD.md section 1).

Directions are named from the student's point of view (p_s student, p_t teacher):
  forward_kl  = KL(p_t || p_s) = sum_v p_t (log p_t - log p_s)   (mode-covering)
  reverse_kl  = KL(p_s || p_t) = sum_v p_s (log p_s - log p_t)   (mode-seeking)
  generalized_jsd(alpha), mixture m = alpha p_t + (1 - alpha) p_s:
      alpha KL(p_t || m) + (1 - alpha) KL(p_s || m)   for 0 < alpha < 1,
      forward_kl at alpha = 0 and reverse_kl at alpha = 1 (the reference trainer's `alpha`).
The JSD formula itself is 0 at both endpoints; the endpoints are special-cased by a Python
branch on alpha (so alpha must be a concrete number, static under jit). They are the limits of
loss / alpha as alpha -> 0 and of loss / (1 - alpha) as alpha -> 1, so the endpoints keep the
direction that the nearby mixtures lean towards but not their scale.

The full-distribution forms take log-probs [..., V] (small vocabularies, the naive path); the
`streaming_*` forms take hidden states and unembeddings and go through `token_stats` without
materialising [N, V] logits. All return per-token values [...] in nats.
"""

import jax
import jax.numpy as jnp

from caopd_jax.losses.token_stats import token_stats


def _kl(logp, logq):
  """KL(p || q) over the last axis of log-probs [..., V]; terms with p = 0 count 0 (also if log q = -inf)."""
  p = jnp.exp(logp)
  diff = jnp.where(p > 0, logp - logq, 0.0)
  return jnp.sum(p * diff, axis=-1)


def forward_kl(logp_t, logp_s):
  """KL(p_t || p_s) [...] of teacher and student log-probs [..., V] (note: teacher first)."""
  return _kl(logp_t, logp_s)


def reverse_kl(logp_s, logp_t):
  """KL(p_s || p_t) [...] of student and teacher log-probs [..., V] (note: student first)."""
  return _kl(logp_s, logp_t)


def _check_alpha(alpha):
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")


def generalized_jsd(logp_s, logp_t, alpha: float):
  """Generalised JSD [...] of student and teacher log-probs [..., V]; alpha a Python float in [0, 1].

  alpha = 0: KL(p_t || p_s); alpha = 1: KL(p_s || p_t); otherwise, with
  m = alpha p_t + (1 - alpha) p_s: alpha KL(p_t || m) + (1 - alpha) KL(p_s || m).
  """
  _check_alpha(alpha)
  if alpha == 0.0:
    return forward_kl(logp_t, logp_s)
  if alpha == 1.0:
    return reverse_kl(logp_s, logp_t)
  logm = jnp.logaddexp(logp_t + jnp.log(alpha), logp_s + jnp.log1p(-alpha))
  return alpha * _kl(logp_t, logm) + (1.0 - alpha) * _kl(logp_s, logm)


def sampled_token_reverse_kl_surrogate(logp_s_sampled, logp_t_sampled):
  """REINFORCE surrogate [...] of the sampled-token reverse KL, from log-probs of the sampled tokens [...].

  r = log pi_s(y) - log pi_t(y) is a constant reward (stop-gradient); the surrogate is r * log pi_s(y),
  so its gradient is r * grad log pi_s(y), whose expectation over y ~ pi_s is grad KL(pi_s || pi_t)
  (the extra term E[grad log pi_s] is 0). The surrogate's value is not the KL; r itself (its
  Monte Carlo estimate) is logp_s_sampled - logp_t_sampled.
  """
  reward = jax.lax.stop_gradient(logp_s_sampled - logp_t_sampled)
  return reward * logp_s_sampled


def streaming_forward_kl(h_s, w_s, h_t, w_t, *, temperature=1.0, chunk_size=4096):
  """KL(p_t || p_s) [...] from hidden states h [..., D] and unembeddings w [D, V], via `token_stats`."""
  targets = jnp.zeros(h_s.shape[:-1], jnp.int32)
  return token_stats(h_s, w_s, targets, h_t, w_t, temperature=temperature, chunk_size=chunk_size,
                     with_kl=True).kl_ts


def streaming_reverse_kl(h_s, w_s, h_t, w_t, *, temperature=1.0, chunk_size=4096):
  """KL(p_s || p_t) [...] from hidden states h [..., D] and unembeddings w [D, V], via `token_stats`."""
  targets = jnp.zeros(h_s.shape[:-1], jnp.int32)
  return token_stats(h_s, w_s, targets, h_t, w_t, temperature=temperature, chunk_size=chunk_size,
                     with_kl=True).kl_st


def sequence_means(values, mask, skip_first: int = 0):
  """(per-sequence means [B], present bool [B]): each sequence's mean over its loss tokens.

  values float [B, C] and mask [B, C] (true/1 = a loss token) are completion-aligned: column 0 is
  the first completion token. Columns < skip_first are excluded (the reference skips 3). Masked-out
  values are ignored even if NaN. A sequence with no loss token left is not `present`; its mean is 0.
  """
  keep = mask.astype(bool) & (jnp.arange(values.shape[1]) >= skip_first)[None, :]
  counts = jnp.sum(keep, axis=1)
  sums = jnp.sum(jnp.where(keep, values, 0.0), axis=1)
  present = counts > 0
  return jnp.where(present, sums / jnp.maximum(counts, 1), 0.0), present


def masked_mean(values, mask, skip_first: int = 0):
  """Scalar: mean over the present sequences of `sequence_means` (per-sequence token mean, then batch mean).

  If no sequence has a loss token, the result is 0.0 with zero gradient (an empty batch
  contributes no loss rather than NaN).
  """
  means, present = sequence_means(values, mask, skip_first)
  return jnp.sum(means) / jnp.maximum(jnp.sum(present), 1)
