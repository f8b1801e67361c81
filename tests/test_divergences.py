"""Divergence directions pinned by hand, gradients vs finite differences, the sampled-token
estimator vs the full reverse KL, and the masked token mean."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax import losses

# p_t = (0.9, 0.1), p_s = (0.5, 0.5), by hand:
# KL(p_t || p_s) = 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.9 ln 1.8 + 0.1 ln 0.2
#                = 0.9 * 0.5877867 - 0.1 * 1.6094379 = 0.3680642
# KL(p_s || p_t) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = -0.5 * 0.5877867 + 0.5 * 1.6094379 = 0.5108256
# alpha = 0.5: m = (0.7, 0.3);
# KL(p_t || m) = 0.9 ln(9/7) + 0.1 ln(1/3) = 0.9 * 0.2513144 - 0.1 * 1.0986123 = 0.1163217
# KL(p_s || m) = 0.5 ln(5/7) + 0.5 ln(5/3) = -0.5 * 0.3364722 + 0.5 * 0.5108256 = 0.0871767
# JSD = 0.5 * 0.1163217 + 0.5 * 0.0871767 = 0.1017492
P_T, P_S = (0.9, 0.1), (0.5, 0.5)
FORWARD = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
REVERSE = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0)
JSD_HALF = 0.5 * (0.9 * math.log(9 / 7) + 0.1 * math.log(1 / 3)) + 0.5 * (0.5 * math.log(5 / 7) + 0.5 * math.log(5 / 3))


@pytest.fixture
def x64():
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def test_directions_pinned_by_hand():
  assert FORWARD == pytest.approx(0.3680642, abs=1e-7)
  assert REVERSE == pytest.approx(0.5108256, abs=1e-7)
  assert JSD_HALF == pytest.approx(0.1017492, abs=1e-7)
  logp_t, logp_s = jnp.log(jnp.array(P_T)), jnp.log(jnp.array(P_S))
  assert float(losses.forward_kl(logp_t, logp_s)) == pytest.approx(FORWARD, abs=1e-6)
  assert float(losses.reverse_kl(logp_s, logp_t)) == pytest.approx(REVERSE, abs=1e-6)
  assert float(losses.generalized_jsd(logp_s, logp_t, 0.0)) == pytest.approx(FORWARD, abs=1e-6)
  assert float(losses.generalized_jsd(logp_s, logp_t, 1.0)) == pytest.approx(REVERSE, abs=1e-6)
  assert float(losses.generalized_jsd(logp_s, logp_t, 0.5)) == pytest.approx(JSD_HALF, abs=1e-6)


def test_jsd_endpoints_are_the_normalised_limits(x64):
  rng = np.random.default_rng(1)
  logp_s = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 7))))
  logp_t = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 7))))
  eps = 1e-6
  np.testing.assert_allclose(losses.generalized_jsd(logp_s, logp_t, eps) / eps,
                             losses.forward_kl(logp_t, logp_s), rtol=1e-4)
  np.testing.assert_allclose(losses.generalized_jsd(logp_s, logp_t, 1 - eps) / eps,
                             losses.reverse_kl(logp_s, logp_t), rtol=1e-4)
  with pytest.raises(ValueError):
    losses.generalized_jsd(logp_s, logp_t, 1.5)


def test_zero_probability_terms_are_finite():
  logp_t = jnp.log(jnp.array([1.0, 0.0, 0.0]))
  logp_s = jnp.log(jnp.array([0.5, 0.5, 0.0]))
  assert float(losses.forward_kl(logp_t, logp_s)) == pytest.approx(math.log(2), abs=1e-6)
  grad = jax.grad(lambda z: losses.forward_kl(logp_t, jax.nn.log_softmax(z)))(jnp.array([0.0, 0.0, -1e4]))
  assert np.all(np.isfinite(grad))


DIVERGENCES = {
    "forward_kl": lambda ls, lt: losses.forward_kl(lt, ls),
    "reverse_kl": losses.reverse_kl,
    "jsd_0.3": lambda ls, lt: losses.generalized_jsd(ls, lt, 0.3),
    "jsd_0": lambda ls, lt: losses.generalized_jsd(ls, lt, 0.0),
    "jsd_1": lambda ls, lt: losses.generalized_jsd(ls, lt, 1.0),
}


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_gradients_match_finite_differences(name, x64):
  rng = np.random.default_rng(2)
  z_s, z_t = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.normal(size=(3, 6)))
  weights = jnp.asarray(rng.normal(size=(3,)))
  loss = jax.jit(lambda a, b: jnp.sum(weights * DIVERGENCES[name](jax.nn.log_softmax(a), jax.nn.log_softmax(b))))
  grads = jax.grad(loss, argnums=(0, 1))(z_s, z_t)
  eps = 1e-6
  for arg, grad in enumerate(grads):
    numeric = np.zeros(z_s.shape)
    for index in np.ndindex(*z_s.shape):
      bump = jnp.zeros(z_s.shape).at[index].set(eps)
      plus = [z_s, z_t]
      minus = [z_s, z_t]
      plus[arg], minus[arg] = plus[arg] + bump, minus[arg] - bump
      numeric[index] = (loss(*plus) - loss(*minus)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-7, rtol=1e-6)


# A tiny vocabulary: student logits (now and at sampling time, for the several-steps-per-batch case) and teacher's.
Z_S = np.array([1.0, 0.2, -0.5, 2.0, 0.0, -1.2])
Z_OLD = np.array([0.6, 0.5, -0.2, 1.5, 0.3, -0.8])
Z_T = np.array([0.3, 1.5, -1.0, 0.5, 0.8, 0.1])
# (sampling logits, temperature, top_k, top_p): on-policy T=1; stale params; T=0.7 with top-p (a cut support);
# top-k; greedy rollouts (the support is the argmax alone)
SAMPLERS = {"on_policy": (Z_S, 1.0, 0, 1.0), "stale_params": (Z_OLD, 1.0, 0, 1.0),
            "t0.7_top_p": (Z_S, 0.7, 0, 0.8), "top_k": (Z_S, 1.0, 3, 1.0), "greedy": (Z_S, 0.0, 0, 1.0)}


def _estimator_gradients(sampler: str, samples: int, importance_and_tail: bool = True):
  """(per-sample gradients [samples, V] w.r.t. the student logits of the sampled-token surrogate, the exact gradient
  of KL(p_s || p_t) [V]). Samples come from `rollout.sampling.choose`, the sampler's own code; the surrogate goes
  through `token_stats` (student logits = h @ I) as in training. With importance_and_tail=False: the plain
  REINFORCE surrogate r log p_s(y) of earlier versions (no weight, no tail)."""
  from caopd_jax.rollout.sampling import choose
  z_q, temperature, top_k, top_p = SAMPLERS[sampler]
  logits = jnp.broadcast_to(jnp.asarray(z_q), (samples, z_q.size))
  keys = jax.random.split(jax.random.key(7), samples)
  tokens, logq, thresholds = choose(keys, logits, jax.nn.log_softmax(logits), temperature, top_k, top_p)
  eye = jnp.eye(Z_S.size)
  cut = importance_and_tail and sampler not in ("on_policy", "stale_params")

  def surrogate(z, token, logp_q, threshold):
    stats = losses.token_stats(z[None], eye, token[None], jnp.asarray(Z_T)[None], eye, with_kl=True,
                               threshold=threshold[None] if cut else None)
    if not importance_and_tail:
      return (jax.lax.stop_gradient(stats.logprob - stats.teacher_logprob) * stats.logprob)[0]
    value, _ = losses.sampled_token_reverse_kl(stats.logprob, stats.teacher_logprob, stats.kl_st, True, logp_q,
                                               tail_kl=stats.tail_kl, tail_mass=stats.tail_mass)
    return value[0]

  with jax.default_matmul_precision("highest"):   # full float32 matmuls on GPUs too (TF32 would blur greedy's check)
    per_sample = jax.vmap(jax.grad(surrogate), in_axes=(None, 0, 0, 0))(jnp.asarray(Z_S), tokens, logq, thresholds)
  exact = jax.grad(lambda z: losses.reverse_kl(jax.nn.log_softmax(z), jax.nn.log_softmax(jnp.asarray(Z_T))))(
      jnp.asarray(Z_S))
  return np.asarray(per_sample), np.asarray(exact)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sampled_token_estimator_is_unbiased_for_the_reverse_kl_gradient(x64, sampler):
  """The mean of the estimator's gradient over samples equals the exact grad KL(p_s || p_t), within 4 standard
  errors per logit (plus 1e-6: token_stats computes in float32; the greedy case has no noise), whatever the sampler
  did."""
  per_sample, exact = _estimator_gradients(sampler, 100_000)
  standard_error = per_sample.std(axis=0) / math.sqrt(len(per_sample))
  assert np.all(np.abs(per_sample.mean(axis=0) - exact) <= 4 * standard_error + 1e-6), (
      per_sample.mean(axis=0), exact, standard_error)


@pytest.mark.parametrize("sampler", ["stale_params", "t0.7_top_p"])
def test_plain_reinforce_surrogate_is_biased_off_policy(x64, sampler):
  """Without importance weights and the tail term (the earlier estimator) the same check fails by far."""
  per_sample, exact = _estimator_gradients(sampler, 100_000, importance_and_tail=False)
  standard_error = per_sample.std(axis=0) / math.sqrt(len(per_sample))
  assert np.max(np.abs(per_sample.mean(axis=0) - exact) / (standard_error + 1e-12)) > 20


def test_sampled_token_estimator_pieces(x64):
  """Importance weights are p_s / q, truncated at is_cap, and held constant; positions not sampled get the exact KL."""
  logp_s, logp_t = jnp.log(jnp.array([0.5, 0.2])), jnp.log(jnp.array([0.25, 0.4]))
  kl = jnp.array([0.3, 0.7])
  logq = jnp.log(jnp.array([0.1, 0.4]))
  value, weight = losses.sampled_token_reverse_kl(logp_s, logp_t, kl, jnp.array([True, False]), logq, is_cap=2.0)
  np.testing.assert_allclose(weight, [2.0, 1.0])               # 0.5 / 0.1 = 5, truncated at 2; not sampled: 1
  np.testing.assert_allclose(value, [2.0 * math.log(2.0) * math.log(0.5), 0.7])
  value, weight = losses.sampled_token_reverse_kl(logp_s, logp_t, kl, jnp.array([True, True]), logq)
  np.testing.assert_allclose(weight, [5.0, 0.5])               # no cap
  grad = jax.grad(lambda x: losses.sampled_token_reverse_kl(x, logp_t, kl, jnp.array([True, True]), logq)[0].sum())
  np.testing.assert_allclose(grad(logp_s), [5.0 * math.log(2.0), 0.5 * math.log(0.5)])   # w * r, w and r constant


def test_streaming_kls_match_full_distribution_forms():
  rng = np.random.default_rng(3)
  h_s, w_s = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32), jnp.asarray(rng.normal(size=(8, 29)), jnp.float32)
  h_t, w_t = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32), jnp.asarray(rng.normal(size=(4, 29)), jnp.float32)
  logp_s, logp_t = jax.nn.log_softmax(h_s @ w_s), jax.nn.log_softmax(h_t @ w_t)
  np.testing.assert_allclose(losses.streaming_forward_kl(h_s, w_s, h_t, w_t, chunk_size=8),
                             losses.forward_kl(logp_t, logp_s), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(losses.streaming_reverse_kl(h_s, w_s, h_t, w_t, chunk_size=8),
                             losses.reverse_kl(logp_s, logp_t), atol=1e-5, rtol=1e-5)


VALUES = jnp.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]])
MASK = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 1, 1, 1]])


def test_masked_mean_by_hand():
  # skip 0: rows (1+2+3)/3 = 2, 10/1 = 10, (6+7+8)/3 = 7 -> (2 + 10 + 7) / 3
  assert float(losses.masked_mean(VALUES, MASK)) == pytest.approx(19 / 3)
  # skip 1: row 0 keeps columns 1, 2 -> 2.5; row 1 is left empty and drops out; row 2 -> 7
  assert float(losses.masked_mean(VALUES, MASK, skip_first=1)) == pytest.approx((2.5 + 7) / 2)
  # skip 3: row 0 empty, row 1 empty, row 2 keeps column 3 -> 8
  assert float(losses.masked_mean(VALUES, MASK, skip_first=3)) == pytest.approx(8.0)


def test_masked_mean_empty_and_nan_outside_mask():
  nan_outside = VALUES.at[0, 3].set(jnp.nan)
  assert float(losses.masked_mean(nan_outside, MASK, skip_first=1)) == pytest.approx(4.75)
  grad = jax.grad(lambda v: losses.masked_mean(v, MASK, skip_first=1))(nan_outside)
  expected = np.zeros((3, 4))
  expected[0, 1:3] = 0.5 / 2
  expected[2, 1:4] = 0.5 / 3
  np.testing.assert_allclose(grad, expected, rtol=1e-6)
  empty = jnp.zeros_like(MASK)
  assert float(losses.masked_mean(VALUES, empty)) == 0.0
  assert float(losses.masked_mean(VALUES, MASK, skip_first=4)) == 0.0
  assert np.all(np.asarray(jax.grad(lambda v: losses.masked_mean(v, empty))(VALUES)) == 0.0)
