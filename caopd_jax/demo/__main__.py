"""`python -m caopd_jax.demo [--config=configs/demo.py] [--config.demo.fast=True] [--config.FIELD=VALUE ...]`.

Builds the demo's small base model, trains plain OPD and CaOPD from it with the same budget on the arithmetic task,
evaluates all three on held-out problems and writes DIR/results.md and plots (demo.output_dir; configs/demo.py
says what each demo.* field does). `--config.demo.fast=True` only checks the plumbing in seconds: its metrics are
not meaningful.
"""

import os
import sys

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo.py")


def main(argv=None) -> int:
  from caopd_jax.train.config import field_notes
  config, rest = parse_args(sys.argv[1:] if argv is None else argv, default_file=os.path.normpath(DEFAULT_CONFIG),
                            usage=__doc__, notes=field_notes())
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE")
  if "demo" not in config:
    raise CaopdError("the config has no demo group; use configs/demo.py or a file built from it")
  from caopd_jax import compilation_cache
  from caopd_jax.demo.run import run_demo
  compilation_cache.enable()
  run_demo(config)
  return 0


if __name__ == "__main__":
  run_main(main)
