"""Confidence parsing (CAOPD.md section 7) and half-up two-decimal formatting (section 10)."""

import decimal
import math

import pytest
from hypothesis import given, settings, strategies as st

from caopd_jax.calibration import confidence_start, format_confidence, format_fraction, parse_confidence


@pytest.mark.parametrize("text, expected", [
    ("Confidence: 0.70", 0.7),
    ("Confidence: .7", 0.7),
    ("confidence: 0.7", 0.7),
    ("CONFIDENCE:0.25", 0.25),
    ("Confidence: 70%", 0.7),
    ("Confidence: 70 %", 0.7),
    ("Confidence: 85", 0.85),          # > 10: a percentage without '%'
    ("Confidence: 8", 0.8),            # 2..10: a 1-10 scale
    ("Confidence: 10", 1.0),
    ("Confidence: 1", 1.0),
    ("Confidence: 1.5", 1.0),          # (1, 2): an overshooting probability, clipped
    ("Confidence: 8/10", 0.8),         # fractions are read as such
    ("Confidence: 3/4", 0.75),
    ("Confidence: 150%", 1.0),
    ("Confidence: -0.3", 0.0),
    ("Confidence: 7.", 0.7),
    ("**Confidence:** 0.9", 0.9),
    ("**Confidence**: 0.9", 0.9),
    ("Confidence: 0.2\nmore text\nConfidence: 0.4", 0.4),            # the LAST line wins
    ("Confidence: 0.9\n<answer>A</answer>", 0.9),                     # before the answer is fine
    ("Confidence: 0.3\nConfidence: high", 0.3),                       # an unparsable last line is skipped
    ("Confidence: 0.3\nConfidence: 5/0", 0.3),                        # so is a zero denominator
    ("<confidence>85</confidence>", 0.85),
    ("<confidence>0.4</confidence> <CONFIDENCE> 7 </CONFIDENCE>", 0.7),
    ("<confidence>40%</confidence>", 0.4),
    ("Confidence: 0.6 <confidence>0.1</confidence>", 0.6),          # the line beats the tag
    ("", None),
    ("no confidence stated", None),
    ("Confidence: high", None),
    ("Overconfidence: 0.9", None),     # only the word 'confidence' counts
    ("<confidence>high</confidence>", None),
])
def test_parse_confidence(text, expected):
  got = parse_confidence(text)
  assert got == (None if expected is None else pytest.approx(expected)), text


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_parse_confidence_never_crashes(text):
  value = parse_confidence(text)
  assert value is None or 0.0 <= value <= 1.0
  assert 0 <= confidence_start(text) <= len(text)


def test_parse_confidence_weird_unicode():
  bad = b"\xff\xfe Confidence: 0.5 \xc3".decode("utf-8", errors="surrogateescape")  # lone surrogates
  assert parse_confidence(bad) == 0.5
  assert parse_confidence("Confidence: \u0664\u0665") is None  # Arabic-Indic digits are not numbers here
  assert parse_confidence("\u202eConfidence:\u00a00.5\ufffd") == 0.5  # a no-break space is a space
  assert parse_confidence("Confidence:\n0.5") is None  # the value must be on the key's line
  assert parse_confidence("Confidence: 0.5\x00\U0001F600") == 0.5


def _half_up(correct, k):
  with decimal.localcontext(decimal.Context(prec=50)):
    exact = decimal.Decimal(correct) / decimal.Decimal(k)
    return str(exact.quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP))


def test_rounding_table_eighths():
  assert [format_fraction(c, 8) for c in range(9)] == [
      "0.00", "0.13", "0.25", "0.38", "0.50", "0.63", "0.75", "0.88", "1.00"]


@pytest.mark.parametrize("k", range(1, 17))
def test_rounding_table_against_decimal(k):
  for c in range(k + 1):
    assert format_fraction(c, k) == _half_up(c, k), (c, k)
    assert format_confidence(c / k) == _half_up(c, k), (c, k)


def test_format_confidence():
  assert format_confidence(0.125) == "0.13"   # the reference's round-half-even gives "0.12"
  assert format_confidence(0.145) == "0.15"   # read as the decimal it prints as
  assert format_confidence(0.0) == "0.00" and format_confidence(1) == "1.00"
  for bad in (-0.01, 1.01, math.nan, math.inf):
    with pytest.raises(ValueError):
      format_confidence(bad)


@pytest.mark.parametrize("correct, k", [(-1, 8), (9, 8), (0, 0), (1.0, 8)])
def test_format_fraction_rejects(correct, k):
  with pytest.raises(ValueError):
    format_fraction(correct, k)
