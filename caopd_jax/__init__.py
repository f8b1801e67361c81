"""caopd-jax: calibration-aware on-policy distillation (CaOPD) in JAX/Flax."""

__version__ = "0.1.0"
