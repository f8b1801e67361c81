"""Turning next-token logits into a sampling distribution and a choice.

The order is the one transformers uses: temperature, then top-k, then top-p
(nucleus). Removed tokens get -inf, so the returned log-probs are exactly the
renormalised distribution the token is drawn from. Ties at a top-k / top-p
threshold are all kept.
"""

import jax
import jax.numpy as jnp


def sampling_logprobs(logits: jax.Array, temperature: float, top_k: int, top_p: float) -> jax.Array:
  """float32 [B, V] log-probs of the sampling distribution for float32 logits [B, V] (temperature > 0)."""
  x = logits / temperature
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
  return jax.nn.log_softmax(x, axis=-1)


def choose(keys: jax.Array, logits: jax.Array, model_logprobs: jax.Array, temperature: float, top_k: int,
           top_p: float):
  """One token per row and its log-prob under the sampling distribution.

  keys: [B] PRNG keys (one stream per row, so rows never influence each other); logits float32
  [B, V] and model_logprobs = log_softmax(logits), reused when no setting changes the distribution.
  temperature 0 is greedy (argmax, log-prob 0: probability 1).
  Returns (tokens int32 [B], logprobs float32 [B]).
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.zeros(logits.shape[:1], jnp.float32)
  unchanged = temperature == 1 and top_k == 0 and top_p == 1
  logprobs = model_logprobs if unchanged else sampling_logprobs(logits, temperature, top_k, top_p)
  tokens = jax.vmap(jax.random.categorical)(keys, logprobs).astype(jnp.int32)
  return tokens, jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
