"""Shrinking the decode batch as rows finish, so that finished rows stop costing decode steps.

Between decode chunks the sampler reads which rows are done. Once at most half of the batch is still decoding,
`plan` picks the live rows (topped up with finished ones to a power of two) and `gather` moves them, KV caches
included, into a batch half the size or less. A row keeps its PRNG key and the step counter is shared, so it draws
exactly the tokens it would have drawn in the full batch. Each batch size compiles its own decode program once per
run: sizes are powers of two, at least `MIN_ROWS` and a multiple of the rows' shards, so a batch of B rows compiles
at most log2(B / MIN_ROWS) more programs. Below `MIN_ROWS` a decode step costs about the same whatever the row
count (reading the weights dominates), so shrinking further would only add compiles. On accelerators `precompile`
compiles those programs in background threads while the full batch decodes, so that a run's first shrink does not
wait for a compile (jit's cache holds what an ahead-of-time compile of the same signature built).
"""

import concurrent.futures
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


def sizes(rows: int, shards: int = 1) -> list[int]:
  """Every batch size `plan` can shrink a batch of `rows` rows to, largest first."""
  out, size = [], max(MIN_ROWS, shards)
  while size <= rows // 2:
    if size % shards == 0:
      out.append(size)
    size *= 2
  return out[::-1]


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


def constrain_rows(state):
  """The decode state (`sampler.DecodeState`) with its rows split over the active layout's batch axes: every row
  field and the cache. The prefill, the decode loop and `gather` all return it so, so that a batch of a given size
  has one layout, which `precompile` can name before the batch exists."""
  rows = lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1))  # noqa: E731
  cache = state.cache._replace(k=tuple(constrain(x, kv_cache.NAMES) for x in state.cache.k),
                               v=tuple(constrain(x, kv_cache.NAMES) for x in state.cache.v),
                               valid=rows(state.cache.valid))
  return state._replace(cache=cache, **{name: rows(getattr(state, name)) for name in ROW_FIELDS})


@functools.partial(jax.jit, static_argnums=(2,))
def gather(state, index: jax.Array, layout: Layout | None):
  """The decode state (`sampler.DecodeState`) restricted to rows `index` (int32 [B'])."""
  with activate(layout):
    take = lambda x: x[index]  # noqa: E731
    cache = state.cache._replace(k=tuple(map(take, state.cache.k)), v=tuple(map(take, state.cache.v)),
                                 valid=take(state.cache.valid))
    return constrain_rows(state._replace(cache=cache, **{name: take(getattr(state, name)) for name in ROW_FIELDS}))


_BACKGROUND = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="caopd-compile")


def precompile(decode, state, layout: Layout | None, shards: int) -> list[concurrent.futures.Future]:
  """Starts compiling, in background threads, `decode(state')` for every smaller batch `state'` this decode state
  (`sampler.DecodeState`, real arrays) may shrink to, and the `gather`s into it. `decode(abstract_state)` must compile the decode
  program for an abstract state of the same shardings (e.g. jit's trace(...).lower().compile()). A compile that
  fails here costs nothing but its time: the decode loop then compiles (and reports) on its own."""
  rows = state.done.shape[0]

  def abstract(size):   # a sharding named only where it spans devices: jit's cache takes a one-device array as unplaced
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        (size, *x.shape[1:]) if x.ndim and x.shape[0] == rows else x.shape, x.dtype,
        sharding=x.sharding if len(x.sharding.device_set) > 1 else None), state)

  def compile_size(size):   # the decode program of `size` rows and the gathers into it from every larger batch
    for larger in [rows] + [n for n in smaller if n > size]:
      gather.trace(abstract(larger), jax.ShapeDtypeStruct((size,), np.int32), layout).lower().compile()
    decode(abstract(size))
  smaller = sizes(rows, shards)
  return [_BACKGROUND.submit(compile_size, size) for size in smaller]
