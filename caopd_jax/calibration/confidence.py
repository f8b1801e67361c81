"""Reading and writing the `Confidence:` value of a completion (docs/CAOPD.md section 7).

Parsing (`parse_confidence`) takes the LAST `Confidence: <value>` in the text
(case-insensitive; markdown bold such as `**Confidence:** 0.8` is accepted) and,
only when there is none, the LAST `<confidence>value</confidence>`. A value is
a number (`0.7`, `.7`, `70`, `-0.1`, `1e-5`), a percentage (`70%`) or a fraction
(`8/10`), mapped to [0, 1] by `_to_probability`:

  `a/b` (b > 0)          -> a / b
  `v%`                   -> v / 100
  v > 10                 -> v / 100      (a percentage written without '%')
  2 <= v <= 10           -> v / 10       (a 1-10 scale)
  otherwise              -> v            (a probability; 1.5 is an overshoot, not 0.15)
then clipped to [0, 1]. Values in (1, 2) are read as overshooting probabilities
(`Confidence: 1.5` -> 1.0, as the reference clips); from 2 on they cannot be
probabilities and are read as a 1-10 scale. Both sources use the same mapping.
Deviation from the reference, on purpose: it maps only `<confidence>` values and
merely clips `Confidence: v` lines, so `Confidence: 70%` or `Confidence: 7` scores
1.0 there and 0.70 here. Two-decimal probabilities (what trained models write)
parse identically in both.

Formatting (`format_fraction`, `format_confidence`) writes two decimals rounded
HALF-UP, never half-even (docs/CAOPD.md section 10): 1/8 -> "0.13", 3/8 -> "0.38",
5/8 -> "0.63", 7/8 -> "0.88". `format_fraction` rounds the exact rational
correct/k with integer arithmetic, so no float error can move a tie.
"""

import decimal
import re

_SPACE = r"[^\S\n]"  # whitespace within a line
# The key of a confidence line; `confidence_start` and the rewrite cut at its first match.
CONFIDENCE_KEY = re.compile(rf"\bconfidence\**{_SPACE}*:", re.IGNORECASE)
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_VALUE = rf"(?P<num>{_NUMBER})(?:{_SPACE}*(?P<pct>%)|{_SPACE}*/{_SPACE}*(?P<den>{_NUMBER}))?"
_LINE_VALUE = re.compile(rf"{CONFIDENCE_KEY.pattern}(?:{_SPACE}|\*)*{_VALUE}", re.IGNORECASE)
_TAG_VALUE = re.compile(rf"<confidence>\s*{_VALUE}\s*</confidence>", re.IGNORECASE)


def _to_probability(match: re.Match) -> float | None:
  """The [0, 1] probability of one `_VALUE` match (module docstring), or None for `a/0`."""
  value = float(match["num"])
  if match["den"] is not None:
    denominator = float(match["den"])
    if denominator <= 0:
      return None
    value /= denominator
  elif match["pct"] or value > 10:
    value /= 100
  elif 2 <= value <= 10:
    value /= 10
  return min(1.0, max(0.0, value))


def _last_value(text: str) -> re.Match | None:
  """The match of the value parse_confidence reads: the last mappable line value, else the last tag value."""
  for pattern in (_LINE_VALUE, _TAG_VALUE):
    for match in reversed(list(pattern.finditer(text))):
      if _to_probability(match) is not None:
        return match
  return None


def parse_confidence(text: str) -> float | None:
  """The stated confidence in [0, 1] of a completion, or None when it states none (a format failure)."""
  match = _last_value(text)
  return None if match is None else _to_probability(match)


def stated_value_span(text: str) -> tuple[int, int] | None:
  """(start, end) of the value text parse_confidence reads ("0.7" of "Confidence: 0.7", with its "%" or "/b"), or
  None when it reads none."""
  match = _last_value(text)
  if match is None:
    return None
  return match.start("num"), max(match.end(group) for group in ("num", "pct", "den") if match[group] is not None)


def confidence_start(text: str) -> int:
  """Index of the first `Confidence:` key in `text` (case-insensitive), or len(text) when there is none."""
  match = CONFIDENCE_KEY.search(text)
  return match.start() if match else len(text)


def format_fraction(correct: int, k: int) -> str:
  """correct/k with two decimals, rounded half-up on the exact rational: format_fraction(1, 8) == "0.13".

  Requires 1 <= k and 0 <= correct <= k; raises ValueError otherwise.
  """
  if not (isinstance(k, int) and isinstance(correct, int) and k >= 1 and 0 <= correct <= k):
    raise ValueError(f"format_fraction needs integers 0 <= correct <= k, k >= 1; got correct={correct!r}, k={k!r}")
  hundredths = (200 * correct + k) // (2 * k)  # floor(100 * correct / k + 1/2)
  return f"{hundredths // 100}.{hundredths % 100:02d}"


def format_confidence(p: float) -> str:
  """p in [0, 1] with two decimals, rounded half-up on the shortest decimal that prints as p (repr).

  format_confidence(0.125) == "0.13"; format_confidence(0.145) == "0.15" (0.145 is stored as
  0.14499..., but it is read as the decimal 0.145 it was written as). Raises ValueError for NaN or
  p outside [0, 1]. For k-of-K targets prefer format_fraction, which needs no float at all.
  """
  value = float(p)
  if not 0 <= value <= 1:  # also rejects NaN
    raise ValueError(f"format_confidence needs a number in [0, 1]; got {p!r}")
  rounded = decimal.Decimal(repr(value)).quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP)
  return f"{rounded:.2f}"
