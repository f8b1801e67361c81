"""Batched evaluation of a model on Examples: rollouts, verification, parsed answers and confidences, metrics.

    records, summary = evaluate(config, params, tokenizer, examples, PromptConfig(), max_new_tokens=256)

Each example's student prompt (with the confidence instruction) is sampled `num_samples` times
(temperature 0 = greedy); every completion is verified, its answer parsed as its verifier reads it
and its `Confidence:` parsed. `summary` is `metrics.summary` over all completions plus, when
num_samples > 1, `question_level`: how the stated confidence tracks each question's empirical
success rate over its samples.
"""

from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from caopd_jax import metrics, rollout
from caopd_jax.calibration.confidence import parse_confidence
from caopd_jax.calibration.verifiers import ANSWER_PARSERS, get_verifier
from caopd_jax.data.example import Example
from caopd_jax.data.prompts import PromptConfig, render, student_messages
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers.base import Tokenizer


def _record(example: Example, prompt: str, response: str, sample: int) -> dict:
  answer = ANSWER_PARSERS[example.verifier](response)
  return {"id": example.id, "prompt": prompt, "response": response, "golden_answer": example.answer,
          "parsed_answer": list(answer) if isinstance(answer, tuple) else answer,
          "correct": bool(get_verifier(example.verifier)(response, example.answer)),
          "confidence": parse_confidence(response), "sample": sample}


def question_level(records: list[dict], num_samples: int) -> dict:
  """Per question (records grouped by `num_samples`): success rate vs mean stated confidence (unparsed = 0).

  Returns {"n_questions", "mean_success_rate", "mean_abs_error" (|mean stated - success rate|),
  "pearson" (correlation across questions; None when either side is constant)}.
  """
  correct = np.array([r["correct"] for r in records], float).reshape(-1, num_samples)
  stated = np.array([r["confidence"] or 0.0 for r in records], float).reshape(-1, num_samples)
  rate, mean_stated = correct.mean(1), stated.mean(1)
  varies = rate.std() > 0 and mean_stated.std() > 0
  return {"n_questions": int(rate.size), "mean_success_rate": float(rate.mean()),
          "mean_abs_error": float(np.abs(mean_stated - rate).mean()),
          "pearson": float(np.corrcoef(rate, mean_stated)[0, 1]) if varies else None}


def evaluate(config: ModelConfig, params, tokenizer: Tokenizer, examples: Sequence[Example], prompts: PromptConfig,
             *, max_new_tokens: int, num_samples: int = 1, temperature: float = 0.0, batch_size: int = 64,
             seed: int = 0, progress: bool = True, layout=None) -> tuple[list[dict], dict]:
  """(one record per completion, metrics summary); records in example order, an example's samples together.

  layout: the `sharding.Layout` of sharded `params` (training's periodic evaluation), else None.

  A record: {"id", "prompt", "response", "golden_answer", "parsed_answer" (None if not parsed),
  "correct", "confidence" (None if not parsed), "sample"}.
  """
  records = []
  for start in tqdm(range(0, len(examples), batch_size), desc="evaluating", unit="batch", disable=not progress,
                    leave=False):
    chunk = examples[start:start + batch_size]
    texts = [render(tokenizer, student_messages(ex, prompts)) for ex in chunk]
    out = rollout.sample(config, params, [tokenizer.encode(t) for t in texts], jax.random.key(seed + start),
                         num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                         stop_token_ids=tokenizer.stop_ids, layout=layout)
    for i, (ex, prompt) in enumerate(zip(chunk, texts)):
      for k in range(num_samples):
        response = tokenizer.decode(out.tokens[i, k, :out.lengths[i, k]].tolist(), skip_special_tokens=True)
        records.append(_record(ex, prompt, response, k))
  correct = np.array([r["correct"] for r in records])
  confidence = np.array([np.nan if r["confidence"] is None else r["confidence"] for r in records])
  summary = metrics.summary(correct, confidence, answer_parsed=[r["parsed_answer"] is not None for r in records])
  if num_samples > 1:
    summary["question_level"] = question_level(records, num_samples)
  return records, summary
