"""Prompts that fit their token budgets: the overlong-prompt policy (`distill.overlong_prompts`).

Budgets: every student prompt and every demo teacher prompt (with the CaOPD note, when calibrating) must fit
`max_prompt_tokens`; a correct_solution teacher prompt, which holds a rollout of up to `max_completion_tokens`,
must fit their sum (`teacher_budget`). An example over budget is, by policy:

  truncate (default)  its question loses as few leading characters as make both prompts fit (a binary search
                      on the cut, each candidate rendered and tokenized): for tool use the tool list goes
                      first and the `Begin!` line and the question stay; the system message, the few-shot
                      turns, the instructions and the privileged text are never cut. The reference instead
                      left-truncates the rendered token sequence, which cuts the chat header and the system
                      message first. The cut example remembers how many characters it lost
                      (`Example.question_cut`), so every later step can count it.
  drop                left out.
Under both, an example that does not fit even with an empty question is left out.

`screen_examples` applies the policy to a whole dataset before training and reports what it did
(`ScreenReport`: read / usable / truncated / dropped and the token-length distribution).
"""

import dataclasses
from typing import Callable, NamedTuple, Sequence

import numpy as np
from tqdm.auto import tqdm

from caopd_jax.data.example import Example
from caopd_jax.distill.prompts import render, student_messages, teacher_messages
from caopd_jax.tokenizers.base import Tokenizer

POLICIES = ("truncate", "drop")
NOTE_TARGET = "0.00"   # a stand-in target: the note's length for budgeting (targets are all "d.dd")


def with_question(example: Example, question: str, cut: int) -> Example:
  """`example` asking `question` instead (also in its source messages), having lost `cut` more leading characters."""
  messages = example.messages
  if messages:
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages = tuple({**m, "content": question} if i == last else m for i, m in enumerate(messages))
  return dataclasses.replace(example, question=question, messages=messages, question_cut=example.question_cut + cut)


def cut_question(example: Example, fits: Callable[[Example], bool]) -> Example | None:
  """`example` with the fewest leading question characters removed so that `fits(example)`; None if even an
  empty question does not fit. Assumes that cutting more never makes a prompt longer (true up to a token or so of
  BPE merges; the result is always checked)."""
  question = example.question
  if not fits(with_question(example, "", len(question))):
    return None
  low, high = 0, len(question)   # fits fails at `low` cut (or is untested at 0), holds at `high`
  while high - low > 1:
    mid = (low + high) // 2
    if fits(with_question(example, question[mid:], mid)):
      high = mid
    else:
      low = mid
  return with_question(example, question[high:], high)


class Fitted(NamedTuple):
  """An example as it is trained on (`example.question_cut` > 0 when it was cut), its student prompt ids and the
  token count of its demo teacher prompt."""
  example: Example
  student_ids: list[int]
  teacher_tokens: int


def fit_example(example: Example, tokenizer: Tokenizer, settings) -> Fitted | None:
  """The example within its budgets under `settings.overlong_prompts` (module docstring), or None (left out).

  settings: a calibration.batch.DistillSettings (max_prompt_tokens, overlong_prompts, calibrate, prompts).
  """
  target = NOTE_TARGET if settings.calibrate else None

  def lengths(ex: Example) -> tuple[list[int], int]:
    student = tokenizer.encode(render(tokenizer, student_messages(ex, settings.prompts)))
    teacher = tokenizer.encode(render(tokenizer, teacher_messages(ex, "demo", target=target, config=settings.prompts)))
    return student, len(teacher)

  def fits(ex: Example) -> bool:
    student, teacher = lengths(ex)
    return max(len(student), teacher) <= settings.max_prompt_tokens

  if not fits(example):
    if settings.overlong_prompts == "drop":
      return None
    example = cut_question(example, fits)
    if example is None:
      return None
  return Fitted(example, *lengths(example))


def _spread(tokens: np.ndarray) -> dict | None:
  """min, p50, p90, p99, max and mean of prompt lengths in tokens (None for no prompts)."""
  if not tokens.size:
    return None
  low, p50, p90, p99, high = (int(v) for v in np.percentile(tokens, [0, 50, 90, 99, 100], method="lower"))
  return {"min": low, "p50": p50, "p90": p90, "p99": p99, "max": high, "mean": round(float(tokens.mean()), 1)}


class ScreenReport(NamedTuple):
  """What screening did to a dataset. read: examples in; usable: examples out (truncated ones included);
  truncated: cut to fit; dropped: left out; student_tokens / teacher_tokens int [usable]: prompt lengths."""
  read: int
  usable: int
  truncated: int
  dropped: int
  student_tokens: np.ndarray
  teacher_tokens: np.ndarray

  def summary(self, budget: int) -> str:
    """One line for the console, e.g. "data: 1,000 examples read, 990 usable (12 truncated ...), ..."."""
    def spread(tokens):
      stats = _spread(tokens)
      return "none" if stats is None else "p50 {p50:,} / p90 {p90:,} / max {max:,}".format(**stats)
    return (f"data: {self.read:,} examples read, {self.usable:,} usable ({self.truncated:,} truncated to fit "
            f"{budget:,} prompt tokens, {self.dropped:,} dropped); prompt tokens: student {spread(self.student_tokens)}"
            f", teacher {spread(self.teacher_tokens)}")

  def to_json(self) -> dict:
    """The counts, and each side's prompt-length distribution in tokens (`_spread`)."""
    return {"read": self.read, "usable": self.usable, "truncated": self.truncated, "dropped": self.dropped,
            "student_tokens": _spread(self.student_tokens), "teacher_tokens": _spread(self.teacher_tokens)}


def screen_examples(examples: Sequence[Example], tokenizer: Tokenizer, settings,
                    progress: bool = False) -> tuple[list[Example], ScreenReport]:
  """(the examples as trained on, in order, without those left out; the report) under the overlong policy."""
  fitted = [fit_example(ex, tokenizer, settings)
            for ex in tqdm(examples, desc="tokenizing prompts", unit="example", disable=not progress, leave=False)]
  kept = [f for f in fitted if f is not None]
  report = ScreenReport(read=len(examples), usable=len(kept), truncated=sum(f.example.question_cut > 0 for f in kept),
                        dropped=len(examples) - len(kept),
                        student_tokens=np.array([len(f.student_ids) for f in kept], np.int64),
                        teacher_tokens=np.array([f.teacher_tokens for f in kept], np.int64))
  return [f.example for f in kept], report
