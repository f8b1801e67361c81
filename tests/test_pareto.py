"""Intervals for evaluation metrics (eval/intervals.py) and the accuracy-calibration view (eval/pareto.py):
hand-computed t-intervals, the bootstrap's agreement with the eval's own metrics and with the normal
approximation, and the command on evaluation folders."""

import json

import numpy as np
import pytest

from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.eval import intervals, pareto
from caopd_jax.eval.protocols import get_protocol
from caopd_jax.eval.report import write_report
from caopd_jax.eval.scoring import summarise


def _records(correct, confidence, samples=1):
  """Scored records in the eval's format: question i's samples share id q{i}."""
  return [{"id": f"q{i // samples}", "sample": i % samples, "correct": bool(c), "confidence": p,
           "parsed_answer": 1} for i, (c, p) in enumerate(zip(correct, confidence))]


def test_the_t_interval_over_seeds_by_hand():
  mean, half = intervals.over_seeds([0.6, 0.7, 0.8])
  assert mean == pytest.approx(0.7) and half == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-6)
  assert intervals.over_seeds([0.5]) == (0.5, None)


@pytest.mark.parametrize("protocol", ["paper", "strict"])
def test_the_bootstrap_recomputes_the_eval_s_own_metrics(protocol):
  """Unresampled, the bootstrap's metric function gives summarise's accuracy, ECE and 1 - Brier, with a missing
  confidence (scored 0) and, under the paper protocol, one above 1 (not clipped there)."""
  rng = np.random.default_rng(0)
  correct = rng.random(60) < 0.6
  confidence = [round(float(x), 2) for x in rng.random(60)]
  confidence[3], confidence[7] = None, 1.3
  records = _records(correct, confidence)
  rules = get_protocol(protocol)
  expected = summarise(records, rules)
  c, p = intervals._question_arrays(records)
  got = intervals._values(c, p, rules)
  assert got["accuracy"] == pytest.approx(expected["accuracy"])
  assert got["ece"] == pytest.approx(expected["ece"])
  assert got["reliability"] == pytest.approx(expected["reliability"])


def test_the_bootstrap_interval_of_accuracy_matches_the_normal_approximation():
  correct = np.arange(400) % 5 < 3                       # accuracy 0.6 over 400 questions
  low, high = intervals.bootstrap(_records(correct, [0.6] * 400), get_protocol("paper"), draws=2000)["accuracy"]
  half = 1.96 * np.sqrt(0.6 * 0.4 / 400)                 # 0.048
  assert low < 0.6 < high and (high - low) / 2 == pytest.approx(half, rel=0.15)


def test_the_bootstrap_keeps_a_question_s_samples_together():
  """K = 4 samples of 50 questions, each question all right or all wrong: resampling questions, the accuracy's
  interval is as wide as for 50 answers (resampling the 200 records would halve it)."""
  per_question = np.arange(50) % 2 == 0
  records = _records(np.repeat(per_question, 4), [0.5] * 200, samples=4)
  low, high = intervals.bootstrap(records, get_protocol("paper"), draws=2000)["accuracy"]
  assert (high - low) / 2 == pytest.approx(1.96 * np.sqrt(0.25 / 50), rel=0.2)
  with pytest.raises(CaopdError, match="different numbers of samples per question"):
    intervals.bootstrap(records[:-1], get_protocol("paper"))


def test_the_pareto_command_groups_seeds_and_draws_the_view(tmp_path, capsys):
  rng = np.random.default_rng(1)
  folders = []
  for name, accuracy, stated in (("opd0", 0.55, 1.0), ("opd1", 0.60, 1.0), ("opd2", 0.50, 1.0), ("caopd0", 0.6, 0.6)):
    correct = rng.random(100) < accuracy
    records = _records(correct, [stated] * 100)
    write_report(str(tmp_path / name), name, records, summarise(records, get_protocol("paper")))
    folders.append(str(tmp_path / name))
  out = tmp_path / "points.json"
  assert pareto.main([*folders, "--names", "OPD,OPD,OPD,CaOPD", "--output", str(tmp_path / "p.png"),
                      "--json", str(out), "--draws", "200"]) == 0
  runs = json.loads(out.read_text())
  opd = runs["OPD"]
  accuracies = [s["accuracy"] for s in opd["seeds"]]
  assert opd["interval"] == "seeds" and opd["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
  assert opd["error"]["accuracy"][0] == pytest.approx(intervals.over_seeds(accuracies)[1])
  caopd = runs["CaOPD"]     # one seed: the bootstrap interval over questions
  low, high = caopd["bootstrap"][0]["accuracy"]
  assert caopd["interval"] == "bootstrap" and low < caopd["mean"]["accuracy"] < high
  assert caopd["mean"]["ece"] < opd["mean"]["ece"]      # stated 1.0 at ~55% accuracy vs 0.6 at ~60%
  printed = capsys.readouterr().out
  assert "| OPD | 3 | seeds |" in printed and "| CaOPD | 1 | bootstrap |" in printed
  assert (tmp_path / "p.png").stat().st_size > 10_000
  with pytest.raises(CaopdError, match="one name per folder"):
    pareto.main([*folders, "--names", "a,b"])
  (tmp_path / "opd0" / "inference.json").unlink()
  with pytest.raises(InputNotFoundError, match="no inference.json"):
    pareto.main(folders)


def test_compare_gives_seeds_of_one_name_a_mean_with_its_t_interval_and_pooled_bins(tmp_path, capsys):
  from caopd_jax.eval import compare
  from caopd_jax.eval.report import pooled, read_metrics
  folders = []
  for name, correct, stated in (("a0", [1, 1, 0, 0], 0.75), ("a1", [1, 0, 0, 0], 0.75), ("a2", [1, 1, 1, 0], 0.25),
                                ("b0", [1, 0, 1, 0], 0.55)):
    records = _records(correct, [stated] * 4)
    write_report(str(tmp_path / name), name, records, summarise(records, get_protocol("strict")))
    folders.append(str(tmp_path / name))
  assert compare.main([*folders, "--names", "OPD,OPD,OPD,CaOPD", "--output", str(tmp_path / "c.png")]) == 0
  printed = capsys.readouterr().out
  # accuracy 0.5, 0.25, 0.75: mean 0.5, sd 0.25, half width t(0.975, 2) * 0.25 / sqrt(3) = 4.3027 * 0.14434 = 0.621
  assert "| OPD | 3 | 0.500 ± 0.621 |" in printed and "| CaOPD | 1 | 0.500 |" in printed
  assert (tmp_path / "c.png").stat().st_size > 10_000
  bins = pooled([read_metrics(f) for f in folders[:3]])["bin_stats"]
  by_bin = {b["bin"]: b for b in bins if b["count"]}
  # stated 0.75 (bin 7): 8 answers, 3 right; stated 0.25 (bin 2): 4 answers, 3 right
  assert by_bin[7]["count"] == 8 and by_bin[7]["accuracy"] == pytest.approx(3 / 8)
  assert by_bin[2]["count"] == 4 and by_bin[2]["accuracy"] == pytest.approx(0.75)
  assert by_bin[7]["mean_conf"] == pytest.approx(0.75) and set(by_bin) == {2, 7}


def test_the_seed_interval_of_a_metric_near_zero_stops_at_zero():
  points = [{"values": {"accuracy": a, "ece": 0.5, "reliability": 0.5}, "folder": f"s{i}", "bootstrap": {}}
            for i, a in enumerate((0.0, 0.0, 0.06))]
  run = pareto.run_point(points)
  half = intervals.over_seeds([0.0, 0.0, 0.06])[1]    # 4.303 * 0.0346 / sqrt(3) = 0.086 > the mean 0.02
  assert half > 0.02 and run["error"]["accuracy"] == (pytest.approx(0.02), pytest.approx(half))


def test_compare_names_the_runs_that_mostly_state_no_confidence(tmp_path, capsys):
  """A run whose completions lost the `Confidence:` line (the demo's EMA-teacher runs on one machine: format 0.000)
  gets a note under the table: its missing confidences count as 0 in its calibration metrics."""
  from caopd_jax.eval import compare
  folders = []
  for name, stated in (("kept", [0.9, 0.8, 0.9, 0.7, 0.9, 0.8, 0.9, 0.9, 0.9, 0.9]),
                       ("lost", [None] * 9 + [0.9])):
    records = _records([1] * 10, stated)
    write_report(str(tmp_path / name), name, records, summarise(records, get_protocol("paper")))
    folders.append(str(tmp_path / name))
  assert compare.main([*folders, "--output", str(tmp_path / "c.png")]) == 0
  notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
  assert notes == ["note: lost states no confidence in 90% of its completions (format 0.100); they count as "
                   "confidence 0 in all its confidence metrics"]
