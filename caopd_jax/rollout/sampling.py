"""Turning next-token logits into a sampling distribution and a choice.

The order is the one transformers uses: temperature, then top-k, then top-p
(nucleus). Removed tokens get -inf, so the returned log-probs are exactly the
renormalised distribution the token is drawn from. Ties at a top-k / top-p
threshold are all kept, so the distribution's support is every token whose logit
is at least a per-row threshold: `choose` returns that threshold (in raw logit
units), which the sampled-token distillation estimator needs to add back the
tokens the sampler could not draw (losses/divergences.py).
"""

import jax
import jax.numpy as jnp


def _filtered(x: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """x [B, V] with the tokens that top-k and then top-p remove set to -inf."""
  if top_k > 0:
    kth = jax.lax.top_k(x, top_k)[0][:, -1:]
    x = jnp.where(x < kth, -jnp.inf, x)
  if top_p < 1.0:
    ordered = jnp.sort(x, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The smallest logit still inside the nucleus (the first token is always inside).
    threshold = jnp.min(jnp.where(mass_before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < threshold, -jnp.inf, x)
  return x


def sampling_logprobs(logits: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
  """float32 [B, V] log-probs of the sampling distribution for float32 logits [B, V] (temperature > 0)."""
  return jax.nn.log_softmax(_filtered(logits / temperature, top_k, top_p), axis=-1)


def choose(keys: jax.Array, logits: jax.Array, model_logprobs: jax.Array, temperature: float, top_k: int,
           top_p: float):
  """One token per row, its log-prob under the sampling distribution and that distribution's support.

  keys: [B] PRNG keys (one stream per row, so rows never influence each other); logits float32
  [B, V] and model_logprobs = log_softmax(logits), reused when no setting changes the distribution.
  temperature 0 is greedy (argmax, log-prob 0: probability 1; the support is the maximal logits).
  Returns (tokens int32 [B], logprobs float32 [B], thresholds float32 [B]): token v could be drawn iff
  logits[b, v] >= thresholds[b] (-inf: every token could). The threshold is a raw logit of the row (the
  smallest one kept), so a comparison with the same logits is exact.
  """
  if temperature == 0:
    return (jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.zeros(logits.shape[:1], jnp.float32),
            jnp.max(logits, axis=-1))
  if temperature == 1 and top_k == 0 and top_p == 1:
    logprobs, threshold = model_logprobs, jnp.full(logits.shape[:1], -jnp.inf, jnp.float32)
  else:
    logprobs = jax.nn.log_softmax(_filtered(logits / temperature, top_k, top_p), axis=-1)
    threshold = jnp.min(jnp.where(logprobs > -jnp.inf, logits, jnp.inf), axis=-1)
  tokens = jax.vmap(jax.random.categorical)(keys, logprobs).astype(jnp.int32)
  return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0], threshold
