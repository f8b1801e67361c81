"""Calibration metrics (CAOPD.md section 8) against hand-computed values and independent computations."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from caopd_jax import metrics
from caopd_jax.errors import CaopdError

C = np.array([1, 0, 1, 1, 0])
P = np.array([0.9, 0.8, 0.6, 0.95, 0.1])


def test_hand_computed_values():
  assert metrics.accuracy(C) == pytest.approx(3 / 5)
  # (p - c)^2: 0.01, 0.64, 0.16, 0.0025, 0.01 -> sum 0.8225
  assert metrics.brier(C, P) == pytest.approx(0.8225 / 5)
  # bins: 0.1 -> bin 1 {c=0}; 0.6 -> bin 6 {1}; 0.8 -> bin 8 {0}; 0.9, 0.95 -> bin 9 {1, 1}
  # ECE = 1/5 |0.1 - 0| + 1/5 |0.6 - 1| + 1/5 |0.8 - 0| + 2/5 |0.925 - 1| = (0.1 + 0.4 + 0.8 + 0.15) / 5
  assert metrics.ece(C, P) == pytest.approx(1.45 / 5)
  # mean p = 3.35 / 5 = 0.67; accuracy 0.6
  assert metrics.overconfidence_gap(C, P) == pytest.approx(0.07)
  # correct {0.9, 0.6, 0.95} x incorrect {0.8, 0.1}: only (0.6, 0.8) is lost, 5 of 6 pairs won, no ties
  assert metrics.spr(C, P) == pytest.approx(5 / 6)
  assert metrics.auroc(C, P) == pytest.approx(5 / 6)
  # 3 bins (edges 1/3, 2/3): bin 0 {0.1: c=0}, bin 1 {0.6: 1}, bin 2 {0.9, 0.8, 0.95: 1, 0, 1}
  # ECE = (|0.1 - 0| + |0.6 - 1| + |2.65 - 2|) / 5 = 1.15 / 5
  assert metrics.ece(C, P, n_bins=3) == pytest.approx(1.15 / 5)


def test_exact_edges_put_every_boundary_in_the_upper_bin():
  # p = 0.0 -> first bin; 0.1 (boundary) -> bin 1; just below 0.1 -> bin 0; 1.0 -> last bin; out of range -> ends
  assert metrics.bin_index([0.0, 0.1, 0.0999, 0.5, 0.9, 0.9999, 1.0, -0.2, 1.3], edges="exact").tolist() == [
      0, 1, 0, 5, 9, 9, 9, 0, 9]
  assert metrics.bin_index([k / 10 for k in range(10)], edges="exact").tolist() == list(range(10))
  # exact where floor(p * n) is not: floor(0.58 * 100) == 57, yet 0.58 opens bin 58
  assert math.floor(0.58 * 100) == 57 and metrics.bin_index([0.58], n_bins=100, edges="exact").tolist() == [58]
  stats_ = metrics.bin_stats([1, 0, 1], [1.0, 0.95, 0.0], edges="exact")
  assert [s["count"] for s in stats_] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
  assert stats_[9] == {"bin": 9, "low": 0.9, "high": 1.0, "count": 2, "mean_conf": pytest.approx(0.975),
                       "accuracy": 0.5}
  assert stats_[1] == {"bin": 1, "low": 0.1, "high": 0.2, "count": 0, "mean_conf": None, "accuracy": None}
  # ECE = (1/3) |0.0 - 1| + (2/3) |0.975 - 0.5| = (1 + 0.95) / 3
  assert metrics.ece([1, 0, 1], [1.0, 0.95, 0.0], edges="exact") == pytest.approx(1.95 / 3)


def test_linspace_edges_are_the_reference_s_and_the_default():
  # np.linspace's inner edges 0.30000000000000004, 0.6000000000000001, 0.7000000000000001 sit one ulp above
  # 0.3, 0.6, 0.7: those three boundary values fall in the LOWER bin, the other boundaries in the upper one
  assert metrics.bin_index([k / 10 for k in range(11)]).tolist() == [0, 1, 2, 2, 4, 5, 5, 6, 8, 9, 9]
  # the toy set: c = [1, 0, 1, 0], p = [0.3, 0.25, 0.7, 0.75]
  #   exact:    bin 2 {0.25: 0} 0.25, bin 3 {0.3: 1} 0.7, bin 7 {0.7: 1, 0.75: 0} 2 |0.725 - 0.5|  -> 1.4 / 4 = 0.35
  #   linspace: bin 2 {0.3: 1, 0.25: 0} 2 |0.275 - 0.5|, bin 6 {0.7: 1} 0.3, bin 7 {0.75: 0} 0.75 -> 1.5 / 4 = 0.375
  c, p = [1, 0, 1, 0], [0.3, 0.25, 0.7, 0.75]
  assert metrics.ece(c, p, edges="exact") == pytest.approx(0.35)
  assert metrics.ece(c, p) == pytest.approx(0.375) and metrics.summary(c, p)["ece"] == pytest.approx(0.375)
  assert [b["count"] for b in metrics.summary(c, p)["bin_stats"]][2:8] == [2, 0, 0, 0, 1, 1]
  with pytest.raises(CaopdError, match="edges must be one of linspace, exact; got 'upper'"):
    metrics.ece(c, p, edges="upper")


def test_ece_and_bins_equal_the_reference_formula_to_the_last_digit():
  """The reference's computation (np.digitize on linspace edges with -inf/+inf ends, then per bin np.mean of p
  and of c, ECE accumulated bin by bin) written out here: equal with ==, not approximately."""
  rng = np.random.default_rng(3)
  c = (rng.random(1000) < 0.6).astype(float)
  p = np.round(rng.random(1000), 2)  # many values on the boundaries 0.3, 0.6, 0.7
  edges = np.linspace(0, 1, 11)
  edges[0], edges[-1] = -np.inf, np.inf
  index = np.clip(np.digitize(p, edges) - 1, 0, 9)
  expected_ece, expected_bins = 0.0, []
  for b in range(10):
    inside = index == b
    if inside.sum():
      expected_ece += inside.sum() / len(p) * np.abs(np.mean(p[inside]) - np.mean(c[inside]))
      expected_bins.append((int(inside.sum()), float(np.mean(p[inside])), float(np.mean(c[inside]))))
  s = metrics.summary(c, p)
  assert s["ece"] == float(expected_ece)
  assert [(b["count"], b["mean_conf"], b["accuracy"]) for b in s["bin_stats"] if b["count"]] == expected_bins
  assert s["brier_score"] == float(np.mean((p - c) ** 2)) and s["spr"] == float(np.mean(p[c == 1][:, None] >
                                                                                        p[c == 0][None, :]))


def test_out_of_range_confidence_is_clipped_unless_summary_is_told_not_to():
  # 1.4 -> 1.0 and -0.5 -> 0.0: Brier (0 + 0) / 2, both in the end bins
  assert metrics.brier([1, 0], [1.4, -0.5]) == 0.0
  assert [s["count"] for s in metrics.bin_stats([1, 0], [1.4, -0.5], n_bins=2)] == [1, 1]
  # clip=False (the reference): c [1, 0], p [5.0, -0.5]: Brier (16 + 0.25) / 2, mean p 2.25, still the end bins
  s = metrics.summary([1, 0], [5.0, -0.5], clip=False)
  assert s["brier_score"] == 8.125 and s["mean_confidence"] == 2.25 and s["overconfidence_gap"] == 1.75
  assert [(b["count"], b["mean_conf"]) for b in s["bin_stats"] if b["count"]] == [(1, -0.5), (1, 5.0)]
  assert s["ece"] == pytest.approx((0.5 + 4.0) / 2)
  with pytest.raises(CaopdError, match="1 infinite"):
    metrics.summary([1, 0], [np.inf, 0.5], clip=False)


def test_ties_and_single_class():
  # all confidences equal: no strict win, so SPR 0; AUROC gives each tie 1/2
  assert metrics.spr([1, 0, 1], [0.5, 0.5, 0.5]) == 0.0 and metrics.auroc([1, 0, 1], [0.5, 0.5, 0.5]) == 0.5
  # correct {0.7, 0.4} x incorrect {0.4, 0.2}: wins (0.7, 0.4), (0.7, 0.2), (0.4, 0.2); tie (0.4, 0.4)
  assert metrics.spr([1, 1, 0, 0], [0.7, 0.4, 0.4, 0.2]) == pytest.approx(3 / 4)
  assert metrics.auroc([1, 1, 0, 0], [0.7, 0.4, 0.4, 0.2]) == pytest.approx(3.5 / 4)
  for c in ([1, 1], [0, 0]):  # no (correct, incorrect) pairs
    assert metrics.spr(c, [0.9, 0.1]) == 0.0 and metrics.auroc(c, [0.9, 0.1]) == 0.5
  assert metrics.ece([1, 1], [1.0, 1.0]) == 0.0 and metrics.ece([0, 0], [1.0, 1.0]) == 1.0


def test_pairwise_metrics_match_independent_computations():
  rng = np.random.default_rng(0)
  correct = rng.random(300) < 0.6
  confidence = np.round(rng.random(300), 1)  # 11 distinct values: many ties
  right, wrong = confidence[correct], confidence[~correct]
  brute = sum(r > w for r in right for w in wrong) / (right.size * wrong.size)
  assert metrics.spr(correct, confidence) == pytest.approx(brute)
  u = stats.mannwhitneyu(right, wrong).statistic  # pairs won + 1/2 ties, for the first sample
  assert metrics.auroc(correct, confidence) == pytest.approx(u / (right.size * wrong.size))


def test_summary_counts_missing_confidence_as_zero_and_separates_the_valid_ones():
  c = np.array([1, 1, 0, 0])
  p = np.array([0.9, np.nan, 0.7, np.nan])
  s = metrics.summary(c, p, answer_parsed=[True, True, True, False])
  assert set(s) == {"accuracy", "answer_parse_rate", "brier_score", "ece", "spr", "overconfidence_gap",
                    "mean_confidence", "confidence_format_adherence", "n_samples", "n_bins", "bin_stats",
                    "valid_confidence_only", "auroc", "reliability"}
  assert s["confidence_format_adherence"] == 0.5 and s["answer_parse_rate"] == 0.75
  assert s["n_samples"] == 4 and s["n_bins"] == 10 and s["accuracy"] == 0.5
  # headline: p read as [0.9, 0, 0.7, 0]
  assert s["mean_confidence"] == pytest.approx(1.6 / 4)
  assert s["brier_score"] == pytest.approx((0.01 + 1 + 0.49 + 0) / 4)
  assert s["reliability"] == pytest.approx(1 - 1.5 / 4)
  # bin 0 {0 (c=1), 0 (c=0)}: |0 - 1| ; bin 7 {0.7: 0}: 0.7 ; bin 9 {0.9: 1}: 0.1 -> 1.8 / 4
  assert s["ece"] == pytest.approx(1.8 / 4) and s["bin_stats"][0]["count"] == 2
  # correct {0.9, 0} x incorrect {0.7, 0}: wins (0.9, 0.7), (0.9, 0); tie (0, 0); loss (0, 0.7)
  assert s["spr"] == 0.5 and s["auroc"] == pytest.approx(2.5 / 4)
  valid = s["valid_confidence_only"]
  assert set(valid) == {"accuracy", "brier_score", "reliability", "ece", "spr", "auroc", "overconfidence_gap",
                        "mean_confidence", "n_valid", "bin_stats"}
  # only rows 0 and 2: c [1, 0], p [0.9, 0.7]
  assert valid["n_valid"] == 2 and valid["accuracy"] == 0.5 and valid["mean_confidence"] == pytest.approx(0.8)
  assert valid["brier_score"] == pytest.approx((0.01 + 0.49) / 2) and valid["ece"] == pytest.approx(0.8 / 2)
  assert valid["spr"] == 1.0 and valid["auroc"] == 1.0 and valid["overconfidence_gap"] == pytest.approx(0.3)
  assert json.loads(json.dumps(s)) == s  # plain Python values only


def test_summary_without_any_parsed_confidence():
  s = metrics.summary([True, False], [np.nan, np.nan])
  assert s["confidence_format_adherence"] == 0.0 and s["answer_parse_rate"] == 1.0 and s["mean_confidence"] == 0.0
  valid = s["valid_confidence_only"]
  assert valid["n_valid"] == 0 and valid["ece"] is None and valid["accuracy"] is None
  assert [b["count"] for b in valid["bin_stats"]] == [0] * 10
  assert json.loads(json.dumps(s)) == s


def test_large_2d_input_is_flattened_and_fast():
  rng = np.random.default_rng(1)
  correct = rng.random((400, 250)) < 0.5  # 10^5 rows; pair loops would take 2.5e9 steps
  confidence = np.round(rng.random((400, 250)), 2)
  s = metrics.summary(correct, confidence)
  assert s["n_samples"] == 100_000 and 0.45 < s["auroc"] < 0.55 and s["spr"] < s["auroc"]


def test_bad_input():
  with pytest.raises(CaopdError, match=r"\(2,\).*\(1,\)"):
    metrics.summary([1, 0], [0.5])
  with pytest.raises(CaopdError, match=r"answer_parsed.*\(3,\).*\(2,\)"):
    metrics.summary([1, 0], [0.5, 0.5], answer_parsed=[True] * 3)
  with pytest.raises(CaopdError, match="empty"):
    metrics.summary([], [])
  with pytest.raises(CaopdError, match="empty"):
    metrics.accuracy([])
  with pytest.raises(CaopdError, match=r"0/1.*\[2\]"):
    metrics.accuracy([1, 2, 0])
  with pytest.raises(CaopdError, match="NaN"):
    metrics.brier([1, 0], [0.5, np.nan])
  with pytest.raises(CaopdError, match="n_bins"):
    metrics.ece([1], [0.5], n_bins=0)


def test_a_single_bin_is_the_gap_between_mean_confidence_and_accuracy():
  c, p = np.array([1, 0, 1, 1, 0]), np.array([0.9, 0.8, 0.6, 0.95, 0.1])
  # one bin holds everything: ECE = |mean p - mean c| = |0.67 - 0.6|
  assert metrics.ece(c, p, n_bins=1) == pytest.approx(0.07)
  assert metrics.summary(c, p, n_bins=1)["bin_stats"][0]["count"] == 5
