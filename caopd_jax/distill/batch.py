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
  overlong prompt     `overlong_prompts` (prompt_fit.py): "truncate" cuts the start of the question until the
                      student and teacher prompts fit, "drop" leaves the example out (dropped_overlong,
                      truncated_prompts). A teacher prompt built after the rollouts (the note, a correct
                      solution) that is still over its budget (`teacher_budget`) gets its question cut for the
                      teacher alone (teacher_cut); if nothing fits, a correct_solution teacher falls back to the
                      demonstration, else the prompt's loss mask is zeroed (teacher_overlong)
  completion rewrite  rows whose confidence line could not be spliced after the sampled body (rewrite.py):
                      re-encoded whole (rewrite_reencode), or not spelled exactly by the tokenizer (rewrite_inexact)
  no correct rollout  in correct_solution mode: "demo" uses the demonstration instead,
                      "skip" zeroes that prompt's loss mask
"""

from typing import NamedTuple, Sequence

import numpy as np

from caopd_jax.calibration.rewrite import rewrite_batch
from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.data.example import Example
from caopd_jax.distill.padding import left_pad_rows
from caopd_jax.distill.prompt_fit import cut_question, fit_example
from caopd_jax.distill.prompts import render, student_messages, teacher_messages
from caopd_jax.distill.settings import DistillSettings
from caopd_jax.tokenizers.base import Tokenizer


class Prompts(NamedTuple):
  """The examples kept for this step (cut to fit where the policy says so), their tokenized student prompts, the
  number dropped, and where each kept example was in the input (kept[i]: index of examples[i] in the batch given to
  prepare_prompts)."""
  examples: list[Example]
  ids: list[list[int]]
  dropped_overlong: int
  kept: list[int]


class DistillBatch(NamedTuple):
  """One step's arrays; R = prompts x K rows, C = max_completion_tokens.

  student_tokens int32 [R, Ps + C], student_mask bool [R, Ps + C]; teacher_tokens / teacher_mask
  [R, Pt + C]; completion int32 [R, C]; loss_mask float32 [R, C]; confidence_mask float32 [R, C] (the
  rewritten confidence value's tokens, for the calibration term; 0 without calibration); sampled bool [R, C]: the
  token is the student's own sample, unchanged (False on the rewritten confidence line, EOS and re-encoded text);
  sample_logprob float32 [R, C]: its log-prob under the sampler's distribution (Rollouts.logprobs);
  sample_threshold float32 [R, C]: the sampler's support as a raw logit (Rollouts.thresholds); edited bool [R];
  correct bool [P, K]; stats: per-prompt arrays (rewrite.rollout_stats); counts: policy counters (module docstring);
  failures: "example id: what failed" for each prompt left out because its host-side work raised (build_batch).
  """
  student_tokens: np.ndarray
  student_mask: np.ndarray
  teacher_tokens: np.ndarray
  teacher_mask: np.ndarray
  completion: np.ndarray
  loss_mask: np.ndarray
  confidence_mask: np.ndarray
  sampled: np.ndarray
  sample_logprob: np.ndarray
  sample_threshold: np.ndarray
  edited: np.ndarray
  correct: np.ndarray
  stats: dict
  counts: dict
  failures: list


def prepare_prompts(examples: Sequence[Example], tokenizer: Tokenizer, settings: DistillSettings) -> Prompts:
  """Tokenized student prompts of the examples within budget under `settings.overlong_prompts` (prompt_fit.py)."""
  kept, ids, where = [], [], []
  for index, example in enumerate(examples):
    fitted = fit_example(example, tokenizer, settings)
    if fitted is not None:
      kept.append(fitted.example)
      ids.append(fitted.student_ids)
      where.append(index)
  return Prompts(kept, ids, len(examples) - len(kept), where)


def _teacher_ids(example: Example, mode: str, solution: str | None, target: str | None, tokenizer: Tokenizer,
                 settings: DistillSettings) -> tuple[list[int] | None, bool]:
  """(teacher prompt ids within settings.teacher_budget, the question had to be cut for them); None if none fit."""
  def encode(ex: Example) -> list[int]:
    return tokenizer.encode(render(tokenizer, teacher_messages(ex, mode, solution=solution, target=target,
                                                               config=settings.prompts)))

  ids = encode(example)
  if len(ids) <= settings.teacher_budget:
    return ids, False
  cut = cut_question(example, lambda ex: len(encode(ex)) <= settings.teacher_budget)
  return (None, False) if cut is None else (encode(cut), True)


def _teacher_prompt(p: int, example: Example, correct: np.ndarray, texts: list, rewritten, tokenizer: Tokenizer,
                    settings: DistillSettings, counts: dict, keep: np.ndarray) -> list[int]:
  """Prompt p's teacher prompt ids under the teacher mode and its policies (module docstring); updates `counts`
  and, for a prompt left without loss, `keep`."""
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
  ids, cut = _teacher_ids(example, mode, solution, target, tokenizer, settings)
  if ids is None and mode == "correct_solution":
    ids, cut = _teacher_ids(example, "demo", None, target, tokenizer, settings)
  if ids is None:   # not even the demonstration fits: the prompt is kept for the batch's shape, without loss
    ids, keep[p] = tokenizer.encode(render(tokenizer, student_messages(example, settings.prompts))), False
    counts["teacher_overlong"] += 1
  counts["teacher_cut"] += cut
  return ids


def _failure(stage: str, error: Exception) -> str:
  return f"{stage}: {type(error).__name__}: {str(error)[:300]}"


def build_batch(prompts: Prompts, rollouts, tokenizer: Tokenizer, settings: DistillSettings) -> DistillBatch:
  """Verifies the rollouts, rewrites them (when calibrating), builds teacher prompts and pads everything.

  A prompt whose host-side work raises (decoding, verifying, rewriting or its teacher prompt) is left out of
  the loss (its rows stay, zero-masked), counted (failed_prompts) and described in DistillBatch.failures; the
  batch, and the run, go on.
  """
  examples, num_prompts = prompts.examples, len(prompts.examples)
  k = rollouts.tokens.shape[1]
  failures = {}   # prompt index -> what failed
  texts, correct = [[""] * k for _ in range(num_prompts)], np.zeros((num_prompts, k), bool)
  for p, example in enumerate(examples):
    try:
      texts[p] = [rollouts.text(tokenizer, p, j) for j in range(k)]
      correct[p] = [get_verifier(example.verifier)(text, example.answer) for text in texts[p]]
    except Exception as error:  # noqa: BLE001  (one prompt's failure must not stop the run)
      failures[p] = _failure("verifying its rollouts", error)
  c = settings.max_completion_tokens
  rewritten = rewrite_batch(tokenizer, rollouts.tokens, rollouts.lengths, correct, max_tokens=c,
                            eos_id=tokenizer.eos_id, enabled=settings.calibrate)
  for row, message in rewritten.failures.items():
    failures.setdefault(row // k, f"rewriting rollout {row % k}: {message}")
  counts = {"dropped_overlong": prompts.dropped_overlong,
            "truncated_prompts": sum(ex.question_cut > 0 for ex in examples), "no_correct_fallback": 0,
            "skipped_no_correct": 0, "truncated_body": int(rewritten.truncated_body.sum()), "teacher_cut": 0,
            "teacher_overlong": 0, "rewrite_reencode": rewritten.paths.get("reencode", 0),
            "rewrite_inexact": rewritten.paths.get("inexact", 0)}
  teacher_ids, keep = [], np.ones(num_prompts, bool)
  for p, example in enumerate(examples):
    try:
      ids = _teacher_prompt(p, example, correct, texts, rewritten, tokenizer, settings, counts, keep)
    except Exception as error:  # noqa: BLE001
      failures.setdefault(p, _failure("building its teacher prompt", error))
      ids = prompts.ids[p]   # a stand-in of the right kind; the prompt is left out below
    teacher_ids.append(ids)
  keep[list(failures)] = False
  counts["failed_prompts"] = len(failures)

  pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  repeat = lambda rows: [row for row in rows for _ in range(k)]  # noqa: E731
  student_prompt, student_prompt_mask = left_pad_rows(repeat(prompts.ids), pad)
  teacher_prompt, teacher_prompt_mask = left_pad_rows(repeat(teacher_ids), pad)
  completion_mask = rewritten.loss_mask.astype(bool)
  kept_rows = np.repeat(keep, k)[:, None]
  loss_mask = (completion_mask & kept_rows).astype(np.float32)
  confidence_mask = (rewritten.confidence_mask.astype(bool) & kept_rows).astype(np.float32)

  def per_token(values: np.ndarray, fill) -> np.ndarray:   # [P, K, N] sampler output -> [R, C]
    out = np.full((num_prompts * k, c), fill, np.float32)
    n = min(c, values.shape[2])
    out[:, :n] = values.reshape(num_prompts * k, -1)[:, :n]
    return out

  return DistillBatch(
      student_tokens=np.concatenate([student_prompt, rewritten.ids], axis=1),
      student_mask=np.concatenate([student_prompt_mask, completion_mask], axis=1),
      teacher_tokens=np.concatenate([teacher_prompt, rewritten.ids], axis=1),
      teacher_mask=np.concatenate([teacher_prompt_mask, completion_mask], axis=1),
      completion=rewritten.ids, loss_mask=loss_mask, confidence_mask=confidence_mask, sampled=rewritten.sampled_mask,
      sample_logprob=per_token(rollouts.logprobs, 0.0), sample_threshold=per_token(rollouts.thresholds, -np.inf),
      edited=rewritten.edited, correct=correct, stats=rewritten.stats, counts=counts,
      failures=[f"{examples[p].id}: {message}" for p, message in sorted(failures.items())])
