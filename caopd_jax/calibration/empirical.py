"""Empirical confidence of a prompt from its K verified rollouts (docs/CAOPD.md section 4 step 2).

P_acc = (#correct rollouts) / K, the rollout accuracy of the prompt; its
two-decimal string (rounded half-up, `format_fraction`) is the CaOPD target.
"""

import numpy as np

from caopd_jax.calibration.confidence import format_fraction


def _as_correct(correct: np.ndarray) -> np.ndarray:
  correct = np.asarray(correct)
  if correct.ndim != 2 or correct.shape[1] < 1:
    raise ValueError(f"correct must be a bool array [prompts, K] with K >= 1; got shape {correct.shape}")
  return correct.astype(bool)


def empirical_confidence(correct: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """(p_acc float64 [P] = correct.mean(1), targets: P strings like "0.63") from correct bool [P, K]."""
  correct = _as_correct(correct)
  counts, k = correct.sum(axis=1), correct.shape[1]
  return counts / k, [format_fraction(int(c), k) for c in counts]


def rollout_stats(correct: np.ndarray, stated: np.ndarray) -> dict:
  """Per-prompt statistics of K rollouts.

  Args:
    correct: bool [P, K], the verifier's verdict per rollout.
    stated: float [P, K], the parsed stated confidence per rollout, NaN where none parsed.
  Returns:
    {"accuracy": float64 [P] (= P_acc), "target": list of P two-decimal strings (P_acc formatted),
     "mean_confidence": float64 [P] (mean over parsed confidences; NaN when none parsed),
     "format_adherence": float64 [P] (fraction of rollouts with a parsed confidence)}.
  """
  accuracy, target = empirical_confidence(correct)
  stated = np.asarray(stated, dtype=np.float64)
  if stated.shape != np.shape(correct):
    raise ValueError(f"stated must have the shape of correct {np.shape(correct)}; got {stated.shape}")
  valid = ~np.isnan(stated)
  parsed = valid.sum(axis=1)
  total = np.where(valid, stated, 0.0).sum(axis=1)
  mean_confidence = np.where(parsed > 0, total / np.maximum(parsed, 1), np.nan)
  return {"accuracy": accuracy, "target": target, "mean_confidence": mean_confidence,
          "format_adherence": parsed / stated.shape[1]}
