"""Sampling with the Pallas decode-attention kernel forced on (in Pallas' interpreter, so on CPUs too): used by
tests/test_decode_attention.py and tests/multi_device/check_meshes.py to compare it with the XLA form."""

import jax

from caopd_jax import rollout
from caopd_jax.models import decode_attention
from caopd_jax.rollout import sampler


def sample_with_the_kernel(monkeypatch, *args, **kwargs) -> rollout.Rollouts:
  """rollout.sample(*args, **kwargs) with every decode step's attention run by the kernel; the programs compiled
  with it are dropped afterwards, so later samples use the XLA form again."""
  with monkeypatch.context() as patch:
    patch.setattr(decode_attention, "implementation", lambda dtype: "interpret")
    jax.clear_caches()
    sampler._prefill.cache_clear()
    out = rollout.sample(*args, **kwargs)
  jax.clear_caches()
  sampler._prefill.cache_clear()
  return out
