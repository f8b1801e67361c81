"""The `Tokenizer` interface and its two backends.

`Tokenizer` holds what every backend shares: the special token strings, the
chat template, and where the tokenizer came from (for error messages). The
backends turn text into ids and back:

  HFTokenizer             a `tokenizers.Tokenizer` (Hugging Face tokenizer.json,
                          or the BPE vocabulary of a GGUF file); whether encode()
                          adds BOS/EOS is decided by its post-processor.
  SentencePieceTokenizer  a `sentencepiece.SentencePieceProcessor` (.model file);
                          `add_bos` / `add_eos` say whether encode() adds BOS/EOS.

`save(directory)` writes Hugging Face files that `transformers.AutoTokenizer`
loads into a tokenizer giving the same ids and chat-template text.
"""

import abc
import json
import os
import re

import sentencepiece
import tokenizers
from tokenizers import processors

from caopd_jax.errors import UnsupportedModelError
from caopd_jax.tokenizers.chat_template import render_chat_template

# Tokens that end an assistant turn in common chat formats; stop_ids has those in the vocabulary.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>",
                      "<end_of_turn>", "<|end|>")
CONFIG_FILE = "tokenizer_config.json"


class Tokenizer(abc.ABC):
  """Text <-> token ids for one model, with its special tokens and chat template.

  Attributes:
    bos_token, eos_token, pad_token, unk_token: the special token strings, or None.
    chat_template: the Jinja chat template string, or None.
    source: the path the tokenizer was loaded from ("" when built in memory).
  """

  def __init__(self, bos_token=None, eos_token=None, pad_token=None, unk_token=None,
               chat_template=None, source=""):
    self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
    self.chat_template = chat_template
    self.source = source

  # --- implemented by the backends (bodies are their docstrings)
  @abc.abstractmethod
  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`; special token strings in the text become their ids.

    `add_special_tokens` adds BOS/EOS where this model's tokenizer adds them.
    """

  @abc.abstractmethod
  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    """The text of `ids`; `skip_special_tokens` leaves out control tokens."""

  @abc.abstractmethod
  def token_to_id(self, token: str) -> int | None:
    """The id of a token string as spelled in the vocabulary, or None if it has none."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids, added tokens included."""

  @abc.abstractmethod
  def _save_vocab(self, directory: str) -> dict:
    """Writes the vocabulary files; returns entries for tokenizer_config.json."""

  # --- shared
  def _id(self, token):
    return None if token is None else self.token_to_id(token)

  @property
  def bos_id(self) -> int | None:
    return self._id(self.bos_token)

  @property
  def eos_id(self) -> int | None:
    return self._id(self.eos_token)

  @property
  def pad_id(self) -> int | None:
    return self._id(self.pad_token)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """EOS and the end-of-turn tokens (END_OF_TURN_TOKENS) this vocabulary has, without repeats."""
    ids = [self.eos_id] + [self.token_to_id(t) for t in END_OF_TURN_TOKENS]
    return tuple(dict.fromkeys(i for i in ids if i is not None))

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
    """The prompt text for `messages` ([{'role': ..., 'content': ...}, ...]); encode() it to get ids."""
    if self.chat_template is None:
      raise UnsupportedModelError(
          f"the tokenizer loaded from {self.source or '(memory)'} has no chat template; use a chat/instruct model, "
          "add a chat_template.jinja file next to its tokenizer files, or pass the prompt as plain text")
    special = {"unk_token": self.unk_token, "pad_token": self.pad_token}
    return render_chat_template(self.chat_template, messages, bos_token=self.bos_token, eos_token=self.eos_token,
                                add_generation_prompt=add_generation_prompt, **{**special, **kwargs})

  def save(self, directory: str) -> None:
    """Writes Hugging Face tokenizer files (vocabulary + tokenizer_config.json) into `directory`.

    Other files in `directory` are left alone, so this can share a folder with model weights.
    """
    os.makedirs(directory, exist_ok=True)
    config = self._save_vocab(directory)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
      if getattr(self, name) is not None:
        config[name] = getattr(self, name)
    config["clean_up_tokenization_spaces"] = False
    if self.chat_template is not None:
      config["chat_template"] = self.chat_template
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, ensure_ascii=False)
      f.write("\n")

  def __repr__(self):
    return (f"{type(self).__name__}(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"chat_template={self.chat_template is not None}, source={self.source!r})")


def template_post_processor(bos_token, bos_id, eos_token, eos_id, add_bos, add_eos):
  """The post-processor transformers builds for `add_bos_token` / `add_eos_token` (TemplateProcessing)."""
  add_bos, add_eos = add_bos and bos_token is not None, add_eos and eos_token is not None
  single = f"{bos_token + ':0 ' if add_bos else ''}$A:0{' ' + eos_token + ':0' if add_eos else ''}"
  pair = f"{single}{' ' + bos_token + ':1' if add_bos else ''} $B:1{' ' + eos_token + ':1' if add_eos else ''}"
  special = ([(bos_token, bos_id)] if add_bos else []) + ([(eos_token, eos_id)] if add_eos else [])
  return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


class HFTokenizer(Tokenizer):
  """A `tokenizers.Tokenizer` (`backend`) with special tokens and a chat template."""

  def __init__(self, backend: tokenizers.Tokenizer, **kwargs):
    super().__init__(**kwargs)
    self.backend = backend

  def encode(self, text, add_special_tokens=False):
    return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids, skip_special_tokens=False):
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token):
    return self.backend.token_to_id(token)

  @property
  def vocab_size(self):
    return self.backend.get_vocab_size(with_added_tokens=True)

  def _save_vocab(self, directory):
    self.backend.save(os.path.join(directory, "tokenizer.json"))
    # BOS/EOS come from tokenizer.json's post-processor, which transformers keeps when the
    # config names no add_bos_token / add_eos_token.
    return {"tokenizer_class": "PreTrainedTokenizerFast"}


class SentencePieceTokenizer(Tokenizer):
  """A `sentencepiece.SentencePieceProcessor` (`processor`) with special tokens and a chat template.

  Attributes beyond Tokenizer's: add_bos, add_eos (whether encode(add_special_tokens=True) adds them).
  Control tokens written in the text (like "<s>") are encoded as their ids, as transformers does;
  the text between them is encoded by sentencepiece on its own.
  """

  def __init__(self, processor: sentencepiece.SentencePieceProcessor, add_bos=True, add_eos=False, **kwargs):
    sp = processor
    piece = lambda i: sp.id_to_piece(i) if 0 <= i < sp.get_piece_size() else None  # noqa: E731
    for name, i in (("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()), ("pad_token", sp.pad_id()),
                    ("unk_token", sp.unk_id())):
      if kwargs.get(name) is None:
        kwargs[name] = piece(i)
    super().__init__(**kwargs)
    self.processor, self.add_bos, self.add_eos = sp, add_bos, add_eos
    self._special = {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    names = sorted((p for p in self._special if p), key=len, reverse=True)
    self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

  def encode(self, text, add_special_tokens=False):
    ids = []
    for k, part in enumerate(self._split.split(text) if self._split else [text]):
      if k % 2:
        ids.append(self._special[part])
      elif part:
        ids.extend(self.processor.encode(part))
    if add_special_tokens:
      ids = ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + ids
      ids += [self.eos_id] if self.add_eos and self.eos_id is not None else []
    return ids

  def decode(self, ids, skip_special_tokens=False):
    out, run = [], []
    for i in map(int, ids):
      if self.processor.is_control(i):
        out.append(self.processor.decode(run))
        run = []
        if not skip_special_tokens:
          out.append(self.processor.id_to_piece(i))
      else:
        run.append(i)
    return "".join(out) + self.processor.decode(run)

  def token_to_id(self, token):
    i = self.processor.piece_to_id(token)
    return None if self.processor.is_unknown(i) and token != self.processor.id_to_piece(i) else i

  @property
  def vocab_size(self):
    return self.processor.get_piece_size()

  def _save_vocab(self, directory):
    with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
      f.write(self.processor.serialized_model_proto())
    # TokenizersBackend builds the tokenizer from the model's own normalizer spec; LlamaTokenizer
    # would assume Llama's and split whitespace differently for other models.
    return {"tokenizer_class": "TokenizersBackend", "add_bos_token": self.add_bos, "add_eos_token": self.add_eos}
