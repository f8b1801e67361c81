"""The chunked token statistics vs the naive full-logits path and a float64 NumPy reference:
ragged vocabularies, single and odd row counts, peaky logits, degenerate cases, gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax import losses

CHUNK = 16
FIELDS = ("logsumexp", "logprob", "entropy", "teacher_logprob", "kl_ts", "kl_st")
STATIC = ("temperature", "chunk_size", "with_kl")
chunked = jax.jit(losses.token_stats, static_argnames=STATIC)
naive = jax.jit(losses.token_stats_naive, static_argnames=STATIC)


def _inputs(n, vocab, scale=1.0, seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return dict(h_s=scale * f32(n, 8), w_s=f32(8, vocab), targets=jnp.asarray(rng.integers(0, vocab, n), jnp.int32),
              h_t=scale * f32(n, 5), w_t=f32(5, vocab))


def _numpy_reference(h_s, w_s, targets, h_t, w_t, temperature=1.0):
  """float64 statistics from the same (float32) inputs."""
  def log_softmax(h, w):
    z = np.asarray(h, np.float64) @ np.asarray(w, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True)), z
  logp_s, _ = log_softmax(h_s, w_s)
  logp_t, _ = log_softmax(h_t, w_t)
  z_s = np.asarray(h_s, np.float64) @ np.asarray(w_s, np.float64) / temperature
  rows = np.arange(len(targets))
  p_s, p_t = np.exp(logp_s), np.exp(logp_t)
  return {"logsumexp": (z_s - logp_s)[:, 0], "logprob": logp_s[rows, targets], "entropy": -(p_s * logp_s).sum(-1),
          "teacher_logprob": logp_t[rows, targets], "kl_ts": (p_t * (logp_t - logp_s)).sum(-1),
          "kl_st": (p_s * (logp_s - logp_t)).sum(-1)}


def _assert_stats_close(actual, expected, tol):
  for field in FIELDS:
    want = expected[field] if isinstance(expected, dict) else getattr(expected, field)
    np.testing.assert_allclose(getattr(actual, field), want, rtol=tol, atol=tol, err_msg=field)


@functools.partial(jax.jit, static_argnums=0)
def _stats_and_grads(fn, inputs, cotangents):
  """(stats, gradients w.r.t. (h_s, w_s) of <cotangents, the six outputs>) in one compiled call."""
  def outputs(h_s, w_s):
    stats = fn(h_s, w_s, inputs["targets"], inputs["h_t"], inputs["w_t"], chunk_size=CHUNK, with_kl=True)
    return tuple(getattr(stats, f) for f in FIELDS), stats
  _, vjp, stats = jax.vjp(outputs, inputs["h_s"], inputs["w_s"], has_aux=True)
  return stats, vjp(cotangents)


def _check_against_naive(inputs, tol):
  """Chunked vs naive: forward values to `tol`, gradients for random cotangents to 1e-4. Returns chunked stats."""
  rng = np.random.default_rng(1)
  n = inputs["targets"].shape[0]
  cotangents = tuple(jnp.asarray(rng.normal(size=(n,)), jnp.float32) for _ in FIELDS)
  stats, grads = _stats_and_grads(losses.token_stats, inputs, cotangents)
  want_stats, want_grads = _stats_and_grads(losses.token_stats_naive, inputs, cotangents)
  _assert_stats_close(stats, want_stats, tol)
  for got, want in zip(grads, want_grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  return stats


# Vocabularies around chunk 16: multiple, multiple -/+ 1, chunk -/+ 1, a prime, smaller than a chunk.
@pytest.mark.parametrize("vocab", [48, 47, 49, 15, 17, 53, 5])
@pytest.mark.parametrize("n", [1, 7])
def test_chunked_matches_naive_and_float64(vocab, n):
  inputs = _inputs(n, vocab, seed=vocab + n)
  stats = _check_against_naive(inputs, 1e-5)
  for field in FIELDS:
    assert getattr(stats, field).shape == (n,) and getattr(stats, field).dtype == jnp.float32
  _assert_stats_close(stats, _numpy_reference(**inputs), 1e-5)


def test_peaky_logits():
  inputs = _inputs(7, 53, scale=30.0, seed=3)
  stats = _check_against_naive(inputs, 1e-5)
  assert all(np.all(np.isfinite(getattr(stats, f))) for f in FIELDS)
  reference = _numpy_reference(**inputs)
  for field in FIELDS:  # logits reach a few hundred: float32 rounding of the logits themselves ~1e-5 relative
    np.testing.assert_allclose(getattr(stats, field), reference[field], rtol=1e-5, atol=1e-4, err_msg=field)


def test_temperature_and_leading_dims():
  inputs = _inputs(6, 37, seed=4)
  shaped = {k: v.reshape((2, 3) + v.shape[1:]) if k in ("h_s", "h_t", "targets") else v for k, v in inputs.items()}
  stats = chunked(**shaped, temperature=0.7, chunk_size=CHUNK, with_kl=True)
  assert stats.logprob.shape == (2, 3)
  reference = _numpy_reference(**inputs, temperature=0.7)
  _assert_stats_close(jax.tree.map(lambda x: x.reshape(-1), stats), reference, 1e-5)


def test_zero_unembedding_is_uniform():
  inputs = _inputs(5, 37, seed=5)
  inputs["w_s"] = jnp.zeros_like(inputs["w_s"])
  stats = chunked(inputs["h_s"], inputs["w_s"], inputs["targets"], chunk_size=CHUNK)
  np.testing.assert_allclose(stats.logsumexp, np.log(37), rtol=1e-6)
  np.testing.assert_allclose(stats.entropy, np.log(37), rtol=1e-6)
  np.testing.assert_allclose(stats.logprob, -np.log(37), rtol=1e-6)
  assert stats.teacher_logprob is None and stats.kl_ts is None and stats.kl_st is None


def test_teacher_equal_to_student_has_zero_kl():
  inputs = _inputs(7, 49, scale=3.0, seed=6)
  stats = chunked(inputs["h_s"], inputs["w_s"], inputs["targets"], inputs["h_s"], inputs["w_s"],
                  chunk_size=CHUNK, with_kl=True)
  np.testing.assert_allclose(stats.kl_ts, 0.0, atol=1e-6)
  np.testing.assert_allclose(stats.kl_st, 0.0, atol=1e-6)
  np.testing.assert_allclose(stats.teacher_logprob, stats.logprob, atol=1e-6)


def test_teacher_gets_no_gradient_and_bfloat16_inputs():
  inputs = _inputs(4, 33, seed=7)
  kl = lambda h_t, w_t: jnp.sum(losses.token_stats(inputs["h_s"], inputs["w_s"], inputs["targets"], h_t, w_t,
                                                   chunk_size=CHUNK, with_kl=True).kl_st)
  for grad in jax.jit(jax.grad(kl, argnums=(0, 1)))(inputs["h_t"], inputs["w_t"]):
    assert np.all(np.asarray(grad) == 0.0)
  low = {k: v.astype(jnp.bfloat16) if v.dtype == jnp.float32 else v for k, v in inputs.items()}
  stats = chunked(**low, chunk_size=CHUNK, with_kl=True)
  assert stats.logprob.dtype == jnp.float32
  _assert_stats_close(stats, naive(**low, chunk_size=CHUNK, with_kl=True), 1e-5)


def test_argument_errors():
  inputs = _inputs(3, 20)
  with pytest.raises(ValueError):
    losses.token_stats(inputs["h_s"], inputs["w_s"], inputs["targets"], with_kl=True)
  with pytest.raises(ValueError):
    losses.token_stats(inputs["h_s"], inputs["w_s"], inputs["targets"], inputs["h_t"])
  with pytest.raises(ValueError):
    losses.token_stats(inputs["h_s"], inputs["w_s"][:, :10], inputs["targets"], inputs["h_t"], inputs["w_t"])


def test_registry_picks_the_implementation_per_backend():
  from caopd_jax.kernels import registry
  assert registry.resolve("auto", backend="gpu") == "pallas"
  with pytest.warns(UserWarning, match="support threshold"):   # the kernels have no tail
    assert registry.resolve("auto", backend="gpu", needs_threshold=True) == "xla_chunked"
  with pytest.warns(UserWarning, match="2-byte inputs, not float32"):
    assert registry.resolve("auto", backend="gpu", dtype=jnp.float32) == "xla_chunked"
  assert registry.resolve("auto", backend="cpu") == "xla_chunked"
  assert registry.resolve("auto", backend="tpu", dim=4096, vmem_limit=16 * 2**20) == "pallas"
  with pytest.warns(UserWarning, match="no TPU tiling fits 16 MiB of scoped VMEM at width 1048576"):
    assert registry.resolve("auto", backend="tpu", dim=2**20, vmem_limit=16 * 2**20) == "xla_chunked"
  with pytest.warns(UserWarning, match="support threshold"):
    assert registry.resolve("auto", backend="tpu", needs_threshold=True) == "xla_chunked"
  assert registry.resolve("naive", backend="gpu") == "naive"
  assert registry.token_stats_function("naive").func is losses.token_stats_naive
  inputs = _inputs(3, 20)
  auto = registry.token_stats_function("auto", vocab_chunk=8)(inputs["h_s"], inputs["w_s"], inputs["targets"])
  direct = losses.token_stats(inputs["h_s"], inputs["w_s"], inputs["targets"], chunk_size=8)   # here: a CPU
  np.testing.assert_array_equal(auto.logprob, direct.logprob)
  with pytest.warns(UserWarning, match="interpreter"):
    registry.token_stats_function("pallas")
  with pytest.raises(ValueError, match="no support threshold"):
    registry.token_stats_function("pallas", needs_threshold=True)
  with pytest.raises(ValueError, match="unknown token-stats implementation"):
    registry.resolve("fast")
