"""One iteration's batch when every process reads its own share of the prompts.

grain deals the shuffled example stream round-robin to the n processes (`data/pipeline.py`), so batch j of
process i holds items i, i + n, i + 2n, ... of the one-process batch j. Each process tokenizes its prompts,
and later verifies and rewrites the rollouts of its own prompts (the host work: verifiers, rewriting,
teacher prompts). The processes exchange the results, so every process ends up with the one-process
batch, rows in stream order: the sampler and the jitted step see the same global inputs as in one
process, and a run's batches do not depend on the process count.

    local = prepare_prompts(next(data), tokenizer, distill)        # this process's share
    shared = gather_prompts(local)                                  # every kept prompt, stream order
    rollouts = rollout.sample(config, params, shared.ids, ...)      # the same inputs on every process
    batch = gather_batch(build_local_batch(local, shared, rollouts, tokenizer, distill), shared, ...)

With one process nothing is exchanged and the results are the one-process ones.
"""

from typing import NamedTuple

import jax
import numpy as np

from caopd_jax.calibration.batch import DistillBatch, Prompts, build_batch
from caopd_jax.calibration.confidence import format_fraction
from caopd_jax.sharding.distributed import allgather_arrays

_LEFT_PADDED = ("student_tokens", "student_mask", "teacher_tokens", "teacher_mask")   # [R, P + C], P varies
_ROWS = ("completion", "loss_mask", "confidence_mask", "sampled_logprobs", "edited")   # [R, ...]
_PER_PROMPT = ("accuracy", "mean_confidence", "format_adherence")                       # stats, float [P]
_COUNTS = ("dropped_overlong", "no_correct_fallback", "skipped_no_correct", "truncated_body")


class SharedPrompts(NamedTuple):
  """Every process's kept prompts in stream order. ids: token ids per prompt; owner int [P]: the process
  that read each; dropped_overlong: examples dropped over all processes."""
  ids: list[list[int]]
  owner: np.ndarray
  dropped_overlong: int


def gather_prompts(local: Prompts) -> SharedPrompts:
  """All processes' kept prompts (a collective: every process calls it once per iteration)."""
  lengths = np.array([len(ids) for ids in local.ids], np.int64)
  packed = np.zeros((len(local.ids), int(lengths.max(initial=0))), np.int32)
  for row, ids in zip(packed, local.ids):
    row[:len(ids)] = ids
  positions = jax.process_index() + jax.process_count() * np.asarray(local.kept, np.int64)  # in the global batch
  parts = zip(allgather_arrays(packed), allgather_arrays(lengths), allgather_arrays(positions))
  ids, owner, where = [], [], []
  for process, (tokens, lens, position) in enumerate(parts):
    ids += [row[:n].tolist() for row, n in zip(tokens, lens)]
    owner += [process] * len(lens)
    where.append(position)
  dropped = int(np.sum(allgather_arrays(np.array([local.dropped_overlong]))))
  order = np.argsort(np.concatenate(where), kind="stable")
  return SharedPrompts([ids[i] for i in order], np.asarray(owner, np.int64)[order], dropped)


def build_local_batch(local: Prompts, shared: SharedPrompts, rollouts, tokenizer, settings) -> DistillBatch | None:
  """build_batch on this process's prompts and their rows of the global `rollouts`; None if it kept none."""
  if not local.ids:
    return None
  mine = np.flatnonzero(shared.owner == jax.process_index())
  return build_batch(local, type(rollouts)(*(field[mine] for field in rollouts)), tokenizer, settings)


def _empty_batch(k: int, c: int) -> DistillBatch:
  """A process's contribution when it kept no prompt: zero rows of every field."""
  rows = {name: np.zeros((0, c), np.float32) for name in _LEFT_PADDED + _ROWS}
  rows.update(student_tokens=np.zeros((0, c), np.int32), teacher_tokens=np.zeros((0, c), np.int32),
              student_mask=np.zeros((0, c), bool), teacher_mask=np.zeros((0, c), bool),
              completion=np.zeros((0, c), np.int32), edited=np.zeros((0,), bool))
  return DistillBatch(**rows, correct=np.zeros((0, k), bool), stats={name: np.zeros(0) for name in _PER_PROMPT},
                      counts=dict.fromkeys(_COUNTS, 0))


def _left_pad(x: np.ndarray, width: int, value) -> np.ndarray:
  out = np.full((x.shape[0], width), value, x.dtype)
  out[:, width - x.shape[1]:] = x
  return out


def gather_batch(local: DistillBatch | None, shared: SharedPrompts, num_samples: int, completion_length: int,
                 pad_id: int) -> DistillBatch:
  """The one-process DistillBatch of `shared`, from every process's `build_local_batch` (a collective).

  Student and teacher sides are left-padded (`pad_id`, mask False) to the widest process's width, rows and
  per-prompt arrays put in stream order, counts summed."""
  if jax.process_count() == 1:
    return local
  local = local or _empty_batch(num_samples, completion_length)
  to_stream = np.argsort(np.argsort(shared.owner, kind="stable"), kind="stable")  # process-major -> stream
  rows = (to_stream[:, None] * num_samples + np.arange(num_samples)).reshape(-1)

  def joined(value, order):
    return np.concatenate(allgather_arrays(np.asarray(value)))[order]

  fields = {}
  for name in _LEFT_PADDED:
    parts = allgather_arrays(getattr(local, name))
    width = max(part.shape[1] for part in parts)
    value = pad_id if name.endswith("tokens") else False
    fields[name] = np.concatenate([_left_pad(part, width, value) for part in parts])[rows]
  fields.update({name: joined(getattr(local, name), rows) for name in _ROWS})
  stats = {name: joined(local.stats[name], to_stream) for name in _PER_PROMPT}
  stats["target"] = [format_fraction(int(round(a * num_samples)), num_samples) for a in stats["accuracy"]]
  counts = np.sum(allgather_arrays(np.array([local.counts[name] for name in _COUNTS], np.int64)), axis=0)
  return DistillBatch(**fields, correct=joined(local.correct, to_stream), stats=stats,
                      counts={**dict(zip(_COUNTS, map(int, counts))), "dropped_overlong": shared.dropped_overlong})
