"""The Pallas token-stats kernels (interpret mode on CPU) against a float64 NumPy reference.

Forward outputs within 1e-4 for float32 inputs; gradients w.r.t. h and W by `jax.vjp` with random
cotangents on every output, against float64 finite-free closed forms (jax.grad of the naive
reference in float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax.kernels.fused_token_stats import token_stats_pallas
from caopd_jax.losses.token_stats import token_stats_naive

TILE = 16
FIELDS = ("logsumexp", "logprob", "entropy", "teacher_logprob", "kl_ts", "kl_st")


def _reference(h, w, y, ht, wt, temperature):
  """float64 naive statistics (jax x64 scoped to this call)."""
  with jax.enable_x64(True):
    f64 = lambda x: jnp.asarray(np.asarray(x, np.float64))  # noqa: E731
    return token_stats_naive(f64(h), f64(w), jnp.asarray(np.asarray(y)), f64(ht), f64(wt),
                             temperature=temperature, with_kl=True)


def _inputs(n, v, d=8, scale=1.0, seed=0, same_teacher=False, zero_w=False, negative=False):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, d)).astype(np.float32) * scale
  w = np.zeros((d, v), np.float32) if zero_w else rng.normal(size=(d, v)).astype(np.float32)
  if negative:
    h, w = np.abs(h), -np.abs(w)          # every logit < 0
  ht, wt = (h, w) if same_teacher else (rng.normal(size=(n, d)).astype(np.float32),
                                        rng.normal(size=(d, v)).astype(np.float32))
  y = rng.integers(0, v, n)
  y[: min(n, 3)] = [t for t in (0, min(TILE - 1, v - 1), v - 1)][: min(n, 3)]   # targets at tile edges
  return h, w, y, ht, wt


CASES = [(5, 4 * TILE), (5, 4 * TILE - 1), (5, 4 * TILE + 1), (7, 53), (1, TILE // 2 + 3), (33, 29)]


def _check_against_float64(h, w, y, ht, wt, **layout):
  """Forward outputs and vjp gradients (random cotangents on every output) of the kernels vs float64."""
  temperature, n = 0.9, h.shape[0]
  kernel = lambda h, w: token_stats_pallas(h, w, jnp.asarray(y), jnp.asarray(ht), jnp.asarray(wt),  # noqa: E731
                                           temperature=temperature, with_kl=True, chunk_size=TILE, block_n=8,
                                           **layout)
  ours = kernel(jnp.asarray(h), jnp.asarray(w))
  ref = _reference(h, w, y, ht, wt, temperature)
  for field in FIELDS:
    np.testing.assert_allclose(np.asarray(getattr(ours, field)), np.asarray(getattr(ref, field)), atol=1e-4,
                               rtol=1e-4, err_msg=field)
  cotangents = [np.random.default_rng(1).normal(size=n).astype(np.float32) for _ in FIELDS]

  def scalar(fn, h, w):
    stats = fn(h, w)
    return sum(jnp.sum(getattr(stats, f) * c) for f, c in zip(FIELDS, cotangents))

  dh, dw = jax.grad(lambda h, w: scalar(kernel, h, w), argnums=(0, 1))(jnp.asarray(h), jnp.asarray(w))
  with jax.enable_x64(True):
    naive = lambda h, w: token_stats_naive(h, w, jnp.asarray(y), jnp.asarray(ht, jnp.float64),  # noqa: E731
                                           jnp.asarray(wt, jnp.float64), temperature=temperature, with_kl=True)
    rh, rw = jax.grad(lambda h, w: scalar(naive, h, w), argnums=(0, 1))(jnp.asarray(h, jnp.float64),
                                                                         jnp.asarray(w, jnp.float64))
  scale = lambda r: max(float(np.max(np.abs(r))), 1e-3)  # noqa: E731
  assert float(np.max(np.abs(np.asarray(dh) - np.asarray(rh)))) <= 1e-4 * scale(rh) + 1e-5
  assert float(np.max(np.abs(np.asarray(dw) - np.asarray(rw)))) <= 1e-4 * scale(rw) + 1e-5
  return ours


@pytest.mark.parametrize("n, v", CASES)
@pytest.mark.parametrize("variant", ["plain", "peaky", "negative", "zero_w", "same_teacher"])
def test_forward_and_gradients_match_float64(n, v, variant):
  h, w, y, ht, wt = _inputs(n, v, scale=30.0 if variant == "peaky" else 1.0, negative=variant == "negative",
                            zero_w=variant == "zero_w", same_teacher=variant == "same_teacher")
  ours = _check_against_float64(h, w, y, ht, wt, backward="two_pass")
  if variant == "zero_w":
    np.testing.assert_allclose(np.asarray(ours.entropy), np.log(v), rtol=1e-6)
  if variant == "same_teacher":
    np.testing.assert_allclose(np.asarray(ours.kl_st), 0.0, atol=1e-5)


@pytest.mark.parametrize("n, v", [(5, 4 * TILE - 1), (7, 53), (33, 29)])
@pytest.mark.parametrize("backward, block_d, d, chunk_rows", [
    ("dlogits", 4, 8, 16), ("dlogits", 8, 12, 4096), ("atomic", 4, 8, None), ("atomic", 8, 12, None),
    ("atomic", None, 8, None), ("two_pass", 4, 8, None), ("two_pass", 8, 12, None)])
def test_d_chunks_and_every_backward_match_float64(n, v, backward, block_d, d, chunk_rows):
  """The GPU layout (tile matmuls in D chunks, D padded to whole chunks) with each backward strategy;
  dlogits with chunks of 16 rows covers several row chunks and a padded last one."""
  h, w, y, ht, wt = _inputs(n, v, d=d, scale=3.0)
  _check_against_float64(h, w, y, ht, wt, backward=backward, block_d=block_d, chunk_rows=chunk_rows or 4096)


def test_student_only_and_padded_rows_get_no_gradient():
  h, w, y, _, _ = _inputs(3, 37)
  stats = token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), chunk_size=TILE, block_n=8)
  assert stats.teacher_logprob is None and stats.kl_ts is None
  ref = _reference(h, w, y, h, w, 1.0)
  np.testing.assert_allclose(np.asarray(stats.logprob), np.asarray(ref.logprob), atol=1e-4)
  # rows 3..7 of the row block are padding: a loss on row 0 only must leave the other rows' dh at 0
  dh = jax.grad(lambda h: token_stats_pallas(h, jnp.asarray(w), jnp.asarray(y), chunk_size=TILE,
                                             block_n=8).logprob[0])(jnp.asarray(h))
  assert np.all(np.asarray(dh)[1:] == 0) and np.any(np.asarray(dh)[0] != 0)


def test_forward_and_backward_lower_for_tpu():
  """Mosaic TPU lowering on this CPU machine, so TPU-breaking changes fail here (running needs a TPU)."""
  h = jax.ShapeDtypeStruct((256, 128), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((128, 1000), jnp.bfloat16)
  y = jax.ShapeDtypeStruct((256,), jnp.int32)

  def loss(h, w, y, ht, wt):
    s = token_stats_pallas(h, w, y, ht, wt, chunk_size=128, block_n=64, with_kl=True, interpret=False)
    return jnp.sum(s.logprob + s.entropy + s.kl_ts + s.kl_st + s.logsumexp + s.teacher_logprob)

  text = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(h, w, y, h, w).lower(lowering_platforms=("tpu",)).as_text()
  assert text.count("tpu_custom_call") == 3     # the forward, dH and dW kernels
