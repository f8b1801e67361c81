"""`load_tokenizer(path)`: a `Tokenizer` from whatever holds one.

Accepted paths:
  FOLDER with tokenizer.json      Hugging Face fast tokenizer (preferred when both exist)
  FOLDER with tokenizer.model     SentencePiece model
  FOLDER with tokenizer/          the layout of this project's Orbax checkpoints
  FILE.gguf                       the vocabulary in the GGUF metadata (see gguf_vocab)
  FILE.model                      a bare SentencePiece model (tokenizer_config.json beside it is read)

In a folder, tokenizer_config.json (else special_tokens_map.json) gives the
special tokens and `chat_template`, and for SentencePiece `add_bos_token` /
`add_eos_token` (tokenizer.json's post-processor decides those otherwise); a
chat_template.jinja file, when present, is the chat template (as in transformers).
"""

import json
import os

import sentencepiece
import tokenizers

from caopd_jax.errors import CheckpointFormatError, InputNotFoundError
from caopd_jax.tokenizers.base import CONFIG_FILE, HFTokenizer, SentencePieceTokenizer, Tokenizer
from caopd_jax.tokenizers.gguf_vocab import read_gguf_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointFormatError(f"cannot read {path}: {e}; fix or remove the file") from e
  if not isinstance(value, dict):
    raise CheckpointFormatError(f"{path} should hold a JSON object, found {type(value).__name__}")
  return value


def _token_text(value):
  """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


def _template_text(value):
  """A chat template as written in a config: a string, or a list of {"name", "template"} (the "default" one)."""
  if isinstance(value, list):
    named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
    return named.get("default")
  return value


def read_folder_config(folder: str) -> dict:
  """Special tokens (strings), add_bos_token / add_eos_token (if given) and chat_template of a folder."""
  config = {}
  for name in ("special_tokens_map.json", CONFIG_FILE):  # the later file wins
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      raw = _read_json(path)
      config.update({k: _token_text(raw[k]) for k in _SPECIAL if k in raw})
      config.update({k: raw[k] for k in ("add_bos_token", "add_eos_token") if raw.get(k) is not None})
      if raw.get("chat_template") is not None:
        config["chat_template"] = _template_text(raw["chat_template"])
  for name, key in (("chat_template.json", "chat_template"), ("chat_template.jinja", None)):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      if key is None:
        with open(path, encoding="utf-8") as f:
          config["chat_template"] = f.read()
      else:
        config["chat_template"] = _template_text(_read_json(path).get(key))
  return config


def _hf_json_tokenizer(path: str, config: dict) -> HFTokenizer:
  try:
    backend = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # the Rust parser raises plain Exception
    raise CheckpointFormatError(f"cannot parse {path} as a Hugging Face tokenizer.json: {e}") from e
  # BOS/EOS come from tokenizer.json's post-processor; like transformers (5.x), add_bos_token /
  # add_eos_token in tokenizer_config.json do not override it.
  special = {k: config.get(k) for k in _SPECIAL}
  return HFTokenizer(backend, chat_template=config.get("chat_template"), source=path, **special)


def _sentencepiece_tokenizer(path: str, config: dict) -> SentencePieceTokenizer:
  processor = sentencepiece.SentencePieceProcessor()
  try:
    processor.load(path)
  except (OSError, RuntimeError) as e:
    raise CheckpointFormatError(f"cannot load {path} as a SentencePiece model: {e}") from e
  # Without a config saying otherwise, a SentencePiece model gets BOS (Llama's and llama.cpp's convention).
  return SentencePieceTokenizer(processor, add_bos=bool(config.get("add_bos_token", processor.bos_id() >= 0)),
                                add_eos=bool(config.get("add_eos_token", False)),
                                chat_template=config.get("chat_template"), source=path,
                                **{k: config.get(k) for k in _SPECIAL})


def load_tokenizer(path: str) -> Tokenizer:
  """The tokenizer at `path` (see the module docstring for what `path` may be)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputNotFoundError(f"tokenizer path {path} does not exist; give a Hugging Face model folder, "
                             "a .gguf file, a SentencePiece .model file or a caopd-jax checkpoint folder")
  if os.path.isfile(path):
    folder = os.path.dirname(os.path.abspath(path))
    if path.endswith(".gguf"):
      return read_gguf_tokenizer(path)
    if path.endswith(".model"):
      return _sentencepiece_tokenizer(path, read_folder_config(folder))
    if os.path.basename(path) == "tokenizer.json":
      return _hf_json_tokenizer(path, read_folder_config(folder))
    raise InputNotFoundError(f"{path} is not a tokenizer file; expected a .gguf file, a SentencePiece .model "
                             "file, tokenizer.json, or a folder holding one of " + ", ".join(TOKENIZER_FILES))
  for name in TOKENIZER_FILES:
    file = os.path.join(path, name)
    if os.path.isfile(file):
      config = read_folder_config(path)
      return _hf_json_tokenizer(file, config) if name.endswith(".json") else _sentencepiece_tokenizer(file, config)
  sub = os.path.join(path, "tokenizer")
  if os.path.isdir(sub) and any(os.path.isfile(os.path.join(sub, n)) for n in TOKENIZER_FILES):
    return load_tokenizer(sub)
  raise InputNotFoundError(
      f"no tokenizer in folder {path}: looked for {' or '.join(TOKENIZER_FILES)} there and in {sub}; "
      "copy the model's tokenizer files into the folder, or point to the .gguf file or the original model folder")
