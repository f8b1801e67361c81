"""GGUF files (llama.cpp's format): config from the metadata, weights dequantized with the `gguf` package.

GGUF tensor names are translated to Hugging Face names and then go through the
same `hf_layout` conversion as safetensors folders, so one table defines our
weight layout. llama.cpp stores Llama-architecture q/k projections with their
rows permuted for its interleaved RoPE; we undo that permutation here.
"""

import os
import re

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, quants

from caopd_jax.errors import CheckpointFormatError, InputNotFoundError, UnsupportedModelError
from caopd_jax.models import transformer
from caopd_jax.models.config import ModelConfig, RopeConfig
from caopd_jax.weights import hf_layout

ARCHITECTURES = ("llama", "qwen2", "qwen3")
DEQUANTIZABLE = frozenset({Q.F32, Q.F16, Q.BF16, Q.F64, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0,
                           Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K})

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name: str) -> str | None:
  """The HF tensor name of a GGUF tensor name, or None for tensors we do not use."""
  m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
  if m and m.group(2) in _LAYER_NAMES:
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
  m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
  if m and m.group(1) in _GLOBAL_NAMES:
    return f"{_GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
  return None


def open_reader(path: str) -> GGUFReader:
  if not os.path.isfile(path):
    raise InputNotFoundError(f"GGUF file {path} does not exist")
  try:
    return GGUFReader(path)
  except Exception as e:  # the gguf package raises ValueError/IndexError/struct errors on bad files
    raise CheckpointFormatError(f"{path}: not a readable GGUF file (truncated or corrupt?): {e}") from None


def _field(reader: GGUFReader, key: str, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def read_config(reader: GGUFReader, path: str) -> ModelConfig:
  arch = _field(reader, "general.architecture")
  if arch not in ARCHITECTURES:
    raise UnsupportedModelError(f"{path}: GGUF architecture {arch!r} is not supported; "
                                f"supported: {', '.join(ARCHITECTURES)}")
  if _field(reader, f"{arch}.rope.scaling.type", "none") not in ("none", None) or any(
      t.name == "rope_freqs.weight" for t in reader.tensors):
    raise UnsupportedModelError(f"{path}: GGUF rope scaling is not supported; load the HF folder instead")
  try:
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    n_vocab = _field(reader, f"{arch}.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        family=arch,
        vocab_size=int(n_vocab),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=int(_field(reader, f"{arch}.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope=RopeConfig(theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0))),
        tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        qkv_bias=arch == "qwen2",
        qk_norm="head" if arch == "qwen3" else "none",
        max_position_embeddings=int(_field(reader, f"{arch}.context_length", 4096)),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=() if eos is None else (int(eos),),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
    )
  except (TypeError, KeyError) as e:
    raise CheckpointFormatError(f"{path}: GGUF metadata is incomplete ({e})") from None


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation (interleaved -> rotate-half RoPE layout)."""
  half = w.shape[0] // heads // 2
  return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str, dtype=np.float32) -> tuple[ModelConfig, dict]:
  """(config, params as NumPy arrays of `dtype`) from a GGUF file, dequantizing every tensor."""
  reader = open_reader(path)
  config = read_config(reader, path)
  tensors = {}
  for t in reader.tensors:
    name = hf_name(t.name)
    if name is not None:
      tensors[name] = t
  for t in tensors.values():
    if t.tensor_type not in DEQUANTIZABLE:
      raise UnsupportedModelError(
          f"{path}: tensor {t.name!r} uses quantization {t.tensor_type.name}, which we cannot dequantize; "
          f"supported: {', '.join(sorted(q.name for q in DEQUANTIZABLE))}")

  def read(name: str) -> np.ndarray:
    t = tensors[name]
    w = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    w = w.reshape(tuple(int(n) for n in reversed(t.shape)))
    if config.family == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      w = _unpermute(w, config.num_heads if "q_proj" in name else config.num_kv_heads)
    return w

  expected = transformer.param_shapes(config)
  params = hf_layout.params_from_hf(config, expected, read, set(tensors), path, dtype)
  return config, params
