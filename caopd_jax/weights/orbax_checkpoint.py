"""Orbax checkpoints written by this project.

Layout of one checkpoint folder:

    PATH/model_config.json   {"format": "caopd-jax-params", "version": 1, "config": {...}}
    PATH/params/             Orbax (StandardCheckpointer) pytree of the params
    PATH/tokenizer/          Hugging Face tokenizer files, when saved with a tokenizer

Run folders hold several steps, in one of two layouts:

    RUN/<step>/...                              several checkpoint folders as above
    RUN/model_config.json, RUN/tokenizer/,      a training run (caopd_jax.train): one model config,
    RUN/checkpoints/<step>/params/              the student's params per step (beside the trainer's
                                                own train_state/ and loop/ items)

Pointing `load_orbax` at `RUN` picks the latest complete step, `step=N` a given one.
"""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from caopd_jax import run_folder
from caopd_jax.errors import CheckpointFormatError, InputNotFoundError
from caopd_jax.files import atomic_directory, write_json
from caopd_jax.models import transformer
from caopd_jax.models.config import ModelConfig, config_from_dict, config_to_dict

FORMAT = "caopd-jax-params"
CONFIG_FILE = run_folder.MODEL_CONFIG


def _step_dirs(path: str) -> dict[int, tuple[str, str]]:
  """Complete steps of a run folder: step -> (folder with model_config.json, folder with params/)."""
  training = os.path.join(path, run_folder.CHECKPOINTS)
  if os.path.exists(os.path.join(path, CONFIG_FILE)) and os.path.isdir(training):
    return {int(name): (path, os.path.join(training, name)) for name in os.listdir(training)
            if name.isdigit() and os.path.isdir(os.path.join(training, name, "params"))}
  if not os.path.isdir(path):
    return {}
  return {int(name): (os.path.join(path, name),) * 2 for name in os.listdir(path)
          if name.isdigit() and os.path.exists(os.path.join(path, name, CONFIG_FILE))}


def is_orbax_checkpoint(path: str) -> bool:
  return os.path.exists(os.path.join(path, CONFIG_FILE)) or bool(_step_dirs(path))


def resolve(path: str, step: int | None = None) -> tuple[str, str]:
  """(folder with model_config.json and tokenizer/, folder with params/) for `path`: a checkpoint
  folder, or a run folder's latest step or `step`."""
  steps = _step_dirs(path)
  if not steps and os.path.isdir(os.path.join(path, run_folder.CHECKPOINTS)):
    raise InputNotFoundError(f"{path}: a training run with no complete checkpoint yet ("
                             f"{os.path.join(path, run_folder.CHECKPOINTS)} has no step folder with params/)")
  if step is None and not steps and os.path.exists(os.path.join(path, CONFIG_FILE)):
    return path, path
  if not steps:
    raise InputNotFoundError(f"{path}: no checkpoint here (no {CONFIG_FILE} and no complete step folders)")
  if step is None:
    return steps[max(steps)]
  if step not in steps:
    raise InputNotFoundError(f"{path}: no step {step}; available steps: {sorted(steps)}")
  return steps[step]


def run_step(path: str, step: int | None = None) -> int | None:
  """The step `resolve` picks when `path` is a training run's folder (None for a single checkpoint)."""
  steps = _step_dirs(path)
  if not steps:
    return None
  return max(steps) if step is None else step


def read_config(path: str) -> ModelConfig:
  config_path = os.path.join(path, CONFIG_FILE)
  try:
    with open(config_path) as f:
      meta = json.load(f)
    if meta.get("format") != FORMAT:
      raise CheckpointFormatError(f"{config_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    return config_from_dict(meta["config"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise CheckpointFormatError(f"{config_path}: unreadable model config ({e})") from None


def write_model_config(folder: str, config: ModelConfig) -> None:
  """folder/model_config.json in this project's format."""
  write_json(os.path.join(folder, CONFIG_FILE), {"format": FORMAT, "version": 1, "config": config_to_dict(config)})


def save_orbax(path: str, config: ModelConfig, params: dict, tokenizer=None, overwrite: bool = False) -> None:
  """Writes one checkpoint folder (see the module docstring); atomic: all or nothing."""
  with atomic_directory(path, overwrite=overwrite) as tmp:
    write_model_config(tmp, config)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, "params"), params)
    checkpointer.wait_until_finished()
    if tokenizer is not None:
      tokenizer.save(os.path.join(tmp, run_folder.TOKENIZER))


def load_orbax(path: str, dtype=np.float32, step: int | None = None) -> tuple[ModelConfig, dict]:
  """(config, params as jax arrays of `dtype`) from a checkpoint folder or a run folder."""
  config_folder, folder = resolve(path, step)
  config = read_config(config_folder)
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])   # every process reads the whole tree
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                        transformer.param_shapes(config, dtype))
  try:
    params = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(folder, "params")), target)
  except Exception as e:  # Orbax raises a variety of errors for missing/corrupt/mismatched trees
    raise CheckpointFormatError(f"{folder}/params: cannot restore the params ({type(e).__name__}: {e})") from None
  return config, jax.tree.map(lambda x: x.astype(dtype), params)
