"""Assembling one distillation step from examples and rollouts: alignment, rewrite, teacher context, policies."""

import dataclasses

import numpy as np
import pytest

from caopd_jax.calibration import rewrite
from caopd_jax.calibration.rewrite import patch_demonstration
from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.distill.batch import build_batch, prepare_prompts
from caopd_jax.distill.prompt_fit import fit_example, screen_examples, with_question
from caopd_jax.distill.prompts import render, student_messages, teacher_messages
from caopd_jax.distill.settings import DistillSettings
from caopd_jax.rollout import Rollouts


def _rollouts(tokenizer, completions: list[list[str]], width: int = 40) -> Rollouts:
  """Rollouts whose completions are the given texts (each followed by the end-of-turn token)."""
  p, k = len(completions), len(completions[0])
  tokens = np.zeros((p, k, width), np.int32)
  lengths = np.zeros((p, k), np.int32)
  for i, row in enumerate(completions):
    for j, text in enumerate(row):
      ids = tokenizer.encode(text) + [tokenizer.token_to_id("<|im_end|>")]
      tokens[i, j, :len(ids)] = ids
      lengths[i, j] = len(ids)
  mask = np.arange(width) < lengths[..., None]
  logprobs = np.where(mask, -0.5, 0.0).astype(np.float32)
  thresholds = np.where(mask, 1.5, -np.inf).astype(np.float32)
  return Rollouts(tokens, mask, lengths, np.ones((p, k), bool), logprobs, logprobs, thresholds)


@pytest.fixture
def setup(ours_smollm2):
  examples = arithmetic_task(2, seed=0, difficulty=1)
  a, b = examples[0].answer, examples[1].answer
  completions = [
      [f"<answer>{a}</answer>\nConfidence: 0.90", f"<answer>{a + 1}</answer>\nConfidence: 0.80",
       f"<answer>{a}</answer>\nConfidence: 1.0", f"<answer>{a}</answer>"],
      [f"<answer>{b + 1}</answer>\nConfidence: 0.95"] * 4,
  ]
  return ours_smollm2, examples, _rollouts(ours_smollm2, completions)


def test_caopd_batch_is_aligned_and_rewritten(setup):
  tokenizer, examples, rollouts = setup
  settings = DistillSettings(max_completion_tokens=40)
  prompts = prepare_prompts(examples, tokenizer, settings)
  batch = build_batch(prompts, rollouts, tokenizer, settings)
  np.testing.assert_array_equal(batch.correct, [[True, False, True, True], [False] * 4])
  assert list(batch.stats["target"]) == ["0.75", "0.00"]
  assert batch.student_tokens.shape[0] == batch.teacher_tokens.shape[0] == 8
  # the completion occupies the last C columns on both sides, identical tokens
  np.testing.assert_array_equal(batch.student_tokens[:, -40:], batch.completion)
  np.testing.assert_array_equal(batch.teacher_tokens[:, -40:], batch.completion)
  for r in range(8):
    n = int(batch.loss_mask[r].sum())
    text = tokenizer.decode(batch.completion[r, :n].tolist())
    assert text.endswith(f"Confidence: {batch.stats['target'][r // 4]}" + tokenizer.eos_token)
    assert text.count("Confidence:") == 1
  # every student row of a prompt holds the same student prompt; teacher prompts carry target and note
  teacher_text = tokenizer.decode(batch.teacher_tokens[0][batch.teacher_mask[0]].tolist())
  assert "empirical confidence for this question is 0.75" in teacher_text
  assert f"<answer>{examples[0].answer}</answer>\nConfidence: 0.75" in teacher_text  # patched demonstration
  assert batch.edited.all()
  # the sampled body keeps its sampling log-probs and support; the rewritten line and EOS are not samples
  for r in range(8):
    n, kept = int(batch.loss_mask[r].sum()), int(batch.sampled[r].sum())
    assert 0 < kept < n and batch.sampled[r, :kept].all()
    body = tokenizer.decode(batch.completion[r, :kept].tolist())
    assert "Confidence" not in body and body.startswith("<answer>")
    np.testing.assert_array_equal(batch.completion[r, :kept], rollouts.tokens.reshape(8, -1)[r, :kept])
    assert (batch.sample_logprob[r, :kept] == -0.5).all() and (batch.sample_threshold[r, :kept] == 1.5).all()


def test_plain_opd_keeps_samples_and_teacher_certainty(setup):
  tokenizer, examples, rollouts = setup
  settings = DistillSettings(calibrate=False, max_completion_tokens=40)
  batch = build_batch(prepare_prompts(examples, tokenizer, settings), rollouts, tokenizer, settings)
  np.testing.assert_array_equal(batch.completion, rollouts.tokens.reshape(8, -1))
  assert not batch.edited.any()
  np.testing.assert_array_equal(batch.sampled, rollouts.mask.reshape(8, -1))   # every real token is a sample
  np.testing.assert_allclose(batch.sample_logprob, rollouts.logprobs.reshape(8, -1))
  np.testing.assert_allclose(batch.sample_threshold, rollouts.thresholds.reshape(8, -1))
  teacher_text = tokenizer.decode(batch.teacher_tokens[0][batch.teacher_mask[0]].tolist())
  assert "empirical confidence" not in teacher_text and "Confidence: 1.00" in teacher_text


@pytest.mark.parametrize("policy", ["demo", "skip"])
def test_correct_solution_mode_and_its_fallback(setup, policy):
  tokenizer, examples, rollouts = setup
  settings = DistillSettings(teacher_mode="correct_solution", no_correct_policy=policy, max_completion_tokens=40)
  batch = build_batch(prepare_prompts(examples, tokenizer, settings), rollouts, tokenizer, settings)
  first = tokenizer.decode(batch.teacher_tokens[0][batch.teacher_mask[0]].tolist())
  assert "Correct solution:" in first and f"<answer>{examples[0].answer}</answer>\nConfidence: 0.75" in first
  second = tokenizer.decode(batch.teacher_tokens[4][batch.teacher_mask[4]].tolist())
  assert "Correct solution:" not in second  # no correct rollout for prompt 2: the demonstration instead
  if policy == "demo":
    assert batch.counts["no_correct_fallback"] == 1 and batch.loss_mask[4:].sum() > 0
  else:
    assert batch.counts["skipped_no_correct"] == 1 and batch.loss_mask[4:].sum() == 0


def test_overlong_prompts_are_dropped_and_counted(ours_smollm2):
  examples = arithmetic_task(3, seed=1, difficulty=1)
  settings = DistillSettings(max_prompt_tokens=30)
  prompts = prepare_prompts(examples, ours_smollm2, settings)
  assert prompts.examples == [] and prompts.dropped_overlong == 3
  roomy = prepare_prompts(examples, ours_smollm2, DistillSettings(max_prompt_tokens=4096))
  assert len(roomy.ids) == 3 and roomy.dropped_overlong == 0


def _long_question(example, repeat=40):
  return dataclasses.replace(example, question="Some words before the question. " * repeat + example.question)


def test_truncate_cuts_the_start_of_the_question_only_as_far_as_needed(ours_smollm2):
  example = _long_question(arithmetic_task(1, seed=2, difficulty=1)[0])
  settings = DistillSettings(max_prompt_tokens=260)
  render_ids = lambda ex, teacher: ours_smollm2.encode(render(ours_smollm2, teacher_messages(  # noqa: E731
      ex, "demo", target="0.00", config=settings.prompts) if teacher else student_messages(ex, settings.prompts)))
  assert len(render_ids(example, True)) > 260
  fitted = fit_example(example, ours_smollm2, settings)
  cut = fitted.example
  assert example.question.endswith(cut.question) and cut.question_cut == len(example.question) - len(cut.question) > 0
  assert cut.question.endswith(arithmetic_task(1, seed=2, difficulty=1)[0].question)   # the question itself stays
  assert len(fitted.student_ids) <= 260 and fitted.teacher_tokens == len(render_ids(cut, True)) <= 260
  teacher = ours_smollm2.decode(render_ids(cut, True))
  assert settings.prompts.arithmetic_system in teacher                                    # system message kept
  assert patch_demonstration(example.demonstration, "0.00") in teacher                  # privileged text kept
  # as few characters as needed: one character less cut and the teacher prompt is over budget
  longer = with_question(example, example.question[cut.question_cut - 1:], cut.question_cut - 1)
  assert len(render_ids(longer, True)) > 260
  assert fit_example(example, ours_smollm2, dataclasses.replace(settings, overlong_prompts="drop")) is None
  prompts = prepare_prompts([example, arithmetic_task(1, seed=3, difficulty=1)[0]], ours_smollm2, settings)
  assert prompts.dropped_overlong == 0 and [ex.question_cut > 0 for ex in prompts.examples] == [True, False]


def test_screening_reports_what_it_did(ours_smollm2):
  examples = arithmetic_task(3, seed=4, difficulty=1)
  examples[1] = _long_question(examples[1])
  examples[2] = _long_question(examples[2], repeat=400)   # ten times longer: cut just as well
  kept, report = screen_examples(examples, ours_smollm2, DistillSettings(max_prompt_tokens=260))
  assert (report.read, report.usable, report.truncated, report.dropped) == (3, 3, 2, 0)
  assert report.student_tokens.max() <= 260 and report.teacher_tokens.max() <= 260
  assert "3 examples read, 3 usable (2 truncated to fit 260 prompt tokens, 0 dropped)" in report.summary(260)
  kept, report = screen_examples(examples, ours_smollm2, DistillSettings(max_prompt_tokens=260,
                                                                         overlong_prompts="drop"))
  assert [ex.id for ex in kept] == [examples[0].id] and report.dropped == 2


def test_teacher_prompts_over_budget_after_the_rollouts_are_cut_or_left_without_loss(setup):
  """Prompts prepared under a roomy budget, the batch built under a tight one: the teacher side is guarded too."""
  tokenizer, examples, rollouts = setup
  examples = [_long_question(ex) for ex in examples]
  prompts = prepare_prompts(examples, tokenizer, DistillSettings(max_prompt_tokens=4096, max_completion_tokens=40))
  tight = DistillSettings(max_prompt_tokens=260, max_completion_tokens=40)
  batch = build_batch(prompts, rollouts, tokenizer, tight)
  assert batch.counts["teacher_cut"] == 2 and batch.counts["teacher_overlong"] == 0
  assert batch.teacher_mask[:, :-40].sum(axis=1).max() <= 260 and batch.loss_mask.sum() > 0
  batch = build_batch(prompts, rollouts, tokenizer, DistillSettings(max_prompt_tokens=20, max_completion_tokens=40))
  assert batch.counts["teacher_overlong"] == 2 and batch.loss_mask.sum() == 0


def test_a_prompt_whose_host_work_fails_is_left_out_and_counted(setup, monkeypatch):
  """A verifier raising on one prompt (a malformed gold answer) and a rewrite raising on one rollout of the other:
  each prompt is left out of the loss, counted and described; the batch is still built."""
  tokenizer, examples, rollouts = setup
  settings = DistillSettings(max_completion_tokens=40)
  broken = [dataclasses.replace(examples[0], answer="not an integer"), examples[1]]
  batch = build_batch(prepare_prompts(broken, tokenizer, settings), rollouts, tokenizer, settings)
  assert batch.counts["failed_prompts"] == 1 and batch.loss_mask[:4].sum() == 0 and batch.loss_mask[4:].sum() > 0
  assert len(batch.failures) == 1 and batch.failures[0].startswith(f"{examples[0].id}: verifying its rollouts")
  real = rewrite.rewrite_completion
  calls = []

  def failing_once(*args, **kwargs):
    calls.append(1)
    if len(calls) == 6:   # rollout 1 of prompt 2
      raise RuntimeError("a tokenizer that cannot encode this")
    return real(*args, **kwargs)

  monkeypatch.setattr(rewrite, "rewrite_completion", failing_once)
  batch = build_batch(prepare_prompts(examples, tokenizer, settings), rollouts, tokenizer, settings)
  assert batch.counts["failed_prompts"] == 1 and batch.loss_mask[4:].sum() == 0 and batch.loss_mask[:4].sum() > 0
  assert batch.failures == [f"{examples[1].id}: rewriting rollout 1: RuntimeError: a tokenizer that cannot encode this"]


@pytest.mark.slow
def test_smollm2_solves_easy_arithmetic_and_fails_hard(smollm2_gguf, ours_smollm2):
  """The built-in task is informative for the real 135M model: measured greedy accuracy on 16 items was
  81% at level 1 (1-digit +/-) and 0% at level 4 (3-4 digit x)."""
  import jax

  from caopd_jax import rollout, weights
  from caopd_jax.calibration.verifiers import get_verifier
  config, params = weights.load(smollm2_gguf)
  accuracy = {}
  for level in (1, 4):
    examples = arithmetic_task(16, seed=level, difficulty=level)
    prompts = prepare_prompts(examples, ours_smollm2, DistillSettings())
    out = rollout.sample(config, params, prompts.ids, jax.random.key(0), max_new_tokens=48, temperature=0.0,
                         stop_token_ids=ours_smollm2.stop_ids)
    texts = [ours_smollm2.decode(out.tokens[i, 0, :out.lengths[i, 0]].tolist(), skip_special_tokens=True)
             for i in range(16)]
    accuracy[level] = np.mean([get_verifier("arithmetic")(t, e.answer) for t, e in zip(texts, examples)])
  assert accuracy[1] >= 0.5 and accuracy[4] <= 0.2, accuracy
