"""From examples and their K rollouts to the arrays of one distillation step (CaOPD steps 2-3).

    prompts = prepare_prompts(examples, tokenizer, settings)            # student prompts to sample from
    rollouts = rollout.sample(config, params, prompts.ids, rng, num_samples=K, max_new_tokens=C, ...)
    batch = build_batch(prompts, rollouts, tokenizer, settings)         # DistillBatch, NumPy

Row r = p * K + k holds rollout k of prompt p. Student and teacher sequences
are each left-padded so that the completion starts at the same column in every
row: student [R, Ps + C], teacher [R, Pt + C], completion in the last C columns.
The loss sees completion token t of a row at column P - 1 + t of that side's
logits (P = Ps or Pt).

Policies (counted in `DistillBatch.counts`, never a crash):
  overlong prompt     a student or teacher prompt over `max_prompt_tokens` drops the example
                      (a left-truncated chat prompt would lose its system message)
  no correct rollout  in correct_solution mode: "demo" uses the demonstration instead,
                      "skip" zeroes that prompt's loss mask
"""

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from caopd_jax.calibration.rewrite import rewrite_batch
from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.data.example import Example
from caopd_jax.data.prompts import PromptConfig, render, student_messages, teacher_messages
from caopd_jax.tokenizers.base import Tokenizer


@dataclasses.dataclass(frozen=True)
class DistillSettings:
  """calibrate: CaOPD's rewrite on (False = the plain SDFT/OPD baseline). teacher_mode: "demo" or
  "correct_solution"; no_correct_policy: "demo" or "skip" (correct_solution mode only)."""
  calibrate: bool = True
  teacher_mode: str = "demo"
  no_correct_policy: str = "demo"
  max_prompt_tokens: int = 1024
  max_completion_tokens: int = 1024
  prompts: PromptConfig = PromptConfig()

  def __post_init__(self):
    if self.teacher_mode not in ("demo", "correct_solution"):
      raise ValueError(f"teacher_mode must be 'demo' or 'correct_solution', got {self.teacher_mode!r}")
    if self.no_correct_policy not in ("demo", "skip"):
      raise ValueError(f"no_correct_policy must be 'demo' or 'skip', got {self.no_correct_policy!r}")


class Prompts(NamedTuple):
  """The examples kept for this step, their tokenized student prompts, the number dropped, and where each
  kept example was in the input (kept[i]: index of examples[i] in the batch given to prepare_prompts)."""
  examples: list[Example]
  ids: list[list[int]]
  dropped_overlong: int
  kept: list[int]


class DistillBatch(NamedTuple):
  """One step's arrays; R = prompts x K rows, C = max_completion_tokens.

  student_tokens int32 [R, Ps + C], student_mask bool [R, Ps + C]; teacher_tokens / teacher_mask
  [R, Pt + C]; completion int32 [R, C]; loss_mask float32 [R, C]; confidence_mask float32 [R, C] (the
  rewritten confidence value's tokens, for the calibration term; 0 without calibration); sampled_logprobs float32 [R, C]
  (model log-probs at sampling time, 0 where the completion was edited); edited bool [R];
  correct bool [P, K]; stats: per-prompt arrays (rewrite.rollout_stats); counts: policy counters.
  """
  student_tokens: np.ndarray
  student_mask: np.ndarray
  teacher_tokens: np.ndarray
  teacher_mask: np.ndarray
  completion: np.ndarray
  loss_mask: np.ndarray
  confidence_mask: np.ndarray
  sampled_logprobs: np.ndarray
  edited: np.ndarray
  correct: np.ndarray
  stats: dict
  counts: dict


def prepare_prompts(examples: Sequence[Example], tokenizer: Tokenizer, settings: DistillSettings) -> Prompts:
  """Tokenized student prompts; examples whose student or (demo) teacher prompt is over budget are dropped."""
  kept, ids, dropped, where = [], [], 0, []
  for index, example in enumerate(examples):
    student = tokenizer.encode(render(tokenizer, student_messages(example, settings.prompts)))
    teacher = tokenizer.encode(render(tokenizer, teacher_messages(example, "demo", config=settings.prompts)))
    if max(len(student), len(teacher)) > settings.max_prompt_tokens:
      dropped += 1
      continue
    kept.append(example)
    ids.append(student)
    where.append(index)
  return Prompts(kept, ids, dropped, where)


def _left_pad(rows: list[list[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):] = row
    mask[i, width - len(row):] = True
  return tokens, mask


def build_batch(prompts: Prompts, rollouts, tokenizer: Tokenizer, settings: DistillSettings) -> DistillBatch:
  """Verifies the rollouts, rewrites them (when calibrating), builds teacher prompts and pads everything."""
  examples, num_prompts = prompts.examples, len(prompts.examples)
  k = rollouts.tokens.shape[1]
  texts = [[tokenizer.decode(rollouts.tokens[p, j, :rollouts.lengths[p, j]].tolist(), skip_special_tokens=True)
            for j in range(k)] for p in range(num_prompts)]
  correct = np.array([[get_verifier(ex.verifier)(t, ex.answer) for t in row] for ex, row in zip(examples, texts)],
                     dtype=bool).reshape(num_prompts, k)
  c = settings.max_completion_tokens
  rewritten = rewrite_batch(tokenizer, rollouts.tokens, rollouts.lengths, correct, max_tokens=c,
                            eos_id=tokenizer.eos_id, enabled=settings.calibrate)
  counts = {"dropped_overlong": prompts.dropped_overlong, "no_correct_fallback": 0, "skipped_no_correct": 0,
            "truncated_body": int(rewritten.truncated_body.sum())}
  teacher_ids, keep = [], np.ones(num_prompts, bool)
  for p, example in enumerate(examples):
    target = rewritten.stats["target"][p] if settings.calibrate else None
    mode, solution = settings.teacher_mode, None
    if mode == "correct_solution":
      if correct[p].any():
        solution = texts[p][int(np.argmax(correct[p]))]
      elif settings.no_correct_policy == "demo":
        mode = "demo"
        counts["no_correct_fallback"] += 1
      else:
        mode = "demo"
        keep[p] = False
        counts["skipped_no_correct"] += 1
    messages = teacher_messages(example, mode, solution=solution, target=target, config=settings.prompts)
    teacher_ids.append(tokenizer.encode(render(tokenizer, messages)))

  pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  repeat = lambda rows: [row for row in rows for _ in range(k)]  # noqa: E731
  student_prompt, student_prompt_mask = _left_pad(repeat(prompts.ids), max(map(len, prompts.ids)), pad)
  teacher_prompt, teacher_prompt_mask = _left_pad(repeat(teacher_ids), max(map(len, teacher_ids)), pad)
  completion_mask = rewritten.loss_mask.astype(bool)
  kept_rows = np.repeat(keep, k)[:, None]
  loss_mask = (completion_mask & kept_rows).astype(np.float32)
  confidence_mask = (rewritten.confidence_mask.astype(bool) & kept_rows).astype(np.float32)
  sampled = np.zeros((num_prompts * k, c), np.float32)
  n = min(c, rollouts.model_logprobs.shape[2])
  sampled[:, :n] = rollouts.model_logprobs.reshape(num_prompts * k, -1)[:, :n]
  sampled[rewritten.edited] = 0.0
  return DistillBatch(
      student_tokens=np.concatenate([student_prompt, rewritten.ids], axis=1),
      student_mask=np.concatenate([student_prompt_mask, completion_mask], axis=1),
      teacher_tokens=np.concatenate([teacher_prompt, rewritten.ids], axis=1),
      teacher_mask=np.concatenate([teacher_prompt_mask, completion_mask], axis=1),
      completion=rewritten.ids, loss_mask=loss_mask, confidence_mask=confidence_mask, sampled_logprobs=sampled, edited=rewritten.edited,
      correct=correct, stats=rewritten.stats, counts=counts)
