"""The layout the trainer decodes on: the training layout, or the weights replicated with the rows split.

    layout, why = rollout_layout.choose(config.rollout.layout, train_layout, param_bytes, device_memory)
    params = rollout_layout.place(state.student, layout, model_config)   # a resharded copy, or the same arrays

On a training layout that splits the weights (fsdp, tensor) every decode step gathers every layer's weights
from the other devices: one whole model over the interconnect per generated token. With the weights replicated
(mesh `data:N` over the same devices: every param whole on every device) a decode step reads only local memory
and the rows split N ways, as MaxText, Tunix and veRL decode. It costs a full copy of the weights per device
while the sampler runs (the training state stays where it is) and one reshard per iteration.

ROLLOUT_LAYOUTS:
  "auto"        replicated when the training layout splits the weights and a copy of them takes at most
                REPLICA_SHARE of a device's memory (unknown memory: allowed), else the training layout
  "replicated"  always (when the training layout splits the weights)
  "train"       decode on the training layout
"""

import jax

from caopd_jax import models
from caopd_jax.models.config import ModelConfig
from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout

ROLLOUT_LAYOUTS = ("auto", "replicated", "train")
REPLICA_SHARE = 0.25


def _splits_weights(layout: Layout) -> bool:
  mesh = layout.mesh
  return mesh.devices.size > 1 and mesh.shape.get("data", 1) != mesh.devices.size


def choose(kind: str, train_layout: Layout, param_bytes: int, device_memory: int) -> tuple[Layout, str]:
  """(the layout to decode on, why): `kind` one of ROLLOUT_LAYOUTS; `param_bytes` the weights' size in their
  dtype; `device_memory` what one device may use (0: unknown)."""
  if kind not in ROLLOUT_LAYOUTS:
    raise ValueError(f"rollout layout must be one of {ROLLOUT_LAYOUTS}, got {kind!r}")
  devices = train_layout.mesh.devices.size
  if kind == "train" or not _splits_weights(train_layout):
    return train_layout, "the training layout" + ("" if kind == "train" else " (it keeps whole weights already)")
  gib = f"{param_bytes / 2**30:.2f} GiB"
  if kind == "auto" and device_memory and param_bytes > REPLICA_SHARE * device_memory:
    return train_layout, (f"the training layout: a copy of the weights ({gib}) would take more than "
                          f"{REPLICA_SHARE:.0%} of a device's {device_memory / 2**30:.1f} GiB")
  replicated = Layout(make_mesh(f"data:{devices}", list(train_layout.mesh.devices.flat)), train_layout.rules)
  return replicated, f"weights replicated on each of {devices} devices ({gib} each), rows split over them"


def place(params, layout: Layout, config: ModelConfig):
  """`params` laid out for decoding on `layout` (no copy when they already are)."""
  shardings = layout.params(models.logical_axes(config), params)
  if all(p.sharding == s for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))):
    return params
  return jax.device_put(params, shardings)
