"""Per-token distillation divergences and the masked token mean (docs/CAOPD.md section 1).

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


def sampled_token_reverse_kl(logp_s, logp_t, kl_st, sampled, sample_logp, *, is_cap=0.0, tail_kl=None,
                             tail_mass=None):
  """Per-token surrogate [...] whose gradient estimates grad KL(p_s || p_t) at each completion position.

  Args (each [...], one value per completion position):
    logp_s, logp_t: log-probs of the completion token under the student (differentiable) and the teacher.
    kl_st: the exact KL(p_s || p_t) over the vocabulary at the position (token_stats, with_kl=True).
    sampled: bool, the token is the student's own sample (False where the CaOPD rewrite put tokens the
      student never drew: the confidence line, EOS, a re-encoded piece of the body).
    sample_logp: log q(token) under the distribution the sampler drew it from (temperature, top-k, top-p
      applied, at sampling-time params), 0 where not sampled.
    is_cap: truncate the importance weight at this value (TIS); 0 = no truncation (unbiased).
    tail_kl, tail_mass: token_stats' tail terms for the vocabulary the sampler could not draw (its logits
      below the sampler's threshold), when top-k / top-p / greedy sampling cut the support; else None.
  Returns:
    (surrogate [...], importance weights [...]: min(p_s / q, cap) of the sampled tokens, 1 elsewhere).

  Why it is right. With r(v) = log p_s(v) - log p_t(v) and sum_v grad p_s(v) = 0, the gradient is
  grad KL = sum_v grad p_s(v) r(v). Split the vocabulary into the sampler's support S and the tail T.
  - Sampled positions: y ~ q on S, and E_q[(p_s(y) / q(y)) r(y) grad log p_s(y)] = sum_S grad p_s r, so the
    REINFORCE term w r log p_s(y) with w = p_s / q and r held constant is unbiased for the S part: q may be
    tempered, filtered or from older params (several optimizer steps per rollout batch). Truncating w at
    `is_cap` trades a bias for variance (TIS). The T part, sum_T grad p_s r, is the gradient of
    tail_kl - tail_mass (= sum_T p_s r - sum_T p_s, since grad sum_T p_s r = sum_T grad p_s r + sum_T
    grad p_s): added exactly, so the sum is unbiased for any temperature, top-k and top-p. The tail is
    recomputed from the current params with the sampler's threshold: exact when the step's params are the
    sampler's (one optimizer step per rollout batch, the default), an approximation after that.
  - Positions the student did not sample: no estimator of the student's choice applies; the exact KL
    is used, whose gradient is the expectation itself.
  The surrogate's value is not the KL; `logp_s - logp_t` is its Monte Carlo estimate.
  """
  weight = jnp.exp(jax.lax.stop_gradient(logp_s) - sample_logp)
  if is_cap:
    weight = jnp.minimum(weight, is_cap)
  reward = jax.lax.stop_gradient(weight * (logp_s - logp_t))
  estimate = reward * logp_s
  if tail_kl is not None:
    estimate = estimate + tail_kl - tail_mass
  return jnp.where(sampled, estimate, kl_st), jnp.where(sampled, weight, 1.0)


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
