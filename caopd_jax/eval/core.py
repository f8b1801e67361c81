"""Batched evaluation of a model on Examples: rollouts, verification, stated confidence, metrics.

    records, summary = evaluate(config, params, tokenizer, examples, PromptConfig(), max_new_tokens=256)

Each example's student prompt (with the confidence instruction) is sampled `num_samples` times
(temperature 0 = greedy); every completion is verified and its `Confidence:` parsed. `summary`
is `metrics.summary` over all completions.
"""

from typing import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from caopd_jax import metrics, rollout
from caopd_jax.calibration.confidence import parse_confidence
from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.data.example import Example
from caopd_jax.data.prompts import PromptConfig, render, student_messages
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers.base import Tokenizer


def evaluate(config: ModelConfig, params, tokenizer: Tokenizer, examples: Sequence[Example], prompts: PromptConfig,
             *, max_new_tokens: int, num_samples: int = 1, temperature: float = 0.0, batch_size: int = 64,
             seed: int = 0, progress: bool = True) -> tuple[list[dict], dict]:
  """(one record per completion, metrics.summary of them).

  A record: {"id", "prompt", "response", "golden_answer", "correct", "confidence" (None if not
  parsed), "sample"}; records are in example order, samples of one example together.
  """
  records = []
  for start in tqdm(range(0, len(examples), batch_size), desc="evaluating", unit="batch", disable=not progress,
                    leave=False):
    chunk = examples[start:start + batch_size]
    texts = [render(tokenizer, student_messages(ex, prompts)) for ex in chunk]
    out = rollout.sample(config, params, [tokenizer.encode(t) for t in texts], jax.random.key(seed + start),
                         num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                         stop_token_ids=tokenizer.stop_ids)
    for i, (ex, prompt) in enumerate(zip(chunk, texts)):
      for k in range(num_samples):
        response = tokenizer.decode(out.tokens[i, k, :out.lengths[i, k]].tolist(), skip_special_tokens=True)
        records.append({"id": ex.id, "prompt": prompt, "response": response, "golden_answer": ex.answer,
                        "correct": bool(get_verifier(ex.verifier)(response, ex.answer)),
                        "confidence": parse_confidence(response), "sample": k})
  correct = np.array([r["correct"] for r in records])
  confidence = np.array([np.nan if r["confidence"] is None else r["confidence"] for r in records])
  return records, metrics.summary(correct, confidence)
