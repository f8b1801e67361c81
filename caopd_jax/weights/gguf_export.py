"""Writing GGUF files (llama, qwen2, qwen3) that llama.cpp, transformers and our loader read.

Weights go out as F32, F16 or Q8_0 (1-D tensors, norms and biases, always F32,
as llama.cpp does); Llama q/k rows get llama.cpp's interleaved-RoPE permutation.
The tokenizer is stored as llama.cpp's `gpt2` BPE metadata; its pre-tokenizer
name is found by matching the tokenizer's pipeline against the ones the GGUF
reader knows, so a file we write reads back into the same tokenizer.
"""

import json
import os

import gguf
import jax
import numpy as np
from gguf import GGMLQuantizationType as Q

from caopd_jax.errors import CaopdError, UnsupportedModelError
from caopd_jax.files import atomic_file
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers.base import HFTokenizer
from caopd_jax.tokenizers.gguf_vocab import PIPELINES
from caopd_jax.weights import gguf_checkpoint, hf_layout

WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}
_FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5


def _gguf_names() -> dict[str, str]:
  """HF tensor-name pattern -> GGUF name pattern (per-layer names use {i})."""
  out = {}
  for short, long in gguf_checkpoint._LAYER_NAMES.items():
    for kind in ("weight", "bias"):
      out[f"model.layers.{{i}}.{long}.{kind}"] = f"blk.{{i}}.{short}.{kind}"
  for short, long in gguf_checkpoint._GLOBAL_NAMES.items():
    out[f"{long}.weight"] = f"{short}.weight"
  return out


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's q/k row permutation (inverse of gguf_checkpoint._unpermute)."""
  half = w.shape[0] // heads // 2
  return w.reshape(heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_tokenizer_name(tokenizer: HFTokenizer) -> str:
  state = json.loads(tokenizer.backend.to_str())
  for name, make in PIPELINES.items():
    pipeline = make()
    same_pre = json.loads(pipeline.pre_tokenizer.__getstate__()) == state["pre_tokenizer"]
    normalizer = json.loads(pipeline.normalizer.__getstate__()) if pipeline.normalizer else None
    if same_pre and normalizer == state["normalizer"] and \
        bool(state["model"].get("ignore_merges")) == pipeline.ignore_merges:
      return name
  raise UnsupportedModelError(
      f"the tokenizer of {tokenizer.source or '(memory)'} has a pre-tokenizer GGUF cannot name (known: "
      f"{', '.join(sorted(PIPELINES))}); export to an HF folder instead")


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int) -> None:
  if not isinstance(tokenizer, HFTokenizer) or json.loads(tokenizer.backend.to_str())["model"]["type"] != "BPE":
    raise UnsupportedModelError("GGUF export stores byte-level BPE tokenizers only; this one is "
                                f"{type(tokenizer).__name__}; export to an HF folder instead")
  state = json.loads(tokenizer.backend.to_str())
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  by_id = {i: t for t, i in vocab.items()}
  if sorted(by_id) != list(range(len(by_id))) or len(by_id) > vocab_size:
    raise UnsupportedModelError(f"tokenizer ids are not 0..{len(by_id) - 1} within the model's {vocab_size}")
  added = {a["content"]: a["special"] for a in state["added_tokens"]}
  tokens, types = [], []
  for i in range(vocab_size):
    if i in by_id:
      tokens.append(by_id[i])
      special = added.get(by_id[i])
      types.append(_NORMAL if special is None else _CONTROL if special else _USER_DEFINED)
    else:  # the model's embedding is larger than the vocabulary (e.g. Qwen): padding tokens
      tokens.append(f"[PAD{i}]")
      types.append(_UNUSED)
  merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer))
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(merges)
  for token, add in ((tokenizer.bos_token, writer.add_bos_token_id), (tokenizer.eos_token, writer.add_eos_token_id),
                     (tokenizer.unk_token, writer.add_unk_token_id), (tokenizer.pad_token, writer.add_pad_token_id)):
    if token is not None:
      add(vocab[token])
  probe = tokenizer.encode("a", add_special_tokens=True)
  writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_id)
  writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_id and len(probe) > 1)
  if tokenizer.chat_template:
    writer.add_chat_template(tokenizer.chat_template)


def _add_config(writer: gguf.GGUFWriter, c: ModelConfig, weight_type: str) -> None:
  writer.add_block_count(c.num_layers)
  writer.add_context_length(c.max_position_embeddings)
  writer.add_embedding_length(c.hidden_size)
  writer.add_feed_forward_length(c.intermediate_size)
  writer.add_head_count(c.num_heads)
  writer.add_head_count_kv(c.num_kv_heads)
  writer.add_key_length(c.head_dim)
  writer.add_value_length(c.head_dim)
  writer.add_rope_dimension_count(c.head_dim)
  writer.add_rope_freq_base(c.rope.theta)
  writer.add_layer_norm_rms_eps(c.rms_norm_eps)
  writer.add_vocab_size(c.vocab_size)
  writer.add_file_type(_FILE_TYPES[weight_type])


def save_gguf(path: str, config: ModelConfig, params: dict, tokenizer=None, weight_type: str = "f32",
              overwrite: bool = False) -> None:
  """Writes one GGUF file at `path` (atomically: a temporary file renamed at the end)."""
  if config.family not in gguf_checkpoint.ARCHITECTURES:
    raise UnsupportedModelError(f"GGUF export supports {', '.join(gguf_checkpoint.ARCHITECTURES)}, "
                                f"not {config.family}; export to an HF folder instead")
  if config.rope.kind != "default":
    raise UnsupportedModelError(f"GGUF export supports plain RoPE, not {config.rope.kind!r} scaling")
  if weight_type not in WEIGHT_TYPES:
    raise ValueError(f"weight_type {weight_type!r}; use one of {sorted(WEIGHT_TYPES)}")
  if os.path.exists(path) and not overwrite:
    raise CaopdError(f"output {path} already exists; choose another path or remove it")
  names = _gguf_names()
  tensors = hf_layout.hf_from_params(config, jax.device_get(params))
  with atomic_file(path) as tmp:
    writer = gguf.GGUFWriter(tmp, config.family)
    _add_config(writer, config, weight_type)
    if tokenizer is not None:
      _add_tokenizer(writer, tokenizer, config.vocab_size)
    for name, array in tensors.items():
      layer = name.split(".")[2] if name.startswith("model.layers.") else None
      gguf_name = names[name.replace(f".{layer}.", ".{i}.", 1) if layer else name].format(i=layer)
      w = np.asarray(array, np.float32)
      if config.family == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
        w = _permute(w, config.num_heads if "q_proj" in name else config.num_kv_heads)
      qtype = WEIGHT_TYPES[weight_type] if w.ndim == 2 else Q.F32
      if qtype == Q.F16:
        writer.add_tensor(gguf_name, w.astype(np.float16))
      elif qtype == Q.Q8_0:
        writer.add_tensor(gguf_name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
      else:
        writer.add_tensor(gguf_name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
