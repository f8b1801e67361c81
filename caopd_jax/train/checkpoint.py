"""A training run's Orbax checkpoints (save, keep-last-N, exact resume) and the checks on its folder (the layout:
caopd_jax/run_folder.py).

    RUN/checkpoints/<step>/      params/ (the student), train_state/ (step, teacher, optimizer state),
                                 loop/ (JSON: the data iterator's position, the step, the state's fingerprints)
    RUN/damaged_checkpoints/     steps that did not restore, set aside (`restore_latest`)

Orbax's CheckpointManager writes each step into a temporary folder and renames it when complete,
so a run killed mid-save keeps its previous checkpoints intact; saves are asynchronous when asked.
"""

import contextlib
import json
import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from caopd_jax import run_folder
from caopd_jax.distill.step import TrainState
from caopd_jax.errors import CaopdError
from caopd_jax.files import write_json
from caopd_jax.sharding.distributed import sync_processes, to_host
from caopd_jax.train.config import default_config, flat_items
from caopd_jax.weights.orbax_checkpoint import write_model_config

# Fields a resumed run may change: none changes the math of a step. How long, how often to save, how to log and
# evaluate; where the run folder and the data root are (a run folder may be moved, copied or named by a relative
# path); the mesh and its sharding rules (checkpoints restore onto any mesh); the prompt-width rungs (padding); the
# memory settings (recomputation, and micro-batches: the same sums, accumulated in another grouping); how the
# layers are driven (a scan or unrolled: the same layers).
RESUMABLE_CHANGES = ("train.steps", "checkpoint.", "log.", "eval.", "train.output_dir", "train.allow_other_files",
                     "data.data_dir", "mesh", "sharding.", "train.prompt_buckets", "train.remat",
                     "train.unroll_layers", "train.micro_batch_size", "target")


def check_output_dir(path: str, allow_other_files: bool = False) -> None:
  """Raises CaopdError unless `path` can hold this run: a local folder that is new, empty, or holds only what a
  run writes (run_folder.ENTRIES, with a config.json of ours). allow_other_files lets a run write beside other
  files (never over a config.json that is not a run's)."""
  if not path.strip():
    raise CaopdError("config.train.output_dir is empty (an unset variable?); set it to the run folder, e.g. "
                     "--config.train.output_dir=runs/caopd")
  if "://" in path:
    raise CaopdError(f"config.train.output_dir={path!r} is a remote path; run folders must be local (or mounted, "
                     "e.g. a bucket through gcsfuse): give the mounted path")
  if os.path.exists(path) and not os.path.isdir(path):
    raise CaopdError(f"config.train.output_dir={path} is a file, not a folder; choose another path")
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK):
    raise CaopdError(f"config.train.output_dir={path}: {existing} is not writable (a read-only file system or its "
                     "permissions); make it writable or choose another folder")
  if not os.path.isdir(path):
    return
  config = os.path.join(path, run_folder.CONFIG)
  if os.path.isfile(config):
    try:
      with open(config) as f:
        ours = {"train", "distill", "rollout"} <= set(json.load(f))
    except (OSError, ValueError, TypeError):
      ours = False
    if not ours:   # refused even with allow_other_files: the run would overwrite it
      raise CaopdError(f"config.train.output_dir={path} holds a config.json that is not a run's (a model folder?), "
                       "which a run would overwrite; choose a new or empty folder")
  other = [name for name in sorted(os.listdir(path)) if name not in run_folder.ENTRIES and not name.startswith(".")]
  if other and not allow_other_files:
    raise CaopdError(f"config.train.output_dir={path} holds files a run did not write ({', '.join(other[:5])}"
                     f"{', ...' if len(other) > 5 else ''}); choose a new or empty folder, or set "
                     "train.allow_other_files=True to write the run beside them")


def check_resumable(run_dir: str, config: dict) -> None:
  """Raises CaopdError listing the fields in which `config` differs from the saved config of the run in `run_dir`
  (nothing to check where no checkpoint was written yet: that run starts again). A field that the saved config
  lacks (added to the trainer since the run began) counts as having its default value then."""
  steps = os.path.join(run_dir, run_folder.CHECKPOINTS)
  if not (os.path.isdir(steps) and any(name.isdigit() for name in os.listdir(steps))):
    return
  with open(os.path.join(run_dir, run_folder.CONFIG)) as f:
    saved = dict(flat_items(json.load(f)))
  as_saved = lambda tree: dict(flat_items(json.loads(json.dumps(tree))))  # noqa: E731  (tuples -> lists)
  now, defaults = as_saved(config), as_saved(default_config().to_dict())
  saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
  changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
             and not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES)]
  if changed:
    details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
    raise CaopdError(f"{run_dir} holds a run with a different config ({details}); resume it with the same config "
                     "(only fields that do not change a step's math may change: "
                     f"{', '.join(p + ('*' if p.endswith('.') else '') for p in RESUMABLE_CHANGES)}) or choose "
                     "another train.output_dir")


def _fingerprints(tree) -> list[int]:
  """Per leaf of `tree` (in tree order): the wrapping uint32 sum of its elements' bits. Any single flipped bit
  changes its leaf's value; integer sums do not depend on the reduction order, so the value is exact on any mesh."""
  def one(x):
    bits = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
    return jnp.sum(bits.astype(jnp.uint32), dtype=jnp.uint32)
  return [int(to_host(v)) for v in jax.jit(lambda t: [one(x) for x in jax.tree.leaves(t)])(tree)]


def _items(state: TrainState) -> dict:
  """The checkpoint items of a state: params (the student) and train_state (the rest)."""
  return {"params": state.student,
          "train_state": {"step": state.step, "teacher": state.teacher, "opt_state": state.opt_state}}


class DamagedCheckpoint(CaopdError):
  """A checkpoint step that does not restore (missing or truncated files, an item missing, bits changed)."""


class RunCheckpoints:
  """The checkpoints of one run folder."""

  def __init__(self, run_dir: str, *, keep: int, async_save: bool):
    self.run_dir = os.path.abspath(run_dir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(os.path.join(self.run_dir, run_folder.CHECKPOINTS), options=options)
    self.complete = self.manager.latest_step()   # the newest step known to be written whole
    self.pending = None                          # the step of a save that may still be writing
    self.failed = False                          # a save failed (reported once; the run ends)
    _quiet_asyncio()

  def write_run_files(self, config: dict, model_config, tokenizer) -> None:
    """config.json, model_config.json and tokenizer/ (once, at the start of a new run)."""
    write_json(os.path.join(self.run_dir, run_folder.CONFIG), config)
    write_model_config(self.run_dir, model_config)
    tokenizer.save(os.path.join(self.run_dir, run_folder.TOKENIZER))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, loop: dict) -> None:
    """Saves `state` at its step with the loop's JSON state and the state's fingerprints (asynchronously when
    configured). A failure to write (a full disk, a read-only folder) is a CaopdError naming the step, the folder and
    the cause; the checkpoints already written stay intact."""
    step, items = int(to_host(state.step)), _items(state)
    loop = {**loop, "fingerprints": {name: _fingerprints(tree) for name, tree in items.items()}}
    self.wait()   # a failure of the previous (asynchronous) save is that save's, not this one's
    self.pending = step
    self._check_room(jax.tree.leaves(items))
    with self._writing():
      self.manager.save(step, args=ocp.args.Composite(
          params=ocp.args.StandardSave(items["params"]), train_state=ocp.args.StandardSave(items["train_state"]),
          loop=ocp.args.JsonSave(loop)), force=True)

  def restore(self, step: int, like: TrainState) -> tuple[TrainState, dict]:
    """(state, loop JSON) of `step`, restored into the structure, shapes and dtypes of `like` and checked against
    the fingerprints saved with it; DamagedCheckpoint when it cannot be read or does not match."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _items(like))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract["params"]),
          train_state=ocp.args.StandardRestore(abstract["train_state"]), loop=ocp.args.JsonRestore()))
    except Exception as error:  # noqa: BLE001  (Orbax and TensorStore raise many kinds; all mean "cannot read")
      raise DamagedCheckpoint(f"step {step} cannot be read: {_cause(error)}") from error
    for name, saved in restored["loop"].get("fingerprints", {}).items():
      leaves = jax.tree_util.tree_flatten_with_path(restored[name])[0]
      for (path, _), now, then in zip(leaves, _fingerprints(restored[name]), saved, strict=True):
        if now != then:
          raise DamagedCheckpoint(f"step {step}: {name}{jax.tree_util.keystr(path)} is not the array that was saved "
                                  f"(bit fingerprint {now} != {then})")
    rest = restored["train_state"]
    return TrainState(rest["step"], restored["params"], rest["teacher"], rest["opt_state"]), restored["loop"]

  def restore_latest(self, like: TrainState, message) -> tuple[TrainState, dict] | None:
    """The newest step that restores (`restore`), or None when the run has no checkpoint. Each newer step that
    does not restore is moved into RUN/damaged_checkpoints/ (never deleted) and reported through `message`;
    CaopdError when no step restores."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        restored, self.complete = self.restore(step, like), step
        return restored
      except DamagedCheckpoint as error:
        aside = self._set_aside(step)
        message(f"checkpoint {error} -- moved to {aside}; trying the one before")
    if steps:
      raise CaopdError(f"no checkpoint of {self.run_dir} restores (steps {steps}, now in "
                       f"{os.path.join(self.run_dir, run_folder.DAMAGED)}); remove the run folder to start again, or choose "
                       "another train.output_dir")
    return None

  def _set_aside(self, step: int) -> str:
    """Moves checkpoint `step` to RUN/damaged_checkpoints/<step>-<UTC time>/ (process 0; all processes wait)."""
    aside = os.path.join(self.run_dir, run_folder.DAMAGED, f"{step}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    sync_processes(f"caopd-set-aside-{step}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      os.rename(os.path.join(self.run_dir, run_folder.CHECKPOINTS, str(step)), aside)
    sync_processes(f"caopd-set-aside-{step}-done")
    self.manager.reload()
    return aside

  def _kept(self) -> str:
    return (f"the checkpoint of step {self.complete} is intact" if self.complete is not None
            else "no earlier checkpoint exists")

  def _check_room(self, arrays) -> None:
    """CaopdError before any byte is written when the checkpoint folder is not writable, or its file system has
    less free space than this process's share of the arrays (plus 1% and 16 MiB)."""
    folder = os.fspath(self.manager.directory)
    if not os.access(folder, os.W_OK):
      raise CaopdError(f"cannot write the checkpoint of step {self.pending}: {folder} is not writable (a read-only "
                       f"file system or its permissions); {self._kept()}. Make it writable, then run the same "
                       "command again")
    need = sum(x.nbytes for x in arrays) / jax.process_count() * 1.01 + 16 * 2**20
    free = shutil.disk_usage(folder).free
    if free < need:
      raise CaopdError(f"not enough free space for the checkpoint of step {self.pending} in {folder}: it needs about "
                       f"{need / 2**20:,.0f} MiB, the file system has {free / 2**20:,.0f} MiB free; {self._kept()}. "
                       "Free space (or lower checkpoint.keep), then run the same command again")

  @contextlib.contextmanager
  def _writing(self):
    """Turns a failure to write the pending step into one CaopdError (the earlier steps are intact)."""
    try:
      yield
    except Exception as error:  # noqa: BLE001  (Orbax wraps OSError in several layers)
      self.failed = True
      raise CaopdError(f"could not write the checkpoint of step {self.pending} into {self.manager.directory}: "
                       f"{_cause(error)}; {self._kept()}. Free space or fix the folder's permissions, then run the "
                       "same command again") from None

  def wait(self) -> None:
    """Blocks until background saves have finished (CaopdError, as for `save`, if one failed: once, and the step
    is never counted complete afterwards)."""
    if self.failed:
      return
    with self._writing():
      self.manager.wait_until_finished()
    if self.pending is not None:
      self.complete, self.pending = self.pending, None

  def close(self) -> None:
    """Waits for the last save and stops Orbax's threads. After a failed save (already reported) the other errors
    Orbax kept from that save are not raised again: they would hide the report."""
    self.wait()
    if self.failed:
      with contextlib.suppress(Exception):
        self.manager.close()
      return
    with self._writing():
      self.manager.close()


def _cause(error: BaseException) -> str:
  """The innermost error's message, on one line, its end if long (Orbax and TensorStore wrap the OS's error in long
  chains and put its words last: '... Failed to write 25076 bytes to file 7: File too large')."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text if len(text) <= 300 else '...' + text[-300:]}"


class _SecondaryAsyncioErrors(logging.Filter):
  """Drops asyncio's "exception was never retrieved" reports: the failed checkpoint writes they repeat (hundreds
  of lines of tracebacks) reach the caller as one CaopdError."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "exception was never retrieved" not in str(record.msg)


def _quiet_asyncio() -> None:
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _SecondaryAsyncioErrors) for f in logger.filters):
    logger.addFilter(_SecondaryAsyncioErrors())
