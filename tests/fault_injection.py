"""Runs `python -m caopd_jax.train ARGS` with one fault injected: the process SIGKILLs itself at a chosen moment, or
its disk fills during a checkpoint's write.

    python tests/fault_injection.py FAULT N -- --config=... [--config.X=Y ...]

FAULT, with N:
  append   N-th metrics.jsonl append: half the line is written, then the kill (a torn line);
  save     N-th checkpoint save: the save starts (asynchronous), then the kill 0-20 ms later (inside Orbax's write);
  timer    N milliseconds after start: the kill, wherever the run is (loading, compiling, sampling, a step);
  full     N-th checkpoint save: the file-size limit drops to 0 bytes after the room check, so every file Orbax writes
           fails (as on a disk filled meanwhile), and is lifted once Orbax's writing has ended; the trainer goes on.
The product has no hooks for this: the wrapper patches RunLogger._append / RunCheckpoints.save before it calls the
trainer's main. Without the fault firing (the run ends first) the exit status is the trainer's.
"""

import os
import random
import resource
import signal
import sys
import threading
import time


def _kill():
  os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str, n: int) -> None:
  from caopd_jax.train.checkpoint import RunCheckpoints
  from caopd_jax.train.logger import RunLogger
  calls = []
  if fault == "append":
    real_append = RunLogger._append

    def append(self, line: bytes):
      calls.append(1)
      if len(calls) == n:
        with open(self.path, "ab", buffering=0) as f:
          f.write(line[:len(line) // 2])
        _kill()
      real_append(self, line)
    RunLogger._append = append
  elif fault == "save":
    real_save = RunCheckpoints.save

    def save(self, state, loop):
      calls.append(1)
      real_save(self, state, loop)
      if len(calls) == n:
        time.sleep(random.uniform(0.0, 0.02))
        _kill()
    RunCheckpoints.save = save
  elif fault == "full":
    real_full_save = RunCheckpoints.save

    def save(self, state, loop):
      calls.append(1)
      if len(calls) != n:
        return real_full_save(self, state, loop)
      limits = resource.getrlimit(resource.RLIMIT_FSIZE)
      resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))
      try:
        real_full_save(self, state, loop)   # a synchronous save raises here, an asynchronous one later
        while self.manager.is_saving_in_progress():
          time.sleep(0.01)
      finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    RunCheckpoints.save = save
  elif fault == "timer":
    threading.Timer(n / 1000, _kill).start()
  else:
    raise SystemExit(f"unknown fault {fault!r}; use append, save, full or timer")


if __name__ == "__main__":
  fault, n, separator, *args = sys.argv[1:]
  assert separator == "--", "usage: fault_injection.py FAULT N -- TRAIN_ARGS"
  install(fault, int(n))
  from caopd_jax.cli import run_main
  from caopd_jax.train.__main__ import main
  run_main(main, args)
