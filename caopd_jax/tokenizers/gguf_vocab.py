"""The tokenizer stored in a GGUF file's metadata, rebuilt as a `tokenizers.Tokenizer`.

A GGUF has no tokenizer.json; llama.cpp stores the vocabulary under
`tokenizer.ggml.*` keys: `model` (the algorithm; we support "gpt2", byte-level
BPE), `pre` (the name of the pre-tokenizer: how text is split before BPE),
`tokens`, `merges`, `token_type` (3 = control, 4 = user-defined), the special
token ids, `add_bos_token` / `add_eos_token`, and `tokenizer.chat_template`.

The vocabulary, merges and added tokens are converted the way transformers
does (`integrations/gguf/gguf_tokenizer_mapping.py`), so both give the same ids.
The pre-tokenizers follow the models' own tokenizer.json files (which llama.cpp
reproduces), where transformers' conversion differs from them:

  smollm   Digits(individual_digits) then ByteLevel's GPT-2 regex (SmolLM2's tokenizer.json,
           llama.cpp's `\\p{N}` + GPT-2 regex). transformers uses the GPT-2 regex alone, which
           splits differently where a whitespace run or a non-ASCII number meets a digit
           (e.g. "a  1": ours 'a','ĠĠ','1', transformers 'a','Ġ','Ġ','1').
  llama3   BPE with ignore_merges (Llama 3's tokenizer.json, llama.cpp); BOS added when the
           file does not say (llama.cpp's default for llama-bpe / llama3 / llama-v3).
  qwen2    NFC normalization (Qwen2's tokenizer.json); transformers' GGUF path has none.
"""

from typing import NamedTuple

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers.models import BPE

from caopd_jax.errors import CheckpointFormatError, InputNotFoundError, UnsupportedModelError
from caopd_jax.tokenizers.base import HFTokenizer, template_post_processor

SUPPORTED_MODELS = ("gpt2",)
_CONTROL, _USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


class Pipeline(NamedTuple):
  """How one `tokenizer.ggml.pre` value tokenizes, beyond the vocabulary and merges."""
  pre_tokenizer: pre_tokenizers.PreTokenizer
  normalizer: normalizers.Normalizer | None = None
  ignore_merges: bool = False  # BPE: a piece that is a whole vocabulary token is kept as is
  default_add_bos: bool = False  # when the file has no tokenizer.ggml.add_bos_token


def _split_then_bytes(regex):
  return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _gpt2():
  """ByteLevel with its built-in GPT-2 regex ('s|'t|...| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+)."""
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _llama3():
  return Pipeline(_split_then_bytes(_LLAMA3_SPLIT), ignore_merges=True, default_add_bos=True)


def _llama3_regex_only():
  return Pipeline(_split_then_bytes(_LLAMA3_SPLIT))


def _qwen2():
  return Pipeline(_split_then_bytes(_QWEN2_SPLIT), normalizers.NFC())


def _smollm():
  return Pipeline(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2()]))


def _gpt2_pipeline():
  return Pipeline(_gpt2())


# tokenizer.ggml.pre -> its Pipeline (built fresh for each tokenizer)
PIPELINES = {
    "llama-bpe": _llama3, "llama3": _llama3, "llama-v3": _llama3,
    "dbrx": _llama3_regex_only, "smaug-bpe": _llama3_regex_only,
    "qwen2": _qwen2, "deepseek-r1-qwen": _qwen2,
    "smollm": _smollm,
    "olmo": _gpt2_pipeline, "gpt-2": _gpt2_pipeline, "default": _gpt2_pipeline,
}


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table, in which byte-level vocabularies are spelled."""
  keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
  table, extra = {b: chr(b) for b in keep}, 0
  for b in range(256):
    if b not in table:
      table[b], extra = chr(256 + extra), extra + 1
  return table


def _field(reader, key, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def read_gguf_tokenizer(path: str, reader: GGUFReader | None = None) -> HFTokenizer:
  """The tokenizer described by the metadata of the GGUF file at `path`."""
  if reader is None:
    try:
      reader = GGUFReader(path)
    except Exception as e:  # the gguf package raises ValueError/IndexError/struct errors on bad files
      raise CheckpointFormatError(f"{path}: not a readable GGUF file (truncated or corrupt?): {e}") from None
  model = _field(reader, "tokenizer.ggml.model")
  if model is None:
    raise InputNotFoundError(f"{path} has no tokenizer (metadata key tokenizer.ggml.model is missing); "
                             "load the tokenizer from the model's Hugging Face folder instead")
  if model not in SUPPORTED_MODELS:
    raise UnsupportedModelError(
        f"{path}: GGUF tokenizer model {model!r} (tokenizer.ggml.model) is not supported; supported: "
        f"{', '.join(SUPPORTED_MODELS)}. Load the tokenizer from the model's Hugging Face folder "
        "(tokenizer.json or tokenizer.model) instead")
  pre = _field(reader, "tokenizer.ggml.pre", "default")
  if pre not in PIPELINES:
    raise UnsupportedModelError(
        f"{path}: GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre) is not supported; supported: "
        f"{', '.join(sorted(PIPELINES))}. Load the tokenizer from the model's Hugging Face folder instead")
  pipeline = PIPELINES[pre]()

  tokens = _field(reader, "tokenizer.ggml.tokens")
  merges = _field(reader, "tokenizer.ggml.merges")
  if not tokens or merges is None:
    raise CheckpointFormatError(f"{path}: a gpt2 tokenizer needs tokenizer.ggml.tokens and tokenizer.ggml.merges; "
                                "the file lacks one of them (re-convert it with llama.cpp's convert_hf_to_gguf.py)")
  types = _field(reader, "tokenizer.ggml.token_type") or []
  spelling = bytes_to_unicode()
  alphabet = set(spelling.values())
  # Tokens written in plain text (not the byte alphabet) are respelled, as transformers does.
  plain = [set(t) <= alphabet for t in tokens]
  tokens = [t if ok else "".join(spelling[b] for b in t.encode("utf-8")) for t, ok in zip(tokens, plain)]
  backend = BackendTokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)},
                                 merges=[tuple(m.split(" ", 1)) for m in merges], dropout=None,
                                 continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                                 ignore_merges=pipeline.ignore_merges))
  backend.normalizer = pipeline.normalizer
  backend.pre_tokenizer = pipeline.pre_tokenizer
  backend.decoder = decoders.ByteLevel()

  special = {}
  for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                    ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
    i = _field(reader, f"tokenizer.ggml.{key}")
    special[name] = tokens[i] if i is not None and 0 <= i < len(tokens) else None
  # Control tokens are matched whole in the text and skipped by decode(skip_special_tokens=True);
  # user-defined ones are matched whole too. As in transformers, only tokens the file spells in the
  # byte alphabet qualify (others are llama.cpp mislabels), and the special tokens above count as control.
  control = [t for t, k, ok in zip(tokens, types, plain) if k == _CONTROL and ok]
  backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                              for t in dict.fromkeys(control + [t for t in special.values() if t is not None])])
  backend.add_tokens([AddedToken(t, normalized=False, special=False)
                      for t, k, ok in zip(tokens, types, plain) if k == _USER_DEFINED and ok])

  add_bos = _field(reader, "tokenizer.ggml.add_bos_token", pipeline.default_add_bos)
  add_eos = _field(reader, "tokenizer.ggml.add_eos_token", False)
  bos, eos = special["bos_token"], special["eos_token"]
  backend.post_processor = template_post_processor(bos, backend.token_to_id(bos) if bos else None, eos,
                                                   backend.token_to_id(eos) if eos else None, add_bos, add_eos)
  return HFTokenizer(backend, chat_template=_field(reader, "tokenizer.chat_template"), source=path, **special)
