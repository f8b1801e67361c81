"""A training run's folder: what a run writes where, in one place (the trainer writes it; evaluation, plots and
weight loading read it).

    RUN/config.json            the training config (train/config.py), checked on resume
    RUN/model_config.json      the model config, and RUN/tokenizer/: the run folder loads like a model
    RUN/checkpoints/<step>/    params/ (the student), train_state/, loop/ (train/checkpoint.py)
    RUN/damaged_checkpoints/   steps that did not restore, set aside, never deleted
    RUN/metrics.jsonl          one JSON record per optimizer step (train/logger.py; `read_metrics`)
    RUN/tensorboard/           tensorboardX event files
    RUN/data_report.json       what the overlong-prompt policy did to the training data
    RUN/memory_plan.json       train.remat / micro_batch_size as chosen when auto (train/memory_plan.py)
"""

import json
import os

from caopd_jax.errors import CaopdError

CONFIG = "config.json"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
DAMAGED = "damaged_checkpoints"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
DATA_REPORT = "data_report.json"
MEMORY_PLAN = "memory_plan.json"
SAMPLES = "samples.jsonl"
ENTRIES = (CONFIG, MODEL_CONFIG, TOKENIZER, CHECKPOINTS, DAMAGED, METRICS, TENSORBOARD, DATA_REPORT, MEMORY_PLAN,
           SAMPLES)


def read_metrics_file(path: str) -> tuple[list[dict], str | None]:
  """(records of a metrics.jsonl, its torn last line or None): a last line without its newline that is not JSON
  is torn (an append cut short); any other line that is not JSON is an error naming it."""
  if not os.path.exists(path):
    return [], None
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  records, torn = [], None
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError:
      if number != len(lines):
        raise CaopdError(f"{path}: line {number} is not a JSON record ({line[:80]!r}); a run writes whole lines, so "
                         "the file was changed by hand: restore it or remove the damaged line") from None
      torn = line.decode("utf-8", "replace")
  return records, torn


def read_metrics(run: str) -> list[dict]:
  """The metrics.jsonl records of a run folder, in step order ([] if none; a torn last line is left out)."""
  return read_metrics_file(os.path.join(run, METRICS))[0]
