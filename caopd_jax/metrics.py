"""Accuracy and calibration metrics over per-example correctness c in {0, 1} and stated confidence p (docs/CAOPD.md 8).

  accuracy            mean c
  brier               mean (p - c)^2; reliability = 1 - brier
  ece                 sum over non-empty bins, low to high, of (bin size / n) |mean p - mean c|
  overconfidence_gap  mean p - accuracy (> 0: overconfident)
  spr                 fraction of (correct, incorrect) pairs whose correct member has STRICTLY higher p; ties
                      count 0; 0.0 when every example is correct or every one is wrong (there are no pairs)
  auroc               the same pairs with ties counting 1/2 (Mann-Whitney U / (n1 n0)); 0.5 when only one
                      class is present, so that no metric is ever NaN
  summary             all of the above under the reference's keys, for an eval set with missing confidences

Bins: `n_bins` equal-width bins on p, the first open below and the last open above; a value equal to an
inner edge goes to the bin above it. `edges` says which floats the inner edges are:
  "linspace" (default)  np.linspace(0, 1, n_bins + 1)[1:-1], the CaOPD reference's edges. Some of them are one
                        ulp above k / n_bins (for 10 bins: 0.30000000000000004, 0.6000000000000001,
                        0.7000000000000001), so p = 0.3, 0.6 and 0.7 fall in the LOWER bin, 0.1, 0.2, 0.4, 0.5,
                        0.8 and 0.9 in the upper one. This is what the paper's numbers use.
  "exact"               the correctly rounded k / n_bins, so every boundary value goes to the UPPER bin (0.3 is
                        in bin 3 of 10; 0.58 in bin 58 of 100, although floor(0.58 * 100) is 57).
p = 1.0 is in the last bin either way. The sums run in the reference's order (per bin: np.mean of its p and
of its c; ECE accumulated bin by bin), so that under "linspace" every value equals the reference's to the last
digit.

Inputs are array-likes of any (equal) shape, flattened; `correct` is bool or 0/1. The single-metric
functions clip confidences to [0, 1] and reject NaN; `summary` clips unless clip=False (the reference takes
values as given: a `<confidence>500</confidence>` it reads as 5.0 stays 5.0) and takes NaN as "no confidence
parsed": it counts as p = 0 in the headline metrics (a format failure earns no credit) and is left out of the
`valid_confidence_only` block. Every value returned is a plain Python float/int/None (JSON-serialisable).
Pairwise metrics sort the incorrect confidences once: O(n log n), no pair loops.
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


def _as_arrays(correct, confidence, allow_nan: bool = False, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(c, p): float [n] correctness in {0, 1} and float [n] confidence, clipped to [0, 1] if `clip` (NaN kept if
  allowed; without `clip`, an infinite confidence is rejected)."""
  p = np.asarray(confidence, dtype=np.float64)
  if p.shape != np.shape(correct):
    raise CaopdError(f"`correct` has shape {np.shape(correct)} but `confidence` has shape {p.shape}; they must match")
  c, p = _as_correct(correct), p.reshape(-1)
  if not allow_nan and np.isnan(p).any():
    raise CaopdError(f"`confidence` holds {int(np.isnan(p).sum())} NaN (unparsed) values; use summary(), which "
                     "scores them as 0, or drop those rows")
  if not clip and np.isinf(p).any():
    raise CaopdError(f"`confidence` holds {int(np.isinf(p).sum())} infinite values; only clip=True reads them")
  return c, np.clip(p, 0.0, 1.0) if clip else p


EDGES = ("linspace", "exact")


def _check_bins(n_bins: int, edges: str) -> None:
  if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
    raise CaopdError(f"n_bins must be a positive integer; got {n_bins!r}")
  if edges not in EDGES:
    raise CaopdError(f"edges must be one of {', '.join(EDGES)}; got {edges!r}")


def bin_index(confidence, n_bins: int = 10, edges: str = "linspace") -> np.ndarray:
  """int [n]: the bin in 0..n_bins-1 of each (flattened, non-NaN) confidence (module docstring for `edges`)."""
  _check_bins(n_bins, edges)
  inner = np.linspace(0, 1, n_bins + 1)[1:-1] if edges == "linspace" else np.arange(1, n_bins) / n_bins
  return np.searchsorted(inner, np.asarray(confidence, np.float64).reshape(-1), side="right")


def _bin_stats(c: np.ndarray, p: np.ndarray, n_bins: int, edges: str) -> list[dict]:
  index = bin_index(p, n_bins, edges)
  out = []
  for b in range(n_bins):
    inside = index == b
    count = int(inside.sum())
    out.append({"bin": b, "low": b / n_bins, "high": (b + 1) / n_bins, "count": count,
                "mean_conf": float(np.mean(p[inside])) if count else None,
                "accuracy": float(np.mean(c[inside])) if count else None})
  return out


def _ece(stats: list[dict], n: int) -> float:
  """ECE from `_bin_stats` of n examples, summed bin by bin in the reference's order of operations."""
  total = 0.0
  for b in stats:
    if b["count"]:
      total += b["count"] / n * abs(b["mean_conf"] - b["accuracy"])
  return total


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


def ece(correct, confidence, n_bins: int = 10, edges: str = "linspace", clip: bool = True) -> float:
  """Expected calibration error with `n_bins` equal-width bins (`edges`, `clip`: module docstring)."""
  _check_bins(n_bins, edges)
  c, p = _as_arrays(correct, confidence, clip=clip)
  return _ece(_bin_stats(c, p, n_bins, edges), c.size)


def bin_stats(correct, confidence, n_bins: int = 10, edges: str = "linspace") -> list[dict]:
  """Per bin, low to high, the reference's record: {"bin", "low", "high", "count", "mean_conf", "accuracy"}; an
  empty bin has count 0 and None means."""
  _check_bins(n_bins, edges)
  return _bin_stats(*_as_arrays(correct, confidence), n_bins, edges)


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


def _scores(c: np.ndarray, p: np.ndarray, n_bins: int, edges: str) -> dict:
  """The metrics of c, p (float [n], no NaN) and their bin_stats; the `_METRICS` values are None when n == 0."""
  stats = _bin_stats(c, p, n_bins, edges)
  values = dict.fromkeys(_METRICS)
  if c.size:
    b = float(np.mean((p - c) ** 2))
    values = {"accuracy": float(c.mean()), "brier_score": b, "reliability": 1.0 - b, "ece": _ece(stats, c.size),
              "spr": _spr(c, p), "auroc": _auroc(c, p), "overconfidence_gap": float(p.mean() - c.mean()),
              "mean_confidence": float(p.mean())}
  return {**values, "bin_stats": stats}


def summary(correct, confidence, *, answer_parsed=None, n_bins: int = 10, edges: str = "linspace",
            clip: bool = True) -> dict:
  """All metrics of an eval set: `correct` bool [n]; `confidence` float [n], NaN where none was parsed;
  `answer_parsed` bool [n] (default: all True) for answer_parse_rate; `edges` and `clip`: module docstring.

  Keys: the reference's accuracy, answer_parse_rate, brier_score, ece, spr, overconfidence_gap,
  mean_confidence, confidence_format_adherence (share of non-NaN confidences), n_samples, n_bins, bin_stats
  and valid_confidence_only, plus auroc and reliability. valid_confidence_only holds the metrics (accuracy ...
  mean_confidence, auroc, reliability, bin_stats) of the n_valid rows with a parsed confidence, and n_valid;
  its values are None and its bins empty when there are none (the reference writes the block only when
  n_valid >= 2, with n_valid, accuracy, brier_score, ece, spr and mean_confidence).
  """
  _check_bins(n_bins, edges)
  c, p = _as_arrays(correct, confidence, allow_nan=True, clip=clip)
  valid = ~np.isnan(p)
  parsed = np.ones(c.shape, bool) if answer_parsed is None else np.asarray(answer_parsed)
  if answer_parsed is not None and parsed.shape != np.shape(correct):
    raise CaopdError(f"`answer_parsed` has shape {parsed.shape} but `correct` has shape {np.shape(correct)}; "
                     "they must match")
  headline = _scores(c, np.where(valid, p, 0.0), n_bins, edges)
  return {"accuracy": headline.pop("accuracy"), "answer_parse_rate": float(parsed.astype(bool).mean()), **headline,
          "confidence_format_adherence": float(valid.mean()), "n_samples": int(c.size), "n_bins": int(n_bins),
          "valid_confidence_only": {"n_valid": int(valid.sum()), **_scores(c[valid], p[valid], n_bins, edges)}}
