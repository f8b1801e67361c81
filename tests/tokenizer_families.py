r"""Small tokenizers of each supported model family, built offline with the structure each model ships.

  build_family_tokenizer(family, folder) -> folder
      writes an HF tokenizer folder (tokenizer.json + tokenizer_config.json with the chat template and the
      special tokens) that `caopd_jax.tokenizers.load_tokenizer` and `transformers.AutoTokenizer` both load.
  train_sentencepiece(folder, text, model_type, **options) -> path of the .model file

Each byte-level BPE family has its model's own tokenizer.json pipeline (FAMILIES), and a vocabulary trained
through that pipeline on corpus() (answer tags, JSON, punctuation before newlines, digits, CJK, emoji):

  family  normalizer  Split regex (isolated)             BPE            special tokens; EOS
  qwen2   NFC         Qwen2's (\p{N} one digit each)     -              ChatML; <|im_end|>; added <tool_call>
  qwen3   NFC         Qwen2's                            -              as qwen2, also added <think>, <tool_response>
  llama3  -           Llama 3's (\p{N}{1,3})             ignore_merges  <|begin_of_text|> (added by the
                                                                        post-processor), <|eot_id|>
  olmo3   -           cl100k_base's (= Llama 3's)        -              ChatML, <functions>..., <|pad|>; <|im_end|>
each followed by ByteLevel(add_prefix_space=False, use_regex=False); decoder ByteLevel. Sources: Qwen2.5 / Qwen3
tokenizer.json (transformers' Qwen2Tokenizer builds the same), Meta-Llama-3-8B's tokenizer.json, OLMo 3's dolma2
tokenizer ("a slightly modified cl100k_base" with ChatML tokens, allenai/olmo-3-tokenizer-instruct-dev; its EOS is
taken to be <|im_end|>, the ChatML turn end). The split rule ` ?[^\s\p{L}\p{N}]+[\r\n]*` glues trailing newlines
onto punctuation, so `>\n`, `}\n`, `.\n` are single tokens in every family (asserted).

  sentencepiece   Llama 2 / Mistral style: identity normalization, dummy prefix, byte fallback (newline = <0x0A>),
                  digits split; <s> </s> <unk>, BOS added by encode, an [INST] chat template.

Everything is deterministic (a SentencePiece file differs only in the training paths it records) and cached per
process; building a family takes well under a second the first time, milliseconds after.
"""

import functools
import json
import os
import random
import tempfile
from typing import NamedTuple

import sentencepiece
import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors, trainers

from caopd_jax.tokenizers.base import HFTokenizer
from caopd_jax.tokenizers.gguf_vocab import _LLAMA3_SPLIT, _QWEN2_SPLIT, bytes_to_unicode

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
               "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
LLAMA2_CHAT = ("{% for message in messages %}{% if message['role'] == 'assistant' %} {{ message['content'] }} "
               "{{ eos_token }}{% else %}{{ bos_token }}[INST] {{ message['content'] }} [/INST]{% endif %}{% endfor %}")


class Family(NamedTuple):
  """How one byte-level BPE family tokenizes, around its trained vocabulary."""
  split: str                      # the Split pre-tokenizer's regex
  nfc: bool                       # NFC normalizer
  special: tuple[str, ...]        # special (control) tokens, appended after the trained vocabulary
  added: tuple[str, ...]          # added non-special tokens (matched whole in the text, kept by decode)
  eos: str
  pad: str | None
  bos: str | None = None          # added by the post-processor (Llama 3)
  ignore_merges: bool = False
  template: str = CHATML


_QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAMILIES = {
    "qwen2": Family(_QWEN2_SPLIT, True, _QWEN_SPECIAL, ("<tool_call>", "</tool_call>"), "<|im_end|>", "<|endoftext|>"),
    "qwen3": Family(_QWEN2_SPLIT, True, _QWEN_SPECIAL,
                    ("<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>"),
                    "<|im_end|>", "<|endoftext|>"),
    "llama3": Family(_LLAMA3_SPLIT, False, ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                            "<|end_header_id|>", "<|eot_id|>"), (), "<|eot_id|>", None,
                     bos="<|begin_of_text|>", ignore_merges=True, template=LLAMA3_CHAT),
    "olmo3": Family(_LLAMA3_SPLIT, False, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<functions>", "</functions>",
                                           "<function_calls>", "</function_calls>", "<|pad|>"), (),
                    "<|im_end|>", "<|pad|>"),
}
SENTENCEPIECE = "sentencepiece"
GLUED = (">\n", "}\n", ".\n")   # single tokens in every byte-level family


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
  """Deterministic training text: MCQ answers, tool calls, arithmetic, prose with CJK and emoji."""
  rng = random.Random(seed)
  words = ("the", "answer", "is", "because", "energy", "acid", "water", "weather", "city", "search", "result",
           "reaction", "compute", "first", "then", "so", "we", "get", "option", "correct")
  sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize()  # noqa: E731
  value = lambda: f"{rng.randint(0, 100) / 100:.2f}"  # noqa: E731
  out = []
  for _ in range(lines):
    kind = rng.randrange(5)
    if kind == 0:
      out.append(f"<reasoning>\n{sentence()}.\n</reasoning>\n<answer>{rng.choice('ABCD')}</answer>\n"
                 f"Confidence: {value()}\n")
    elif kind == 1:
      args = json.dumps({rng.choice(words): rng.choice([rng.randint(0, 99), rng.choice(words)]) for _ in range(2)})
      out.append(f"Thought: {sentence()}.\nAction: {rng.choice(words)}\nAction Input: {args}\nConfidence: {value()}\n")
    elif kind == 2:
      a, b = rng.randint(0, 999), rng.randint(0, 999)
      out.append(f"{a} + {b} = {a + b}.\n<answer>{a + b}</answer>\n\nConfidence: {value()}\n")
    elif kind == 3:
      out.append(f"{sentence()} (see f(x) = {rng.randint(1, 9)}).\n答案是{rng.choice('甲乙丙丁')}。结果很好！\n")
    else:
      out.append(f"{sentence()}! {rng.choice('😀🎉🚀👍')} {sentence()}?\n{{\"ok\": true}}\n")
  return out


@functools.cache
def _tokenizer_json(family: str) -> str:
  """tokenizer.json of `family`: the pipeline of FAMILIES[family] around a BPE trained on corpus()."""
  spec = FAMILIES[family]
  backend = tokenizers.Tokenizer(tokenizers.models.BPE())
  backend.normalizer = normalizers.NFC() if spec.nfc else None
  backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(spec.split), behavior="isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=900, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  backend.train_from_iterator(corpus(), trainer)
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec.special])
  backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.added])
  byte_level = processors.ByteLevel(trim_offsets=False)
  if spec.bos is None:
    backend.post_processor = byte_level
  else:
    bos = [(spec.bos, backend.token_to_id(spec.bos))]
    backend.post_processor = processors.Sequence([byte_level, processors.TemplateProcessing(
        single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B", special_tokens=bos)])
  config = json.loads(backend.to_str())
  config["model"]["ignore_merges"] = spec.ignore_merges
  spelling = bytes_to_unicode()
  for text in GLUED:
    token = "".join(spelling[b] for b in text.encode())
    assert token in config["model"]["vocab"], f"{family}: {text!r} is not a single token of the trained vocabulary"
  return json.dumps(config, ensure_ascii=False)


def train_sentencepiece(folder: str, text: str, model_type: str = "bpe", vocab_size: int = 400, **options) -> str:
  """A SentencePiece model (byte fallback) trained on `text`, one sentence a line; returns its .model path.

  `options` go to SentencePieceTrainer.train (its default normalization is nmt_nfkc).
  """
  path = os.path.join(folder, "corpus.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  prefix = os.path.join(folder, "m")
  sentencepiece.SentencePieceTrainer.train(input=path, model_prefix=prefix, vocab_size=vocab_size,
                                           model_type=model_type, character_coverage=0.99, byte_fallback=True,
                                           minloglevel=2, **options)
  return prefix + ".model"


@functools.cache
def _sentencepiece_model() -> bytes:
  """A Llama 2 style SentencePiece model trained on corpus() (module docstring)."""
  with tempfile.TemporaryDirectory() as folder:
    path = train_sentencepiece(folder, "".join(corpus()), "bpe", vocab_size=600, normalization_rule_name="identity",
                               remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True)
    with open(path, "rb") as f:
      return f.read()


def build_family_tokenizer(family: str, folder) -> str:
  """Writes the tokenizer of `family` (a FAMILIES key or SENTENCEPIECE) into `folder`; returns the folder."""
  folder = os.fspath(folder)
  os.makedirs(folder, exist_ok=True)
  if family == SENTENCEPIECE:
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
      f.write(_sentencepiece_model())
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
      json.dump({"tokenizer_class": "TokenizersBackend", "add_bos_token": True, "add_eos_token": False,
                 "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": LLAMA2_CHAT}, f)
    return folder
  if family not in FAMILIES:
    raise ValueError(f"unknown tokenizer family {family!r}; expected one of {sorted(FAMILIES) + [SENTENCEPIECE]}")
  spec = FAMILIES[family]
  backend = tokenizers.Tokenizer.from_str(_tokenizer_json(family))
  HFTokenizer(backend, bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad,
              chat_template=spec.template).save(folder)
  return folder
