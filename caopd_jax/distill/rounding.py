"""Writing float32 results into bfloat16 weights without losing small steps.

    student = apply_updates(student, updates, key, "stochastic")
    teacher = ema_update(teacher, student, rate, key, "stochastic")

A bfloat16 weight has 8 significant bits: near 0.02 its spacing (ulp) is 2^-13 = 1.2e-4, so an AdamW step
of 2e-5 (the reference's lr) rounds back to the same weight under round-to-nearest, and so does an EMA move of
1% of a small gap. Stochastic rounding rounds up with probability (distance to the lower neighbour) / ulp, so
the expected stored value equals the float32 result and many small steps add up as they would in float32
(tests/test_rounding.py: 1,000 steps of 2e-5). Other dtypes (float32) are a plain cast in every mode.

ROUNDING: "stochastic" (the default of train.update_rounding) or "nearest" (what a plain cast does).
"""

import jax
import jax.numpy as jnp

ROUNDING = ("stochastic", "nearest")


def _stochastic_bf16(x: jax.Array, key: jax.Array) -> jax.Array:
  """float32 `x` -> bfloat16, rounded up with probability (x - lower neighbour) / ulp. bfloat16 is float32's
  top 16 bits, so adding uniform bits below them and truncating does it; non-finite values pass as a cast."""
  noise = jax.random.bits(key, x.shape, jnp.uint32) >> 16
  bits = (jax.lax.bitcast_convert_type(x, jnp.uint32) + noise) & jnp.uint32(0xFFFF0000)
  rounded = jax.lax.bitcast_convert_type(bits, jnp.float32).astype(jnp.bfloat16)
  return jnp.where(jnp.isfinite(x), rounded, x.astype(jnp.bfloat16))


def write(values, like, key: jax.Array, rounding: str):
  """Tree of float32 `values` stored in the dtypes of the matching tree `like`; narrow leaves rounded by
  `rounding`, each leaf with its own stream of `key`."""
  if rounding not in ROUNDING:
    raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
  leaves, treedef = jax.tree.flatten(values)
  dtypes = [leaf.dtype for leaf in jax.tree.leaves(like)]
  keys = jax.random.split(key, len(leaves))
  out = [_stochastic_bf16(v, k) if rounding == "stochastic" and dt == jnp.bfloat16 else v.astype(dt)
         for v, dt, k in zip(leaves, dtypes, keys)]
  return jax.tree.unflatten(treedef, out)


def apply_updates(params, updates, key: jax.Array, rounding: str):
  """params + updates, added in float32, stored in the params' dtypes (optax.apply_updates, with `rounding`)."""
  total = jax.tree.map(lambda p, u: p.astype(jnp.float32) + u.astype(jnp.float32), params, updates)
  return write(total, params, key, rounding)


def ema_update(teacher, student, rate: float, key: jax.Array, rounding: str):
  """teacher <- rate * student + (1 - rate) * teacher, in float32, stored in the teacher's dtypes with `rounding`.

  rate 0 is a frozen teacher: returned as it is, with no work traced."""
  if rate == 0:
    return teacher
  mixed = jax.tree.map(lambda t, s: rate * s.astype(jnp.float32) + (1 - rate) * t.astype(jnp.float32), teacher,
                       student)
  return write(mixed, teacher, key, rounding)
