"""The optimizer: AdamW, linear warmup then cosine decay, global-norm clipping.

Defaults are the CaOPD reference's (docs/CAOPD.md section 9): lr 2e-5, warmup 10% of the steps, cosine
decay to 0, grad-norm clip 1.0.
"""

import jax.numpy as jnp
import optax


def learning_rate_schedule(peak: float, total_steps: int, warmup_fraction: float = 0.1) -> optax.Schedule:
  """0 -> `peak` linearly over round(warmup_fraction * total_steps) steps, then cosine to 0 at `total_steps`."""
  if total_steps < 1 or not 0 <= warmup_fraction < 1:
    raise ValueError(f"need total_steps >= 1 and 0 <= warmup_fraction < 1, got {total_steps}, {warmup_fraction}")
  warmup = round(warmup_fraction * total_steps)
  return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), end_value=0.0)


def make_optimizer(peak_lr: float, total_steps: int, *, warmup_fraction: float = 0.1, weight_decay: float = 0.0,
                   clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   mu_dtype=jnp.float32) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW on the warmup + cosine schedule. The first moment is stored in `mu_dtype`,
  the second in the params' dtype (optax's rule)."""
  schedule = learning_rate_schedule(peak_lr, total_steps, warmup_fraction)
  return optax.chain(optax.clip_by_global_norm(clip_norm),
                     optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                                 mu_dtype=mu_dtype))
