"""Device meshes and sharding: one code path from `--mesh=1` to TPU pods and multi-GPU hosts.

- `mesh`: the axes (data, fsdp, tensor), `--mesh` strings and presets -> `jax.sharding.Mesh`.
- `rules`: the table from the models' logical axis names to mesh axes, and the shardings of params,
  optimizer state, the train state, batches and KV caches derived from it.
- `layout`: activation constraints and the row-sharded `shard_map` of the Pallas loss head, active
  while a step is traced under a mesh.
- `distributed`: `jax.distributed` start-up from the environment and process-local data -> global arrays.
"""

from caopd_jax.sharding.mesh import AXES, PRESETS, MeshSpec, make_mesh, parse_mesh
from caopd_jax.sharding.rules import DEFAULT_RULES, Layout

__all__ = ["AXES", "DEFAULT_RULES", "Layout", "MeshSpec", "PRESETS", "make_mesh", "parse_mesh"]
