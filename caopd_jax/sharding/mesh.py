"""Mesh axes, `--mesh` strings and presets.

Three axes, always in this order (size 1 when unused):
  data    pure data parallelism: params replicated (across hosts / DCN on TPU pods);
  fsdp    data parallelism with params, gradients and optimizer state sharded (ZeRO-3 / FSDP);
  tensor  tensor parallelism: attention heads, MLP columns and the vocabulary split.
The batch is split over data x fsdp.

`--mesh` accepts
  "1"                          one device (the first);
  "auto"                       every device on fsdp (one process) or data = processes x fsdp = local devices;
  "data:2,fsdp:4,tensor:1"     explicit sizes (omitted axes are 1; the product must be the device count);
  a preset name from PRESETS   e.g. "gpu-8-fsdp", "tpu-v5p-64".
"""

import re
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import mesh_utils

from caopd_jax.errors import CaopdError

AXES = ("data", "fsdp", "tensor")


class MeshSpec(NamedTuple):
  """Axis sizes of a mesh."""
  data: int = 1
  fsdp: int = 1
  tensor: int = 1

  @property
  def size(self) -> int:
    return self.data * self.fsdp * self.tensor

  def __str__(self) -> str:
    return ",".join(f"{axis}:{size}" for axis, size in zip(AXES, self))


# Named layouts for common machines. TPU slices: chips (v4/v5p count 2 cores per chip as one device).
PRESETS = {
    "gpu-1": MeshSpec(),
    "gpu-2-fsdp": MeshSpec(fsdp=2),
    "gpu-4-fsdp": MeshSpec(fsdp=4),
    "gpu-8-fsdp": MeshSpec(fsdp=8),
    "gpu-8-fsdp4-tp2": MeshSpec(fsdp=4, tensor=2),
    "gpu-2x8-hosts": MeshSpec(data=2, fsdp=8),          # two 8-GPU hosts: data across hosts, FSDP within
    "gpu-4x8-hosts": MeshSpec(data=4, fsdp=8),
    "tpu-v4-8": MeshSpec(fsdp=4),                       # v4-8: 4 chips
    "tpu-v4-32": MeshSpec(fsdp=16),
    "tpu-v5e-8": MeshSpec(fsdp=8),
    "tpu-v5e-256": MeshSpec(data=4, fsdp=64),
    "tpu-v5p-8": MeshSpec(fsdp=4),
    "tpu-v5p-64": MeshSpec(fsdp=32),
    "tpu-v5p-128-tp": MeshSpec(fsdp=16, tensor=4),
}


def requested_spec(text: str) -> MeshSpec | None:
  """The MeshSpec a `--mesh` value names, without looking at devices; None for "auto"."""
  text = str(text).strip()
  if text == "1":
    return MeshSpec()
  if text == "auto":
    return None
  if text in PRESETS:
    return PRESETS[text]
  if not re.fullmatch(r"\s*[a-z]+\s*:\s*\d+\s*(,\s*[a-z]+\s*:\s*\d+\s*)*", text):
    raise CaopdError(f"--mesh={text}: expected 1, auto, a preset ({', '.join(PRESETS)}) or sizes like "
                     "data:2,fsdp:4,tensor:1")
  sizes = {}
  for part in text.split(","):
    axis, size = (s.strip() for s in part.split(":"))
    if axis not in AXES:
      raise CaopdError(f"--mesh={text}: unknown axis {axis!r}; the axes are {', '.join(AXES)}")
    if axis in sizes or int(size) < 1:
      raise CaopdError(f"--mesh={text}: axis {axis!r} given twice or with a size below 1")
    sizes[axis] = int(size)
  return MeshSpec(**sizes)


def parse_mesh(text: str, device_count: int | None = None, process_count: int | None = None) -> MeshSpec:
  """The MeshSpec of a `--mesh` value, checked against `device_count` (default: all devices)."""
  device_count = jax.device_count() if device_count is None else device_count
  process_count = jax.process_count() if process_count is None else process_count
  spec = requested_spec(text)
  if spec is None:   # auto
    if process_count > 1 and device_count % process_count == 0:
      return MeshSpec(data=process_count, fsdp=device_count // process_count)
    return MeshSpec(fsdp=device_count)
  if spec.size != device_count and str(text).strip() != "1":
    raise CaopdError(f"--mesh={text} ({spec}) needs {spec.size} devices, but {device_count} are visible "
                     f"({jax.default_backend()}); pick a mesh whose sizes multiply to {device_count}")
  return spec


def make_mesh(text: str, devices=None) -> jax.sharding.Mesh:
  """The Mesh of a `--mesh` value over `devices` (default: all; "1": the first device).

  Device order follows the hardware topology where JAX knows it (TPU ICI, GPUs of one host), with
  whole processes kept together on the data axis when the mesh spans hosts.
  """
  devices = list(jax.devices() if devices is None else devices)
  if str(text).strip() == "1":
    return jax.sharding.Mesh(np.array(devices[:1]).reshape(1, 1, 1), AXES)
  spec = parse_mesh(text, len(devices))
  processes = len({d.process_index for d in devices})
  try:
    if processes > 1 and spec.data % processes == 0:
      per_host = MeshSpec(spec.data // processes, spec.fsdp, spec.tensor)
      grid = mesh_utils.create_hybrid_device_mesh(tuple(per_host), (processes, 1, 1), devices, process_is_granule=True)
    else:
      grid = mesh_utils.create_device_mesh(tuple(spec), devices)
  except (ValueError, NotImplementedError, AssertionError):   # topologies it does not model: process-major order
    grid = np.array(sorted(devices, key=lambda d: (d.process_index, d.id))).reshape(tuple(spec))
  return jax.sharding.Mesh(grid, AXES)
