"""The trainer: configs (config.py), the one program builder (setup.py), the loop (loop.py: make a batch, take a
step), checkpoints, logs, signals, and the AOT compile check (aot.py). The algorithm it runs is caopd_jax.distill."""

from caopd_jax.train.config import default_config, paper_config, validate

__all__ = ["default_config", "paper_config", "validate"]
