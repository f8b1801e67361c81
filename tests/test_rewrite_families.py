"""The CaOPD rewrites keep the answer intact for every tokenizer family (issue 17 part 1).

Tokenizers: Qwen2.5, Qwen3, Llama 3, OLMo 3 (byte-level BPEs with their real pipelines, tokenizer_families), a
Llama 2 style SentencePiece, and the real SmolLM2 GGUF. Student side, for body = strip_confidence(decode(sampled
ids up to the first stop id)) and want = body + "\\nConfidence: X":
  decode(rewritten ids without EOS) == want, unless the tokenizer cannot spell `want` (decode(encode(want)) != want,
  e.g. NFC changes it); then the two are equal after that round trip. The leading `sampled` ids are the sampled ones.
Teacher side: the rendered teacher prompt carries the patched demonstration and the note, and tokenizes back exactly
(where the tokenizer can spell the demonstration at all: SmolLM2's vocabulary lacks some bytes, e.g. 0xF1).
"""

import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tokenizer_families import FAMILIES, SENTENCEPIECE, build_family_tokenizer

from caopd_jax.calibration import (CONFIDENCE_KEY, confidence_note, format_fraction, parse_confidence,
                                   parse_mcq_answer, parse_tool_call, patch_demonstration, rewrite_batch,
                                   rewrite_completion, strip_confidence)
from caopd_jax.data.example import Example
from caopd_jax.distill.prompts import render, teacher_messages
from caopd_jax.tokenizers import load_tokenizer

SETTINGS = settings(deadline=None, max_examples=40)


@pytest.fixture(scope="module", params=[*FAMILIES, SENTENCEPIECE, "smollm2"])
def tok(request, tmp_path_factory):
  if request.param == "smollm2":
    return request.getfixturevalue("ours_smollm2")
  return load_tokenizer(build_family_tokenizer(request.param, tmp_path_factory.mktemp(request.param)))


ENDINGS = st.sampled_from(["<answer>B</answer>", '{"days": 3}', "f(x)", "done.", "= 47", "答案是甲", "😀", "👍🏽",
                           "<answer>12</answer>", "</think>", "e\u0301", "<tool_call>"])
PIECES = st.sampled_from(["<reasoning>", "\n", " ", "  ", "\t", "Thought: x.\n", "é", "中文", "{\"a\": [1, 2]}",
                          ".\n", "}\n", ">\n", ")\n", "12 + 35 = 47", "Action Input: ", "<|im_end|>", "\n\n"])
BODIES = st.tuples(st.lists(PIECES | st.text(max_size=6), max_size=6).map("".join), ENDINGS).map("".join)
SUFFIXES = st.sampled_from(["", "\n", "\n\n", " \n", "\nConfidence: 0.9", "\n\nConfidence: 0.85\n",
                            ".\nconfidence: 70%", "Confidence: 1", "\n**Confidence:** 0.3", "\n}\nConfidence: 0.5"])


def _stop(tok, ids, eos_id):
  stops = set(tok.stop_ids) | {eos_id}
  return next((ids[:n] for n, i in enumerate(ids) if i in stops), ids)


def _inside(tok, ids, body):
  """The most leading ids whose text lies wholly inside the body (by brute force)."""
  return max(n for n in range(len(ids) + 1) if body.startswith(tok.decode(ids[:n])))


def check_rewrite(tok, sampled, target, max_tokens):
  """The rewrite contract (module docstring) for one sampled completion; returns the rewrite."""
  out = rewrite_completion(tok, sampled, target, max_tokens, tok.eos_id)
  ids = _stop(tok, sampled, tok.eos_id)
  body, line = strip_confidence(tok.decode(ids)), "\nConfidence: " + target
  text = tok.decode(out.ids[:-1])
  round_trip = lambda s: tok.decode(tok.encode(s))  # noqa: E731
  kept = body if not out.truncated_body else text[:-len(line)]
  want = kept + line
  if text != want:  # only where the tokenizer cannot spell the target; equal after its own round trip then
    assert round_trip(want) != want and round_trip(text) == round_trip(want), (text, want)
    assert out.path == "inexact"
  assert body.startswith(kept) and parse_confidence(text) == float(target) and len(CONFIDENCE_KEY.findall(text)) == 1
  assert out.ids[-1] == tok.eos_id and len(out.ids) <= max_tokens and out.loss_mask == [1] * len(out.ids)
  assert out.ids[:out.sampled] == ids[:out.sampled] and body.startswith(tok.decode(ids[:out.sampled]))
  if out.path == "splice" and not out.truncated_body:
    assert out.sampled == _inside(tok, ids, body)  # every sampled id wholly inside the body is kept
  return out


def _sample(tok, text, cuts):
  """Ids of `text` as a model may sample them: encoded in pieces split at `cuts` (non-canonical spellings)."""
  bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
  return [i for a, b in zip(bounds, bounds[1:]) for i in tok.encode(text[a:b])]


def _target(data, k):
  return format_fraction(data.draw(st.integers(0, k)), k)


@given(body=BODIES, suffix=SUFFIXES, cuts=st.lists(st.integers(0, 200), max_size=4), k=st.integers(1, 16),
       data=st.data())
@SETTINGS
def test_rewrite_keeps_the_answer(tok, body, suffix, cuts, k, data):
  target = _target(data, k)
  sampled = _sample(tok, body + suffix, cuts) + data.draw(st.sampled_from([[], [tok.eos_id], [tok.eos_id, 5, 6]]))
  out = check_rewrite(tok, sampled, target, max_tokens=len(sampled) + 24)
  if not out.truncated_body and out.path != "inexact":
    assert tok.decode(out.ids[:-1]).startswith(strip_confidence(tok.decode(_stop(tok, sampled, tok.eos_id))))


@given(body=BODIES, suffix=SUFFIXES, k=st.integers(1, 16), data=st.data())
@SETTINGS
def test_rewrite_cuts_the_body_to_fit(tok, body, suffix, k, data):
  target = _target(data, k)
  sampled = tok.encode(body + suffix)
  check_rewrite(tok, sampled, target, max_tokens=data.draw(st.integers(16, max(16, len(sampled) + 4))))


@given(ids=st.lists(st.integers(0, 10**6), max_size=40), k=st.integers(1, 16), data=st.data())
@SETTINGS
def test_rewrite_random_ids(tok, ids, k, data):
  """Arbitrary ids: partial UTF-8 characters, special tokens, stray stop tokens."""
  check_rewrite(tok, [i % tok.vocab_size for i in ids], _target(data, k), max_tokens=data.draw(st.integers(16, 60)))


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama3", "olmo3"])
@pytest.mark.parametrize("body, sampled_suffix", [
    ("<reasoning>\nAcid.\n</reasoning>\n<answer>B</answer>", "\nConfidence: 0.90"),
    ('Thought: weather.\nAction: forecast\nAction Input: {"days": 3}', "\nConfidence: 0.9"),
])
def test_glued_newline_tokens_keep_tags_and_json(family, body, sampled_suffix, tmp_path):
  """The issue's examples: `>\\n` / `}\\n` are single tokens, and the answer's `>` / `}` must survive."""
  tok = load_tokenizer(build_family_tokenizer(family, tmp_path))
  sampled = tok.encode(body + sampled_suffix)
  assert any(tok.decode([i]) in (">\n", "}\n") for i in sampled)
  out = check_rewrite(tok, sampled, "0.38", max_tokens=200)
  assert tok.decode(out.ids[:-1]) == body + "\nConfidence: 0.38" and out.path == "splice"
  assert parse_mcq_answer(tok.decode(out.ids)) == "B" or parse_tool_call(tok.decode(out.ids))[1] == '{"days": 3}'


@given(texts=st.lists(st.tuples(BODIES, SUFFIXES).map("".join), min_size=1, max_size=6), prompts=st.integers(1, 2),
       enabled=st.booleans(), data=st.data())
@settings(deadline=None, max_examples=15)
def test_rewrite_batch_masks(tok, texts, prompts, enabled, data):
  k = len(texts)
  rows = [tok.encode(t) + [tok.eos_id] for t in texts] * prompts
  width, pad = max(map(len, rows)), 0
  tokens = np.full((prompts * k, width), pad, dtype=np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  correct = np.array([[data.draw(st.booleans()) for _ in range(k)] for _ in range(prompts)])
  max_tokens = width + 24
  out = rewrite_batch(tok, tokens.reshape(prompts, k, width), np.array([len(r) for r in rows]).reshape(prompts, k),
                      correct, max_tokens=max_tokens, eos_id=tok.eos_id, enabled=enabled, pad_id=pad)
  assert out.sampled_mask.shape == out.ids.shape == (prompts * k, max_tokens) and out.sampled_mask.dtype == bool
  assert sum(out.paths.values()) == (prompts * k if enabled else 0)
  for i, row in enumerate(rows):
    n, mask = out.lengths[i], out.sampled_mask[i]
    if not enabled:
      assert out.ids[i, :n].tolist() == row and mask[:n].all() and not mask[n:].any()
      continue
    rewritten = check_rewrite(tok, row, out.stats["target"][i // k], max_tokens)
    assert out.ids[i, :n].tolist() == rewritten.ids and not out.ids[i, n:].any()
    assert mask.tolist() == [j < rewritten.sampled for j in range(max_tokens)] and not mask[n - 1]
    assert out.edited[i] == (rewritten.ids != row)
    value = tok.decode(out.ids[i][out.confidence_mask[i].astype(bool)].tolist())
    assert out.stats["target"][i // k] in value and "Confidence" not in value and out.confidence_mask[i, n - 2]


@given(body=BODIES, demo_tail=st.sampled_from(["", "\nthe end", "\n\n"]), k=st.integers(1, 16), data=st.data())
@settings(deadline=None, max_examples=25)
def test_teacher_prompt_keeps_the_answer(tok, body, demo_tail, k, data):
  """Demonstration patch and note: the teacher prompt, as tokenized, carries the demonstration's answer."""
  body = unicodedata.normalize("NFC", strip_confidence(body)).strip()
  target = _target(data, k)
  demo = f"{body}\nConfidence: 1.00{demo_tail}".strip()
  patched = patch_demonstration(demo, target)
  assert patched.startswith(body) and parse_confidence(patched) == float(target)
  assert parse_mcq_answer(patched) == parse_mcq_answer(body) and parse_tool_call(patched) == parse_tool_call(body)
  example = Example(id="x", question="Which one?", answer="B", verifier="mcq", task="science", demonstration=demo)
  prompt = render(tok, teacher_messages(example, "demo", target=target))
  assert patched in prompt and confidence_note(target) in prompt
  round_trip = lambda s: tok.decode(tok.encode(s))  # noqa: E731
  assert round_trip(patched) in round_trip(prompt)
  assert round_trip(prompt) == prompt or round_trip(body) != body  # exact where the tokenizer spells the body
