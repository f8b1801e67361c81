"""Accuracy and calibration metrics over per-example correctness c in {0, 1} and stated confidence p (CAOPD.md 8).

  accuracy            mean c
  brier               mean (p - c)^2; reliability = 1 - brier
  ece                 sum over bins of (bin size / n) |mean p - mean c| = (1 / n) sum over bins |sum (p - c)|
  overconfidence_gap  mean p - accuracy (> 0: overconfident)
  spr                 fraction of (correct, incorrect) pairs whose correct member has STRICTLY higher p; ties
                      count 0; 0.0 when every example is correct or every one is wrong (there are no pairs)
  auroc               the same pairs with ties counting 1/2 (Mann-Whitney U / (n1 n0)); 0.5 when only one
                      class is present, so that no metric is ever NaN
  summary             all of the above under the reference's keys, for an eval set with missing confidences

Bins: `n_bins` equal-width bins on p, the first open below and the last open above. Bin k holds
k/n_bins <= p < (k+1)/n_bins, so a boundary value goes to the UPPER bin (0.1 is in bin 1 of 10) and
p = 1.0 is in the last bin. This is clip(floor(p * n_bins), 0, n_bins - 1) made exact at the boundaries:
the index is found by comparing p with the floats k / n_bins (floor(0.58 * 100) is 57, but 0.58 is in bin 58).

Inputs are array-likes of any (equal) shape, flattened; `correct` is bool or 0/1. Confidences outside
[0, 1] are clipped to it. The single-metric functions reject NaN confidences; `summary` takes NaN as
"no confidence parsed": it counts as p = 0 in the headline metrics (a format failure earns no credit) and
is left out of the `valid_confidence_only` block. Every value returned is a plain Python float/int/None
(JSON-serialisable). Pairwise metrics sort the incorrect confidences once: O(n log n), no pair loops.
"""

import numpy as np

from caopd_jax.errors import CaopdError

_METRICS = ("accuracy", "brier_score", "reliability", "ece", "spr", "auroc", "overconfidence_gap", "mean_confidence")


def _as_correct(correct) -> np.ndarray:
  """float [n] of 0/1 from a bool or 0/1 array-like of any shape."""
  c = np.asarray(correct)
  if c.size == 0:
    raise CaopdError("no examples to score: `correct` is empty")
  if c.dtype != bool:
    ok = np.isin(c, (0, 1))
    if not ok.all():
      raise CaopdError(f"`correct` must hold booleans or 0/1; got values such as {c[~ok].reshape(-1)[:3].tolist()}")
  return c.astype(np.float64).reshape(-1)


def _as_arrays(correct, confidence, allow_nan: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(c, p): float [n] correctness in {0, 1} and float [n] confidence clipped to [0, 1] (NaN kept if allowed)."""
  p = np.asarray(confidence, dtype=np.float64)
  if p.shape != np.shape(correct):
    raise CaopdError(f"`correct` has shape {np.shape(correct)} but `confidence` has shape {p.shape}; they must match")
  c, p = _as_correct(correct), p.reshape(-1)
  if not allow_nan and np.isnan(p).any():
    raise CaopdError(f"`confidence` holds {int(np.isnan(p).sum())} NaN (unparsed) values; use summary(), which "
                     "scores them as 0, or drop those rows")
  return c, np.clip(p, 0.0, 1.0)


def _check_bins(n_bins: int) -> None:
  if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
    raise CaopdError(f"n_bins must be a positive integer; got {n_bins!r}")


def bin_index(confidence, n_bins: int = 10) -> np.ndarray:
  """int [n]: the bin in 0..n_bins-1 of each (flattened, non-NaN) confidence; boundaries go up (module docstring)."""
  _check_bins(n_bins)
  return np.searchsorted(np.arange(1, n_bins) / n_bins, np.asarray(confidence, np.float64).reshape(-1), side="right")


def _bin_sums(c: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(count, sum of p, sum of c), each [n_bins]."""
  index = bin_index(p, n_bins)
  return (np.bincount(index, minlength=n_bins), np.bincount(index, weights=p, minlength=n_bins),
          np.bincount(index, weights=c, minlength=n_bins))


def _bin_stats(c: np.ndarray, p: np.ndarray, n_bins: int) -> list[dict]:
  counts, p_sums, c_sums = _bin_sums(c, p, n_bins)
  return [{"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": int(counts[b]),
           "mean_confidence": float(p_sums[b] / counts[b]) if counts[b] else None,
           "accuracy": float(c_sums[b] / counts[b]) if counts[b] else None} for b in range(n_bins)]


def _ece(c: np.ndarray, p: np.ndarray, n_bins: int) -> float:
  _, p_sums, c_sums = _bin_sums(c, p, n_bins)
  return float(np.abs(p_sums - c_sums).sum() / c.size)


def _pair_counts(c: np.ndarray, p: np.ndarray) -> tuple[int, int, int]:
  """(pairs the correct member wins strictly, tied pairs, all pairs) over (correct, incorrect) pairs."""
  right, wrong = p[c == 1], np.sort(p[c == 0])
  wins = int(np.searchsorted(wrong, right, side="left").sum())  # incorrect confidences strictly below each correct one
  ties = int(np.searchsorted(wrong, right, side="right").sum()) - wins
  return wins, ties, right.size * wrong.size


def _spr(c: np.ndarray, p: np.ndarray) -> float:
  wins, _, pairs = _pair_counts(c, p)
  return wins / pairs if pairs else 0.0


def _auroc(c: np.ndarray, p: np.ndarray) -> float:
  wins, ties, pairs = _pair_counts(c, p)
  return (wins + 0.5 * ties) / pairs if pairs else 0.5


def accuracy(correct) -> float:
  """Mean of bool/0-1 `correct` [n]."""
  return float(_as_correct(correct).mean())


def brier(correct, confidence) -> float:
  """Mean (p - c)^2 of `correct` [n] and `confidence` [n]."""
  c, p = _as_arrays(correct, confidence)
  return float(np.mean((p - c) ** 2))


def ece(correct, confidence, n_bins: int = 10) -> float:
  """Expected calibration error with `n_bins` equal-width bins (boundary convention: module docstring)."""
  _check_bins(n_bins)
  return _ece(*_as_arrays(correct, confidence), n_bins)


def bin_stats(correct, confidence, n_bins: int = 10) -> list[dict]:
  """Per bin, low to high: {"lower", "upper", "count", "mean_confidence", "accuracy"}; an empty bin has count 0
  and None means."""
  _check_bins(n_bins)
  return _bin_stats(*_as_arrays(correct, confidence), n_bins)


def overconfidence_gap(correct, confidence) -> float:
  """Mean confidence minus accuracy (> 0: overconfident)."""
  c, p = _as_arrays(correct, confidence)
  return float(p.mean() - c.mean())


def spr(correct, confidence) -> float:
  """Strict pairwise ranking: share of (correct, incorrect) pairs with the correct one strictly more confident."""
  return _spr(*_as_arrays(correct, confidence))


def auroc(correct, confidence) -> float:
  """Area under the ROC curve of confidence as a predictor of correctness (ties 1/2; 0.5 with one class)."""
  return _auroc(*_as_arrays(correct, confidence))


def _scores(c: np.ndarray, p: np.ndarray, n_bins: int) -> dict:
  """The metrics of c, p (float [n], no NaN); the `_METRICS` values are None when n == 0."""
  values = dict.fromkeys(_METRICS)
  if c.size:
    b = float(np.mean((p - c) ** 2))
    values = {"accuracy": float(c.mean()), "brier_score": b, "reliability": 1.0 - b, "ece": _ece(c, p, n_bins),
              "spr": _spr(c, p), "auroc": _auroc(c, p), "overconfidence_gap": float(p.mean() - c.mean()),
              "mean_confidence": float(p.mean())}
  return {**values, "n_samples": int(c.size), "bin_stats": _bin_stats(c, p, n_bins)}


def summary(correct, confidence, *, answer_parsed=None, n_bins: int = 10) -> dict:
  """All metrics of an eval set: `correct` bool [n]; `confidence` float [n], NaN where none was parsed;
  `answer_parsed` bool [n] (default: all True) for answer_parse_rate.

  Keys: accuracy, answer_parse_rate, brier_score, ece, spr, overconfidence_gap, mean_confidence,
  confidence_format_adherence (share of non-NaN confidences), n_samples, n_bins, bin_stats, auroc,
  reliability, and valid_confidence_only: the metrics (accuracy ... bin_stats, auroc, reliability) of the
  rows with a parsed confidence; its values are None, n_samples 0 and its bins empty when there are none.
  """
  _check_bins(n_bins)
  c, p = _as_arrays(correct, confidence, allow_nan=True)
  valid = ~np.isnan(p)
  parsed = np.ones(c.shape, bool) if answer_parsed is None else np.asarray(answer_parsed)
  if answer_parsed is not None and parsed.shape != np.shape(correct):
    raise CaopdError(f"`answer_parsed` has shape {parsed.shape} but `correct` has shape {np.shape(correct)}; "
                     "they must match")
  headline = _scores(c, np.where(valid, p, 0.0), n_bins)
  return {"accuracy": headline.pop("accuracy"), "answer_parse_rate": float(parsed.astype(bool).mean()), **headline,
          "confidence_format_adherence": float(valid.mean()), "n_bins": int(n_bins),
          "valid_confidence_only": _scores(c[valid], p[valid], n_bins)}
