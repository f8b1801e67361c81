"""What the program needs to know about an accelerator: memory per device, peak bf16 FLOP/s and (TPUs) the VMEM a
Pallas kernel may use.

    chip = chip_of(device)          # a jax Device, real or from a TPU topology description
    chip.hbm_bytes, chip.peak_flops, chip.vmem_limit

Figures are per JAX device (a v5p device is a two-TensorCore megacore chip; a v4 device one TensorCore, as JAX's
topologies describe them) from the vendors' published specifications and Pallas' own table
(jax.experimental.pallas.tpu.get_tpu_info_for_chip, per core). HBM is what the TPU compiler lets a program
allocate (its "available HBM" on an over-sized compile: 15.25 GiB on v4, 15.75 v5e, 95.74 v5p, 31.25 v6e).
`vmem_limit` is the scoped VMEM the token-stats kernels ask Mosaic for: half the core's VMEM on v5e / v6e
(128 MiB), 48 of v5p's 64 MiB, all 16 MiB of v4's. A real GPU's memory is what JAX's allocator may use
(`memory_stats()["bytes_limit"]`: XLA_PYTHON_CLIENT_MEM_FRACTION of the card), not the card's size; a CPU device's
is the host's RAM shared by the process's CPU devices. A device of no known kind reports its own limit where JAX
has one, and no peak; hbm_bytes 0 means unknown (a topology device of an unlisted TPU kind).
"""

import os
from typing import NamedTuple

import jax

GIB, MIB = 2**30, 2**20


class Chip(NamedTuple):
  """name: a short name (v5p, H200, cpu); hbm_bytes: memory one device may use (0: unknown); peak_flops: dense
  bf16 FLOP/s (0: unknown); vmem_limit: TPU scoped VMEM for Pallas kernels (0: not a TPU)."""
  name: str
  hbm_bytes: int
  peak_flops: float
  vmem_limit: int


# device_kind (as JAX reports it) -> figures per device.
KNOWN = {
    "TPU v4": Chip("v4", int(15.25 * GIB), 137.5e12, 16 * MIB),     # a device is one TensorCore
    "TPU v5 lite": Chip("v5e", int(15.75 * GIB), 197e12, 64 * MIB),
    "TPU v5": Chip("v5p", int(95.74 * GIB), 459e12, 48 * MIB),
    "TPU v5p": Chip("v5p", int(95.74 * GIB), 459e12, 48 * MIB),
    "TPU v6 lite": Chip("v6e", int(31.25 * GIB), 918e12, 64 * MIB),
    "NVIDIA H100 80GB HBM3": Chip("H100", 80 * 10**9, 989e12, 0),
    "NVIDIA H200": Chip("H200", 141 * 10**9, 989e12, 0),
}


def _host_memory() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _memory_limit(device) -> int:
  """The bytes JAX's allocator may use on `device`; 0 where it does not say (topology devices, CPUs)."""
  try:
    return int((device.memory_stats() or {}).get("bytes_limit", 0))
  except Exception:  # noqa: BLE001  (topology devices and some backends have no memory_stats)
    return 0


def chip_of(device) -> Chip:
  """The Chip of a JAX device (module docstring)."""
  if device.platform == "cpu":
    return Chip("cpu", _host_memory() // max(1, jax.local_device_count("cpu")), 0.0, 0)
  kind = getattr(device, "device_kind", "")
  limit = _memory_limit(device)
  if kind in KNOWN:
    known = KNOWN[kind]
    return known._replace(hbm_bytes=limit) if device.platform == "gpu" and limit else known
  vmem = 16 * MIB if device.platform == "tpu" else 0     # the smallest TPU scoped default
  return Chip(kind or device.platform, limit, 0.0, vmem)
