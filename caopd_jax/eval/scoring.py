"""Scoring inference records under a protocol: each record's answer, correctness and confidence, then the metrics.

    records = read_inference("eval/base/inference.json")       # ours, the reference's, or any engine's (vLLM ...)
    protocol = get_protocol("paper")
    scored = score(records, ["mcq"] * len(records), protocol, "eval/base/inference.json")
    summary = summarise(scored, protocol)

A record is a dict with `response` (str) and `golden_answer` (the reference's format, see protocols.py); other
fields are kept. Scoring adds `parsed_answer` (None: nothing read), `correct`, `confidence` (None: none stated)
and, where the protocol leaves one, `confidence_note`. Nothing here needs a model or JAX.
"""

import json
import os
from typing import Sequence

import numpy as np

from caopd_jax import metrics
from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.eval.protocols import Protocol


def read_inference(path: str) -> list[dict]:
  """The records of an inference file: a non-empty JSON list of {"response": str, "golden_answer": ..., ...}."""
  if not os.path.isfile(path):
    raise InputNotFoundError(f"{path} does not exist; give an inference.json (a JSON list of records)")
  with open(path) as f:
    try:
      records = json.load(f)
    except ValueError as e:
      raise CaopdError(f"{path} is not valid JSON ({e}); give an inference.json (a JSON list of records)") from None
  if not isinstance(records, list) or not records:
    raise CaopdError(f"{path} must hold a non-empty JSON list of records; got {type(records).__name__} "
                     f"{json.dumps(records)[:100]}")
  for i, record in enumerate(records):
    if not (isinstance(record, dict) and isinstance(record.get("response"), str) and "golden_answer" in record):
      raise CaopdError(f"{path}: record {i} needs 'response' (a string) and 'golden_answer'; got "
                       f"{json.dumps(record)[:200]}")
  return records


def score(records: Sequence[dict], verifiers: Sequence[str], protocol: Protocol, source: str) -> list[dict]:
  """Each record (one verifier name each) with `protocol`'s parsed_answer, correct, confidence [, confidence_note];
  a malformed golden_answer raises a CaopdError naming `source`, the record's index and its id."""
  out = []
  for i, (record, verifier) in enumerate(zip(records, verifiers, strict=True)):
    try:
      correct, parsed = protocol.grader(verifier)(record["response"], record["golden_answer"])
    except CaopdError as e:
      where = f"{source}: record {i}" + (f" (id {record['id']})" if "id" in record else "")
      raise CaopdError(f"{where}: {e}") from None
    confidence, note = protocol.read_confidence(record["response"])
    graded = {key: value for key, value in record.items() if key != "confidence_note"}
    graded.update(parsed_answer=parsed, correct=bool(correct), confidence=confidence)
    out.append({**graded, "confidence_note": note} if note else graded)
  return out


def samples_per_question(records: Sequence[dict]) -> int:
  """K when the records are K samples of each question in turn (`sample` = 0..K-1, 0..K-1, ...), else 1."""
  samples = [record.get("sample") for record in records]
  if not all(type(s) is int and s >= 0 for s in samples):
    return 1
  k = max(samples) + 1
  return k if samples == list(range(k)) * (len(samples) // k) else 1


def question_level(records: Sequence[dict], num_samples: int) -> dict:
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


def summarise(records: Sequence[dict], protocol: Protocol, num_samples: int = 1) -> dict:
  """{"protocol": its name, **metrics.summary (the protocol's edges and clipping), "confidence_notes": how many
  records carry one, "question_level" when num_samples > 1} of scored records."""
  confidence = [np.nan if r["confidence"] is None else r["confidence"] for r in records]
  summary = metrics.summary([r["correct"] for r in records], confidence, edges=protocol.edges, clip=protocol.clip,
                            answer_parsed=[r["parsed_answer"] is not None for r in records])
  summary["confidence_notes"] = sum("confidence_note" in r for r in records)
  if num_samples > 1:
    summary["question_level"] = question_level(records, num_samples)
  return {"protocol": protocol.name, **summary}
