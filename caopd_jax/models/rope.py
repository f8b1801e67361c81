"""Rotary position embeddings (the "rotate half" layout used by Hugging Face checkpoints).

Inverse frequencies are computed in float64 NumPy at trace time (they depend only
on the config), cos/sin in float32 at run time from integer positions.
"""

import math

import jax.numpy as jnp
import numpy as np

from caopd_jax.models.config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> tuple[np.ndarray, float]:
  """Returns (inv_freq float32 [head_dim // 2], attention scale applied to cos and sin)."""
  exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
  inv_freq = 1.0 / (rope.theta ** exponents)
  scale = 1.0
  if rope.kind == "linear":
    inv_freq = inv_freq / rope.factor
  elif rope.kind == "llama3":
    inv_freq = _llama3_scaling(inv_freq, rope)
  elif rope.kind == "yarn":
    inv_freq, scale = _yarn_scaling(rope, head_dim)
  elif rope.kind != "default":
    raise ValueError(f"unknown rope kind {rope.kind!r}")
  return inv_freq.astype(np.float32), scale


def _llama3_scaling(inv_freq: np.ndarray, rope: RopeConfig) -> np.ndarray:
  """Llama 3.1: low frequencies divided by `factor`, high kept, a smooth ramp between."""
  old_len = rope.original_max_position_embeddings
  low_wavelen = old_len / rope.low_freq_factor
  high_wavelen = old_len / rope.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
  smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
  smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return np.where(medium, smoothed, scaled)


def _yarn_scaling(rope: RopeConfig, head_dim: int) -> tuple[np.ndarray, float]:
  """YaRN (arXiv 2309.00071): interpolate low frequencies, keep high ones, ramp between."""
  base, factor = rope.theta, rope.factor

  def correction_dim(rotations: float) -> float:
    return head_dim * math.log(rope.original_max_position_embeddings / (rotations * 2 * math.pi)) / (
        2 * math.log(base))

  low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
  if rope.truncate:
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, head_dim - 1)
  if low == high:
    high += 0.001
  ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
  extrapolation = 1 - ramp
  pos_freqs = base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  inv_freq = (1 / (factor * pos_freqs)) * (1 - extrapolation) + (1 / pos_freqs) * extrapolation
  scale = rope.attention_factor
  if scale is None:
    scale = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
  return inv_freq, float(scale)


def cos_sin(rope: RopeConfig, head_dim: int, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """cos, sin float32 [B, T, head_dim] for integer positions [B, T]."""
  inv_freq, scale = inverse_frequencies(rope, head_dim)
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def apply(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
  """Rotates x [B, T, heads, Dh] by cos/sin [B, T, Dh]; computed in float32, returned in x.dtype.

  The rotate-half term [-x2, x1] is a reversed [2, Dh/2] view of x times (-1, 1): an elementwise op that XLA fuses
  into its neighbours, where a concatenate of the halves starts a fusion of its own (bench/RESULTS.md)."""
  b, t, heads, dh = x.shape
  pairs = x.astype(jnp.float32).reshape(b, t, heads, 2, dh // 2)
  rotated = jnp.flip(pairs, axis=-2) * jnp.array([-1.0, 1.0], jnp.float32)[:, None]
  halves = lambda table: table.reshape(b, t, 1, 2, dh // 2)  # noqa: E731
  return (pairs * halves(cos) + rotated * halves(sin)).reshape(x.shape).astype(x.dtype)
