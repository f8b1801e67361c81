"""A grain pipeline of Example batches: seeded shuffle, epochs, per-process sharding, resumable.

The order is fixed by (examples, seed) alone: the examples are shuffled globally (each epoch with a
different permutation derived from the seed), the epochs are concatenated, and the stream is dealt
round-robin to the shards (process i takes items i, i + n, i + 2n, ...). Every shard gets the same
number of items (at most n - 1 items at the stream's end are dropped) and batches are full
(a short last batch is dropped), so all processes take the same number of steps. Batches are
plain lists of Example (host side; tokenization happens later).

Resume: `iterator.get_state()` is a small dict (JSON-serialisable) to store with the checkpoint;
`iterator.set_state(state)` on a fresh iterator of the same pipeline continues with the next batch.
"""

from collections.abc import Sequence

import grain

from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError


def example_batches(examples: Sequence[Example], batch_size: int, seed: int, num_epochs: int | None = 1,
                    shard: grain.sharding.ShardOptions | None = None) -> grain.MapDataset:
  """The dataset of this process's batches.

  Args:
    examples: the Examples (all processes must pass the same list in the same order).
    batch_size: int, Examples per batch on this process.
    seed: int in [0, 2**32), the shuffle seed.
    num_epochs: int passes over the data, or None to repeat forever.
    shard: which share of the stream this process reads; default
      `grain.sharding.ShardByJaxProcess()` (JAX process index / count). Its `drop_remainder`
      is not consulted: shards are always made equal (see the module docstring).
  Returns:
    a grain.MapDataset whose elements are lists of `batch_size` Examples.
  """
  if not examples:
    raise CaopdError("the dataset has no examples; check the data source")
  if batch_size < 1:
    raise CaopdError(f"batch_size must be >= 1, got {batch_size}")
  shard = shard or grain.sharding.ShardByJaxProcess()
  ds = grain.MapDataset.source(list(examples)).shuffle(seed=seed).repeat(num_epochs)
  usable = len(ds) - len(ds) % shard.shard_count
  ds = ds[shard.shard_index:usable:shard.shard_count]
  return ds.batch(batch_size, drop_remainder=True, batch_fn=list)


def batch_iterator(examples: Sequence[Example], batch_size: int, seed: int, num_epochs: int | None = 1,
                   shard: grain.sharding.ShardOptions | None = None,
                   share: tuple[int, int] | None = None) -> grain.DatasetIterator:
  """An iterator over `example_batches(...)` with get_state() / set_state() for checkpoints.

  share=(i, n) keeps items i, i + n, i + 2n, ... of each batch (process i of n reading its share of
  whole batches; some shares are empty when n > batch_size). Reads in the calling thread (the
  Examples are already in memory, so threads would only contend for the GIL).
  """
  ds = example_batches(examples, batch_size, seed, num_epochs, shard)
  if share is not None:
    index, count = share
    ds = ds.map(lambda batch: batch[index::count])
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
