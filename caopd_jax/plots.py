"""PNG figures: reliability diagrams of one or several evaluated models side by side, and training curves.

A reliability diagram plots, per confidence bin of `metrics.summary(...)["bin_stats"]`, the accuracy of the
bin (bar at the bin centre, labelled with the bin's count) against the diagonal of perfect calibration; a
shaded bar on top reaches the bin's mean confidence, so its height is the bin's calibration gap. Below it,
the histogram of stated confidence (the bin counts) shows where the model puts its mass: an overconfident
model (plain OPD) piles everything into the last bin.

Figures are drawn on a `matplotlib.figure.Figure` with its own Agg canvas: no pyplot global state is
touched, so importing this module neither changes an interactive user's backend nor needs a display.
Files are written to a temporary file beside `path` and renamed over it, so a reader never sees half a PNG.
"""

import math

import numpy as np

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from caopd_jax.errors import CaopdError
from caopd_jax.files import atomic_file


def _save(figure: Figure, path: str) -> None:
  FigureCanvasAgg(figure)
  with atomic_file(path) as tmp:
    figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _number(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.3f}"


def reliability_diagram(runs: dict[str, dict], path: str) -> None:
  """Writes a PNG to `path` with one column per run (name -> `metrics.summary` dict, or its
  `valid_confidence_only` block): the reliability diagram on top (title: name, ECE, accuracy, n), the
  confidence histogram below. A run whose bins are all empty is drawn as empty axes."""
  if not runs:
    raise CaopdError("reliability_diagram needs at least one run; got an empty dict")
  figure = Figure(figsize=(4.2 * len(runs), 7.0), layout="constrained")
  axes = figure.subplots(2, len(runs), squeeze=False, gridspec_kw={"height_ratios": [3, 1.3]})
  for column, (name, summary) in enumerate(runs.items()):
    top, bottom = axes[0, column], axes[1, column]
    bins = summary["bin_stats"]
    width = 0.9 * (bins[0]["high"] - bins[0]["low"])
    full = [b for b in bins if b["count"]]
    centers = [(b["low"] + b["high"]) / 2 for b in full]
    accuracy = [b["accuracy"] for b in full]
    bars = top.bar(centers, accuracy, width=width, color="tab:blue", edgecolor="black", label="accuracy")
    top.bar(centers, [b["mean_conf"] - a for b, a in zip(full, accuracy)], bottom=accuracy, width=width,
            fill=False, hatch="//", edgecolor="tab:red", label="gap to mean confidence")
    top.bar_label(bars, labels=[str(b["count"]) for b in full], fontsize=7)
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    if not full:
      top.text(0.5, 0.5, "no examples", ha="center", va="center", color="gray")
    top.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="stated confidence", ylabel="accuracy",
            title=f"{name}\nECE {_number(summary['ece'])}, accuracy {_number(summary['accuracy'])}, "
                  f"n {sum(b['count'] for b in bins)}")
    bottom.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["count"] for b in bins], width=width, color="gray")
    bottom.set(xlim=(0, 1), ylim=(0, 1.1 * max(1, max(b["count"] for b in bins))), xlabel="stated confidence",
               ylabel="examples")
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    if column == 0:
      top.legend(fontsize=7, loc="upper left")
  _save(figure, path)


def moving_mean(values: list[float | None], window: int) -> list[float]:
  """Trailing mean over the last `window` values at each position (fewer at the start), None skipped;
  NaN where the window holds no value."""
  x = np.array([math.nan if v is None else v for v in values], float)
  out = []
  for i in range(len(x)):
    part = x[max(0, i - window + 1):i + 1]
    part = part[np.isfinite(part)]
    out.append(float(part.mean()) if part.size else math.nan)
  return out


def curves(series: dict[str, dict[str, list[float | None]]], path: str, title: str, smooth: int = 1) -> None:
  """Writes a PNG to `path`: one panel per run (name -> {metric label -> values per step}), one line per
  metric against step 1, 2, ...; panels share the y axis; a None value leaves a gap in its line. With
  `smooth` > 1 the per-step values are drawn faintly and their trailing `smooth`-step mean on top."""
  if not series:
    raise CaopdError("curves needs at least one run; got an empty dict")
  figure = Figure(figsize=(5.0 * len(series), 3.6), layout="constrained")
  axes = figure.subplots(1, len(series), squeeze=False, sharey=True)[0]
  for ax, (name, lines) in zip(axes, series.items()):
    for label, values in lines.items():
      steps = range(1, len(values) + 1)
      raw = [math.nan if v is None else v for v in values]
      if smooth > 1:
        (line,) = ax.plot(steps, moving_mean(values, smooth), label=f"{label} ({smooth}-step mean)")
        ax.plot(steps, raw, color=line.get_color(), alpha=0.25, linewidth=0.8)
      else:
        ax.plot(steps, raw, marker=".", label=label)
    ax.set(title=f"{title}: {name}", xlabel="step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lines:
      ax.legend(fontsize=8)
  _save(figure, path)


def pareto(runs: dict[str, dict], path: str) -> None:
  """Writes a PNG to `path`: accuracy against ECE (left) and against reliability = 1 - Brier (right), one marker
  per run. `runs`: name -> {"seeds": [{metric: value}], "mean": {metric: value}, "error": {metric: (below, above)}}
  for metrics accuracy, ece, reliability; each seed is drawn faintly behind its run's mean and error bars."""
  if not runs:
    raise CaopdError("pareto needs at least one run; got an empty dict")
  figure = Figure(figsize=(10.0, 4.2), layout="constrained")
  axes = figure.subplots(1, 2)
  for ax, (x, label) in zip(axes, (("ece", "ECE (lower is better)"), ("reliability", "1 - Brier (higher is better)"))):
    for name, run in runs.items():
      mean, error = run["mean"], run["error"]
      bars = ax.errorbar(mean[x], mean["accuracy"], xerr=np.array(error[x])[:, None],
                         yerr=np.array(error["accuracy"])[:, None], fmt="o", capsize=3, label=name)
      ax.scatter([s[x] for s in run["seeds"]], [s["accuracy"] for s in run["seeds"]], s=12, alpha=0.35,
                 color=bars[0].get_color())
    ax.set(xlabel=label, ylabel="accuracy")
    ax.grid(alpha=0.3)
  axes[0].set_title("accuracy vs calibration error")
  axes[1].set_title("accuracy vs reliability")
  axes[1].legend(fontsize=8)
  _save(figure, path)
