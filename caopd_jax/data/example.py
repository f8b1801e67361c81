"""The `Example` record: one question with its ground truth, whatever the source."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Example:
  """One question with its ground truth and (when the source has one) a worked demonstration.

  Attributes:
    id: str, unique within its source (e.g. "science_eval/17", "arithmetic-0-5").
    question: str, the user-facing question/instruction text (for tool use, the whole
      ToolAlpaca prompt: tool list, format, `Begin!` line and the question).
    answer: the ground truth the verifier checks: a str letter (mcq), a list of
      {"Action": str, "Action_Input": str} (tooluse) or an int (arithmetic).
    verifier: str, a key of caopd_jax.calibration.verifiers.VERIFIERS (mcq, tooluse, arithmetic).
    task: str, the task name ("science", "tooluse", "arithmetic", or a JSONL file's stem).
    system: str | None, the source's system message.
    demonstration: str | None, a worked answer ending with a `Confidence: X` line; None when
      the source has none (eval sets); prompts then use `sources.fallback_demonstration`.
    messages: tuple of {"role": str, "content": str} | None, the source's chat-formatted prompt
      (science: system + user); None when the source has a plain-text prompt.
    question_cut: int, leading characters cut from the question to fit the prompt budget
      (distill/prompt_fit.py); 0 for an example as its source has it.
  """
  id: str
  question: str
  answer: Any
  verifier: str
  task: str
  system: str | None = None
  demonstration: str | None = None
  messages: tuple[dict, ...] | None = None
  question_cut: int = 0
