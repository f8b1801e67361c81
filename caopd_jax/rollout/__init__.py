"""On-policy rollouts: the batched KV-cache sampler on the training model code."""

from caopd_jax.rollout.sampler import Rollouts, sample

__all__ = ["Rollouts", "sample"]
