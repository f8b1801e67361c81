"""Model core: configs, the Flax NNX transformer, and pure functional entry points.

    config, params = caopd_jax.models.load("path/to/model.gguf", dtype=jnp.bfloat16)
    out = caopd_jax.models.logits(config, params, token_ids, attention_mask)   # float32 [B, T, V]
"""

from caopd_jax.models.config import ModelConfig, RopeConfig
from caopd_jax.models.loading import load, save, source_kind, tokenizer_path
from caopd_jax.models.presets import PRESETS, preset
from caopd_jax.models.transformer import (Transformer, default_positions, forward_with_cache, hidden_states, init,
                                          logical_axes, logits, param_shapes, unembedding, unstack_layers)

__all__ = ["ModelConfig", "RopeConfig", "Transformer", "load", "save", "source_kind", "tokenizer_path", "preset",
           "PRESETS", "init", "logits", "hidden_states", "forward_with_cache", "unstack_layers", "unembedding",
           "logical_axes", "param_shapes", "default_positions"]
