"""Attention of one new token per row over the KV cache, reading only the slots that hold the row's tokens.

The sampler's cache has a static length (prompt width + max_new_tokens), and the XLA form (`attention.attend`
with a mask) reads every slot at every decode step: at 1,024 new tokens the average step reads 1.7x the bytes
that hold tokens, and on an H200 the cache reads are most of a decode step at 256 rows (bench/RESULTS.md).
On GPUs with bf16/f16 caches this runs JAX's Pallas decode-attention kernel
(`jax.experimental.pallas.ops.gpu.decode_attention.gqa`: one program per row, KV head and block of
`BLOCK` slots; blocks outside the row's span return at once, the live ones share each K/V read among the KV
head's query heads), given each row's span [start, end) of live slots. Under a multi-device layout XLA cannot
partition a Pallas call, so the kernel runs per device in a `shard_map`: each device attends for its own rows
and KV heads, the way the cache is laid out, with no communication. Elsewhere (CPUs, TPUs, float32 caches) it is
the XLA form.
"""

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.gpu import decode_attention as pallas_decode
from jax.sharding import PartitionSpec

from caopd_jax.models import kv_cache
from caopd_jax.models.attention import attend
from caopd_jax.sharding import layout as layout_lib

BLOCK = 128   # cache slots per kernel program: the cache length is rounded up to a multiple of it
IMPLEMENTATIONS = ("xla", "pallas", "interpret")


def implementation(dtype) -> str:
  """"pallas" on a GPU for bf16/f16 activations, else "xla"."""
  gpu = jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  return "pallas" if gpu else "xla"


def cache_length(slots: int, dtype) -> int:
  """The cache length to allocate for `slots` slots: a multiple of BLOCK where the kernel reads it."""
  return -(-slots // BLOCK) * BLOCK if implementation(dtype) != "xla" else slots


def attend_cached(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, how: str) -> jax.Array:
  """q [B, 1, H, Dh]; k, v [B, K, S, Dh] (the cache); mask bool [B, 1, S] whose True slots are one span per
  row (left-padded prompt, then the tokens so far; a sliding window cuts its start) -> [B, 1, H, Dh].
  `how`: one of IMPLEMENTATIONS ("interpret": the kernel in Pallas' interpreter, for tests on CPUs); the kernel
  needs S to be a multiple of BLOCK (other lengths, e.g. a one-token prompt's prefill, take the XLA form). Rows
  without a live slot (finished rows) get some finite output."""
  if how == "xla" or k.shape[2] % BLOCK:
    return attend(q, k, v, mask)
  layout = layout_lib.active()
  if layout is None:
    return _kernel(q, k, v, mask, how)
  # split as the cache is: rows over the batch axes, KV heads (and so their query heads) over the tensor axes
  rows, heads, _, _ = layout.spec(kv_cache.NAMES, k.shape)
  query, cache = PartitionSpec(rows, None, heads, None), PartitionSpec(rows, heads, None, None)
  return jax.shard_map(lambda *a: _kernel(*a, how), mesh=layout.mesh, in_specs=(query, cache, cache,
                       PartitionSpec(rows, None, None)), out_specs=query, check_vma=False)(q, k, v, mask)


def _kernel(q, k, v, mask, how: str) -> jax.Array:
  """attend_cached's kernel call on one device's rows and heads (arguments as there)."""
  live = mask[:, 0]
  slots = live.shape[-1]
  start = jnp.argmax(live, axis=-1).astype(jnp.int32)
  end = (slots - jnp.argmax(live[:, ::-1], axis=-1)).astype(jnp.int32)
  out = pallas_decode.gqa(q[:, 0], jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), start_idx=start,
                          kv_seq_len=end, block_k=BLOCK, k_splits=slots // BLOCK, interpret=how == "interpret")
  return out[:, None].astype(v.dtype)   # the kernel's final division promotes to float32
