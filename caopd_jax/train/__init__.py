"""The trainer: configs (config.py), the one program builder (setup.py), the loop (loop.py: make a batch, take a
step), checkpoints, logs, signals, and the AOT compile check (aot.py). The algorithm it runs is caopd_jax.distill.

From Python (a notebook), as `python -m caopd_jax.train` does:

    from caopd_jax.config_files import parse_args
    from caopd_jax.train import train
    config, _ = parse_args(["--config=configs/smollm2_arith.py", "--config.train.steps=10"])
    result = train(config)            # TrainResult(run_dir, step, stopped_by); resumes a run folder it finds
"""

from caopd_jax.train.config import default_config, paper_config, validate


def train(config):
  """Runs (or resumes) the training run of `config` (an ml-collections train config): loop.train."""
  from caopd_jax.train.loop import train as run       # the loop's imports (grain, tensorboardX) only when training
  return run(config)


__all__ = ["default_config", "paper_config", "train", "validate"]
