"""The layout the trainer decodes on: the training layout, or the weights replicated with the rows split.

    layout, why = rollout_layout.choose(config.rollout.layout, train_layout, param_bytes, device_memory)
    params = rollout_layout.place(state.student, layout, models.logical_axes(model_config))   # a copy, or the same

On a training layout that splits the weights (fsdp, tensor) every decode step gathers every layer's weights
from the other devices: one whole model over the interconnect per generated token. With the weights replicated
(mesh `data:N` over the same devices: every param whole on every device) a decode step reads only local memory
and the rows split N ways, as MaxText, Tunix and veRL decode. It costs a full copy of the weights per device
while the sampler runs (the training state stays where it is) and one reshard per iteration.

ROLLOUT_LAYOUTS:
  "auto"        replicated when the training layout splits the weights and a copy of them takes at most
                REPLICA_SHARE of a device's memory (unknown memory: allowed), else the training layout; on CPU
                devices (which share the host's memory) the training layout
  "replicated"  always (when the training layout splits the weights)
  "train"       decode on the training layout
"""

import jax

from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout

ROLLOUT_LAYOUTS = ("auto", "replicated", "train")
REPLICA_SHARE = 0.25


def _splits_weights(layout: Layout) -> bool:
  mesh = layout.mesh
  return mesh.devices.size > 1 and mesh.shape.get("data", 1) != mesh.devices.size


def replicate(kind: str, splits_weights: bool, platform: str, param_bytes: int, device_memory: int
              ) -> tuple[bool, str]:
  """(decode on replicated weights?, why) for a rollout layout `kind` (ROLLOUT_LAYOUTS), a training layout that
  does or does not split the weights, the devices' `platform`, the weights' bytes and one device's memory (0:
  unknown). CPU devices share the host's memory, so `auto` keeps the training layout there."""
  if kind not in ROLLOUT_LAYOUTS:
    raise ValueError(f"rollout layout must be one of {ROLLOUT_LAYOUTS}, got {kind!r}")
  if kind == "train":
    return False, "the training layout"
  if not splits_weights:
    return False, "the training layout (it keeps whole weights already)"
  if kind == "auto" and platform == "cpu":
    return False, "the training layout (CPU devices share the host's memory: rollout.layout=replicated forces it)"
  if kind == "auto" and device_memory and param_bytes > REPLICA_SHARE * device_memory:
    return False, (f"the training layout: a copy of the weights ({param_bytes / 2**30:.2f} GiB) would take more "
                   f"than {REPLICA_SHARE:.0%} of a device's {device_memory / 2**30:.1f} GiB")
  return True, f"weights replicated on each device ({param_bytes / 2**30:.2f} GiB each), rows split over them"


def choose(kind: str, train_layout: Layout, param_bytes: int, device_memory: int) -> tuple[Layout, str]:
  """(the layout to decode on, why): `kind` one of ROLLOUT_LAYOUTS; `param_bytes` the weights' size in their
  dtype; `device_memory` what one device may use (0: unknown). See `replicate`."""
  devices = list(train_layout.mesh.devices.flat)
  replicated, why = replicate(kind, _splits_weights(train_layout), devices[0].platform, param_bytes, device_memory)
  if not replicated:
    return train_layout, why
  return Layout(make_mesh(f"data:{len(devices)}", devices), train_layout.rules), f"{why} ({len(devices)} devices)"


def place(params, layout: Layout, axes):
  """`params` laid out for decoding on `layout` (no copy when they already are); `axes`: their logical axis names
  (models.logical_axes of the model's config)."""
  shardings = layout.params(axes, params)
  if all(p.sharding == s for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))):
    return params
  return jax.device_put(params, shardings)
