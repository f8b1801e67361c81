"""CaOPD target replacement (CAOPD.md section 4 step 3), text level and on the real SmolLM2 tokenizer."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from caopd_jax.calibration import (CONFIDENCE_KEY, confidence_line_ids, confidence_note, empirical_confidence,
                                   format_fraction, parse_confidence, patch_demonstration, rewrite_batch,
                                   rewrite_completion, rollout_stats, strip_confidence, with_confidence)
from caopd_jax.errors import CaopdError

NO_DEADLINE = settings(deadline=None)  # tokenizer calls on a shared CI machine vary in time


# --- text level
@pytest.mark.parametrize("text, body", [
    ("<answer>B</answer>\n\nConfidence: 0.85\n", "<answer>B</answer>"),
    ("a confidence: 0.2 b\nConfidence: 0.9", "a"),          # from the FIRST key, any case
    ("no line  \n", "no line"),
    ("Confidence: 1.0", ""),
])
def test_strip_confidence(text, body):
  assert strip_confidence(text) == body
  assert with_confidence(body, "0.50") == body + "\nConfidence: 0.50"


def test_patch_demonstration():
  demo = "reasoning\nConfidence: 0.2 maybe\n<answer>A</answer>\nConfidence: 1.00\nthe end"
  assert patch_demonstration(demo, "0.38") == (
      "reasoning\nConfidence: 0.2 maybe\n<answer>A</answer>\nConfidence: 0.38\nthe end")
  assert patch_demonstration("<answer>A</answer>\nconfidence: 95%", "0.63") == "<answer>A</answer>\nConfidence: 0.63"
  assert patch_demonstration("<answer>A</answer>\n\n", "0.13") == "<answer>A</answer>\nConfidence: 0.13"


def test_confidence_note():
  note = confidence_note("0.63")
  assert "0.63" in note and "Confidence" in note and "{" not in note
  assert confidence_note("0.5", "P={confidence}; write {confidence}") == "P=0.5; write 0.5"
  with pytest.raises(CaopdError, match="placeholder"):
    confidence_note("0.5", "no placeholder")


def test_empirical_confidence_and_stats():
  correct = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0] * 8], dtype=bool)
  p_acc, targets = empirical_confidence(correct)
  np.testing.assert_allclose(p_acc, [0.125, 1.0, 0.0])
  assert targets == ["0.13", "1.00", "0.00"]
  stated = np.full((3, 8), np.nan)
  stated[0, :4] = [1.0, 0.5, 0.5, 1.0]
  stated[1, 0] = 0.9
  stats = rollout_stats(correct, stated)
  np.testing.assert_allclose(stats["mean_confidence"], [0.75, 0.9, np.nan])
  np.testing.assert_allclose(stats["format_adherence"], [0.5, 0.125, 0.0])
  assert stats["target"] == targets
  with pytest.raises(ValueError):
    empirical_confidence(np.zeros(3, dtype=bool))


# --- token level, SmolLM2 tokenizer
def test_rewrite_keeps_sampled_body(ours_smollm2):
  tok = ours_smollm2
  body = "<reasoning>héllo 😀 world</reasoning>\n<answer>B</answer>"
  sampled = tok.encode(body + "\n\nConfidence: 0.95") + [tok.eos_id, 5, 6]
  out = rewrite_completion(tok, sampled, "0.38", max_tokens=200, eos_id=tok.eos_id)
  n = len(tok.encode(body))
  assert out.ids[:n] == sampled[:n] and out.ids[n:-1] == confidence_line_ids(tok, "0.38")
  assert out.ids[-1] == tok.eos_id and out.loss_mask == [1] * len(out.ids) and not out.truncated_body
  assert tok.decode(out.ids[:-1]) == with_confidence(body, "0.38")
  # a budget too small for the whole body cuts the body, never the line
  short = rewrite_completion(tok, sampled, "0.38", max_tokens=len(out.ids) - 3, eos_id=tok.eos_id)
  assert short.truncated_body and short.ids == out.ids[:n - 3] + out.ids[n:]
  with pytest.raises(CaopdError, match="max_tokens"):
    rewrite_completion(tok, sampled, "0.38", max_tokens=3, eos_id=tok.eos_id)


def test_rewrite_does_not_reencode(ours_smollm2):
  """A non-canonical sampled spelling (one id per character) is kept as sampled, up to the key."""
  tok = ours_smollm2
  chars = [tok.encode(c)[0] for c in "answer: 12\n\nConfidence:0.9"]
  assert chars[:10] != tok.encode("answer: 12")  # not what encode() would give
  out = rewrite_completion(tok, chars, "1.00", max_tokens=64, eos_id=tok.eos_id)
  assert out.ids[:-1] == chars[:10] + confidence_line_ids(tok, "1.00")


PIECES = st.sampled_from([
    "<answer>A</answer>", "<answer>c", "\nConfidence: 0.9", "Confidence: 85%", "confidence:", " Confidence : .7",
    "\n", "\n\n", "  ", "😀", "é", "中文", "{\"a\": 1}", "Action: x", "<confidence>0.3</confidence>", "**Confidence:**"])
TEXTS = st.lists(PIECES | st.text(max_size=12), max_size=10).map("".join)


def _check_rewrite(tok, sampled, target, max_tokens):
  """The rewrite invariants for one sampled completion; returns the rewrite."""
  out = rewrite_completion(tok, sampled, target, max_tokens, tok.eos_id)
  line = confidence_line_ids(tok, target) + [tok.eos_id]
  body = out.ids[:len(out.ids) - len(line)]
  assert len(out.ids) <= max_tokens and out.ids[len(body):] == line and len(out.loss_mask) == len(out.ids)
  assert body == sampled[:len(body)]                               # an exact prefix of the sampled ids
  text = tok.decode(out.ids[:-1])
  assert text.endswith("\nConfidence: " + target)
  assert len(CONFIDENCE_KEY.findall(text)) == 1                    # exactly one confidence line ...
  assert parse_confidence(text) == float(target)                   # ... whose value is the target
  stop = next((n for n, i in enumerate(sampled) if i in tok.stop_ids), len(sampled))
  original = tok.decode(sampled[:stop])
  if not out.truncated_body:
    assert strip_confidence(original).startswith(tok.decode(body))
  return out


@given(text=TEXTS, k=st.integers(1, 16), data=st.data())
@settings(NO_DEADLINE, max_examples=120)
def test_rewrite_completion_properties(ours_smollm2, text, k, data):
  tok = ours_smollm2
  target = format_fraction(data.draw(st.integers(0, k)), k)
  sampled = tok.encode(text) + data.draw(st.sampled_from([[], [tok.eos_id], [0, 7, 8]]))
  max_tokens = data.draw(st.integers(len(confidence_line_ids(tok, target)) + 1, len(sampled) + 12))
  _check_rewrite(tok, sampled, target, max_tokens)


@given(ids=st.lists(st.integers(0, 49151), max_size=40), k=st.integers(1, 16), data=st.data())
@settings(NO_DEADLINE, max_examples=80)
def test_rewrite_completion_random_ids(ours_smollm2, ids, k, data):
  """Arbitrary token ids: partial UTF-8 characters, special tokens, stray stop tokens."""
  target = format_fraction(data.draw(st.integers(0, k)), k)
  _check_rewrite(ours_smollm2, ids, target, max_tokens=data.draw(st.integers(12, 60)))


@given(texts=st.lists(TEXTS, min_size=1, max_size=16), prompts=st.integers(1, 3), enabled=st.booleans(),
       data=st.data())
@settings(NO_DEADLINE, max_examples=40)
def test_rewrite_batch(ours_smollm2, texts, prompts, enabled, data):
  tok, k = ours_smollm2, len(texts)
  rows = [tok.encode(t) + [tok.eos_id] for t in texts] * prompts
  width = max(map(len, rows))
  tokens = np.zeros((prompts * k, width), dtype=np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  lengths = np.array([len(r) for r in rows]).reshape(prompts, k)
  counts = [data.draw(st.integers(0, k)) for _ in range(prompts)]
  correct = np.array([np.random.default_rng(c).permutation(np.arange(k) < c) for c in counts])
  max_tokens = width + 12
  out = rewrite_batch(tok, tokens.reshape(prompts, k, width), lengths, correct, max_tokens=max_tokens,
                      eos_id=tok.eos_id, enabled=enabled)
  assert out.ids.shape == out.loss_mask.shape == (prompts * k, max_tokens)
  assert out.stats["target"] == [format_fraction(c, k) for c in counts]
  np.testing.assert_array_equal(out.stats["accuracy"] * k, counts)   # P_acc in {0, 1/K, ..., 1}
  np.testing.assert_array_equal(out.loss_mask.sum(1), out.lengths)
  for i, row in enumerate(rows):
    got = out.ids[i, :out.lengths[i]].tolist()
    assert (out.ids[i, out.lengths[i]:] == 0).all()
    if enabled:
      target = out.stats["target"][i // k]
      assert got == _check_rewrite(tok, row, target, max_tokens).ids
      assert out.edited[i] == (got != row)
      # the confidence mask covers the value's tokens, just before EOS, and nothing of "Confidence:"
      value_ids = out.ids[i][out.confidence_mask[i].astype(bool)].tolist()
      assert target in tok.decode(value_ids) and "Confidence" not in tok.decode(value_ids)
      assert out.confidence_mask[i, out.lengths[i] - 1] == 0 and out.confidence_mask[i, out.lengths[i] - 2] == 1
    else:
      assert got == row and not out.edited[i] and not out.truncated_body[i]
      assert not out.confidence_mask[i].any()


def test_rewrite_batch_disabled_rejects_long_rows(ours_smollm2):
  tokens = np.ones((1, 2, 10), dtype=np.int32)
  with pytest.raises(CaopdError, match="max_tokens"):
    rewrite_batch(ours_smollm2, tokens, np.full((1, 2), 10), np.zeros((1, 2), bool), max_tokens=8,
                  eos_id=ours_smollm2.eos_id, enabled=False)
