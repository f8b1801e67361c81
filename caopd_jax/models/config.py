"""Model configuration: one frozen, hashable dataclass for every supported family.

A `ModelConfig` is static under `jax.jit` (it is hashable) and fully describes the
architecture; weights live separately in a params tree. The four families differ
only in a handful of switches:

| family | qkv_bias | qk_norm | norm_position | sliding layers |
|--------|----------|---------|---------------|----------------|
| llama  | no       | none    | pre           | no             |
| qwen2  | yes      | none    | pre           | no             |
| qwen3  | no       | head    | pre           | no             |
| olmo3  | no       | full    | post          | yes (3 of 4)   |

`qk_norm="head"` is an RMSNorm over each head's `head_dim` (Qwen3);
`qk_norm="full"` is an RMSNorm over the whole projection `heads * head_dim`
(OLMo 2/3). `norm_position="post"` normalises the attention and MLP outputs
before the residual add (OLMo 2/3) instead of their inputs.
"""

import dataclasses
from typing import Literal

FAMILIES = ("llama", "qwen2", "qwen3", "olmo3")
RopeKind = Literal["default", "llama3", "yarn", "linear"]


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary position embedding of one attention type.

  kind: "default" (theta only), "linear" (positions / factor), "llama3"
  (Llama-3.1 frequency-band scaling) or "yarn" (YaRN, used by OLMo-3 long context).
  Fields not used by `kind` keep their defaults.
  """
  theta: float = 10000.0
  kind: RopeKind = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  attention_factor: float | None = None
  truncate: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer (shapes in the docstrings below use these names).

  V = vocab_size, D = hidden_size, F = intermediate_size, L = num_layers,
  H = num_heads, K = num_kv_heads, Dh = head_dim.
  """
  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope: RopeConfig = RopeConfig()
  # Rope of sliding-window layers where it differs from `rope` (OLMo-3: no YaRN there).
  sliding_rope: RopeConfig | None = None
  tie_embeddings: bool = False
  qkv_bias: bool = False
  qk_norm: Literal["none", "head", "full"] = "none"
  norm_position: Literal["pre", "post"] = "pre"
  sliding_window: int | None = None
  # Per layer: "full" or "sliding"; empty means all "full".
  layer_types: tuple[str, ...] = ()
  max_position_embeddings: int = 4096
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None

  def __post_init__(self):
    problems = []
    if self.family not in FAMILIES:
      problems.append(f"family {self.family!r} is not one of {FAMILIES}")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim"):
      if getattr(self, name) <= 0:
        problems.append(f"{name} must be positive, got {getattr(self, name)}")
    for name, allowed in (("qk_norm", ("none", "head", "full")), ("norm_position", ("pre", "post"))):
      if getattr(self, name) not in allowed:
        problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
      problems.append(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
    if self.layer_types:
      if len(self.layer_types) != self.num_layers:
        problems.append(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
      if set(self.layer_types) - {"full", "sliding"}:
        problems.append(f"layer_types must be 'full' or 'sliding', got {sorted(set(self.layer_types))}")
      if "sliding" in self.layer_types and not self.sliding_window:
        problems.append("sliding layers need a positive sliding_window")
    if problems:
      raise ValueError("invalid ModelConfig: " + "; ".join(problems))

  @property
  def is_sliding(self) -> tuple[bool, ...]:
    """Per layer, whether it uses sliding-window attention."""
    return tuple(t == "sliding" for t in self.layer_types) or (False,) * self.num_layers

  def num_params(self) -> int:
    """Total parameter count (embeddings counted once when tied)."""
    d, f, h, k, dh = self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim
    attn = d * dh * (2 * h + 2 * k) + (dh * (h + 2 * k) if self.qkv_bias else 0)
    attn += {"none": 0, "head": 2 * dh, "full": dh * (h + k)}[self.qk_norm]
    layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * layer + d + head


def config_to_dict(config: ModelConfig) -> dict:
  """JSON-serialisable dict of `config` (inverse: `config_from_dict`)."""
  return dataclasses.asdict(config)


def config_from_dict(d: dict) -> ModelConfig:
  """Rebuilds a ModelConfig from `config_to_dict` output; unknown keys are an error."""
  d = dict(d)
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(known)}")
  d["rope"] = RopeConfig(**d.get("rope", {}))
  if d.get("sliding_rope") is not None:
    d["sliding_rope"] = RopeConfig(**d["sliding_rope"])
  for key in ("layer_types", "eos_token_ids"):
    d[key] = tuple(d.get(key, ()))
  return ModelConfig(**d)
