"""Shrinking the decode batch as rows finish, so that finished rows stop costing decode steps.

Between decode chunks the sampler reads which rows are done. Once at most half of the batch is still decoding,
`plan` picks the live rows (topped up with finished ones to a power of two) and `gather` moves them, KV caches
included, into a batch half the size or less. A row keeps its PRNG key and the step counter is shared, so it draws
exactly the tokens it would have drawn in the full batch. Each batch size compiles its own decode program once per
run: sizes are powers of two, at least `MIN_ROWS` and a multiple of the rows' shards, so a batch of B rows compiles
at most log2(B / MIN_ROWS) more programs. Below `MIN_ROWS` a decode step costs about the same whatever the row
count (reading the weights dominates), so shrinking further would only add compiles.
"""

import functools

import jax
import numpy as np

from caopd_jax.models import kv_cache
from caopd_jax.sharding.layout import activate, constrain
from caopd_jax.sharding.rules import Layout

MIN_ROWS = 16

# The decode state's fields with a leading row axis (the rest: the step counter and the cache).
ROW_FIELDS = ("hidden", "positions", "done", "keys", "budgets", "tokens", "logprobs", "model_logprobs",
              "thresholds")


def row_shards(layout: Layout | None) -> int:
  """How many ways the layout splits decode rows (the mesh axes of its "batch" rule)."""
  if layout is None:
    return 1
  axes = dict(layout.rules).get("batch", ())
  return int(np.prod([layout.mesh.shape[a] for a in axes if a in layout.mesh.shape]))


def plan(done: np.ndarray, shards: int = 1) -> np.ndarray | None:
  """done bool [B] -> int32 [B'] the rows of the smaller batch (live rows in order, then finished fillers), or
  None to keep the batch: fewer than half would go, or nothing is live (the loop is about to stop)."""
  live = np.flatnonzero(~done)
  rows = done.size
  target = max(1 << max(len(live) - 1, 0).bit_length(), MIN_ROWS, shards)
  if not len(live) or target > rows // 2 or target % shards:
    return None
  fillers = np.flatnonzero(done)[:target - len(live)]
  return np.concatenate([live, fillers]).astype(np.int32)


@functools.partial(jax.jit, static_argnums=(2,))
def gather(state, index: jax.Array, layout: Layout | None):
  """The decode state (`sampler.DecodeState`) restricted to rows `index` (int32 [B'])."""
  with activate(layout):
    take = lambda x: x[index]  # noqa: E731
    cache = state.cache
    cache = cache._replace(k=tuple(constrain(take(x), kv_cache.NAMES) for x in cache.k),
                           v=tuple(constrain(take(x), kv_cache.NAMES) for x in cache.v), valid=take(cache.valid))
    return state._replace(cache=cache, **{name: take(getattr(state, name)) for name in ROW_FIELDS})
