"""Hugging Face model folders: `config.json` + `*.safetensors` (single file or sharded with an index).

`load_hf` reads one into (ModelConfig, params); `save_hf` writes one that
transformers' `AutoModelForCausalLM.from_pretrained` loads. Writes go to a
temporary sibling folder that is renamed into place at the end, so a failure
never leaves a half-written checkpoint.
"""

import json
import os

import jax
import numpy as np

from caopd_jax.errors import CheckpointFormatError, InputNotFoundError
from caopd_jax.files import atomic_directory
from caopd_jax.models import transformer
from caopd_jax.models.config import ModelConfig
from caopd_jax.weights import hf_config
from caopd_jax.weights import hf_layout
from caopd_jax.weights.safetensors_file import SafetensorsFile, write

SHARD_BYTES = 4 * 1024 ** 3


def is_hf_folder(path: str) -> bool:
  return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def read_config(path: str) -> ModelConfig:
  config_path = os.path.join(path, "config.json")
  try:
    with open(config_path) as f:
      return hf_config.from_hf(json.load(f), where=config_path)
  except json.JSONDecodeError as e:
    raise CheckpointFormatError(f"{config_path}: not valid JSON ({e})") from None


def _open_shards(path: str) -> dict[str, SafetensorsFile]:
  """Tensor name -> the file holding it."""
  index_path = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index_path):
    with open(index_path) as f:
      weight_map = json.load(f)["weight_map"]
    files = {}
    for fname in sorted(set(weight_map.values())):
      fpath = os.path.join(path, fname)
      if not os.path.exists(fpath):
        raise InputNotFoundError(f"{index_path} lists {fname}, which is missing from {path}")
      files[fname] = SafetensorsFile(fpath)
    return {name: files[fname] for name, fname in weight_map.items()}
  candidates = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not candidates:
    found = ", ".join(sorted(os.listdir(path))) or "nothing"
    raise InputNotFoundError(f"{path}: no *.safetensors weights (found: {found}); pickled *.bin checkpoints "
                             "are not read, convert them to safetensors first")
  by_name = {}
  for fname in candidates:
    shard = SafetensorsFile(os.path.join(path, fname))
    by_name.update({name: shard for name in shard.names()})
  return by_name


def load_hf(path: str, dtype=np.float32) -> tuple[ModelConfig, dict]:
  """(config, params as NumPy arrays of `dtype`) from a HF model folder."""
  config = read_config(path)
  shards = _open_shards(path)
  expected = transformer.param_shapes(config)
  params = hf_layout.params_from_hf(config, expected, lambda n: shards[n].read(n), set(shards), path, dtype)
  return config, params


def save_hf(path: str, config: ModelConfig, params: dict, tokenizer=None, overwrite: bool = False) -> None:
  """Writes a transformers-loadable folder (config.json, safetensors shards, tokenizer files if given)."""
  tensors = hf_layout.hf_from_params(config, jax.device_get(params))
  dtype_name = str(next(iter(tensors.values())).dtype)
  with atomic_directory(path, overwrite=overwrite) as tmp:
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config.to_hf(config, dtype_name), f, indent=2)
    shards, current, size = [], {}, 0
    for name, array in tensors.items():
      if current and size + array.nbytes > SHARD_BYTES:
        shards.append(current)
        current, size = {}, 0
      current[name] = array
      size += array.nbytes
    shards.append(current)
    if len(shards) == 1:
      write(os.path.join(tmp, "model.safetensors"), shards[0], {"format": "pt"})
    else:
      weight_map = {}
      for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write(os.path.join(tmp, fname), shard, {"format": "pt"})
        weight_map.update({name: fname for name in shard})
      total = sum(a.nbytes for a in tensors.values())
      with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    if tokenizer is not None:
      tokenizer.save(tmp)
