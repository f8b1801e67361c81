"""Softmax attention with grouped query heads.

`attend` takes any boolean mask. Keys and values are laid out [B, K, S, Dh] (batch
and kv-head leading, as the KV cache stores them, so decoding reads each layer's
cache buffer directly as a batched matmul operand). Scores and softmax are float32;
the weighted sum runs in v's dtype.

`attend_right_padded` is the training forward's fast path: causal attention of rows
whose real tokens come first, given their lengths. On GPUs with bf16/f16 activations
it runs as cuDNN flash attention (`jax.nn.dot_product_attention`), which never
writes the [T, T] scores; elsewhere the same call's XLA form.
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


def fused_implementation(dtype) -> str:
  """`jax.nn.dot_product_attention`'s implementation for activations of `dtype` on this backend."""
  return "cudnn" if jax.default_backend() == "gpu" and dtype in (jnp.bfloat16, jnp.float16) else "xla"


@jax.custom_vjp
def _zero_padded_gradient(x: jnp.ndarray, real: jnp.ndarray) -> jnp.ndarray:
  """x [B, T, ...] unchanged; its gradient is zeroed where real [B, T, 1, 1] is False."""
  return x


def _zero_padded_gradient_fwd(x, real):
  return x, real


def _zero_padded_gradient_bwd(real, g):
  return jnp.where(real, g, jnp.zeros((), g.dtype)), None


_zero_padded_gradient.defvjp(_zero_padded_gradient_fwd, _zero_padded_gradient_bwd)


def attend_right_padded(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
  """Causal attention within the first lengths[b] tokens of each row.

  q [B, T, H, Dh]; k, v [B, T, K, Dh] (not the cache layout); lengths int [B] -> [B, T, H, Dh].
  Outputs at or past a row's length are 0, and so are the gradients flowing back to q, k, v there: a guard,
  so that nothing the fused kernel writes at padded positions (its outputs, or its q/k/v gradients in the
  backward) can reach a gradient. The inputs themselves pass unchanged (no select in the forward): padded
  q/k/v reach real outputs only through weights that are exactly 0 (the XLA form) or masked tiles (cuDNN), so
  they must be finite there, as the weight gradients (sums over every position) already require.
  """
  lengths = lengths.astype(jnp.int32)
  real = (jnp.arange(q.shape[1])[None, :] < lengths[:, None])[:, :, None, None]
  q, k, v = (_zero_padded_gradient(x, real) for x in (q, k, v))
  out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths,
                                     key_value_seq_lengths=lengths, implementation=fused_implementation(q.dtype))
  return jnp.where(real, out, jnp.zeros((), out.dtype))
