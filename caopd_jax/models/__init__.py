"""Model core: configs, the Flax NNX transformer, and pure functional entry points (loading: caopd_jax.weights).

    config, params = caopd_jax.weights.load("path/to/model.gguf", dtype=jnp.bfloat16)
    out = caopd_jax.models.logits(config, params, token_ids, attention_mask)   # float32 [B, T, V]
"""

from caopd_jax.models.config import ModelConfig, RopeConfig
from caopd_jax.models.presets import PRESETS, preset
from caopd_jax.models.transformer import (Transformer, default_positions, forward_with_cache, hidden_states, init,
                                          logical_axes, logits, param_shapes, prefill_with_cache, unembedding,
                                          unstack_layers)

__all__ = ["ModelConfig", "RopeConfig", "Transformer", "preset", "PRESETS", "init", "logits", "hidden_states",
           "forward_with_cache", "prefill_with_cache", "unstack_layers", "unembedding", "logical_axes", "param_shapes",
           "default_positions"]
