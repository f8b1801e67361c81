"""`python -m caopd_jax.demo [--config=configs/demo.py] [--config.demo.fast=True] [--config.FIELD=VALUE ...]`."""

import os
import sys

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo.py")


def main(argv=None) -> int:
  config, rest = parse_args(sys.argv[1:] if argv is None else argv, default_file=os.path.normpath(DEFAULT_CONFIG))
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE")
  if "demo" not in config:
    raise CaopdError("the config has no demo group; use configs/demo.py or a file built from it")
  from caopd_jax.demo.run import run_demo
  run_demo(config)
  return 0


if __name__ == "__main__":
  run_main(main)
