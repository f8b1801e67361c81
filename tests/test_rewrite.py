"""CaOPD target replacement (CAOPD.md section 4 step 3): text level, the SmolLM2 tokenizer, each rewrite path."""

import numpy as np
import pytest

from caopd_jax.calibration import (confidence_line_ids, confidence_note, empirical_confidence, patch_demonstration,
                                   rewrite_batch, rewrite_completion, rollout_stats, strip_confidence,
                                   with_confidence)
from caopd_jax.errors import CaopdError
from caopd_jax.tokenizers import load_tokenizer


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


# --- token level (every tokenizer family: test_rewrite_families.py)
def test_rewrite_keeps_sampled_body(ours_smollm2):
  tok = ours_smollm2
  body = "<reasoning>héllo 😀 world</reasoning>\n<answer>B</answer>"
  sampled = tok.encode(body + "\n\nConfidence: 0.95") + [tok.eos_id, 5, 6]
  out = rewrite_completion(tok, sampled, "0.38", max_tokens=200, eos_id=tok.eos_id)
  n = len(tok.encode(body))
  assert out.ids[:n] == sampled[:n] and out.ids[n:-1] == confidence_line_ids(tok, "0.38")
  assert out.ids[-1] == tok.eos_id and out.loss_mask == [1] * len(out.ids) and not out.truncated_body
  assert tok.decode(out.ids[:-1]) == with_confidence(body, "0.38") and (out.sampled, out.path) == (n, "splice")
  # a budget too small for the whole body cuts the body, never the line
  short = rewrite_completion(tok, sampled, "0.38", max_tokens=len(out.ids) - 3, eos_id=tok.eos_id)
  assert short.truncated_body and short.ids == out.ids[:n - 3] + out.ids[n:] and short.sampled == n - 3
  with pytest.raises(CaopdError, match="max_tokens"):
    rewrite_completion(tok, sampled, "0.38", max_tokens=3, eos_id=tok.eos_id)


def test_rewrite_does_not_reencode(ours_smollm2):
  """A non-canonical sampled spelling (one id per character) is kept as sampled, up to the key."""
  tok = ours_smollm2
  chars = [tok.encode(c)[0] for c in "answer: 12\n\nConfidence:0.9"]
  assert chars[:10] != tok.encode("answer: 12")  # not what encode() would give
  out = rewrite_completion(tok, chars, "1.00", max_tokens=64, eos_id=tok.eos_id)
  assert out.ids[:-1] == chars[:10] + confidence_line_ids(tok, "1.00") and out.sampled == 10


def test_rewrite_keeps_a_sample_that_is_already_right(ours_smollm2):
  tok = ours_smollm2
  sampled = tok.encode("<answer>A</answer>\nConfidence: 0.50") + [tok.eos_id]
  out = rewrite_completion(tok, sampled, "0.50", max_tokens=64, eos_id=tok.eos_id)
  assert out.ids == sampled and out.path == "splice"


class WordInitialBigrams:
  """A test double with SentencePiece's dummy prefix, merged into the next character: encode(text) spells
  text[:2] as one word-initial token (decoded as " " + text[:2] mid-text) and the rest as characters. No anchor
  splits off its own ids there, so no splice after sampled ids is exact; only re-encoding the whole target is."""
  stop_ids, eos_id = (1,), 1

  def __init__(self):
    self.first = {}  # word-initial bigram -> id

  def encode(self, text):
    if not text:
      return []
    head = self.first.setdefault(text[:2], 10**6 + len(self.first))
    return [head] + [ord(c) + 2 for c in text[2:]]

  def decode(self, ids):
    spelled = {i: s for s, i in self.first.items()}
    return "".join((" " * (n > 0) + spelled[i]) if i in spelled else chr(i - 2) for n, i in enumerate(ids))


def test_rewrite_reencodes_when_no_splice_is_exact():
  tok = WordInitialBigrams()
  sampled = tok.encode("<answer>B</answer>\n\nConfidence: 0.9")
  out = rewrite_completion(tok, sampled, "0.38", max_tokens=64, eos_id=tok.eos_id)
  assert out.path == "reencode" and tok.decode(out.ids[:-1]) == "<answer>B</answer>\nConfidence: 0.38"
  assert out.ids[:-1] == tok.encode("<answer>B</answer>\nConfidence: 0.38")
  assert out.sampled == len("<answer>B</answer>") - 1  # the re-encoding shares the sampled ids of the body


def test_rewrite_inexact_where_the_tokenizer_cannot_spell_the_target(tmp_path):
  """SentencePiece's default nmt_nfkc normalization turns a newline into a space: no ids spell the target."""
  from tokenizer_families import corpus, train_sentencepiece
  tok = load_tokenizer(train_sentencepiece(str(tmp_path), "".join(corpus()), "bpe", vocab_size=500))
  body = 'Action Input: {"days": 3}'
  out = rewrite_completion(tok, tok.encode(body + "\nConfidence: 0.9"), "0.38", max_tokens=64, eos_id=tok.eos_id)
  assert out.path == "inexact" and tok.decode(out.ids[:-1]) == body + " Confidence: 0.38"
  round_trip = lambda s: tok.decode(tok.encode(s))  # noqa: E731
  assert round_trip(tok.decode(out.ids[:-1])) == round_trip(with_confidence(body, "0.38"))
  assert out.ids[:out.sampled] == tok.encode(body)[:out.sampled] and out.sampled > 0


def test_rewrite_batch_disabled_rejects_long_rows(ours_smollm2):
  tokens = np.ones((1, 2, 10), dtype=np.int32)
  with pytest.raises(CaopdError, match="max_tokens"):
    rewrite_batch(ours_smollm2, tokens, np.full((1, 2), 10), np.zeros((1, 2), bool), max_tokens=8,
                  eos_id=ours_smollm2.eos_id, enabled=False)


def test_rewrite_batch_counts_paths_and_sampled_positions(ours_smollm2):
  tok = ours_smollm2
  rows = [tok.encode("<answer>B</answer>\nConfidence: 0.9") + [tok.eos_id], tok.encode("12") + [tok.eos_id]]
  tokens = np.zeros((1, 2, max(map(len, rows))), np.int32)
  for j, row in enumerate(rows):
    tokens[0, j, :len(row)] = row
  lengths = np.array([[len(r) for r in rows]])
  out = rewrite_batch(tok, tokens, lengths, np.array([[True, False]]), max_tokens=32, eos_id=tok.eos_id)
  assert out.paths == {"splice": 2} and out.stats["target"] == ["0.50"]
  body_ids = [len(tok.encode("<answer>B</answer>")), len(tok.encode("12"))]
  np.testing.assert_array_equal(out.sampled_mask.sum(1), body_ids)
  assert out.sampled_mask[:, 0].all() and out.edited.all()
  plain = rewrite_batch(tok, tokens, lengths, np.array([[True, False]]), max_tokens=32, eos_id=tok.eos_id,
                        enabled=False)
  np.testing.assert_array_equal(plain.sampled_mask, plain.loss_mask.astype(bool))
  assert plain.paths == {} and not plain.edited.any()
