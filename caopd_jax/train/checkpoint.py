"""A training run's folder and its Orbax checkpoints (save, keep-last-N, exact resume).

    RUN/config.json              the training config (a resumed run must match it, see `check_resumable`)
    RUN/model_config.json        the model config, and RUN/tokenizer/: so `models.load(RUN)` and
                                 `load_tokenizer(RUN)` read the latest student like any checkpoint
    RUN/checkpoints/<step>/      params/ (the student), train_state/ (step, teacher, optimizer state),
                                 loop/ (JSON: the data iterator's position and the step)

Orbax's CheckpointManager writes each step into a temporary folder and renames it when complete,
so a run killed mid-save keeps its previous checkpoints intact; saves are asynchronous when asked.
"""

import json
import os

import jax
import orbax.checkpoint as ocp

from caopd_jax.errors import CaopdError
from caopd_jax.sharding.distributed import to_host
from caopd_jax.train.step import TrainState
from caopd_jax.weights.atomic import write_json
from caopd_jax.weights.orbax_checkpoint import TRAINING_CHECKPOINTS, write_model_config

RUN_CONFIG = "config.json"
# Fields a resumed run may change: how long, how often to save, how to log.
RESUMABLE_CHANGES = ("train.steps", "checkpoint.", "log.")


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def check_resumable(run_dir: str, config: dict) -> None:
  """Raises CaopdError listing the fields in which `config` differs from the run's saved config."""
  with open(os.path.join(run_dir, RUN_CONFIG)) as f:
    saved = _flatten(json.load(f))
  now = _flatten(json.loads(json.dumps(config)))  # tuples -> lists, as saved
  changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
             and not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUMABLE_CHANGES)]
  if changed:
    details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
    raise CaopdError(f"{run_dir} holds a run with a different config ({details}); resume it with the same config "
                     "(only train.steps, checkpoint.* and log.* may change) or choose another train.output_dir")


class RunCheckpoints:
  """The checkpoints of one run folder."""

  def __init__(self, run_dir: str, *, keep: int, async_save: bool):
    self.run_dir = os.path.abspath(run_dir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(os.path.join(self.run_dir, TRAINING_CHECKPOINTS), options=options)

  def write_run_files(self, config: dict, model_config, tokenizer) -> None:
    """config.json, model_config.json and tokenizer/ (once, at the start of a new run)."""
    write_json(os.path.join(self.run_dir, RUN_CONFIG), config)
    write_model_config(self.run_dir, model_config)
    tokenizer.save(os.path.join(self.run_dir, "tokenizer"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, loop: dict) -> None:
    """Saves `state` at its step with the loop's JSON state (asynchronously when configured)."""
    step = int(to_host(state.step))
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.student),
        train_state=ocp.args.StandardSave({"step": state.step, "teacher": state.teacher, "opt_state": state.opt_state}),
        loop=ocp.args.JsonSave(loop)), force=True)

  def restore(self, step: int, like: TrainState) -> tuple[TrainState, dict]:
    """(state, loop JSON) of `step`, restored into the structure, shapes and dtypes of `like`."""
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract(like.student)),
        train_state=ocp.args.StandardRestore(abstract({"step": like.step, "teacher": like.teacher,
                                                       "opt_state": like.opt_state})),
        loop=ocp.args.JsonRestore()))
    rest = restored["train_state"]
    return TrainState(rest["step"], restored["params"], rest["teacher"], rest["opt_state"]), restored["loop"]

  def wait(self) -> None:
    """Blocks until background saves have finished."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
