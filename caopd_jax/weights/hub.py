"""Hugging Face Hub ids as model paths: `weights.load("HuggingFaceTB/SmolLM2-135M-Instruct")`, `--model Qwen/Qwen3-8B`.

A model path that does not exist locally and reads as `owner/name` is looked up through `huggingface_hub`: its
cached snapshot (the Hub's cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), downloaded
first when the network is there and HF_HUB_OFFLINE is not set. Only what loading reads is fetched: config.json,
the safetensors shards (and their index), the tokenizer files and the chat template. Offline and not cached is an
InputNotFoundError saying so.
"""

import os
import re

from caopd_jax.errors import InputNotFoundError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
FILES = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer*",
         "special_tokens_map.json", "vocab.json", "merges.txt", "*.model", "chat_template*"]


def local_path(path: str) -> str:
  """`path` when it exists (or is no Hub id: the caller's error names it); else the Hub id's local snapshot."""
  if os.path.exists(path) or not HUB_ID.fullmatch(path):
    return path
  import huggingface_hub
  from huggingface_hub import errors
  try:
    return huggingface_hub.snapshot_download(path, allow_patterns=FILES)
  except errors.LocalEntryNotFoundError as e:
    offline = "HF_HUB_OFFLINE is set" if huggingface_hub.constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
    raise InputNotFoundError(
        f"model {path}: no such local path, and as a Hugging Face Hub id it is not in the cache "
        f"({huggingface_hub.constants.HF_HUB_CACHE}) while {offline}; download it once with the network on, or "
        f"give a local folder") from e
  except (errors.RepositoryNotFoundError, errors.GatedRepoError) as e:
    raise InputNotFoundError(f"model {path}: no such local path, and the Hugging Face Hub has no model by that id "
                             f"that this machine may read ({type(e).__name__}; a gated model needs `hf auth login`)"
                             ) from e
