"""`python -m caopd_jax.eval.compare DIR1 DIR2 ... [--names base,OPD,CaOPD] [--output comparison.png]`.

Prints the metrics of several evaluation folders side by side and draws their reliability
diagrams in one PNG (default: comparison.png in the current folder). Folders given the same name are seeds of
one model (`--names OPD,OPD,OPD,CaOPD,CaOPD,CaOPD`): its row is each metric's mean over them +- the half width
of the 95% t-interval, its diagram their pooled bins.
"""

import argparse
import os
import sys

from caopd_jax import plots
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError
from caopd_jax.eval.report import metrics_table, pooled, read_metrics, seeds_table


def row_names(folders: list[str], names: str | None, what: str = "folder") -> list[str]:
  """--names split on commas (one distinct name per folder), or the folders' base names."""
  out = names.split(",") if names else [os.path.basename(os.path.normpath(f)) for f in folders]
  if len(out) != len(folders) or len(set(out)) != len(out):
    raise CaopdError(f"--names needs {len(folders)} distinct names, one per {what}; got {out}")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m caopd_jax.eval.compare", description=__doc__.split("\n\n")[0])
  p.add_argument("folders", nargs="+", help="folders written by python -m caopd_jax.eval")
  p.add_argument("--names", default=None, help="comma-separated row names (default: the folder names); a name "
                 "given to several folders makes them seeds of one model")
  p.add_argument("--output", default="comparison.png", help="the combined reliability diagram (PNG)")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  given = args.names.split(",") if args.names else []
  if len(given) == len(args.folders) and len(set(given)) < len(given):   # repeated names: seeds of one model
    groups: dict[str, list[dict]] = {}
    for name, folder in zip(given, args.folders):
      groups.setdefault(name, []).append(read_metrics(folder))
    plots.reliability_diagram({name: pooled(summaries) for name, summaries in groups.items()}, args.output)
    print(seeds_table(groups))
    print(f"reliability diagrams (seeds pooled): {args.output}")
    return 0
  names = row_names(args.folders, args.names)
  results = {name: read_metrics(folder) for name, folder in zip(names, args.folders)}
  plots.reliability_diagram(results, args.output)
  print(metrics_table(results))
  print(f"reliability diagrams: {args.output}")
  return 0


if __name__ == "__main__":
  run_main(main)
