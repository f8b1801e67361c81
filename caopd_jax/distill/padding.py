"""Padding, in one place: rows right-aligned in wider arrays, and the prompt-width rungs that bound compiles.

Every batch row is [left padding, prompt, completion, right padding]: prompts are left-padded so that the
completion starts in the same column of every row (batch.py, global_batch.py), and the step's prompt widths are
padded up to one of a few rungs per side (`width_rungs`), so that a run compiles its step for at most
rungs x rungs shapes whatever its prompts' lengths (`loss_batch`).
"""

import numpy as np

from caopd_jax.distill.loss import LossBatch
from caopd_jax.errors import CaopdError

WIDTH_MULTIPLE = 16  # width rungs are rounded up to multiples of this (but never past the budget)


def left_pad(x: np.ndarray, width: int, value, rows: int | None = None) -> np.ndarray:
  """x [R, W] right-aligned in a [rows (default R), width] array filled with `value` (rows past R: all `value`)."""
  out = np.full((rows or x.shape[0], width), value, x.dtype)
  out[:x.shape[0], width - x.shape[1]:] = x
  return out


def left_pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [R, W], mask bool [R, W]) of token rows of any lengths, right-aligned, W the longest row."""
  width = max(map(len, rows))
  ids = np.concatenate([left_pad(np.asarray([row], np.int32), width, pad_id) for row in rows])
  mask = np.concatenate([left_pad(np.ones((1, len(row)), bool), width, False) for row in rows])
  return ids, mask


def width_rungs(budget: int, rungs: int) -> tuple[int, ...]:
  """`rungs` evenly spaced prompt widths up to `budget` (rounded up to WIDTH_MULTIPLE, capped at the budget)."""
  up = lambda n, m: -(-n // m) * m  # noqa: E731  (n rounded up to a multiple of m)
  return tuple(sorted({min(budget, up(up(budget * i, rungs) // rungs, WIDTH_MULTIPLE)) for i in range(1, rungs + 1)}))


def bucket(width: int, rungs: tuple[int, ...]) -> int:
  """The smallest rung that holds `width` tokens."""
  fitting = [r for r in rungs if r >= width]
  if not fitting:
    raise CaopdError(f"a prompt of {width} tokens is over its budget {rungs[-1]}; this is a bug in prompt fitting")
  return fitting[0]


def loss_batch(batch, rows: int, pad_id: int, student_rungs: tuple, teacher_rungs: tuple) -> LossBatch:
  """The step's NumPy LossBatch of a DistillBatch: exactly `rows` rows (added rows have no loss tokens), each side's
  prompts left-padded to their rung."""
  c = batch.completion.shape[1]

  def side(name, rungs):
    tokens, mask = getattr(batch, f"{name}_tokens"), getattr(batch, f"{name}_mask")
    width = bucket(tokens.shape[1] - c, rungs) + c
    return {f"{name}_tokens": left_pad(tokens, width, pad_id, rows), f"{name}_mask": left_pad(mask, width, False, rows)}

  rest = {name: left_pad(getattr(batch, name), c, 0, rows) for name in LossBatch._fields[4:]}
  return LossBatch(**side("student", student_rungs), **side("teacher", teacher_rungs), **rest)
