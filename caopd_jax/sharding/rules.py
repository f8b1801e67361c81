"""Logical axis names -> mesh axes, and every sharding derived from that one table.

Each model parameter carries logical axis names (`models.logical_axes`): embed, vocab, q_heads,
kv_heads, head_dim, mlp, layers. Activations and caches use batch, length, act_embed,
cache_heads. `DEFAULT_RULES` maps each name to the mesh axes that split it (config `sharding.rules`
may replace it). A dimension is split over the rule's axes only if their product divides it and no
earlier dimension of the same array used them; otherwise it is replicated, so any model runs on
any mesh (e.g. SmolLM2's 3 KV heads on tensor:2 stay whole).
"""

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", ("fsdp",)),
    ("vocab", ("tensor",)),
    ("q_heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("cache_heads", ("tensor",)),
    ("head_dim", ()),
    ("layers", ()),
    ("length", ()),
    ("act_embed", ()),
)


def _path_keys(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


class Layout(NamedTuple):
  """A mesh with its rule table: turns logical axis names into PartitionSpecs and shardings."""
  mesh: jax.sharding.Mesh
  rules: tuple = DEFAULT_RULES

  def spec(self, logical: tuple, shape: tuple) -> PartitionSpec:
    """PartitionSpec of an array of `shape` whose dimensions are named `logical` (None: replicated)."""
    table, used, parts = dict(self.rules), set(), []
    for name, size in zip(logical, shape):
      axes = tuple(a for a in table.get(name, ()) if a not in used and self.mesh.shape[a] > 1)
      if axes and size % int(np.prod([self.mesh.shape[a] for a in axes])) == 0:
        used.update(axes)
        parts.append(axes[0] if len(axes) == 1 else axes)
      else:
        parts.append(None)
    return PartitionSpec(*parts)

  def sharding(self, logical: tuple, shape: tuple) -> NamedSharding:
    return NamedSharding(self.mesh, self.spec(logical, shape))

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def params(self, axes, params_like) -> Any:
    """NamedSharding tree of a model's params: `axes` names each param's dimensions (models.logical_axes(config):
    a tree of tuples), `params_like` gives the shapes (arrays or ShapeDtypeStructs)."""
    return jax.tree.map(lambda names, p: self.sharding(names, p.shape), axes, params_like,
                        is_leaf=lambda x: isinstance(x, tuple))

  def following(self, tree_like, params_like, param_shardings) -> Any:
    """Shardings for a tree whose param-shaped leaves mirror the params (optimizer moments, EMA copies):
    a leaf takes the sharding of the param whose path is the longest suffix of its own path and whose
    shape it has; every other leaf (step counters, scalars) is replicated."""
    by_path = {}
    for path, sharding in jax.tree_util.tree_leaves_with_path(param_shardings):
      by_path[_path_keys(path)] = sharding
    shapes = {_path_keys(p): leaf.shape for p, leaf in jax.tree_util.tree_leaves_with_path(params_like)}

    def pick(path, leaf):
      keys = _path_keys(path)
      for start in range(len(keys)):
        if keys[start:] in by_path and shapes[keys[start:]] == getattr(leaf, "shape", None):
          return by_path[keys[start:]]
      return self.replicated()
    return jax.tree_util.tree_map_with_path(pick, tree_like)
