"""Batched evaluation of a model on Examples: rollouts, then scoring under an eval protocol, then metrics.

    records, summary = evaluate(config, params, tokenizer, examples, PromptConfig(), max_new_tokens=256)

Each example's student prompt (with the confidence instruction) is sampled `num_samples` times
(temperature 0 = greedy); every completion becomes a record in the reference's inference format (`response`,
`golden_answer`) and is scored by `protocol` (protocols.py; default "paper", the reference's eval rules).
`summary` is scoring.summarise: metrics.summary over all completions under the protocol's bins, its name,
the decoding used and, when num_samples > 1, `question_level`: how the stated confidence tracks each
question's empirical success rate over its samples.

confidence="expected" scores every record's confidence as the mean of the model's distribution over the values
it could have written there (eval/expected_confidence.py) instead of the value it wrote; the stated value stays
in the record as `stated_confidence`.
"""

from typing import Sequence

import jax
from tqdm.auto import tqdm

from caopd_jax import rollout
from caopd_jax.data.example import Example
from caopd_jax.distill.prompts import PromptConfig, render, student_messages
from caopd_jax.errors import CaopdError
from caopd_jax.eval.expected_confidence import expected_confidences
from caopd_jax.eval.protocols import get_protocol, golden_answer
from caopd_jax.eval.scoring import score, summarise
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers.base import Tokenizer


def longest_prompt(tokenizer: Tokenizer, examples: Sequence[Example], prompts: PromptConfig) -> int:
  """Tokens of the longest student prompt of `examples` (as evaluate renders them)."""
  return max((len(tokenizer.encode(render(tokenizer, student_messages(ex, prompts)))) for ex in examples), default=0)


def evaluate(config: ModelConfig, params, tokenizer: Tokenizer, examples: Sequence[Example], prompts: PromptConfig,
             *, max_new_tokens: int, num_samples: int = 1, temperature: float = 0.0, batch_size: int = 64,
             seed: int = 0, progress: bool = True, layout=None, protocol: str = "paper",
             confidence: str = "stated") -> tuple[list[dict], dict]:
  """(one record per completion, metrics summary); records in example order, an example's samples together.

  layout: the `sharding.Layout` of sharded `params` (training's periodic evaluation), else None.
  protocol: the eval protocol's name (protocols.PROTOCOLS) that scores the completions; the decoding is
  always the arguments' (the CLI takes its defaults from the protocol).
  confidence: "stated" (the value the completion wrote) or "expected" (see the module docstring).

  A record: {"id", "prompt", "response", "golden_answer" (protocols.golden_answer), "sample", "parsed_answer"
  (None if not parsed), "correct", "confidence" (None if not parsed)[, "confidence_note"]}. The summary also
  holds "decoding": {"temperature", "max_new_tokens", "num_samples"}.
  """
  rules = get_protocol(protocol)
  if confidence not in READOUTS:
    raise CaopdError(f"confidence={confidence!r}: give one of {', '.join(READOUTS)}")
  records, stops = [], []
  for start in tqdm(range(0, len(examples), batch_size), desc="evaluating", unit="batch", disable=not progress,
                    leave=False):
    chunk = examples[start:start + batch_size]
    texts = [render(tokenizer, student_messages(ex, prompts)) for ex in chunk]
    out = rollout.sample(config, params, [tokenizer.encode(t) for t in texts], jax.random.key(seed + start),
                         num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                         stop_token_ids=tokenizer.stop_ids, layout=layout)
    for i, (ex, prompt) in enumerate(zip(chunk, texts)):
      for k in range(num_samples):
        records.append({"id": ex.id, "prompt": prompt, "response": out.text(tokenizer, i, k),
                        "golden_answer": golden_answer(ex), "sample": k})
        stops.append(int(out.tokens[i, k, out.lengths[i, k] - 1]) if out.stopped[i, k] else None)
  records = score(records, [ex.verifier for ex in examples for _ in range(num_samples)], rules, "evaluation")
  readout = None
  if confidence == "expected":
    records, readout = _read_expected(config, params, tokenizer, records, stops, progress)
  summary = summarise(records, rules, num_samples)
  if readout:
    summary["confidence_readout"] = readout
  summary["decoding"] = {"temperature": temperature, "max_new_tokens": max_new_tokens, "num_samples": num_samples}
  return records, summary


READOUTS = ("stated", "expected")


def _read_expected(config: ModelConfig, params, tokenizer: Tokenizer, records: list[dict], stops: list[int | None],
                   progress: bool) -> tuple[list[dict], dict]:
  """(records whose parsed confidence is replaced by the expected one, {"kind", "read", "kept_stated",
  "mean_mass"}). A record keeps its stated value (counted in kept_stated) where the protocol parsed a confidence
  that the expected readout finds no number for (e.g. the reference's rules read a form ours do not)."""
  readouts = expected_confidences(config, params, tokenizer, [(r["prompt"], r["response"], stop)
                                                               for r, stop in zip(records, stops)], progress=progress)
  out, masses, kept = [], [], 0
  for record, readout in zip(records, readouts):
    if record["confidence"] is None:
      out.append(record)
    elif readout is None:
      kept += 1
      out.append(record)
    else:
      masses.append(readout.mass)
      out.append({**record, "stated_confidence": record["confidence"], "confidence": readout.expected,
                  "confidence_mass": readout.mass})
  return out, {"kind": "expected", "read": len(masses), "kept_stated": kept,
               "mean_mass": float(sum(masses) / len(masses)) if masses else None}
