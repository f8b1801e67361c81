"""GPU check (bench/RESULTS.md, "The attention's padding guard without forward selects"): loss and gradients of
the contiguous path (cuDNN flash attention in bf16) and of the bf16 mask path, each against a float32 mask-path
reference. Qwen3-0.6B widths, 4 layers, vocabulary 4,096; 5 rows of 1,024 tokens: unpadded, padded left, right,
both sides, and one with no real token.

    PYTHONPATH=. python bench/h200_2026-12-04_guard/cudnn_guard_check.py
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from caopd_jax.models import attention
print("impl bf16:", attention.fused_implementation(jnp.bfloat16), jax.devices()[0])
c = dataclasses.replace(models.preset("qwen3-0.6b"), num_layers=4, vocab_size=4096)
p32 = models.init(c, jax.random.key(0))
p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p32)
t = 1024
rng = np.random.default_rng(0)
ids = jnp.asarray(rng.integers(0, c.vocab_size, (5, t)))
mask = np.zeros((5, t), bool)
for r, (a, b) in enumerate([(0, t), (300, t), (0, 517), (100, 900), (0, 0)]): mask[r, a:b] = True
mask = jnp.asarray(mask)
w = jnp.asarray(rng.normal(size=(c.hidden_size,)), jnp.float32)
def loss(p, contiguous):
  h = models.hidden_states(c, p, ids, mask, contiguous=contiguous).astype(jnp.float32)
  return jnp.sum(jnp.where(mask[..., None], jnp.tanh(h * w) ** 2, 0.0))
f = jax.jit(jax.value_and_grad(loss), static_argnums=1)
ref_l, ref_g = f(p32, False)
out = {}
for name, p, cont in [("bf16_mask", p16, False), ("bf16_cudnn", p16, True)]:
  l, g = f(p, cont)
  finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
  errs = [float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)) / jnp.max(jnp.abs(b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g))]
  out[name] = dict(loss_rel=float(abs(l - ref_l) / abs(ref_l)), grads_finite=finite, worst_grad_rel=max(errs))
print(json.dumps(out))
