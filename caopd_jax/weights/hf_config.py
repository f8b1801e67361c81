"""Translation between Hugging Face `config.json` dicts and `ModelConfig`.

Both the transformers 5 layout (`rope_parameters`) and the older one
(`rope_theta` + `rope_scaling`, what most published checkpoints still ship)
are read. Anything we do not implement is refused with the reason, never
silently ignored.
"""

from caopd_jax.errors import UnsupportedModelError
from caopd_jax.models.config import FAMILIES, ModelConfig, RopeConfig

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                  "olmo3": "Olmo3ForCausalLM"}
_DEFAULT_THETA = {"llama": 10000.0, "qwen2": 10000.0, "qwen3": 10000.0, "olmo3": 500000.0}


def _rope_from_hf(params: dict | None, theta: float, where: str) -> RopeConfig:
  params = dict(params or {})
  kind = params.get("rope_type", params.get("type", "default"))
  theta = float(params.get("rope_theta", theta))
  if kind == "default":
    return RopeConfig(theta=theta)
  if kind == "linear":
    return RopeConfig(theta=theta, kind="linear", factor=float(params["factor"]))
  if kind == "llama3":
    return RopeConfig(theta=theta, kind="llama3", factor=float(params["factor"]),
                      low_freq_factor=float(params["low_freq_factor"]),
                      high_freq_factor=float(params["high_freq_factor"]),
                      original_max_position_embeddings=int(params["original_max_position_embeddings"]))
  if kind == "yarn":
    factor = params.get("factor")
    attention_factor = params.get("attention_factor")
    if params.get("mscale") and params.get("mscale_all_dim"):
      raise UnsupportedModelError(f"{where}: YaRN with mscale/mscale_all_dim is not supported")
    return RopeConfig(theta=theta, kind="yarn", factor=float(factor),
                      original_max_position_embeddings=int(params["original_max_position_embeddings"]),
                      beta_fast=float(params.get("beta_fast") or 32), beta_slow=float(params.get("beta_slow") or 1),
                      attention_factor=None if attention_factor is None else float(attention_factor),
                      truncate=bool(params.get("truncate", True)))
  raise UnsupportedModelError(
      f"{where}: rope type {kind!r} is not supported (supported: default, linear, llama3, yarn)")


def _first_int(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
  """ModelConfig from a transformers config dict; `where` names the file in error messages."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise UnsupportedModelError(
        f"{where}: model_type {family!r} is not supported; supported families: {', '.join(FAMILIES)}")
  if hf.get("hidden_act", "silu") != "silu":
    raise UnsupportedModelError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
  if hf.get("mlp_bias"):
    raise UnsupportedModelError(f"{where}: mlp_bias=true is not supported")
  if family == "llama" and hf.get("attention_bias"):
    raise UnsupportedModelError(f"{where}: llama with attention_bias=true is not supported")
  if family in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
    raise UnsupportedModelError(f"{where}: use_sliding_window=true is not supported for {family}")
  if hf.get("partial_rotary_factor", 1.0) != 1.0:
    raise UnsupportedModelError(f"{where}: partial_rotary_factor != 1 is not supported")
  try:
    heads = int(hf["num_attention_heads"])
    head_dim = hf.get("head_dim") or int(hf["hidden_size"]) // heads
    theta = float(hf.get("rope_theta", _DEFAULT_THETA[family]))
    rope_params = hf.get("rope_parameters") or hf.get("rope_scaling")
    sliding_rope = None
    layer_types = ()
    sliding_window = None
    if family == "olmo3":
      per_type = rope_params if rope_params and "full_attention" in rope_params else None
      full = per_type["full_attention"] if per_type else rope_params
      rope = _rope_from_hf(full, theta, where)
      sliding_rope = _rope_from_hf(per_type.get("sliding_attention") if per_type else None, theta, where)
      n = int(hf["num_hidden_layers"])
      types = hf.get("layer_types") or ["sliding_attention" if (i + 1) % 4 else "full_attention" for i in range(n)]
      layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in types)
      sliding_window = int(hf.get("sliding_window") or 4096)
    else:
      rope = _rope_from_hf(rope_params, theta, where)
    eos = _first_int(hf.get("eos_token_id"))
    return ModelConfig(
        family=family,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope=rope,
        sliding_rope=sliding_rope if sliding_rope != rope else None,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=family == "qwen2",
        qk_norm={"qwen3": "head", "olmo3": "full"}.get(family, "none"),
        norm_position="post" if family == "olmo3" else "pre",
        sliding_window=sliding_window,
        layer_types=layer_types,
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=eos,
        pad_token_id=hf.get("pad_token_id"),
    )
  except KeyError as e:
    raise UnsupportedModelError(f"{where}: required key {e.args[0]!r} is missing") from None
  except (TypeError, ValueError) as e:
    raise UnsupportedModelError(f"{where}: malformed value ({e})") from None


def _rope_to_hf(rope: RopeConfig) -> dict:
  out = {"rope_type": rope.kind, "rope_theta": rope.theta}
  if rope.kind in ("linear", "llama3", "yarn"):
    out["factor"] = rope.factor
  if rope.kind == "llama3":
    out.update(low_freq_factor=rope.low_freq_factor, high_freq_factor=rope.high_freq_factor,
               original_max_position_embeddings=rope.original_max_position_embeddings)
  if rope.kind == "yarn":
    out.update(original_max_position_embeddings=rope.original_max_position_embeddings,
               beta_fast=rope.beta_fast, beta_slow=rope.beta_slow, truncate=rope.truncate)
    if rope.attention_factor is not None:
      out["attention_factor"] = rope.attention_factor
  return out


def to_hf(config: ModelConfig, dtype_name: str = "float32") -> dict:
  """transformers config dict (transformers 5 layout) describing `config`."""
  c = config
  hf = {
      "architectures": [_ARCHITECTURES[c.family]],
      "model_type": c.family,
      "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size,
      "intermediate_size": c.intermediate_size,
      "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads,
      "num_key_value_heads": c.num_kv_heads,
      "head_dim": c.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": c.rms_norm_eps,
      "max_position_embeddings": c.max_position_embeddings,
      "tie_word_embeddings": c.tie_embeddings,
      "bos_token_id": c.bos_token_id,
      "eos_token_id": (c.eos_token_ids[0] if len(c.eos_token_ids) == 1 else list(c.eos_token_ids)) or None,
      "pad_token_id": c.pad_token_id,
      "dtype": dtype_name,
  }
  # The older keys too, so that transformers 4.x (which ignores rope_parameters) reads the same rope.
  hf["rope_theta"] = c.rope.theta
  if c.family == "olmo3":
    hf["rope_parameters"] = {"full_attention": _rope_to_hf(c.rope),
                             "sliding_attention": _rope_to_hf(c.sliding_rope or c.rope)}
    hf["sliding_window"] = c.sliding_window
    hf["layer_types"] = [f"{t}_attention" for t in c.layer_types]
  else:
    hf["rope_parameters"] = _rope_to_hf(c.rope)
  if c.rope.kind != "default" and c.family != "olmo3":
    hf["rope_scaling"] = _rope_to_hf(c.rope)
  if c.family == "qwen2":
    hf["use_sliding_window"] = False
  if c.family in ("qwen2", "qwen3", "olmo3"):
    hf["attention_bias"] = False
  if c.family == "llama":
    hf.update(attention_bias=False, mlp_bias=False)
  return hf
