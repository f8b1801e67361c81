"""Multi-process start-up and process-local data -> global arrays.

`initialize` starts `jax.distributed` when the environment describes more than one process:
  - explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what launch/*.sh export);
  - SLURM (SLURM_NTASKS > 1), Cloud TPU VMs with several workers (TPU_WORKER_HOSTNAMES lists more
    than one host) and CAOPD_DISTRIBUTED=auto (what launch/tpu_pod.sh sets): JAX's own cluster
    detection, `jax.distributed.initialize()` without arguments.
One process on one host needs none of this.

Data: every process reads the same examples in the same order (the data pipeline is seeded), so the
host-side work of an iteration (prompts, verification, rewriting) is the same everywhere; `place` puts
each device's share of such host data (a batch's rows, loaded weights) on it, and `to_host` gathers a
sharded result back.
"""

import os

import jax
import numpy as np


def cluster_environment(env=None) -> dict | None:
  """The explicit coordinator settings, {} for a detected SLURM / multi-host TPU cluster, None for one process."""
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS"):
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} are not")
    return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"], "num_processes": int(env["JAX_NUM_PROCESSES"]),
            "process_id": int(env["JAX_PROCESS_ID"])}
  if int(env.get("SLURM_NTASKS", "1")) > 1 or env.get("CAOPD_DISTRIBUTED") == "auto":
    return {}
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return {}
  return None


def initialize(env=None) -> bool:
  """Starts jax.distributed when the environment asks for several processes; True if it did."""
  settings = cluster_environment(env)
  if settings is None:
    return False
  try:  # CPU processes (tests, debugging) exchange collectives through gloo; GPUs and TPUs ignore this
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, ValueError):
    pass
  jax.distributed.initialize(**settings)
  return True


def place(host, shardings):
  """Global arrays of a pytree `host` whose leaves are the same whole arrays on every process (NumPy or
  process-local jax arrays): each device gets its shard. `shardings`: one sharding, or a tree of them."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, host)
  return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]), host, shardings)


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) array as NumPy on this host."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
