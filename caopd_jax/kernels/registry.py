"""The token-statistics implementations a loss can use, by the names configs give them (`distill.token_stats`).

  naive        losses.token_stats_naive: the float32 [N, V] logits materialised (the reference; small vocabularies)
  xla_chunked  losses.token_stats: streamed over vocabulary chunks of `vocab_chunk` columns, on any backend
  pallas       the fused Pallas kernels (fused_token_stats.py), run per row shard under a sharded layout (XLA cannot
               partition a kernel); on a CPU they run in Pallas' interpreter, slowly (a warning says so)
  auto         pallas on GPUs for bf16 / f16 models (the fastest there: bench/RESULTS.md; the GPU tiles are sized
               for 2-byte inputs: float32 ones overflow shared memory) unless a support threshold is needed; else
               xla_chunked: on TPUs the kernels' block specs do not yet fit VMEM at real vocabulary sizes, and a
               CPU has no compiled Pallas
Every implementation takes (h_s, w_s, targets, h_t, w_t, *, temperature, with_kl) and returns losses.TokenStats;
naive and xla_chunked also take `threshold` (the sampled-token estimator's tail; pallas does not have it).
"""

import functools
import warnings

import jax
import jax.numpy as jnp

from caopd_jax.kernels.fused_token_stats import token_stats_pallas
from caopd_jax.losses.token_stats import token_stats, token_stats_naive
from caopd_jax.sharding.layout import map_rows

NAMES = ("auto", "xla_chunked", "naive", "pallas")
WITH_THRESHOLD = ("xla_chunked", "naive")


def resolve(name: str, *, needs_threshold: bool = False, backend: str | None = None, dtype=jnp.bfloat16) -> str:
  """The implementation `name` stands for on `backend` (default: JAX's) for hidden states of `dtype`; ValueError
  for an unknown name."""
  if name not in NAMES:
    raise ValueError(f"unknown token-stats implementation {name!r}; use one of {NAMES}")
  if name != "auto":
    return name
  pallas = ((backend or jax.default_backend()) == "gpu" and not needs_threshold
            and jnp.dtype(dtype).itemsize == 2)
  return "pallas" if pallas else "xla_chunked"


def token_stats_function(name: str, *, vocab_chunk: int = 4096, needs_threshold: bool = False):
  """The token-stats function `name` resolves to, with its options bound (module docstring); `auto` decides on
  the hidden states' dtype when it is called."""
  if name == "auto":
    def chosen_for_dtype(h_s, *args, **kwargs):
      chosen = resolve(name, needs_threshold=needs_threshold, dtype=h_s.dtype)
      return token_stats_function(chosen, vocab_chunk=vocab_chunk, needs_threshold=needs_threshold)(
          h_s, *args, **kwargs)
    return chosen_for_dtype
  chosen = resolve(name, needs_threshold=needs_threshold)
  if chosen == "pallas":
    if needs_threshold:
      raise ValueError("the Pallas token-stats kernels have no support threshold; use xla_chunked or auto")
    if jax.default_backend() == "cpu":
      warnings.warn("distill.token_stats=pallas on a CPU runs Pallas' interpreter, far slower than xla_chunked "
                    "(auto picks xla_chunked there)", stacklevel=2)
    return map_rows(token_stats_pallas)
  return functools.partial(token_stats_naive if chosen == "naive" else token_stats, chunk_size=vocab_chunk)
