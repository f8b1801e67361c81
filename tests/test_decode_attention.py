"""The decode step's attention over live cache slots (models/decode_attention.py): the Pallas kernel (in Pallas'
interpreter on CPUs) against the masked XLA form, on hand-made spans and through the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax import rollout
from caopd_jax.models import decode_attention
from caopd_jax.models.attention import attend


def _spans(rng, rows, slots):
  """bool [rows, 1, slots]: row r's live slots are one span [start, end) (left padding, then a window cut)."""
  start = rng.integers(0, slots // 2, size=rows)
  end = np.minimum(slots, start + rng.integers(1, slots, size=rows))
  end[0], start[1], end[1] = slots, 0, 1      # a full-length row and a one-slot row
  idx = np.arange(slots)
  return jnp.asarray((idx >= start[:, None]) & (idx < end[:, None]))[:, None]


@pytest.mark.parametrize("heads,kv_heads,head_dim,slots", [(4, 2, 16, 128), (9, 3, 64, 256), (16, 8, 128, 384)])
def test_the_kernel_equals_masked_attention_over_every_span(heads, kv_heads, head_dim, slots):
  rng = np.random.default_rng(heads)
  rows = 6
  q = jnp.asarray(rng.standard_normal((rows, 1, heads, head_dim)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((rows, kv_heads, slots, head_dim)), jnp.float32) for _ in range(2))
  mask = _spans(rng, rows, slots)
  with jax.default_matmul_precision("highest"):   # float32 products as on a CPU (GPUs default to TF32)
    expected = attend(q, k, v, mask)
    got = decode_attention.attend_cached(q, k, v, mask, "interpret")
  np.testing.assert_allclose(got, expected, atol=2e-5, rtol=2e-5)
  assert decode_attention.attend_cached(q, k, v, mask, "xla") is not None


def test_the_kernel_reads_no_slot_outside_the_span():
  """NaNs in the blocks of 128 slots past every row's span change nothing: the kernel does not read them (the
  XLA form reads every slot, and a NaN value times a zero weight is NaN)."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((2, 1, 4, 16)), jnp.float32)
  k, v = (np.asarray(rng.standard_normal((2, 2, 256, 16)), np.float32) for _ in range(2))
  mask = np.zeros((2, 1, 256), bool)
  mask[0, 0, 10:128], mask[1, 0, 0:100] = True, True
  clean = decode_attention.attend_cached(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask), "interpret")
  k[:, :, 128:], v[:, :, 128:] = np.nan, np.nan
  dirty = decode_attention.attend_cached(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask), "interpret")
  np.testing.assert_array_equal(np.isfinite(dirty), True)
  np.testing.assert_allclose(dirty, clean, atol=1e-6)
  assert np.isnan(decode_attention.attend_cached(q, jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask), "xla")).all()


def test_where_the_kernel_runs():
  assert decode_attention.implementation(jnp.bfloat16) == ("pallas" if jax.default_backend() == "gpu" else "xla")
  assert decode_attention.implementation(jnp.float32) == "xla"
  assert decode_attention.cache_length(300, jnp.float32) == 300


def test_sampling_with_the_kernel_draws_the_xla_form_s_tokens(family, monkeypatch):
  """The whole sampler with the kernel in every decode step (a cache rounded up to 128-slot blocks) draws the
  tokens and log-probs of the XLA form, for prompts of different lengths (different spans per row)."""
  from decode_kernel_sampling import sample_with_the_kernel
  _, _, config, params, _ = family
  rng = np.random.default_rng(2)
  prompts = [rng.integers(3, config.vocab_size, size=n).tolist() for n in (5, 9, 3)]
  kwargs = dict(num_samples=2, max_new_tokens=10, temperature=1.0)
  with jax.default_matmul_precision("highest"):   # float32 products as on a CPU (GPUs default to TF32)
    xla = rollout.sample(config, params, prompts, jax.random.key(4), **kwargs)
    kernel = sample_with_the_kernel(monkeypatch, config, params, prompts, jax.random.key(4), **kwargs)
  np.testing.assert_array_equal(kernel.tokens, xla.tokens)
  np.testing.assert_allclose(kernel.logprobs, xla.logprobs, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the compiled Triton kernel needs a GPU (run on the H200)")
def test_on_a_gpu_the_compiled_kernel_equals_the_xla_form_in_bf16():
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((64, 1, 16, 128)), jnp.bfloat16)
  k, v = (jnp.asarray(rng.standard_normal((64, 8, 1280, 128)), jnp.bfloat16) for _ in range(2))
  mask = _spans(rng, 64, 1280)
  expected = jax.jit(attend)(q, k, v, mask).astype(jnp.float32)
  got = jax.jit(decode_attention.attend_cached, static_argnums=4)(q, k, v, mask, "pallas").astype(jnp.float32)
  np.testing.assert_allclose(got, expected, atol=2e-2, rtol=2e-2)
