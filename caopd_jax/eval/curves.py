"""`python -m caopd_jax.eval.curves RUN1 RUN2 ... [--names OPD,CaOPD] [--output curves.png]`.

Training curves of runs of `python -m caopd_jax.train`: the mean stated confidence of the rollouts
against their accuracy (the mean P_acc), per optimizer step, one panel per run, from each run's
metrics.jsonl; `--smooth N` (default 10) draws the trailing N-step mean over the faint per-step values.
Prints the gap (confidence - accuracy) averaged over the first and the last tenth of
each run: OPD's overconfidence shows as a gap that grows.
"""

import argparse
import sys

import numpy as np

from caopd_jax import plots
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError
from caopd_jax.eval.compare import row_names
from caopd_jax.run_folder import read_metrics

CURVES = {"mean stated confidence": "rollout/mean_confidence", "rollout accuracy": "rollout/accuracy"}


def rollout_curves(run_dir: str) -> dict[str, list[float | None]]:
  """{label -> value per logged step} of a run folder's rollout confidence and accuracy (None: not stated)."""
  history = read_metrics(run_dir)
  if not history:
    raise CaopdError(f"{run_dir} has no logged steps (metrics.jsonl is missing or empty)")
  return {label: [record.get(key) for record in history] for label, key in CURVES.items()}


def _gap(curves: dict, part: slice) -> float:
  conf = np.array([np.nan if v is None else v for v in curves["mean stated confidence"]], float)[part]
  acc = np.array(curves["rollout accuracy"], float)[part]
  return float(np.nanmean(conf - acc)) if np.isfinite(conf).any() else float("nan")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m caopd_jax.eval.curves", description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", help="training run folders")
  p.add_argument("--names", default=None, help="comma-separated panel names (default: the folder names)")
  p.add_argument("--output", default="curves.png", help="the PNG to write")
  p.add_argument("--smooth", type=int, default=10, help="draw the trailing mean over this many steps (1: raw only)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  names = row_names(args.runs, args.names, "run")
  series = {name: rollout_curves(run) for name, run in zip(names, args.runs)}
  if args.smooth < 1:
    raise CaopdError(f"--smooth must be at least 1, got {args.smooth}")
  plots.curves(series, args.output, "rollouts during training", smooth=args.smooth)
  print("| run | steps | gap, first tenth | gap, last tenth |\n|---|---:|---:|---:|")
  for name, curves in series.items():
    n = len(curves["rollout accuracy"])
    tenth = max(1, n // 10)
    print(f"| {name} | {n} | {_gap(curves, slice(0, tenth)):+.3f} | {_gap(curves, slice(n - tenth, n)):+.3f} |")
  print(f"curves: {args.output}")
  return 0


if __name__ == "__main__":
  run_main(main)
