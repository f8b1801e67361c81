"""caopd_jax.tokenizers against transformers: the real SmolLM2 GGUF, small synthetic GGUFs, SentencePiece,
save() round trips, and bad input.

SmolLM2 and transformers' GGUF conversion: SmolLM2's tokenizer.json pre-tokenizes with
Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)] (llama.cpp's `smollm` pre-tokenizer
is the same: `\\p{N}`, then the GPT-2 regex). transformers (5.x) has no entry for `smollm` and uses the
GPT-2 regex alone. The vocabulary has no merges between ASCII digits, so the two agree except
  - after a run of 2+ whitespace characters before a number ("a  1", "\\t\\t5", "\\n 7"): the GPT-2
    regex splits the run's last character off, the digit split keeps the run whole ('ĠĠ' vs 'Ġ','Ġ');
  - a space or number before a non-ASCII number character (" ²", "١ ٢"), whose bytes do merge.
We follow SmolLM2's tokenizer.json there; test_smollm2_known_transformers_differences pins examples.
"""

import functools
import json
import os
import random
import shutil
import unicodedata

import gguf
import pytest
import sentencepiece
import tokenizers
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import transformers_gguf_tokenizer
from tokenizer_families import train_sentencepiece

from caopd_jax.errors import CaopdError, CheckpointFormatError, InputNotFoundError, UnsupportedModelError
from caopd_jax.tokenizers import Tokenizer, load_tokenizer

# --- test strings -------------------------------------------------------------------------------

FIXED = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n \t ", "Hello world", "hello, world!", "HELLO WORLD",
    "hElLo WoRlD", "The Quick Brown Fox Jumps Over The Lazy Dog.", "I'm sure they'll say it's fine; don't you?",
    "I'M SURE THEY'LL SAY IT'S FINE", "  leading and trailing spaces  ", "multiple   internal    spaces",
    "tabs\tand\nnewlines\r\nmixed", "trailing newline\n", "\n\nleading newlines", "a\n\n\n\nb",
    "Café naïve résumé façade Ångström", "e\u0301 combining accent (NFD)", "Crème brûlée à la française",
    "Straße, Mädchen, Øresund, Łódź, İstanbul", "你好，世界！这是一个测试。", "日本語のテキストとカタカナ ー",
    "한국어 텍스트입니다", "Россия и Україна", "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם",
    "mixed עברית and English", "العربية 123 أرقام", "Emoji: 😀👍🏽🇺🇸 and ❤️", "👨‍👩‍👧‍👦 family ZWJ",
    "🤖🚀✨🔥💯", "Numbers 12345 and 3.14159 and 1,000,000", "2024-06-01T12:34:56Z", "0x1F600 0b1010 1e-9",
    "3141592653589793238462643383279502884197169399375105820974944", "+1 (555) 123-4567", "v1.2.3-rc.4",
    "Punctuation!!! ??? ... --- (parens) [brackets] {braces}", "¿Qué? ¡Sí! «quotes» “curly” ‘single’",
    "em—dash en–dash … ellipsis", "@user #hashtag $100 50% a&b a|b ~tilde `backtick`",
    "def foo(x):\n    return x ** 2  # square\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}', "SELECT * FROM users WHERE id = 42;",
    "<div class=\"x\">Hello</div>", "    indented code\n\tand tabbed", "x=1;y=2;z=x+y",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=two#frag",
    "http://example.com/path/to/file.html", "mailto:someone@example.com", "ftp://files.example.org/pub/",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "text<|im_end|>more",
    "<|im_start|><|im_end|>", "<repo_name>caopd<file_sep>main.py", "not special: <|im_startx|> <im_end>",
    "CamelCaseIdentifier snake_case_name kebab-case-name SCREAMING_CASE", "iPhone eBay McDonald's O'Neil",
    "a", "A", "1", "-", "'s", "'", "\"", "\\", "\\n is not a newline", "ﬁ ligature ＡＢＣ fullwidth",
    "math: ∑ x² ∫ f(x) dx ≤ ∞ √2 π ≈ 3.14", "½ ¼ ¾ ² ³", "١٢٣ ٤٥٦", "१२३ देवनागरी", "x  1", "a   12",
    "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "line\u2028separator", "ok.", "end?",
]

FRAGMENTS = [
    "hello", "World", "THE", "quick", "naïve", "Zürich", "東京", "中文", "😀", "🇯🇵", "👍🏽", "مرحبا", "שלום",
    "Привет", "42", "007", "3.14", "1,000", "2025", "9999999999", "x²", "½", "١٢", "(", ")", "{", "}", "[", "]",
    ";", ":", "...", "!", "?", "--", "==", "->", "=>", "'s", "'re", "n't", "https://a.io/b?c=d", "foo.bar()",
    "snake_case", "CamelCase", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "#", "@", "$", "%", "&", "*",
    "`code`", "é", "e\u0301", "ß", "İ", "Ω", "λx.x", "\\t", "/", "|", "~", "ABC", "abc", "Abc",
]
SEPARATORS = ["", " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\t\t", "    ", "\u3000"]


def make_strings(n_random: int = 260) -> list[str]:
  """FIXED plus deterministic random mixes of FRAGMENTS joined by SEPARATORS (no duplicates)."""
  rng = random.Random(20240601)
  out = list(FIXED)
  for _ in range(n_random):
    out.append("".join(rng.choice(FRAGMENTS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 7))))
  return list(dict.fromkeys(out))


STRINGS = make_strings()

# The pre-tokenizer of SmolLM2's tokenizer.json (HuggingFaceTB/SmolLM2-135M[-Instruct]).
SMOLLM2_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}






@pytest.fixture(scope="module")
def smollm2_reference(hf_smollm2):
  """SmolLM2's real tokenizer: transformers' vocabulary, merges and added tokens with the pre-tokenizer
  of SmolLM2's tokenizer.json."""
  spec = json.loads(hf_smollm2.backend_tokenizer.to_str())
  spec["pre_tokenizer"] = SMOLLM2_PRE_TOKENIZER
  return tokenizers.Tokenizer.from_str(json.dumps(spec))


def digit_split_may_matter(text: str) -> bool:
  """Whether splitting number characters off first can change the GPT-2 regex pieces of `text`.

  That needs a number character right after a space or another number character (the GPT-2 regex
  joins them: " 1", "²²"), or after a run of two or more whitespace characters (the GPT-2 regex's
  \\s+(?!\\S) leaves the run's last character out; after the digit split the run ends the piece and stays whole).
  """
  for i, c in enumerate(text):
    if c.isnumeric() and i > 0 and (text[i - 1] == " " or text[i - 1].isnumeric()
                                    or (i > 1 and text[i - 1].isspace() and text[i - 2].isspace())):
      return True
  return False


# --- the real SmolLM2 GGUF ---------------------------------------------------------------------------

def test_smollm2_ids_match_transformers(ours_smollm2, hf_smollm2, smollm2_reference):
  assert len(STRINGS) >= 300
  same, differ = 0, []
  for s in STRINGS:
    ours, theirs = ours_smollm2.encode(s), hf_smollm2.encode(s, add_special_tokens=False)
    assert ours == smollm2_reference.encode(s, add_special_tokens=False).ids, s
    if ours == theirs:
      same += 1
    else:
      differ.append(s)
      assert digit_split_may_matter(s), f"unexpected difference from transformers on {s!r}"
  assert same >= 200, (same, differ)
  assert differ  # the corpus does exercise the documented difference (about 1 string in 7)


# Pieces where the two pre-tokenizers can disagree, mixed at random below.
_TRICKY = list(" \t\n\r\u3000\u00a0a1²½١Zé's.,!") + ["<|im_end|>", "'re", "  ", "12", "x"]


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(st.sampled_from(_TRICKY), max_size=12).map("".join)))
def test_smollm2_random_text(ours_smollm2, hf_smollm2, smollm2_reference, text):
  """Any text: ours = SmolLM2's tokenizer.json; = transformers unless the digit split may matter."""
  ids = ours_smollm2.encode(text)
  assert ids == smollm2_reference.encode(text, add_special_tokens=False).ids
  if not digit_split_may_matter(text):
    assert ids == hf_smollm2.encode(text, add_special_tokens=False)


def test_smollm2_known_transformers_differences(ours_smollm2, hf_smollm2):
  """Where transformers' GGUF conversion (GPT-2 regex only) and SmolLM2's tokenizer.json disagree."""
  assert json.loads(ours_smollm2.backend.to_str())["pre_tokenizer"] == SMOLLM2_PRE_TOKENIZER
  cases = {  # text: (tokens of SmolLM2's tokenizer.json = ours, tokens of transformers' GGUF conversion)
      "a  1": (["a", "ĠĠ", "1"], ["a", "Ġ", "Ġ", "1"]),
      "  12": (["ĠĠ", "1", "2"], ["Ġ", "Ġ", "1", "2"]),
      "a\t\t5": (["a", "ĉĉ", "5"], ["a", "ĉ", "ĉ", "5"]),
      "x\n 7": (["x", "ĊĠ", "7"], ["x", "Ċ", "Ġ", "7"]),
      " ²": (["Ġ", "Â²"], ["ĠÂ", "²"]),
      "١ ٢": (["Ù", "¡", "Ġ", "Ù", "¢"], ["Ù", "¡", "ĠÙ", "¢"]),
  }
  for text, (ours, theirs) in cases.items():
    assert [ours_smollm2.backend.id_to_token(i) for i in ours_smollm2.encode(text)] == ours, text
    assert hf_smollm2.convert_ids_to_tokens(hf_smollm2.encode(text, add_special_tokens=False)) == theirs, text
    assert ours_smollm2.decode(ours_smollm2.encode(text)) == text


def test_smollm2_decode_round_trip(ours_smollm2, hf_smollm2):
  for s in STRINGS:
    ids = ours_smollm2.encode(s)
    assert ours_smollm2.decode(ids) == s
    assert hf_smollm2.decode(ids, skip_special_tokens=False) == s


def test_smollm2_special_tokens(ours_smollm2, hf_smollm2):
  tok = ours_smollm2
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (hf_smollm2.bos_token_id, hf_smollm2.eos_token_id,
                                                   hf_smollm2.pad_token_id)
  assert tok.stop_ids == (2, 0)  # <|im_end|>, <|endoftext|>
  assert tok.vocab_size == 49152 == len(hf_smollm2)
  assert tok.token_to_id("<|im_start|>") == 1 and tok.token_to_id("no such token") is None
  text = "<|im_start|>user\nhi<|im_end|>"
  assert tok.encode(text, add_special_tokens=True) == hf_smollm2(text)["input_ids"] == [1, 4093, 198, 6004, 2]
  assert tok.decode([1, 4093, 198, 6004, 2], skip_special_tokens=True) == "user\nhi"
  assert tok.chat_template == hf_smollm2.chat_template


def test_smollm2_bytes_missing_from_vocab_are_dropped_like_transformers(ours_smollm2, hf_smollm2):
  """SmolLM2's byte alphabet lacks a few control bytes (\\x04, \\x06, \\x13, ...): both drop them."""
  text = "a\x04b\x1dc"
  assert ours_smollm2.encode(text) == hf_smollm2.encode(text, add_special_tokens=False)
  assert ours_smollm2.decode(ours_smollm2.encode(text)) == "abc"


def test_save_round_trip_hf(ours_smollm2, tmp_path):
  out = tmp_path / "saved"
  ours_smollm2.save(str(out))
  assert sorted(os.listdir(out)) == ["tokenizer.json", "tokenizer_config.json"]
  hf = transformers.AutoTokenizer.from_pretrained(str(out))
  again = load_tokenizer(str(out))
  messages = [{"role": "user", "content": "Hi 123"}]
  for s in STRINGS:
    ids = ours_smollm2.encode(s)
    assert hf.encode(s, add_special_tokens=False) == ids == again.encode(s)
    assert hf.encode(s) == ours_smollm2.encode(s, add_special_tokens=True) == again.encode(s, True)
  assert hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) \
      == ours_smollm2.apply_chat_template(messages) == again.apply_chat_template(messages)
  assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (again.bos_id, again.eos_id, again.pad_id) == (1, 2, 2)


def test_checkpoint_folder_with_tokenizer_subfolder(ours_smollm2, tmp_path):
  (tmp_path / "params").mkdir()
  (tmp_path / "model_config.json").write_text("{}")
  ours_smollm2.save(str(tmp_path / "tokenizer"))
  tok = load_tokenizer(str(tmp_path))
  assert tok.encode("Hello 123 <|im_end|>") == ours_smollm2.encode("Hello 123 <|im_end|>")
  assert tok.chat_template == ours_smollm2.chat_template


# --- synthetic GGUF files: every supported pre-tokenizer against transformers --------------------------

CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@functools.cache
def _tiny_bpe() -> tuple[list[str], list[str]]:
  """A small byte-level BPE vocabulary (tokens in id order) and its merges, trained on synthetic text."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=CONTROL,
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  rng = random.Random(7)
  tok.train_from_iterator([" ".join(rng.choice(FRAGMENTS) for _ in range(12)) for _ in range(400)] + FIXED, trainer)
  spec = json.loads(tok.to_str())["model"]
  tokens = sorted(spec["vocab"], key=spec["vocab"].get) + ["<think>"]
  return tokens, [" ".join(m) for m in spec["merges"]]


def write_gguf(path, model="gpt2", pre="default", add_bos=None, template=None, tokens=None, merges=None):
  """A GGUF file holding only tokenizer metadata (no tensors)."""
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_tokenizer_model(model)
  if pre is not None:
    writer.add_tokenizer_pre(pre)
  if tokens is None:
    tokens, merges = _tiny_bpe()
  writer.add_token_list(tokens)
  writer.add_token_types([3 if t in CONTROL else 4 if t == "<think>" else 1 for t in tokens])
  if merges is not None:
    writer.add_token_merges(merges)
  writer.add_bos_token_id(tokens.index("<|im_start|>") if "<|im_start|>" in tokens else 0)
  writer.add_eos_token_id(tokens.index("<|im_end|>") if "<|im_end|>" in tokens else 0)
  if add_bos is not None:
    writer.add_add_bos_token(add_bos)
  if template is not None:
    writer.add_chat_template(template)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return str(path)


@pytest.mark.parametrize("pre,add_bos", [("llama-bpe", True), ("qwen2", False), ("olmo", None), ("gpt-2", None)])
def test_synthetic_gguf_matches_transformers(tmp_path, pre, add_bos):
  path = write_gguf(tmp_path / f"{pre}.gguf", pre=pre, add_bos=add_bos, template="{{ messages[0]['content'] }}")
  ours, hf = load_tokenizer(path), transformers_gguf_tokenizer(path)
  assert ours.vocab_size == len(hf)
  for s in STRINGS + ["<think>a</think>", "x<think>"]:
    if pre == "qwen2" and s != unicodedata.normalize("NFC", s):
      continue  # Qwen2's tokenizer.json normalizes to NFC; transformers' GGUF conversion does not
    assert ours.encode(s) == hf.encode(s, add_special_tokens=False), s
    assert ours.encode(s, add_special_tokens=True) == hf.encode(s), s
    assert ours.decode(ours.encode(s)) == s
  assert ours.encode("hi", add_special_tokens=True) == ([ours.bos_id] if add_bos else []) + ours.encode("hi")
  assert ours.apply_chat_template([{"role": "user", "content": "x"}]) == "x"


def test_llama3_gguf_adds_bos_when_the_file_does_not_say(tmp_path):
  """llama.cpp's default for llama-bpe (and Llama 3's tokenizer.json); transformers adds none then."""
  ours = load_tokenizer(write_gguf(tmp_path / "l.gguf", pre="llama-bpe", add_bos=None))
  assert ours.encode("hi", add_special_tokens=True) == [ours.bos_id] + ours.encode("hi")


def test_qwen2_gguf_normalizes_nfc(tmp_path):
  ours = load_tokenizer(write_gguf(tmp_path / "q.gguf", pre="qwen2"))
  assert ours.encode("Cafe\u0301 e\u0301") == ours.encode("Café é")


def test_gguf_without_template_has_no_chat(tmp_path):
  tok = load_tokenizer(write_gguf(tmp_path / "t.gguf"))
  assert tok.chat_template is None
  with pytest.raises(UnsupportedModelError, match="has no chat template"):
    tok.apply_chat_template([{"role": "user", "content": "hi"}])


# --- SentencePiece -------------------------------------------------------------------------------------

SP_STRINGS = [s for s in STRINGS if not any(t in s for t in ("<s>", "</s>", "<unk>"))]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def sp_model(request, tmp_path_factory):
  """A tiny SentencePiece model (default nmt_nfkc normalization, byte fallback) trained on synthetic text."""
  rng = random.Random(3)
  text = ("\n".join(" ".join(rng.choice(FRAGMENTS) for _ in range(10)) for _ in range(2000)) + "\n"
          + "\n".join(s for s in FIXED if s.strip()))
  return train_sentencepiece(str(tmp_path_factory.mktemp(f"sp_{request.param}")), text, request.param)


def test_sentencepiece_matches_sentencepiece_and_transformers(sp_model, tmp_path):
  processor = sentencepiece.SentencePieceProcessor(model_file=sp_model)
  ours = load_tokenizer(sp_model)
  folder = tmp_path / "hf"
  folder.mkdir()
  shutil.copy(sp_model, folder / "tokenizer.model")
  from_folder = load_tokenizer(str(folder))
  ours.save(str(tmp_path / "saved"))
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
  from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
  slow = SentencePieceBackend(vocab_file=sp_model)  # transformers' sentencepiece-library tokenizer
  assert ours.vocab_size == from_folder.vocab_size == processor.get_piece_size() == len(hf)
  for s in SP_STRINGS:
    ids = processor.encode(s)
    assert ours.encode(s) == from_folder.encode(s) == ids == hf.encode(s, add_special_tokens=False), s
    assert slow.encode(s, add_special_tokens=False) == ids, s
    assert ours.encode(s, add_special_tokens=True) == [processor.bos_id()] + ids == hf.encode(s), s
    assert ours.decode(ids) == processor.decode(ids)
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, None) == (hf.bos_token_id, hf.eos_token_id, None)
  assert ours.stop_ids == (2,)


def test_sentencepiece_special_tokens_in_text(sp_model, tmp_path):
  """Like transformers (unlike bare sentencepiece), "<s>" / "</s>" written in the text become their ids."""
  ours = load_tokenizer(sp_model)
  ours.save(str(tmp_path))
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for s in ["<s> hi </s>", "<s>[INST] question [/INST] answer</s>", "a</s>b", "</s>", "x <unk> y"]:
    assert ours.encode(s) == hf.encode(s, add_special_tokens=False), s
  ids = ours.encode("<s>hello</s>")
  assert ids[0] == 1 and ids[-1] == 2
  assert ours.decode(ids) == "<s>hello</s>"
  assert ours.decode(ids, skip_special_tokens=True) == "hello"


def test_sentencepiece_folder_config_and_template(sp_model, tmp_path):
  (tmp_path / "tokenizer.model").write_bytes(open(sp_model, "rb").read())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"add_bos_token": False, "add_eos_token": True, "eos_token": {"content": "</s>"},
       "chat_template": "ignored: chat_template.jinja wins"}))
  (tmp_path / "chat_template.jinja").write_text(
      "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
  tok = load_tokenizer(str(tmp_path))
  assert tok.encode("hi", add_special_tokens=True) == tok.encode("hi") + [2]
  assert tok.apply_chat_template([{"role": "user", "content": "a"}]) == "<s>a</s>"
  out = tmp_path / "out"
  tok.save(str(out))
  hf = transformers.AutoTokenizer.from_pretrained(str(out))
  assert hf.encode("hi") == tok.encode("hi", add_special_tokens=True)
  assert hf.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False) == "<s>a</s>"


# --- HF tokenizer.json folders ------------------------------------------------------------------------

def test_hf_folder_bos_comes_from_tokenizer_json(ours_smollm2, tmp_path):
  """As in transformers 5, tokenizer.json's post-processor decides BOS/EOS, not add_bos_token in the config."""
  ours_smollm2.save(str(tmp_path))
  config = json.loads((tmp_path / "tokenizer_config.json").read_text())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
  tok, hf = load_tokenizer(str(tmp_path)), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert tok.encode("hi", add_special_tokens=True) == hf.encode("hi") == tok.encode("hi")
  # A post-processor that adds BOS (as Llama 3's tokenizer.json has) is kept.
  spec = json.loads((tmp_path / "tokenizer.json").read_text())
  bos = {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}
  spec["post_processor"] = {
      "type": "TemplateProcessing", "special_tokens": {"<|im_start|>": bos},
      "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}]}
  (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
  tok, hf = load_tokenizer(str(tmp_path)), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert tok.encode("hi", add_special_tokens=True) == hf.encode("hi") == [1] + tok.encode("hi")


def test_load_tokenizer_json_file_directly(ours_smollm2, tmp_path):
  ours_smollm2.save(str(tmp_path))
  tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
  assert isinstance(tok, Tokenizer) and tok.eos_id == 2 and tok.chat_template == ours_smollm2.chat_template


# --- bad input ----------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(InputNotFoundError, match="does not exist") as e:
    load_tokenizer(missing)
  assert missing in str(e.value)


def test_empty_folder(tmp_path):
  with pytest.raises(InputNotFoundError) as e:
    load_tokenizer(str(tmp_path))
  msg = str(e.value)
  assert str(tmp_path) in msg and "tokenizer.json" in msg and "tokenizer.model" in msg
  assert os.path.join(str(tmp_path), "tokenizer") in msg


def test_not_a_tokenizer_file(tmp_path):
  (tmp_path / "notes.txt").write_text("hi")
  with pytest.raises(InputNotFoundError, match="not a tokenizer file"):
    load_tokenizer(str(tmp_path / "notes.txt"))


def test_corrupt_tokenizer_json(tmp_path):
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(CheckpointFormatError, match="tokenizer.json"):
    load_tokenizer(str(tmp_path))


def test_gguf_unsupported_tokenizer_model(tmp_path):
  path = write_gguf(tmp_path / "bert.gguf", model="bert", pre=None, tokens=["[PAD]", "<|im_start|>", "<|im_end|>"])
  with pytest.raises(UnsupportedModelError) as e:
    load_tokenizer(path)
  msg = str(e.value)
  assert "'bert'" in msg and "tokenizer.ggml.model" in msg and "gpt2" in msg and path in msg


def test_gguf_sentencepiece_vocab_unsupported(tmp_path):
  path = write_gguf(tmp_path / "llama.gguf", model="llama", pre=None, tokens=["<unk>", "<|im_start|>", "<|im_end|>"])
  with pytest.raises(UnsupportedModelError, match="'llama'.*supported: gpt2"):
    load_tokenizer(path)


def test_gguf_unsupported_pre_tokenizer(tmp_path):
  path = write_gguf(tmp_path / "pre.gguf", pre="mystery-pre")
  with pytest.raises(UnsupportedModelError) as e:
    load_tokenizer(path)
  msg = str(e.value)
  assert "'mystery-pre'" in msg and "tokenizer.ggml.pre" in msg and "smollm" in msg and "qwen2" in msg


def test_gguf_without_tokenizer(tmp_path):
  writer = gguf.GGUFWriter(str(tmp_path / "w.gguf"), "llama")
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(InputNotFoundError, match="has no tokenizer .*tokenizer.ggml.model is missing"):
    load_tokenizer(str(tmp_path / "w.gguf"))


def test_corrupt_gguf(tmp_path):
  (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00garbage")
  with pytest.raises(CheckpointFormatError, match="not a readable GGUF file"):
    load_tokenizer(str(tmp_path / "bad.gguf"))


def test_errors_are_caopd_errors():
  for cls in (InputNotFoundError, UnsupportedModelError, CheckpointFormatError):
    assert issubclass(cls, CaopdError)


def test_character_tokenizer_round_trips_and_matches_transformers(tmp_path):
  from caopd_jax.tokenizers.characters import CHARACTERS, character_tokenizer
  tok = character_tokenizer()
  text = "12 + 35 = 47\n<answer>47</answer>\tConfidence: 0.62 ~{}"
  ids = tok.encode(text)
  assert len(ids) == len(text) and tok.decode(ids) == text            # one id per character
  assert tok.vocab_size == 4 + len(CHARACTERS) and tok.encode("é") == [tok.token_to_id("<unk>")]
  assert tok.stop_ids == (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>"))
  messages = [{"role": "system", "content": "Compute."}, {"role": "user", "content": "What is 2 + 3?"}]
  prompt = tok.apply_chat_template(messages)
  assert prompt.endswith("<|im_start|>assistant\n")
  tok.save(str(tmp_path))
  reloaded = load_tokenizer(str(tmp_path))
  reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for ours in (tok, reloaded):
    assert ours.encode(prompt) == reference.encode(prompt, add_special_tokens=False)
  assert reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == prompt
  assert reloaded.decode(tok.encode(prompt), skip_special_tokens=True) == reference.decode(
      tok.encode(prompt), skip_special_tokens=True)
