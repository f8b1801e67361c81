"""`python -m caopd_jax.train --config=configs/NAME.py [--config.FIELD=VALUE ...] [--mesh=1|auto|data:2,fsdp:4]`.

Trains (or resumes, if train.output_dir holds a run with the same config) and prints the run folder. Exit
status: 0 when the run reached train.steps; 143 (SIGTERM) or 130 (SIGINT) when a signal stopped it early after
saving (run the same command to resume); 2 for an error the message explains.
`--print_config` prints the resolved config and exits; `--help` (with --config: every field, its value and
meaning) prints the usage. On several hosts every process runs the same command; `jax.distributed` starts from
the environment (sharding/distributed.py; README.md, "Meshes, multi-GPU and TPU pods"). From Python:
caopd_jax.train.train(config).
"""

import signal
import sys

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError


def main(argv=None) -> int:
  from caopd_jax.train.config import field_notes
  config, rest = parse_args(sys.argv[1:] if argv is None else argv, usage=__doc__, notes=field_notes())
  if rest == ["--print_config"]:
    print(config)
    return 0
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE, --mesh=1, --print_config")
  from caopd_jax import compilation_cache
  from caopd_jax.sharding.distributed import initialize
  from caopd_jax.train.loop import train
  compilation_cache.enable()
  initialize()
  result = train(config)
  import jax
  if jax.process_index() == 0:
    print(result.run_dir)
  return 128 + signal.Signals[result.stopped_by] if result.stopped_by else 0


if __name__ == "__main__":
  run_main(main)
