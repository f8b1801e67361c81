"""What a rollout compiles on the calling thread once its batch starts shrinking, with the smaller batches' programs
compiled in the background (`rollout.compaction.precompile`, on accelerators; forced on here). Used by
tests/test_rollout.py and tests/multi_device/check_meshes.py."""

import logging

import jax

from caopd_jax import rollout
from caopd_jax.rollout import compaction, sampler


class _Compiles(logging.Handler):
  """Records (shrinks so far, program name) for every XLA compile JAX logs."""

  def __init__(self, shrinks: list):
    super().__init__()
    self.shrinks, self.seen = shrinks, []

  def emit(self, record):
    text = record.getMessage()
    if text.startswith("Finished XLA compilation of "):
      self.seen.append((len(self.shrinks), text.split("compilation of ")[1].split(" ")[0]))


def compiles_after_the_first_shrink(monkeypatch, *args, **kwargs) -> tuple[rollout.Rollouts, list[str]]:
  """rollout.sample(*args, **kwargs) with background compiles that are waited for before each shrink -> (its
  rollouts, the programs compiled on this thread from the first shrink on: "jit(_decode)", "jit(gather)", ...)."""
  futures, shrinks = [], []
  precompile, plan = compaction.precompile, compaction.plan

  def waiting_plan(*a):
    for future in futures:
      future.result()      # a failed background compile fails the test
    shrinks.append(True)
    return plan(*a)

  monkeypatch.setattr(sampler, "_precompiling", lambda: True)
  monkeypatch.setattr(compaction, "precompile", lambda *a: futures.extend(precompile(*a)) or futures)
  monkeypatch.setattr(compaction, "plan", waiting_plan)
  handler, logger = _Compiles(shrinks), logging.getLogger("jax")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      out = rollout.sample(*args, **kwargs)
  finally:
    logger.removeHandler(handler)
  assert futures and shrinks, "the batch never shrank, or nothing was compiled in the background"
  return out, [name for shrunk, name in handler.seen if shrunk]
