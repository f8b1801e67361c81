"""`python -m caopd_jax.eval.pareto DIR ... [--names OPD,OPD,OPD,CaOPD,...] [--output pareto.png] [--json FILE]`.

The accuracy-calibration trade-off of several evaluations, the paper's framing: accuracy against ECE and against
reliability (1 - Brier), one point per run. Folders given the same name are seeds of one run: its point is their
mean, its error bars the 95% t-interval over seeds (cut at 0 and 1). A run with one seed shows the 95% bootstrap
interval over questions instead (`intervals.py`). The table lists every run and, per folder, that bootstrap
interval.
"""

import argparse
import json
import os
import sys

from caopd_jax import plots
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.eval import intervals
from caopd_jax.eval.protocols import get_protocol
from caopd_jax.eval.report import INFERENCE_FILE, read_metrics
from caopd_jax.files import write_json


def folder_point(folder: str, draws: int) -> dict:
  """{"folder", "values": {metric: value}, "bootstrap": {metric: (low, high)}} of one evaluation folder."""
  summary = read_metrics(folder)
  path = os.path.join(folder, INFERENCE_FILE)
  if not os.path.isfile(path):
    raise InputNotFoundError(f"{folder}: no {INFERENCE_FILE} (its per-question records); give folders written by "
                             "`python -m caopd_jax.eval`")
  with open(path) as f:
    records = json.load(f)
  protocol = get_protocol(summary.get("protocol", "paper"))
  return {"folder": folder, "values": {m: summary[m] for m in intervals.METRICS},
          "bootstrap": intervals.bootstrap(records, protocol, draws=draws)}


def run_point(points: list[dict]) -> dict:
  """The seeds of one run -> {"seeds", "mean", "error": {metric: (below, above)}, "interval": "seeds"|"bootstrap"}."""
  seeds = [p["values"] for p in points]
  mean, error = {}, {}
  for m in intervals.METRICS:
    mean[m], half = intervals.over_seeds([s[m] for s in seeds])
    if half is None:
      low, high = points[0]["bootstrap"][m]
      error[m] = (max(mean[m] - low, 0.0), max(high - mean[m], 0.0))
    else:   # every metric lies in [0, 1]: the interval is cut there
      error[m] = (min(half, mean[m]), min(half, 1.0 - mean[m]))
  return {"seeds": seeds, "mean": mean, "error": error, "interval": "seeds" if len(seeds) > 1 else "bootstrap",
          "folders": [p["folder"] for p in points], "bootstrap": [p["bootstrap"] for p in points]}


def table(runs: dict[str, dict]) -> str:
  """Markdown: one row per run, mean and 95% interval of each metric."""
  lines = ["| run | seeds | interval | accuracy | ECE | 1 - Brier |", "|---|---:|---|---|---|---|"]
  for name, run in runs.items():
    cells = [f"{run['mean'][m]:.3f} [{run['mean'][m] - run['error'][m][0]:.3f}, "
             f"{run['mean'][m] + run['error'][m][1]:.3f}]" for m in intervals.METRICS]
    lines.append(f"| {name} | {len(run['seeds'])} | {run['interval']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m caopd_jax.eval.pareto", description=__doc__.split("\n\n")[0])
  p.add_argument("folders", nargs="+", help="folders written by python -m caopd_jax.eval")
  p.add_argument("--names", default=None, help="comma-separated run name per folder; repeated names are seeds of one "
                 "run (default: each folder its own run)")
  p.add_argument("--output", default="pareto.png", help="the figure (PNG)")
  p.add_argument("--json", default=None, help="also write the points, intervals and folders as JSON")
  p.add_argument("--draws", type=int, default=1000, help="bootstrap resamplings of the questions")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  names = args.names.split(",") if args.names else [os.path.basename(os.path.normpath(f)) for f in args.folders]
  if len(names) != len(args.folders):
    raise CaopdError(f"--names needs one name per folder ({len(args.folders)}); got {len(names)}: {names}")
  grouped: dict[str, list[dict]] = {}
  for name, folder in zip(names, args.folders):
    grouped.setdefault(name, []).append(folder_point(folder, args.draws))
  runs = {name: run_point(points) for name, points in grouped.items()}
  plots.pareto(runs, args.output)
  print(table(runs))
  print(f"accuracy vs ECE and vs 1 - Brier: {args.output}")
  if args.json:
    write_json(args.json, runs, indent=1)
  return 0


if __name__ == "__main__":
  run_main(main)
