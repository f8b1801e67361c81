"""Experiment (2026-12-04, bench/RESULTS.md): run a bench script with the training forward's layers unrolled (static
weight slices) instead of the layer scan, patched in before the product had `train.unroll_layers`.

    python bench/h200_2026-12-04_unroll/unroll_experiment.py bench/train_step.py ARGS"""
import runpy
import sys

import jax
from flax import nnx

from caopd_jax.models import transformer as T

_scanned = T.Transformer._scan_layers


def _unrolled(self, x, full_cs, sliding_cs, masks, cache=None, remat="none"):
  if cache is not None:
    return _scanned(self, x, full_cs, sliding_cs, masks, cache=cache, remat=remat)
  c = self.config
  layer_def, layer_weights = nnx.split(self.layers)

  def body(h, weights, sliding):
    cos, sin = sliding_cs if sliding else full_cs
    mask = masks["sliding"] if sliding else masks["full"]
    h = T.constrain(h, ("batch", "length", "act_embed"))
    return nnx.merge(layer_def, weights)(h, cos, sin, mask, None)

  if remat != "none":
    body = jax.checkpoint(body, policy=T.REMAT_POLICIES[remat], static_argnums=(2,))
  for i in range(c.num_layers):
    x, _ = body(x, jax.tree.map(lambda a: a[i], layer_weights), bool(c.is_sliding[i]))
  return x, None


T.Transformer._scan_layers = _unrolled
sys.argv = sys.argv[1:]
sys.path.insert(0, "bench")
runpy.run_path(sys.argv[0], run_name="__main__")
