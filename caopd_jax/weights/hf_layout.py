"""The correspondence between our params tree and Hugging Face tensor names.

HF stores linear weights as [out, in] per layer (`model.layers.{i}.self_attn.q_proj.weight`);
we store them as einsum-shaped [in, *out] stacked over layers
(`params["layers"]["attn"]["q_proj"]`: [L, D, H, Dh]). Each row of the table
below says how one of our arrays maps to one HF tensor (per layer, when the
name contains `{i}`), and the two functions convert whole trees either way.
"""

from typing import Callable, NamedTuple

import numpy as np

from caopd_jax.errors import CheckpointFormatError
from caopd_jax.models.config import ModelConfig


class Entry(NamedTuple):
  path: tuple[str, ...]   # keys into our params dict
  hf_name: str            # HF tensor name; "{i}" = layer index for stacked params
  kind: str               # "same", "linear_in" ([out, in] -> [in, *out]), "linear_out" ([D, H*Dh] -> [H, Dh, D]),
                          # "transpose" ([V, D] -> [D, V]) or "reshape" ([n] -> our per-layer shape)


def table(config: ModelConfig) -> list[Entry]:
  """All tensors of `config`'s checkpoint, in HF order."""
  c = config
  pre = c.norm_position == "pre"
  attn_norm = "input_layernorm" if pre else "post_attention_layernorm"
  mlp_norm = "post_attention_layernorm" if pre else "post_feedforward_layernorm"
  layer = "model.layers.{i}."
  rows = [Entry(("embed",), "model.embed_tokens.weight", "same")]
  rows += [
      Entry(("layers", "attn_norm", "scale"), layer + attn_norm + ".weight", "same"),
      Entry(("layers", "attn", "q_proj"), layer + "self_attn.q_proj.weight", "linear_in"),
      Entry(("layers", "attn", "k_proj"), layer + "self_attn.k_proj.weight", "linear_in"),
      Entry(("layers", "attn", "v_proj"), layer + "self_attn.v_proj.weight", "linear_in"),
      Entry(("layers", "attn", "o_proj"), layer + "self_attn.o_proj.weight", "linear_out"),
  ]
  if c.qkv_bias:
    rows += [Entry(("layers", "attn", f"{x}_bias"), layer + f"self_attn.{x}_proj.bias", "reshape") for x in "qkv"]
  if c.qk_norm != "none":
    rows += [Entry(("layers", "attn", f"{x}_norm", "scale"), layer + f"self_attn.{x}_norm.weight", "reshape")
             for x in "qk"]
  rows += [
      Entry(("layers", "mlp_norm", "scale"), layer + mlp_norm + ".weight", "same"),
      Entry(("layers", "mlp", "gate_proj"), layer + "mlp.gate_proj.weight", "linear_in"),
      Entry(("layers", "mlp", "up_proj"), layer + "mlp.up_proj.weight", "linear_in"),
      Entry(("layers", "mlp", "down_proj"), layer + "mlp.down_proj.weight", "linear_in"),
      Entry(("final_norm", "scale"), "model.norm.weight", "same"),
  ]
  if not c.tie_embeddings:
    rows.append(Entry(("lm_head",), "lm_head.weight", "transpose"))
  return rows


def _to_ours(kind: str, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  return (hf.T if kind in ("linear_in", "linear_out", "transpose") else hf).reshape(shape)


def _to_hf(kind: str, ours: np.ndarray) -> np.ndarray:
  if kind == "linear_in":
    return ours.reshape(ours.shape[0], -1).T
  if kind == "linear_out":
    return ours.reshape(-1, ours.shape[-1]).T
  if kind == "transpose":
    return ours.T
  return ours if kind == "same" else ours.reshape(-1)


def _hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
  n = int(np.prod(ours))
  if kind == "linear_in":
    return (n // ours[0], ours[0])
  if kind == "linear_out":
    return (ours[-1], n // ours[-1])
  if kind == "transpose":
    return ours[::-1]
  return ours if kind == "same" else (n,)


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def params_from_hf(config: ModelConfig, expected: dict, read: Callable[[str], np.ndarray],
                   available: set[str], where: str, dtype) -> dict:
  """Builds our params (NumPy, `dtype`) from HF tensors.

  expected: tree of ShapeDtypeStruct (our shapes). read(name) returns an HF
  tensor; `available` is the set of names present. Missing tensors and shape
  mismatches raise CheckpointFormatError naming the tensor and `where`.
  """
  params: dict = {}
  for entry in table(config):
    ours = _get(expected, entry.path).shape
    stacked = entry.path[0] == "layers"
    per_layer = ours[1:] if stacked else ours
    names = [entry.hf_name.format(i=i) for i in range(config.num_layers)] if stacked else [entry.hf_name]
    arrays = []
    for name in names:
      if name not in available:
        raise CheckpointFormatError(f"{where}: tensor {name!r} is missing (needed for {config.family} with "
                                    f"{config.num_layers} layers)")
      hf = read(name)
      want = _hf_shape(entry.kind, per_layer)
      if tuple(hf.shape) != want:
        raise CheckpointFormatError(
            f"{where}: tensor {name!r} has shape {tuple(hf.shape)}, the config needs {want}")
      arrays.append(_to_ours(entry.kind, np.asarray(hf), per_layer).astype(dtype))
    _set(params, entry.path, np.stack(arrays) if stacked else arrays[0])
  return params


def hf_from_params(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """HF-named NumPy tensors from our params (same dtype as the params)."""
  out = {}
  for entry in table(config):
    value = np.asarray(_get(params, entry.path))
    if entry.path[0] == "layers":
      for i in range(config.num_layers):
        out[entry.hf_name.format(i=i)] = np.ascontiguousarray(_to_hf(entry.kind, value[i]))
    else:
      out[entry.hf_name] = np.ascontiguousarray(_to_hf(entry.kind, value))
  return out
