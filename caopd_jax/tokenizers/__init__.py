"""Tokenizers: text <-> token ids, special tokens and chat templates.

    tok = load_tokenizer("path/to/model")   # HF folder, .gguf, .model, or checkpoint folder
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}]))
    text = tok.decode(ids)
    tok.save("out/")                         # HF files transformers.AutoTokenizer loads
"""

from caopd_jax.tokenizers.base import Tokenizer
from caopd_jax.tokenizers.loading import load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
