"""Weight formats: Hugging Face folders (safetensors), GGUF files, this project's Orbax checkpoints and run
folders; `load` / `save` pick the format.

    config, params = caopd_jax.weights.load("path/to/model.gguf", dtype=jnp.bfloat16)
    caopd_jax.weights.save("out/model", config, params, format="hf", tokenizer=tokenizer)
"""

from caopd_jax.weights.loading import load, save, source_kind, tokenizer_path

__all__ = ["load", "save", "source_kind", "tokenizer_path"]
