"""A static-shape key/value cache for decoding: one buffer per layer, updated in place.

All rows of a batch write the same slots at each step: prompts are left-padded
to one length, so slot `index` is "the next token" for every row, while each
row's RoPE position counts its own real tokens. `valid` marks the slots that
hold real tokens (not prompt padding). The layers write their keys/values into
the buffers before attending (`layers.Attention`), so a decode step reads each
buffer once and writes one slot.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from caopd_jax.models.config import ModelConfig
from caopd_jax.sharding.layout import constrain


NAMES = ("batch", "cache_heads", "length", "head_dim")   # logical axes of a buffer, laid out by the active layout


class KVCache(NamedTuple):
  """k, v: one array [B, K, S, Dh] per layer; valid: bool [B, S]; index: int32 [] slots filled so far."""
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  valid: jax.Array
  index: jax.Array


def init(config: ModelConfig, batch: int, length: int, dtype) -> KVCache:
  """An empty cache of `length` slots for `batch` rows."""
  shape = (batch, config.num_kv_heads, length, config.head_dim)
  buffers = lambda: tuple(constrain(jnp.zeros(shape, dtype), NAMES) for _ in range(config.num_layers))  # noqa: E731
  return KVCache(buffers(), buffers(), jnp.zeros((batch, length), bool), jnp.zeros((), jnp.int32))


def mark(cache: KVCache, token_mask: jax.Array) -> KVCache:
  """Records which of T new tokens (token_mask bool [B, T]) are real, in slots index .. index + T - 1."""
  return cache._replace(valid=jax.lax.dynamic_update_slice(cache.valid, token_mask.astype(bool), (0, cache.index)))


def attention_masks(config: ModelConfig, cache: KVCache, num_new: int) -> dict[str, jax.Array]:
  """{"full": mask, "sliding": mask}, bool [B, T, S]: which slots each of T new tokens may attend to.

  Causality and windows use slot indices (new token t sits at slot index + t); with left padding
  real tokens occupy consecutive slots, so slot distance equals position distance.
  """
  slots = jnp.arange(cache.valid.shape[1])
  query_slots = cache.index + jnp.arange(num_new)
  distance = query_slots[:, None] - slots[None, :]
  full = cache.valid[:, None, :] & (distance >= 0)[None]
  if config.sliding_window is None:
    return {"full": full, "sliding": full}
  return {"full": full, "sliding": full & (distance < config.sliding_window)[None]}


def repeat(cache: KVCache, times: int) -> KVCache:
  """Each row repeated `times` times (row r -> rows r*times .. r*times+times-1): K samples share one prefill."""
  rep = lambda buffers: tuple(jnp.repeat(b, times, axis=0) for b in buffers)  # noqa: E731
  return KVCache(rep(cache.k), rep(cache.v), jnp.repeat(cache.valid, times, axis=0), cache.index)
