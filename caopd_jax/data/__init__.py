"""Training/eval data: `Example` records, their sources, the grain pipeline and the prompt builders.

  example    the `Example` record every source produces
  sources    readers (save_to_disk folders, JSONL) and `load_examples`, the dispatcher
  arithmetic the built-in synthetic arithmetic task
  pipeline   a deterministic, sharded, resumable grain pipeline of Example batches
  prompts    student / teacher chat messages built from an Example
"""
