"""Named architectures of the models the CaOPD paper used (plus SmolLM2), as small constructors.

Shapes follow the published `config.json` files. Use them for random-weight
benchmarks and shape checks; real weights come with their own config.
"""

from caopd_jax.models.config import ModelConfig, RopeConfig


def _qwen3(hidden: int, inter: int, layers: int, heads: int, kv: int, tie: bool) -> ModelConfig:
  return ModelConfig(family="qwen3", vocab_size=151936, hidden_size=hidden, intermediate_size=inter,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=128, rms_norm_eps=1e-6,
                     rope=RopeConfig(theta=1000000.0), tie_embeddings=tie, qk_norm="head",
                     max_position_embeddings=40960, bos_token_id=151643, eos_token_ids=(151645,),
                     pad_token_id=151643)


def qwen3_0_6b() -> ModelConfig:
  return _qwen3(1024, 3072, 28, 16, 8, tie=True)


def qwen3_1_7b() -> ModelConfig:
  return _qwen3(2048, 6144, 28, 16, 8, tie=True)


def qwen3_4b() -> ModelConfig:
  return _qwen3(2560, 9728, 36, 32, 8, tie=True)


def qwen3_8b() -> ModelConfig:
  return _qwen3(4096, 12288, 36, 32, 8, tie=False)


def qwen3_14b() -> ModelConfig:
  return _qwen3(5120, 17408, 40, 40, 8, tie=False)


def qwen3_32b() -> ModelConfig:
  return _qwen3(5120, 25600, 64, 64, 8, tie=False)


def qwen2_5_7b_instruct() -> ModelConfig:
  return ModelConfig(family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                     num_heads=28, num_kv_heads=4, head_dim=128, rms_norm_eps=1e-6, rope=RopeConfig(theta=1000000.0),
                     qkv_bias=True, max_position_embeddings=32768, bos_token_id=151643,
                     eos_token_ids=(151645,), pad_token_id=151643)


def olmo3_7b_instruct() -> ModelConfig:
  full = RopeConfig(theta=500000.0, kind="yarn", factor=8.0, original_max_position_embeddings=8192,
                    beta_fast=32.0, beta_slow=1.0, attention_factor=1.2079441541679836)
  return ModelConfig(family="olmo3", vocab_size=100278, hidden_size=4096, intermediate_size=11008, num_layers=32,
                     num_heads=32, num_kv_heads=32, head_dim=128, rms_norm_eps=1e-6, rope=full,
                     sliding_rope=RopeConfig(theta=500000.0), qk_norm="full", norm_position="post",
                     sliding_window=4096, layer_types=tuple("full" if (i + 1) % 4 == 0 else "sliding"
                                                            for i in range(32)),
                     max_position_embeddings=65536, eos_token_ids=(100257,), pad_token_id=100277)


def smollm2_135m() -> ModelConfig:
  return ModelConfig(family="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                     num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope=RopeConfig(theta=100000.0),
                     tie_embeddings=True, max_position_embeddings=8192, bos_token_id=1, eos_token_ids=(2,),
                     pad_token_id=2)


PRESETS = {
    "qwen3-0.6b": qwen3_0_6b, "qwen3-1.7b": qwen3_1_7b, "qwen3-4b": qwen3_4b, "qwen3-8b": qwen3_8b,
    "qwen3-14b": qwen3_14b, "qwen3-32b": qwen3_32b, "qwen2.5-7b-instruct": qwen2_5_7b_instruct,
    "olmo3-7b-instruct": olmo3_7b_instruct, "smollm2-135m": smollm2_135m,
}


def preset(name: str) -> ModelConfig:
  if name not in PRESETS:
    raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
  return PRESETS[name]()
