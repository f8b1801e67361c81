"""Flax NNX building blocks: RMSNorm, grouped-query attention, SwiGLU MLP, one decoder layer.

Every parameter is an `nnx.Param` carrying `axes`, a tuple of logical axis names
(one per dimension) that the sharding rules map onto mesh axes. Layers are built
*stacked*: with `num_layers=L` every weight gets a leading `layers` dimension of
size L, and the transformer scans over it (one compiled layer body, not L).
Modules read their weights with `param[...]`, so the same module object also
runs on one layer's slice of the stacked weights inside the scan.

Shape letters: B batch, T query time, S key time, D hidden, F MLP width,
H query heads, K key/value heads, G = H // K, Dh head dim.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from caopd_jax.models import rope as rope_lib
from caopd_jax.models.attention import attend, attend_right_padded
from caopd_jax.models import decode_attention
from caopd_jax.models.config import ModelConfig

def _param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str, ...], num_layers: int | None,
           init: str, dtype) -> nnx.Param:
  """Creates a parameter; `num_layers` prepends the stacked `layers` dimension."""
  if num_layers is not None:
    shape, axes = (num_layers, *shape), ("layers", *axes)
  if init == "ones":
    value = jnp.ones(shape, dtype)
  elif init == "zeros":
    value = jnp.zeros(shape, dtype)
  else:  # "normal": std 0.02, the HF initializer_range default
    value = (0.02 * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
  return nnx.Param(value, axes=axes)


def rms_norm(x: jnp.ndarray, scale: jnp.ndarray, eps: float, axes: tuple[int, ...] = (-1,)) -> jnp.ndarray:
  """RMS normalisation over `axes` in float32, scaled, cast back to x.dtype."""
  xf = x.astype(jnp.float32)
  variance = jnp.mean(jnp.square(xf), axis=axes, keepdims=True)
  return (xf * jax.lax.rsqrt(variance + eps) * scale.astype(jnp.float32)).astype(x.dtype)


class RMSNorm(nnx.Module):
  """RMSNorm with a learned scale of shape `shape` (normalised over all of its dims)."""

  def __init__(self, shape: tuple[int, ...], axes: tuple[str, ...], eps: float, *, rngs: nnx.Rngs,
               num_layers: int | None = None, dtype=jnp.float32):
    self.eps = eps
    self.num_dims = len(shape)
    self.scale = _param(rngs, shape, axes, num_layers, "ones", dtype)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    return rms_norm(x, self.scale[...], self.eps, tuple(range(-self.num_dims, 0)))


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE, optional q/k/v biases and q/k RMSNorm."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, num_layers: int | None = None,
               dtype=jnp.float32):
    c = config
    d, h, k, dh = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    self.config = c
    self.q_proj = _param(rngs, (d, h, dh), ("embed", "q_heads", "head_dim"), num_layers, "normal", dtype)
    self.k_proj = _param(rngs, (d, k, dh), ("embed", "kv_heads", "head_dim"), num_layers, "normal", dtype)
    self.v_proj = _param(rngs, (d, k, dh), ("embed", "kv_heads", "head_dim"), num_layers, "normal", dtype)
    self.o_proj = _param(rngs, (h, dh, d), ("q_heads", "head_dim", "embed"), num_layers, "normal", dtype)
    if c.qkv_bias:
      self.q_bias = _param(rngs, (h, dh), ("q_heads", "head_dim"), num_layers, "zeros", dtype)
      self.k_bias = _param(rngs, (k, dh), ("kv_heads", "head_dim"), num_layers, "zeros", dtype)
      self.v_bias = _param(rngs, (k, dh), ("kv_heads", "head_dim"), num_layers, "zeros", dtype)
    if c.qk_norm == "head":
      self.q_norm = RMSNorm((dh,), ("head_dim",), c.rms_norm_eps, rngs=rngs, num_layers=num_layers, dtype=dtype)
      self.k_norm = RMSNorm((dh,), ("head_dim",), c.rms_norm_eps, rngs=rngs, num_layers=num_layers, dtype=dtype)
    elif c.qk_norm == "full":
      self.q_norm = RMSNorm((h, dh), ("q_heads", "head_dim"), c.rms_norm_eps, rngs=rngs,
                            num_layers=num_layers, dtype=dtype)
      self.k_norm = RMSNorm((k, dh), ("kv_heads", "head_dim"), c.rms_norm_eps, rngs=rngs,
                            num_layers=num_layers, dtype=dtype)

  def __call__(self, x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray, mask: jnp.ndarray,
               cache: tuple | None = None) -> tuple[jnp.ndarray, tuple | None]:
    """Attention of T new tokens; x [B, T, D], cos/sin [B, T, Dh] -> (out [B, T, D], updated cache or None).

    Without a cache, mask is bool [B, T, T] among the new tokens, or int32 [B] row lengths of right-padded
    rows (causal; `attend_right_padded`, flash attention on GPUs). With cache = (k, v, index) (buffers
    [B, K, S, Dh], int32 slot of the first new token), the new keys/values are written into slots
    index .. index + T - 1 first and the queries attend over all S slots with mask bool [B, T, S] (a decode step,
    T = 1, reads only the live slots on GPUs: `decode_attention`).
    """
    c = self.config
    q = jnp.einsum("btd,dhk->bthk", x, self.q_proj[...])
    k = jnp.einsum("btd,dhk->bthk", x, self.k_proj[...])
    v = jnp.einsum("btd,dhk->bthk", x, self.v_proj[...])
    if c.qkv_bias:
      q, k, v = q + self.q_bias[...], k + self.k_bias[...], v + self.v_bias[...]
    if c.qk_norm != "none":
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = rope_lib.apply(q, cos, sin), rope_lib.apply(k, cos, sin)
    if mask.ndim == 1:
      return jnp.einsum("bthk,hkd->btd", attend_right_padded(q, k, v, mask), self.o_proj[...]), None
    k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, T, Dh]
    if cache is not None:
      cache_k, cache_v, index = cache
      at = (0, 0, index, 0)
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), at)
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), at)
      cache = (k, v)
    if cache is not None and q.shape[1] == 1:   # a decode step: the live slots only, where a kernel can
      out = decode_attention.attend_cached(q, k, v, mask, decode_attention.implementation(q.dtype))
    else:
      out = attend(q, k, v, mask)
    return jnp.einsum("bthk,hkd->btd", out, self.o_proj[...]), cache


class MLP(nnx.Module):
  """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, num_layers: int | None = None, dtype=jnp.float32):
    d, f = config.hidden_size, config.intermediate_size
    self.gate_proj = _param(rngs, (d, f), ("embed", "mlp"), num_layers, "normal", dtype)
    self.up_proj = _param(rngs, (d, f), ("embed", "mlp"), num_layers, "normal", dtype)
    self.down_proj = _param(rngs, (f, d), ("mlp", "embed"), num_layers, "normal", dtype)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    gate = jnp.einsum("btd,df->btf", x, self.gate_proj[...])
    up = jnp.einsum("btd,df->btf", x, self.up_proj[...])
    return jnp.einsum("btf,fd->btd", jax.nn.silu(gate) * up, self.down_proj[...])


class DecoderLayer(nnx.Module):
  """Attention + MLP with residuals; norms before (pre) or after (post, OLMo) each sublayer."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, num_layers: int | None = None,
               dtype=jnp.float32):
    d, eps = config.hidden_size, config.rms_norm_eps
    self.post_norm = config.norm_position == "post"
    self.attn_norm = RMSNorm((d,), ("embed",), eps, rngs=rngs, num_layers=num_layers, dtype=dtype)
    self.attn = Attention(config, rngs=rngs, num_layers=num_layers, dtype=dtype)
    self.mlp_norm = RMSNorm((d,), ("embed",), eps, rngs=rngs, num_layers=num_layers, dtype=dtype)
    self.mlp = MLP(config, rngs=rngs, num_layers=num_layers, dtype=dtype)

  def __call__(self, x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray, mask: jnp.ndarray,
               cache: tuple | None = None) -> tuple[jnp.ndarray, tuple | None]:
    """x [B, T, D] -> (x [B, T, D], updated cache); arguments as in `Attention.__call__`."""
    if self.post_norm:
      attn, cache = self.attn(x, cos, sin, mask, cache)
      x = x + self.attn_norm(attn)
      return x + self.mlp_norm(self.mlp(x)), cache
    attn, cache = self.attn(self.attn_norm(x), cos, sin, mask, cache)
    x = x + attn
    return x + self.mlp(self.mlp_norm(x)), cache
