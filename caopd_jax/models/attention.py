"""Softmax attention with grouped query heads.

Keys and values are laid out [B, K, S, Dh] (batch and kv-head leading, as the KV
cache stores them, so decoding reads each layer's cache buffer directly as a
batched matmul operand). Scores and softmax are float32; the weighted sum runs
in v's dtype.
"""

import jax
import jax.numpy as jnp

# A large finite negative for masked attention logits: -inf would turn fully
# masked rows (left padding) into NaN, which then leaks through the gradient.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """q [B, T, H, Dh]; k, v [B, K, S, Dh]; mask bool [B, T, S] (True = may attend) -> [B, T, H, Dh]."""
  b, t, h, dh = q.shape
  kv_heads = k.shape[1]
  q = q.reshape(b, t, kv_heads, h // kv_heads, dh)
  scores = jnp.einsum("btkgd,bksd->bkgts", q, k, preferred_element_type=jnp.float32) * (dh ** -0.5)
  scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
  weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bkgts,bksd->btkgd", weights, v).reshape(b, t, h, dh)
