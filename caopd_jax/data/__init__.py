"""Task data: the Example record, sources (the paper's save_to_disk sets, JSONL, the arithmetic task) and the grain
pipeline. Prompts are assembled by caopd_jax.distill.prompts."""

from caopd_jax.data.example import Example
from caopd_jax.data.pipeline import batch_iterator, example_batches
from caopd_jax.data.sources import load_examples, read_jsonl, read_save_to_disk

__all__ = ["Example", "batch_iterator", "example_batches", "load_examples", "read_jsonl", "read_save_to_disk"]
