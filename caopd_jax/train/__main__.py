"""`python -m caopd_jax.train --config=configs/NAME.py [--config.FIELD=VALUE ...] [--mesh=1]`.

Trains (or resumes, if train.output_dir holds a run with the same config) and prints the run folder.
`--print_config` prints the resolved config and exits.
"""

import sys

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError


def main(argv=None) -> int:
  config, rest = parse_args(sys.argv[1:] if argv is None else argv)
  if rest == ["--print_config"]:
    print(config)
    return 0
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE, --mesh=1, --print_config")
  from caopd_jax.train.loop import train
  print(train(config))
  return 0


if __name__ == "__main__":
  run_main(main)
