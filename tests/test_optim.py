"""Optimizer schedule, clipping and the EMA teacher update, against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from caopd_jax.distill.rounding import ema_update
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer


def test_schedule_warms_up_then_decays_to_zero():
  schedule = learning_rate_schedule(2e-5, total_steps=100, warmup_fraction=0.1)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(1e-5)
  assert float(schedule(10)) == pytest.approx(2e-5)
  # cosine: halfway through the decay phase (step 55) the rate is half the peak
  assert float(schedule(55)) == pytest.approx(1e-5, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)
  assert float(schedule(32)) == pytest.approx(2e-5 * 0.5 * (1 + math.cos(math.pi * 22 / 90)), rel=1e-5)


def test_clipping_then_adamw_first_step():
  opt = make_optimizer(1e-2, total_steps=10, warmup_fraction=0.0, clip_norm=1.0)
  params = {"w": jnp.array([1.0, -2.0])}
  grads = {"w": jnp.array([30.0, 40.0])}  # norm 50 -> clipped to (0.6, 0.8)
  state = opt.init(params)
  updates, _ = opt.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  # Adam's first step moves each weight by lr * g / (|g| + eps') = lr * sign(g) (bias-corrected moments)
  np.testing.assert_allclose(np.asarray(new["w"]), [1.0 - 1e-2, -2.0 - 1e-2], rtol=1e-5)


def test_ema_update_hand_computed_and_keeps_dtype():
  teacher = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([4.0], jnp.bfloat16)}
  student = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([0.0], jnp.bfloat16)}
  key = jax.random.key(0)
  for rounding in ("nearest", "stochastic"):   # 3.0 is a bf16 number: both roundings give it exactly
    out = ema_update(teacher, student, 0.25, key, rounding)
    np.testing.assert_allclose(np.asarray(out["a"]), [1.5, 1.5])
    assert out["b"].dtype == jnp.bfloat16 and float(out["b"][0]) == 3.0
    same = jax.jit(ema_update, static_argnums=(2, 4))(teacher, teacher, 0.01, key, rounding)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), same, teacher)


def test_bad_schedule_arguments():
  with pytest.raises(ValueError):
    learning_rate_schedule(1e-5, total_steps=0)
  with pytest.raises(ValueError):
    learning_rate_schedule(1e-5, total_steps=10, warmup_fraction=1.0)
