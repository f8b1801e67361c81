"""Tiny random transformers models of every family, saved as safetensors: our numerical reference.

Weights are re-drawn after transformers' init so that biases and norm scales
are not the trivial zeros/ones (a wrong mapping of either must show up).
"""

import numpy as np
import torch
import transformers

FAMILY_CONFIGS = {
    "llama": dict(model_type="llama", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 16},
                  max_position_embeddings=128, bos_token_id=1, eos_token_id=2),
    "llama_tied": dict(model_type="llama", vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=3, num_key_value_heads=1, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                       max_position_embeddings=128, bos_token_id=1, eos_token_id=2),
    "qwen2": dict(model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                  max_position_embeddings=128, eos_token_id=2),
    "qwen3": dict(model_type="qwen3", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                  max_position_embeddings=128, eos_token_id=2),
    "olmo3": dict(model_type="olmo3", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  sliding_window=4, max_position_embeddings=128, pad_token_id=1, eos_token_id=2,
                  rope_parameters={
                      "full_attention": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 8.0,
                                         "original_max_position_embeddings": 16, "beta_fast": 32, "beta_slow": 1,
                                         "attention_factor": 1.2},
                      "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0}}),
}


def build(name: str, seed: int = 0, **overrides) -> "transformers.PreTrainedModel":
  """A float32 eager-attention transformers model of config `name` (+ `overrides`) with random, non-trivial weights."""
  kwargs = {**FAMILY_CONFIGS[name], **overrides}
  model_type = kwargs.pop("model_type")
  config = transformers.AutoConfig.for_model(model_type, **kwargs)
  config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_(0.1 * torch.randn_like(p))
  return model


def padded_batch(vocab_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and mask [3, 10]: one full row, one left-padded by 3, one right-padded by 2."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab_size, size=(3, 10)).astype(np.int32)
  mask = np.ones((3, 10), bool)
  mask[1, :3] = False
  mask[2, -2:] = False
  ids[~mask] = 0
  return ids, mask


def positions(mask: np.ndarray) -> np.ndarray:
  return np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)


def reference_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions(mask), dtype=torch.long))
  return out.logits.float().numpy()
