"""The token-statistics implementations a loss can use, by the names configs give them (`distill.token_stats`).

  naive        losses.token_stats_naive: the float32 [N, V] logits materialised (the reference; small vocabularies)
  xla_chunked  losses.token_stats: streamed over vocabulary chunks of `vocab_chunk` columns, on any backend
  pallas       the fused Pallas kernels (fused_token_stats.py: Triton on GPUs, Mosaic on TPUs), run per row shard
               under a sharded layout (XLA cannot partition a kernel); on a CPU they run in Pallas' interpreter,
               slowly (a warning says so)
  auto         pallas where the kernels serve the call, else xla_chunked (`why_not_pallas`; on an accelerator a
               warning gives the reason): GPUs with bf16 / f16 hidden states (the GPU tiles are sized for 2-byte
               inputs: float32 ones overflow shared memory), TPUs whose VMEM holds a tiling at the model's width
               (token_stats_tpu.tiles_for), never where the sampled-token estimator needs its support threshold
               (the kernels do not take it) and never on a CPU (no compiled Pallas)
Every implementation takes (h_s, w_s, targets, h_t, w_t, *, temperature, with_kl) and returns losses.TokenStats;
naive and xla_chunked also take `threshold` (the sampled-token estimator's tail; pallas does not have it).
The target platform (and a TPU's scoped VMEM) is the program's (LossSettings.platform, .vmem_limit: the mesh's
devices, which for an AOT compile are a TPU topology's while JAX's own backend is this machine's CPU).
"""

import functools
import warnings

import jax
import jax.numpy as jnp

from caopd_jax.kernels import token_stats_tpu
from caopd_jax.kernels.fused_token_stats import token_stats_pallas
from caopd_jax.losses.token_stats import token_stats, token_stats_naive
from caopd_jax.sharding.layout import map_rows

NAMES = ("auto", "xla_chunked", "naive", "pallas")
WITH_THRESHOLD = ("xla_chunked", "naive")


def why_not_pallas(backend: str, *, needs_threshold: bool = False, dtype=jnp.bfloat16, dim: int = 1024,
                   vmem_limit: int = 0) -> str | None:
  """None when `auto` picks the kernels on `backend` for hidden states of `dtype` and width `dim`, else why not."""
  if needs_threshold:
    return ("the sampled-token estimator needs the sampler's support threshold (rollout top_k / top_p / greedy), "
            "which the kernels do not take")
  itemsize = jnp.dtype(dtype).itemsize
  if backend == "gpu" and itemsize != 2:
    return f"the GPU kernels' tiles are sized for 2-byte inputs, not {jnp.dtype(dtype).name}"
  if backend == "tpu":
    limit = vmem_limit or token_stats_tpu.DEFAULT_VMEM_LIMIT
    if token_stats_tpu.tiles_for(8, dim, itemsize, True, limit) is None:
      return f"no TPU tiling fits {limit / 2**20:.0f} MiB of scoped VMEM at width {dim} ({jnp.dtype(dtype).name})"
    return None
  return None if backend == "gpu" else f"no compiled Pallas on {backend}"


def resolve(name: str, *, needs_threshold: bool = False, backend: str | None = None, dtype=jnp.bfloat16,
            dim: int = 1024, vmem_limit: int = 0) -> str:
  """The implementation `name` stands for on `backend` (default: JAX's) for hidden states [.., dim] of `dtype`;
  ValueError for an unknown name. `auto` on an accelerator warns when it falls back."""
  if name not in NAMES:
    raise ValueError(f"unknown token-stats implementation {name!r}; use one of {NAMES}")
  if name != "auto":
    return name
  backend = backend or jax.default_backend()
  reason = why_not_pallas(backend, needs_threshold=needs_threshold, dtype=dtype, dim=dim, vmem_limit=vmem_limit)
  if reason and backend != "cpu":
    warnings.warn(f"distill.token_stats=auto: xla_chunked, not the Pallas kernels: {reason}", stacklevel=3)
  return "xla_chunked" if reason else "pallas"


def token_stats_function(name: str, *, vocab_chunk: int = 4096, needs_threshold: bool = False, platform: str = "",
                         vmem_limit: int = 0):
  """The token-stats function `name` resolves to on `platform` ("": JAX's backend), with its options bound
  (module docstring); `auto` decides on the hidden states' dtype and width when it is called."""
  if name == "auto":
    def chosen_for_inputs(h_s, *args, **kwargs):
      chosen = resolve(name, needs_threshold=needs_threshold, backend=platform or None, dtype=h_s.dtype,
                       dim=h_s.shape[-1], vmem_limit=vmem_limit)
      return token_stats_function(chosen, vocab_chunk=vocab_chunk, needs_threshold=needs_threshold,
                                  platform=platform, vmem_limit=vmem_limit)(h_s, *args, **kwargs)
    return chosen_for_inputs
  chosen = resolve(name, needs_threshold=needs_threshold)
  if chosen == "pallas":
    if needs_threshold:
      raise ValueError("the Pallas token-stats kernels have no support threshold; use xla_chunked or auto")
    platform = platform or jax.default_backend()
    if platform == "cpu":
      warnings.warn("distill.token_stats=pallas on a CPU runs Pallas' interpreter, far slower than xla_chunked "
                    "(auto picks xla_chunked there)", stacklevel=2)
      return map_rows(token_stats_pallas)
    return map_rows(functools.partial(token_stats_pallas, platform=platform, interpret=False,
                                      vmem_limit=vmem_limit or None))
  return functools.partial(token_stats_naive if chosen == "naive" else token_stats, chunk_size=vocab_chunk)
