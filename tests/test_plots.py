"""The PNG figures are written atomically, are valid PNGs, and have the expected layout."""

import math

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from caopd_jax import metrics, plots
from caopd_jax.errors import CaopdError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path) -> np.ndarray:
  """The image at `path` as float [height, width, channels], after checking the PNG signature."""
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  image = matplotlib.image.imread(str(path))
  assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.05  # not blank
  return image


@pytest.fixture(scope="module")
def runs() -> dict:
  rng = np.random.default_rng(0)
  return {name: metrics.summary(rng.random(50) < 0.5, rng.random(50) ** power)
          for name, power in (("base", 1.0), ("OPD", 0.1), ("CaOPD", 1.5))}


def test_reliability_diagram_of_one_run_is_a_tall_png(tmp_path, runs):
  backend = matplotlib.get_backend()
  plots.reliability_diagram({"base": runs["base"]}, str(tmp_path / "one.png"))
  height, width, _ = _read_png(tmp_path / "one.png").shape
  assert height > width  # one column: diagram over histogram
  assert matplotlib.get_backend() == backend  # the user's backend is left alone
  assert [p.name for p in tmp_path.iterdir()] == ["one.png"]  # no temporary file left


def test_reliability_diagram_of_three_runs_is_side_by_side(tmp_path, runs):
  plots.reliability_diagram(runs, str(tmp_path / "three.png"))
  height, width, _ = _read_png(tmp_path / "three.png").shape
  assert width > 1.5 * height  # three columns of 4.2 x 7 inches


def test_reliability_diagram_with_all_bins_empty(tmp_path, runs):
  no_confidence = metrics.summary([True, False], [np.nan, np.nan])["valid_confidence_only"]
  assert all(b["count"] == 0 for b in no_confidence["bin_stats"]) and no_confidence["ece"] is None
  plots.reliability_diagram({"unparsed": no_confidence}, str(tmp_path / "empty.png"))
  _read_png(tmp_path / "empty.png")
  plots.reliability_diagram({"unparsed": no_confidence, "base": runs["base"]}, str(tmp_path / "mixed.png"))
  _read_png(tmp_path / "mixed.png")


def test_an_existing_file_is_replaced(tmp_path, runs):
  target = tmp_path / "figure.png"
  target.write_bytes(b"old")
  plots.reliability_diagram({"base": runs["base"]}, str(target))
  _read_png(target)


def test_curves(tmp_path):
  series = {"OPD": {"mean stated confidence": [0.6, None, 0.95, 1.0], "rollout accuracy": [0.5, 0.55, 0.6, 0.6]},
            "CaOPD": {"mean stated confidence": [0.6, 0.6, 0.62, 0.6], "rollout accuracy": [0.5, 0.55, 0.58, 0.6]}}
  plots.curves(series, str(tmp_path / "curves.png"), "rollouts during training")
  height, width, _ = _read_png(tmp_path / "curves.png").shape
  assert width > 1.5 * height
  assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


def test_moving_mean_by_hand():
  assert plots.moving_mean([1.0, 3.0, None, 5.0, 9.0], 2) == [1.0, 2.0, 3.0, 5.0, 7.0]
  assert plots.moving_mean([2.0, 4.0, 6.0], 5) == [2.0, 3.0, 4.0]
  smoothed = plots.moving_mean([None, None, 1.0], 2)
  assert math.isnan(smoothed[0]) and math.isnan(smoothed[1]) and smoothed[2] == 1.0


def test_smoothed_curves_draw_two_lines_per_metric(tmp_path, monkeypatch):
  drawn = []
  original = plots.Figure.subplots
  def spy(self, *args, **kwargs):
    axes = original(self, *args, **kwargs)
    drawn.append(axes)
    return axes
  monkeypatch.setattr(plots.Figure, "subplots", spy)
  series = {"OPD": {"mean stated confidence": [0.6, None, 0.95, 1.0], "rollout accuracy": [0.5, 0.55, 0.6, 0.6]}}
  plots.curves(series, str(tmp_path / "curves.png"), "rollouts during training", smooth=3)
  ax = drawn[0][0][0]
  labels = [line.get_label() for line in ax.get_lines()]
  assert labels[0] == "mean stated confidence (3-step mean)" and len(labels) == 4
  np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.6, 0.6, 0.775, (0.95 + 1.0) / 2])
  assert _read_png(tmp_path / "curves.png").shape[1] > 300


def test_nothing_to_plot_is_an_error(tmp_path):
  with pytest.raises(CaopdError, match="at least one run"):
    plots.reliability_diagram({}, str(tmp_path / "x.png"))
  with pytest.raises(CaopdError, match="at least one run"):
    plots.curves({}, str(tmp_path / "x.png"), "empty")
  assert not list(tmp_path.iterdir())
