"""Task verifiers: `verify(completion_text, ground_truth) -> bool`, by name (docs/CAOPD.md section 6).

Verifiers only read text with regular expressions and `json.loads`; nothing in a
completion is ever executed. They are total: any string in, a bool (parsers: a value or None) out, never an
exception, in time linear in the text's length (tags.closed_tags instead of a quadratic regular expression;
JSON nested past Python's recursion limit compares as text; an integer of more than MAX_DIGITS digits is not
read). The answer formats:

  mcq         the content of the LAST closed `<answer>...</answer>` (tags case-insensitive),
              stripped and upper-cased, equals the gold letter (stripped, upper-cased).
              `verify` uses this strict rule only, as the reference's training verifier
              does; `parse_mcq_answer` adds the eval parser's fallbacks.
  tooluse     gold is a ToolAlpaca `golden_answer`: a list of {"Action": str, "Action_Input": str}
              (a single such dict is also accepted); only the FIRST gold step is compared.
              The first line `Action: <tool>` (case-insensitive) must name the gold tool (stripped text), and
              the input after the first `Action Input:` that follows it must equal the gold
              input. The input is the first balanced `{...}` after `Action Input:` (braces
              inside JSON strings do not count); when no `{...}` closes, it is the rest of that line.
              Both sides are normalised: JSON is compared after `json.dumps(sort_keys=True)`,
              anything that does not parse as JSON as stripped text.
  arithmetic  exact integer match. The answer is the content of the LAST `<answer>...</answer>`
              when there is one (it must then be a whole integer), else the last integer in
              the text before the first `Confidence:` key. Integers may be negative and may
              use thousands separators ("-1,234"); digits that belong to a decimal ("3.5"),
              or to a word ("x2"), are not integers.
"""

import json
import re
from typing import Any, Callable

from caopd_jax.calibration.confidence import confidence_start
from caopd_jax.calibration.tags import closed_tags
from caopd_jax.errors import CaopdError

MAX_DIGITS = 4000   # longer integers are not read (Python's int() refuses more than 4,300 digits)
_UNCLOSED_ANSWER = re.compile(r"<answer>\s*\(?([A-Za-z])\b", re.IGNORECASE)
_BARE_LETTER_LINE = re.compile(r"^[ \t]*\(?([A-Z])[).]?[ \t]*$", re.MULTILINE)
_ANSWER_COLON = re.compile(r"\banswer\s*(?:is)?\s*:\s*\(?([A-Za-z])\b", re.IGNORECASE)
_ACTION = re.compile(r"^[ \t]*Action[ \t]*:[ \t]*(.*)$", re.MULTILINE | re.IGNORECASE)
_ACTION_INPUT = re.compile(r"Action[ \t]*Input[ \t]*:[ \t]*", re.IGNORECASE)
_INTEGER = re.compile(r"(?<![\w.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?!\w|\.[0-9])")
_WHOLE_INTEGER = re.compile(r"[ \t]*-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)[ \t]*")


def _last_answer_tag(text: str) -> str | None:
  matches = closed_tags(text, "answer")
  return matches[-1].strip() if matches else None


# --- multiple choice
def parse_mcq_answer(text: str) -> str | None:
  """The chosen option for eval, upper-cased, or None; tries, in order:

  1. the LAST closed `<answer>X</answer>` (its stripped content, if not empty);
  2. the LAST unclosed `<answer>X` (first letter after the tag);
  3. the LAST line that is a bare capital letter (`B`, `(B)`, `B.`, `B)`);
  4. the LAST `Answer: X` / `answer is: X`.
  """
  tagged = _last_answer_tag(text)
  if tagged:
    return tagged.upper()
  for pattern in (_UNCLOSED_ANSWER, _BARE_LETTER_LINE, _ANSWER_COLON):
    matches = pattern.findall(text)
    if matches:
      return matches[-1].upper()
  return None


def verify_mcq(completion_text: str, ground_truth: str) -> bool:
  """Strict training rule: the LAST closed `<answer>` content equals the gold letter (module docstring)."""
  answer = _last_answer_tag(completion_text)
  return answer is not None and answer.upper() == str(ground_truth).strip().upper()


# --- tool use
def first_json_object(text: str) -> str | None:
  """The first balanced `{...}` in `text` (braces inside JSON strings ignored), or None if none closes."""
  start = text.find("{")
  if start < 0:
    return None
  depth, in_string, escaped = 0, False, False
  for i in range(start, len(text)):
    char = text[i]
    if in_string:
      if escaped:
        escaped = False
      elif char == "\\":
        escaped = True
      elif char == '"':
        in_string = False
    elif char == '"':
      in_string = True
    elif char == "{":
      depth += 1
    elif char == "}":
      depth -= 1
      if depth == 0:
        return text[start:i + 1]
  return None


def _normalise_input(text: str) -> str:
  """Key-sorted JSON of `text` when it parses as JSON, else the stripped text (also for JSON nested too deep)."""
  try:
    return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False)
  except (ValueError, RecursionError):
    return text.strip()


def parse_tool_call(text: str) -> tuple[str, str] | None:
  """(tool name, raw action input) of the first `Action:` line, or None without one (module docstring)."""
  action = _ACTION.search(text)
  if action is None:
    return None
  rest = text[action.end():]
  marker = _ACTION_INPUT.search(rest)
  if marker is None:
    return action[1].strip(), ""
  after = rest[marker.end():]
  line = after.split("\n", 1)[0]
  obj = first_json_object(after)
  return action[1].strip(), obj if obj is not None else line


def _first_gold_step(ground_truth: Any) -> tuple[str, str]:
  step = ground_truth[0] if isinstance(ground_truth, (list, tuple)) and ground_truth else ground_truth
  if not (isinstance(step, dict) and "Action" in step and "Action_Input" in step):
    raise CaopdError(
        f"tooluse ground truth must be a non-empty list of {{'Action': str, 'Action_Input': str}} "
        f"(the eval set's golden_answer column); got {ground_truth!r:.200}. Pass the row's golden_answer.")
  return str(step["Action"]).strip(), str(step["Action_Input"])


def verify_tooluse(completion_text: str, ground_truth: Any) -> bool:
  """First `Action:` tool and its `Action Input:` equal the FIRST gold step (module docstring)."""
  gold_action, gold_input = _first_gold_step(ground_truth)
  call = parse_tool_call(completion_text)
  if call is None:
    return False
  action, action_input = call
  return action == gold_action and _normalise_input(action_input) == _normalise_input(gold_input)


# --- arithmetic
def _to_int(text: str) -> int | None:
  digits = text.strip().replace(",", "")
  return int(digits) if len(digits) <= MAX_DIGITS else None


def parse_integer_answer(text: str) -> int | None:
  """The integer answer of a completion (module docstring), or None when it has none."""
  tagged = _last_answer_tag(text)
  if tagged is not None:
    return _to_int(tagged) if _WHOLE_INTEGER.fullmatch(tagged) else None
  matches = _INTEGER.findall(text[:confidence_start(text)])
  return _to_int(matches[-1]) if matches else None


def verify_arithmetic(completion_text: str, ground_truth: int | str) -> bool:
  """Exact integer match of the completion's answer and the gold integer (int or integer string)."""
  if isinstance(ground_truth, bool) or not (
      isinstance(ground_truth, int) or (isinstance(ground_truth, str) and _WHOLE_INTEGER.fullmatch(ground_truth))):
    raise CaopdError(f"arithmetic ground truth must be an integer or an integer string like '-1,234'; got "
                     f"{ground_truth!r:.200}. Fix the dataset's answer column.")
  gold = ground_truth if isinstance(ground_truth, int) else _to_int(ground_truth)
  if gold is None:
    raise CaopdError(f"arithmetic ground truth {ground_truth[:40]!r}... has more than {MAX_DIGITS} digits")
  return parse_integer_answer(completion_text) == gold


VERIFIERS: dict[str, Callable[[str, Any], bool]] = {
    "mcq": verify_mcq,
    "tooluse": verify_tooluse,
    "arithmetic": verify_arithmetic,
}


# What each verifier reads from a completion (None: nothing parsed), for eval reports.
ANSWER_PARSERS: dict[str, Callable[[str], Any]] = {
    "mcq": parse_mcq_answer,
    "tooluse": parse_tool_call,
    "arithmetic": parse_integer_answer,
}


def get_verifier(name: str) -> Callable[[str, Any], bool]:
  """The verifier registered as `name`; CaopdError listing the known names otherwise."""
  if name not in VERIFIERS:
    raise CaopdError(f"unknown verifier {name!r}; known verifiers: {', '.join(sorted(VERIFIERS))}. "
                     "Set the task's verifier to one of them.")
  return VERIFIERS[name]
