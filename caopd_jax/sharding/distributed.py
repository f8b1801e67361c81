"""Multi-process start-up and process-local data -> global arrays.

`initialize` starts `jax.distributed` when the environment describes more than one process:
  - explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what launch/*.sh export);
  - SLURM (SLURM_NTASKS > 1), Cloud TPU VMs with several workers (TPU_WORKER_HOSTNAMES lists more
    than one host) and CAOPD_DISTRIBUTED=auto (what launch/tpu_pod.sh sets): JAX's own cluster
    detection, `jax.distributed.initialize()` without arguments.
One process on one host needs none of this.

Data: every process loads the same examples and reads its own share of each batch (`distill/global_batch.py`);
`allgather_objects` exchanges the host-side results, so every process then holds the same whole batch.
`place` puts each device's share of such host data (a batch's rows, loaded weights) on it, and `to_host`
gathers a sharded result back.
"""

import os
import pickle

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


def allgather_objects(obj) -> list:
  """Every process's `obj` (a collective), in process order, pickled: exact for NumPy arrays of any dtype and
  shape. Two collectives; the payload is padded to a power of two so that the gather compiles a bounded number
  of programs over a run. One process: [obj], nothing pickled."""
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils
  payload = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int32)))[:, 0]
  padded = np.zeros(1 << max(10, int(sizes.max() - 1).bit_length()), np.uint8)
  padded[:payload.size] = payload
  stacked = np.asarray(multihost_utils.process_allgather(padded))
  return [pickle.loads(part[:size].tobytes()) for part, size in zip(stacked, sizes)]


def sync_processes(name: str) -> None:
  """Waits until every process has reached the point called `name` (nothing to wait for with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def to_host(x: jax.Array) -> np.ndarray:
  """The whole of a (possibly multi-process) array as NumPy on this host."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
