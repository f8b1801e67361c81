"""caopd_jax.data.pipeline: seeded order, epochs, sharding, resume from iterator state."""

import collections
import json

import grain
import pytest

from caopd_jax.data import pipeline
from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.errors import CaopdError

EXAMPLES = arithmetic_task(20, seed=0, difficulty=[1, 2])
ALL = sorted(e.id for e in EXAMPLES)


def ids(batches):
  return [[e.id for e in batch] for batch in batches]


def run(seed=0, num_epochs=1, batch_size=4, shard=grain.sharding.NoSharding()):
  return ids(pipeline.batch_iterator(EXAMPLES, batch_size, seed, num_epochs, shard))


def test_same_seed_same_order_and_epochs_are_permutations():
  first = run(seed=5, num_epochs=2, batch_size=1)
  assert first == run(seed=5, num_epochs=2, batch_size=1) and first != run(seed=6, num_epochs=2, batch_size=1)
  flat = [i for [i] in first]
  assert sorted(flat[:20]) == ALL and sorted(flat[20:]) == ALL and flat[:20] != flat[20:]
  assert all(len(batch) == 4 for batch in run(num_epochs=1, batch_size=4))
  assert len(run(num_epochs=1, batch_size=3)) == 6  # 20 // 3: the short last batch is dropped


@pytest.mark.parametrize("count", [2, 3])
def test_shards_partition_the_stream(count):
  shard = lambda k: grain.sharding.ShardOptions(k, count)  # noqa: E731
  shards = [[i for batch in run(num_epochs=3, batch_size=2, shard=shard(k)) for i in batch] for k in range(count)]
  assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
  assert collections.Counter(i for s in shards for i in s) == collections.Counter(ALL * 3)  # 60 items, each once
  epoch = [{i for batch in run(batch_size=1, shard=shard(k)) for i in batch} for k in range(count)]
  assert all(len(s) == 20 // count for s in epoch) and len(set().union(*epoch)) == 20 // count * count


def test_default_shard_is_the_jax_process():
  assert sorted(i for batch in ids(pipeline.batch_iterator(EXAMPLES, 1, seed=0)) for i in batch) == ALL


def test_resume_from_state_continues_identically():
  iterator = pipeline.batch_iterator(EXAMPLES, 3, seed=7, num_epochs=None)
  for _ in range(5):
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = ids(next(iterator) for _ in range(10))
  resumed = pipeline.batch_iterator(EXAMPLES, 3, seed=7, num_epochs=None)
  resumed.set_state(state)
  assert ids(next(resumed) for _ in range(10)) == expected


def test_empty_or_bad_batch_size():
  with pytest.raises(CaopdError, match="no examples"):
    pipeline.example_batches([], 2, seed=0)
  with pytest.raises(CaopdError, match="batch_size"):
    pipeline.example_batches(EXAMPLES, 0, seed=0)
