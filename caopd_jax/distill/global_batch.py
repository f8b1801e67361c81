"""One iteration's batch when every process reads its own share of the prompts.

Process i of n keeps items i, i + n, i + 2n, ... of each prompt batch (`train.loop.training_batches`). It
tokenizes those prompts, and later verifies and rewrites their rollouts (the host work: verifiers,
rewriting, teacher prompts). The processes exchange the results, so every process ends up with the
one-process batch, rows in stream order: the sampler and the jitted step see the same global inputs as in
one process, and a run's batches do not depend on the process count.

    prompts, shared = share_prompts(next(data), tokenizer, distill)   # this process's; everyone's, in order
    rollouts = rollout.sample(config, params, shared.ids, ...)         # the same inputs on every process
    batch = share_batch(prompts, shared, rollouts, tokenizer, distill, pad_id)

Both calls are collectives. An error on one process (a verifier failing on a malformed answer, say)
is raised on every process, naming the process, instead of leaving the others waiting. With one
process nothing is exchanged and the results are the one-process ones.
"""

from typing import NamedTuple

import jax
import numpy as np

from caopd_jax.distill.batch import DistillBatch, Prompts, build_batch, prepare_prompts
from caopd_jax.distill.padding import left_pad
from caopd_jax.errors import CaopdError
from caopd_jax.sharding.distributed import allgather_objects

_LEFT_PADDED = ("student_tokens", "student_mask", "teacher_tokens", "teacher_mask")   # [R, P + C], P varies
_ROWS = ("completion", "loss_mask", "confidence_mask", "sampled", "sample_logprob", "sample_threshold",
         "edited")   # [R, ...]


class SharedPrompts(NamedTuple):
  """Every process's kept prompts in stream order. ids: token ids per prompt; owner int [P]: the process
  that read each; dropped_overlong: examples dropped over all processes."""
  ids: list[list[int]]
  owner: np.ndarray
  dropped_overlong: int


def _everyone(what: str, fn, *args) -> list:
  """Every process's fn(*args), in process order; if it raised anywhere, raises on every process."""
  try:
    result, error = fn(*args), None
  except Exception as e:  # noqa: BLE001 (re-raised below, after the other processes have heard of it)
    result, error = None, e
  parts = allgather_objects((result, None if error is None else f"{type(error).__name__}: {error}"))
  if error is not None:
    raise error
  for process, (_, message) in enumerate(parts):
    if message is not None:
      raise CaopdError(f"process {process} failed while {what}: {message}")
  return [part for part, _ in parts]


def share_prompts(examples: list, tokenizer, settings) -> tuple[Prompts, SharedPrompts]:
  """prepare_prompts on this process's share of a batch, and every process's kept prompts in stream order."""
  def prepare():
    prompts = prepare_prompts(examples, tokenizer, settings)
    return prompts, jax.process_index() + jax.process_count() * np.asarray(prompts.kept, np.int64)

  parts = _everyone("preparing its prompts", prepare)
  ids, owner, positions = [], [], []
  for process, (prompts, where) in enumerate(parts):
    ids += prompts.ids
    owner += [process] * len(prompts.ids)
    positions.append(where)
  order = np.argsort(np.concatenate(positions), kind="stable")
  dropped = sum(prompts.dropped_overlong for prompts, _ in parts)
  shared = SharedPrompts([ids[i] for i in order], np.asarray(owner, np.int64)[order], dropped)
  return parts[jax.process_index()][0], shared


def share_batch(prompts: Prompts, shared: SharedPrompts, rollouts, tokenizer, settings, pad_id: int) -> DistillBatch:
  """build_batch on this process's `prompts` and their rows of the global `rollouts`, joined with every other
  process's into the one-process DistillBatch of `shared`: student and teacher sides left-padded (`pad_id`,
  mask False) to the widest, rows and per-prompt arrays in stream order, counts summed."""
  def build():
    if not prompts.ids:
      return None
    mine = np.flatnonzero(shared.owner == jax.process_index())
    return build_batch(prompts, type(rollouts)(*(field[mine] for field in rollouts)), tokenizer, settings)

  parts = _everyone("verifying and rewriting its rollouts", build)
  if len(parts) == 1:
    return parts[0]
  k = rollouts.tokens.shape[1]
  batches = [b for b in parts if b is not None]
  to_stream = np.argsort(np.argsort(shared.owner, kind="stable"), kind="stable")  # process-major -> stream
  rows = (to_stream[:, None] * k + np.arange(k)).reshape(-1)

  def joined(get, order):
    return np.concatenate([get(b) for b in batches])[order]

  fields = {}
  for name in _LEFT_PADDED:
    width = max(getattr(b, name).shape[1] for b in batches)
    value = pad_id if name.endswith("tokens") else False
    fields[name] = joined(lambda b: left_pad(getattr(b, name), width, value), rows)  # noqa: B023
  fields.update({name: joined(lambda b: getattr(b, name), rows) for name in _ROWS})  # noqa: B023
  stats = {name: joined(lambda b: np.asarray(b.stats[name]), to_stream) for name in batches[0].stats}  # noqa: B023
  stats["target"] = stats["target"].tolist()   # build_batch's type: a list of P strings
  counts = {name: sum(b.counts[name] for b in batches) for name in batches[0].counts}
  counts["dropped_overlong"] = shared.dropped_overlong
  return DistillBatch(**fields, correct=joined(lambda b: b.correct, to_stream), stats=stats, counts=counts,
                      failures=[failure for b in batches for failure in b.failures])
