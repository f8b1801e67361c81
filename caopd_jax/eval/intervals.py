"""Uncertainty of evaluation metrics: a bootstrap over questions for one evaluation, a t-interval over seeds.

    bootstrap(records, protocol)   # {"accuracy": (low, high), "ece": ..., "reliability": ...}: 95% percentile
                                   # intervals from resampling questions (all K samples of a question together)
    over_seeds([0.61, 0.64, 0.58]) # (mean, half width of the 95% t-interval; None with one seed)

Metrics are recomputed as `scoring.summarise` computes them: a record without a stated confidence counts as
confidence 0, ECE uses the protocol's bin edges and clipping; reliability is 1 - Brier.
"""

from typing import Sequence

import numpy as np
import scipy.stats

from caopd_jax import metrics
from caopd_jax.errors import CaopdError
from caopd_jax.eval.protocols import Protocol

METRICS = ("accuracy", "ece", "reliability")
LEVEL = 0.95


def _question_arrays(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """records -> (correct, confidence) float [questions, K]; K samples per question id, in order."""
  by_id: dict = {}
  for r in records:
    by_id.setdefault(r["id"], []).append((float(r["correct"]), 0.0 if r["confidence"] is None else r["confidence"]))
  counts = {len(v) for v in by_id.values()}
  if len(counts) != 1:
    raise CaopdError(f"records hold different numbers of samples per question ({sorted(counts)}); a bootstrap "
                     "over questions needs the same K for every question")
  table = np.array(list(by_id.values()), float)   # [questions, K, 2]
  return table[..., 0], table[..., 1]


def _values(c: np.ndarray, p: np.ndarray, protocol: Protocol) -> dict:
  c, p = c.reshape(-1), p.reshape(-1)
  return {"accuracy": float(c.mean()), "ece": metrics.ece(c, p, edges=protocol.edges, clip=protocol.clip),
          "reliability": 1.0 - float(np.mean(((np.clip(p, 0, 1) if protocol.clip else p) - c) ** 2))}


def bootstrap(records: Sequence[dict], protocol: Protocol, draws: int = 1000, seed: int = 0) -> dict:
  """{metric: (low, high)} 95% percentile intervals over `draws` resamplings of the questions."""
  correct, confidence = _question_arrays(records)
  picks = np.random.default_rng(seed).integers(0, len(correct), size=(draws, len(correct)))
  samples = [_values(correct[i], confidence[i], protocol) for i in picks]
  tail = 100 * (1 - LEVEL) / 2
  return {m: tuple(float(x) for x in np.percentile([s[m] for s in samples], [tail, 100 - tail])) for m in METRICS}


def over_seeds(values: Sequence[float]) -> tuple[float, float | None]:
  """(mean, half width of the 95% Student-t interval of the mean); the half width is None for one value."""
  x = np.asarray(values, float)
  if x.size < 2:
    return float(x.mean()), None
  return float(x.mean()), float(scipy.stats.t.ppf(0.5 + LEVEL / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
