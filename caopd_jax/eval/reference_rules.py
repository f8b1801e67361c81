"""The CaOPD reference's eval rules (its eval/run_eval_{chemistry,tooluse}.py), restated: the `paper` protocol.

Our own wording of what the reference's scripts compute, quirks included, so that `--protocol paper` numbers
equal theirs to the last digit on every file they can score. `golden_answer` is a record's field in the
reference's inference format (protocols.golden_answer).

MCQ (`read_mcq_answer`, `grade_mcq`); the first rule that yields a letter wins, upper-cased:
  1. the FIRST `<answer>X</answer>` whose content is one letter A-D (any case, whitespace around it);
  2. the FIRST unclosed `<answer>X` whose letter A-D is followed by nothing but whitespace up to a line end;
  3. the LAST line (of the stripped text, each line stripped) that is one letter A-D;
  4. the LAST `answer X` / `Answer: X` / `answer is X` (`[Aa]nswer`, optional ` is`, then colons or whitespace,
     then a letter A-D ending a word).
  Gold: golden_answer[0]["Answer"], stripped and upper-cased. Correct iff the read letter equals it; when the
  gold is missing or empty, correct iff no letter was read. (A bare letter string, what our inference.json
  held before, is read as that letter; the reference's scripts crash on it.)

Tool use (`read_tool_call`, `grade_tooluse`):
  action  the rest of the line after the FIRST `Action:` anywhere (case-insensitive, so also `Reaction:`;
          whitespace after the colon, newlines included, is skipped), stripped; none -> no call (incorrect).
  input   after the FIRST case-sensitive `Action Input:` in the whole text (when there is none, the first
          `Action_Input:`): the first `{` and the text up to its balancing `}`, every brace counted (also
          braces inside JSON strings); `{}` when there is no such marker, no `{` after it or no balancing `}`.
  Inputs are normalised: stripped, empty -> `{}`, JSON -> json.dumps(sort_keys=True) (non-ASCII escaped),
  anything else stays the stripped text. Gold: the first step; its Action (else `action`) stripped; its
  Action_Input (else `Action Input`), `{}` when missing or falsy (`""`, `{}`, `0`), a dict dumped with sorted
  keys, anything else normalised from its str(). Correct iff both parts are equal; no gold steps: correct iff no
  call was read. So a tool without arguments (gold `{}`) is right when the response gives no input at all.

Confidence (`read_confidence`) -> (value, note); value None = no confidence (0 in the headline metrics):
  1. the LAST `Confidence:` (any case) followed by whitespace (newlines too) and a run of digits and dots: that
     number, clipped to [0, 1]. (`Confidence: 70%` is 1.0 and `**Confidence:** 0.8` is not read.)
  2. else, if the text holds a closed `<confidence>...</confidence>` (case-sensitive), the LAST one's stripped
     content as Python's float() reads it, else the first `-?D(.D)?` number in it, then `_scale`d; None when it
     holds no number;
  3. else the LAST unclosed `<confidence>N` (N digits with optional decimals, then optionally `%`), `_scale`d.
  `_scale(v, raw)`: v / 100 when raw holds `%` or v > 10; v when 0 <= v <= 1; v / 10 otherwise (a 1-10 scale or a
  negative value). Values of rules 2 and 3 are NOT clipped (`<confidence>500</confidence>` is 5.0), as there.

Where the reference's scripts cannot produce a number we decide, and say so in the record's `confidence_note`:
  - a rule-1 run that is not one number (`Confidence: 0.8.` ending a sentence, `1.2.3`, `.`): the reference
    raises ValueError and stops. We read its longest leading number (0.8, 1.2), None when it has none.
  - a rule-2/3 value that float() reads as nan or inf (`nan`, `inf`, `1e999`): the reference carries it into
    every metric (all NaN or inf). We count it as no confidence.
  - an action input nested deeper than Python's JSON parser goes (about 1,000 brackets): the reference raises
    RecursionError and stops. We compare it as text, as any input that does not parse.
Every reader is total and linear in the text's length (tags.closed_tags for the `<confidence>` tags).
"""

import json
import math
import re
from typing import Any

from caopd_jax.calibration.tags import closed_tags
from caopd_jax.errors import CaopdError

_CLOSED_ANSWER = re.compile(r"<answer>\s*([A-Da-d])\s*</answer>", re.IGNORECASE)
_OPEN_ANSWER = re.compile(r"<answer>\s*([A-Da-d])\s*$", re.IGNORECASE | re.MULTILINE)
_LETTER = re.compile(r"[A-Da-d]")
_ANSWER_WORD = re.compile(r"[Aa]nswer(?:\s+is)?[:\s]+([A-Da-d])\b")
_ACTION = re.compile(r"Action:\s*([^\n]+)", re.IGNORECASE)
_LINE_VALUE = re.compile(r"Confidence:\s*([\d.]+)", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SIGNED_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OPEN_TAG = re.compile(r"<confidence>\s*(\d+(?:\.\d+)?)\s*%?")


def _first_step(golden_answer: Any, shape: str) -> dict | None:
  """golden_answer[0] (a dict), or None when the gold is missing or empty; CaopdError for any other shape."""
  if not golden_answer:
    return None
  if not (isinstance(golden_answer, list) and isinstance(golden_answer[0], dict)):
    raise CaopdError(f"golden_answer must be a list of {shape} (the reference's inference format); got "
                     f"{golden_answer!r:.200}")
  return golden_answer[0]


def _value(step: dict, keys: tuple[str, ...], default):
  """The first truthy step[key] of `keys`, else `default`."""
  for key in keys:
    if step.get(key):
      return step[key]
  return default


# --- multiple choice
def gold_letter(golden_answer: Any) -> str | None:
  """The gold letter of a science record (upper-cased), or None when the record has no gold."""
  if isinstance(golden_answer, str):
    return golden_answer.strip().upper() or None
  step = _first_step(golden_answer, '{"Answer": "A"}')
  answer = "" if step is None else _value(step, ("Answer",), "")
  if not isinstance(answer, str):
    raise CaopdError(f'golden_answer[0]["Answer"] must be a letter; got {answer!r:.200}')
  return answer.strip().upper() or None


def read_mcq_answer(text: str) -> str | None:
  """The letter A-D a response chooses (module docstring, rules 1-4), or None."""
  for pattern in (_CLOSED_ANSWER, _OPEN_ANSWER):
    match = pattern.search(text)
    if match:
      return match[1].upper()
  for line in reversed(text.strip().splitlines()):
    if _LETTER.fullmatch(line.strip()):
      return line.strip().upper()
  words = _ANSWER_WORD.findall(text)
  return words[-1].upper() if words else None


def grade_mcq(text: str, golden_answer: Any) -> tuple[bool, str | None]:
  """(correct, letter read or None) of a response against a science record's golden_answer."""
  letter, gold = read_mcq_answer(text), gold_letter(golden_answer)
  return (letter is None if gold is None else letter == gold), letter


# --- tool use
def _braces_after(text: str, marker: str) -> str | None:
  """After the first `marker`: the first `{...}` with balanced braces, "{}" if none closes; None without marker."""
  at = text.find(marker)
  if at < 0:
    return None
  start, depth = text.find("{", at), 0
  for brace in re.finditer(r"[{}]", text[start:] if start >= 0 else ""):
    depth += 1 if brace[0] == "{" else -1
    if depth == 0:
      return text[start:start + brace.end()]
  return "{}"


def _normalise(value: str) -> str:
  value = value.strip()
  if not value:
    return "{}"
  try:
    return json.dumps(json.loads(value), sort_keys=True)
  except (ValueError, RecursionError):   # RecursionError: JSON nested too deep for Python (the reference crashes)
    return value


def read_tool_call(text: str) -> dict | None:
  """{"Action": tool name, "Action_Input": normalised input} of the first call in a response, or None."""
  action = _ACTION.search(text)
  if action is None:
    return None
  raw = _braces_after(text, "Action Input:")
  if raw is None:
    raw = _braces_after(text, "Action_Input:")
  return {"Action": action[1].strip(), "Action_Input": _normalise(raw or "{}")}


def grade_tooluse(text: str, golden_answer: Any) -> tuple[bool, dict | None]:
  """(correct, call read or None) of a response against a tool-use record's golden_answer (its first step)."""
  call, step = read_tool_call(text), _first_step(golden_answer, '{"Action": str, "Action_Input": str}')
  if step is None:
    return call is None, call
  action = _value(step, ("Action", "action"), "")
  if not isinstance(action, str):
    raise CaopdError(f'golden_answer[0]["Action"] must be a tool name; got {action!r:.200}')
  given = _value(step, ("Action_Input", "Action Input"), "{}")
  gold_input = json.dumps(given, sort_keys=True) if isinstance(given, dict) else _normalise(str(given))
  correct = call is not None and call["Action"] == action.strip() and call["Action_Input"] == gold_input
  return correct, call


# --- confidence
def _scale(value: float, raw: str) -> float:
  if "%" in raw or value > 10:
    return value / 100
  return value if 0 <= value <= 1 else value / 10


def _finite(value: float, raw: str) -> tuple[float | None, str | None]:
  if math.isfinite(value):
    return value, None
  return None, f"the reference's scripts carry {value} from {raw!r} into every metric; read as no confidence"


def read_confidence(text: str) -> tuple[float | None, str | None]:
  """(stated confidence or None, note or None) of a response (module docstring, rules 1-3 and the notes)."""
  lines = _LINE_VALUE.findall(text)
  if lines:
    try:
      return min(1.0, max(0.0, float(lines[-1]))), None
    except ValueError:
      lead = _LEADING_NUMBER.match(lines[-1])
      value = None if lead is None else min(1.0, max(0.0, float(lead[0])))
      return value, f"the reference's scripts crash on 'Confidence: {lines[-1]}'; read as " + (
          "no confidence" if value is None else f"{value}")
  tags = closed_tags(text, "confidence", ignore_case=False)   # the regex <confidence>(.*?)</confidence>, linear
  if tags:
    raw = tags[-1].strip()
    try:
      value = float(raw)
    except ValueError:
      number = _SIGNED_NUMBER.search(raw)
      if number is None:
        return None, None
      value = float(number[0])
    return _finite(_scale(value, raw), raw)
  opened = list(_OPEN_TAG.finditer(text))
  return _finite(_scale(float(opened[-1][1]), opened[-1][0]), opened[-1][0]) if opened else (None, None)
