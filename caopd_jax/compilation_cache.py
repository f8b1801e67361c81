"""JAX's persistent compilation cache, on by default for the commands that compile (train, eval, demo, generate).

A run compiles its training step and the sampler's prefill and decode programs (once per prompt width and batch
size) in its first iteration: on an H200 the first rollout call of a Qwen3-0.6B run spends ~19-21 s in compiles
(bench/RESULTS.md). With the cache, a later process that compiles the same programs (a resumed or restarted run, an
evaluation of its checkpoints, the next run of a sweep) loads them instead: the same first call took 5.5 s, and a
second trainer process finished its first iteration in 8.5 s instead of 37.5 s. JAX only keeps programs that took
at least a second to compile (`JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`), and a program's key covers its code,
shapes, flags and the JAX version, so a changed program is compiled anew.

Folder: $JAX_COMPILATION_CACHE_DIR when it is set (an empty value turns the cache off; on a pod, a folder every
host can read shares the hosts' compiles), else $XDG_CACHE_HOME/caopd_jax/xla (default ~/.cache/caopd_jax/xla).
"""

import os
import sys

ENV = "JAX_COMPILATION_CACHE_DIR"


def default_folder() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "caopd_jax", "xla")


def enable() -> str | None:
  """Points JAX's persistent cache at $JAX_COMPILATION_CACHE_DIR, or at `default_folder()` when that is unset (and
  sets it, so that subprocesses share the folder). Returns the folder, or None when the cache is off."""
  folder = os.environ.get(ENV)
  if folder is None:
    folder = os.environ[ENV] = default_folder()
  if "jax" in sys.modules:   # imported already: its config has read the environment
    import jax
    jax.config.update("jax_compilation_cache_dir", folder or None)
  return folder or None
