"""`attend_right_padded`'s padding guard: whatever the fused kernel leaves at padded positions (its outputs in the
forward, its q/k/v gradients in the backward) reaches neither the outputs nor the gradients.

A stand-in kernel computes the real attention (the XLA form) and then writes NaN at every padded position, in both
directions: the worst a kernel that skips padded positions may leave there. With the guard, outputs and gradients
equal those of the plain masked attention (`attend`) and are 0 at padded positions.
"""

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax.models import attention

B, T, H, K, DH = 4, 10, 4, 2, 16
_FUSED_ATTENTION = jax.nn.dot_product_attention
CALLS = []   # the stand-in's calls: a test through it must have made one
LENGTHS = np.array([10, 6, 1, 0])
REAL = np.arange(T)[None, :] < LENGTHS[:, None]   # [B, T]: the positions before each row's length


def _nan_past(x, real):
  return jnp.where(real, x, jnp.full((), jnp.nan, x.dtype))


def _kernel_leaving_nan_at_padding(q, k, v, *, query_seq_lengths, **kwargs):
  """jax.nn.dot_product_attention, with NaN at padded positions of its output and of its q/k/v gradients."""
  CALLS.append(q.shape)

  def attend(q, k, v, lengths):
    return _FUSED_ATTENTION(q, k, v, query_seq_lengths=lengths, **kwargs)

  def real(lengths):
    return (jnp.arange(q.shape[1])[None, :] < lengths[:, None])[:, :, None, None]

  @jax.custom_vjp
  def kernel(q, k, v, lengths):
    return _nan_past(attend(q, k, v, lengths), real(lengths))

  def fwd(q, k, v, lengths):
    out, pullback = jax.vjp(lambda *a: attend(*a, lengths), q, k, v)
    return _nan_past(out, real(lengths)), (pullback, lengths)

  def bwd(residuals, g):
    pullback, lengths = residuals
    return tuple(_nan_past(x, real(lengths)) for x in pullback(g)) + (None,)

  kernel.defvjp(fwd, bwd)
  return kernel(q, k, v, query_seq_lengths)


def _inputs():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(B, T, H, DH)).astype(np.float32)
  k, v = (rng.normal(size=(B, T, K, DH)).astype(np.float32) for _ in range(2))
  out_weights = rng.normal(size=(B, T, H, DH)).astype(np.float32)
  return q, k, v, out_weights


def _masked_reference(q, k, v):
  mask = np.tril(np.ones((T, T), bool))[None] & REAL[:, None, :] & REAL[:, :, None]
  out = attention.attend(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), jnp.asarray(mask))
  return jnp.where(jnp.asarray(REAL)[:, :, None, None], out, 0.0)


def _guarded_and_reference(monkeypatch):
  """(loss, outputs, q/k/v gradients) of attend_right_padded over the stand-in kernel, and of the masked reference."""
  q, k, v, w = _inputs()
  monkeypatch.setattr(attention.jax.nn, "dot_product_attention", _kernel_leaving_nan_at_padding)
  CALLS.clear()

  def loss(fn, q, k, v):
    out = fn(q, k, v)
    return jnp.sum(jnp.sin(out) * w), out

  def guarded(q, k, v):
    return attention.attend_right_padded(q, k, v, jnp.asarray(LENGTHS))

  with jax.default_matmul_precision("highest"):   # two f32 attention forms compared to 1e-5: no TF32 on GPUs
    (l_ours, out_ours), g_ours = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)(guarded, q, k, v)
    (l_ref, out_ref), g_ref = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)(_masked_reference, q, k, v)
  assert CALLS, "attend_right_padded did not call the stand-in kernel"
  return (l_ours, out_ours, g_ours), (l_ref, out_ref, g_ref)


def test_nan_left_by_the_kernel_at_padding_reaches_neither_outputs_nor_gradients(monkeypatch):
  (l_ours, out_ours, g_ours), (l_ref, out_ref, g_ref) = _guarded_and_reference(monkeypatch)
  assert np.all(np.isfinite(np.asarray(out_ours))) and np.all(np.asarray(out_ours)[~REAL] == 0)
  np.testing.assert_allclose(np.asarray(out_ours), np.asarray(out_ref), atol=1e-5)
  np.testing.assert_allclose(float(l_ours), float(l_ref), rtol=1e-5)
  for name, ours, ref in zip("qkv", g_ours, g_ref):
    ours = np.asarray(ours)
    assert np.all(np.isfinite(ours)), name
    assert np.all(ours[~REAL] == 0), name
    assert np.abs(ours[REAL]).max() > 0, name
    np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-5, err_msg=name)


def test_without_the_gradient_guard_the_kernels_nan_reach_the_gradients(monkeypatch):
  """The check above can fail: with q/k/v passed through unguarded, the stand-in's NaN gradients come out."""
  monkeypatch.setattr(attention, "_zero_padded_gradient", lambda x, real: x)
  (_, out_ours, g_ours), _ = _guarded_and_reference(monkeypatch)
  assert np.all(np.isfinite(np.asarray(out_ours)))   # the output's own guard still holds
  assert all(np.isnan(np.asarray(g)).any() for g in g_ours)


def test_the_stand_in_kernel_does_leave_nan_without_the_guard():
  """The stand-in does leave NaN in its outputs and in its q/k/v gradients: what the two guards must remove."""
  q, k, v, w = _inputs()
  lengths = jnp.asarray(LENGTHS)
  kwargs = dict(is_causal=True, key_value_seq_lengths=lengths, implementation="xla")
  out, pullback = jax.vjp(lambda *a: _kernel_leaving_nan_at_padding(*a, query_seq_lengths=lengths, **kwargs),
                          q, k, v)
  assert np.isnan(np.asarray(out)).any()
  assert all(np.isnan(np.asarray(g)).any() for g in pullback(jnp.asarray(w)))
