"""Prints, as JSON, the example ids of the first three training batches this process reads (run by
tests/test_train_loop.py in one process and in two processes joined by jax.distributed)."""

import json
import sys

import jax

from caopd_jax.config_files import load_file
from caopd_jax.data.sources import load_examples
from caopd_jax.sharding.distributed import initialize
from caopd_jax.train.loop import training_batches

initialize()
config = load_file(sys.argv[1])
examples = load_examples("arithmetic", num_examples=40, seed=config.seed, difficulty=[1])
batches = training_batches(examples, config)
print(json.dumps({"process": jax.process_index(), "batches": [[e.id for e in next(batches)] for _ in range(3)]}))
