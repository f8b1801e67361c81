"""JSONL task files: one JSON object per line (blank lines skipped), each an Example.

    question      str: the user-facing question; or
    messages      a list of {"role": system | user | assistant, "content": str}, the last the user's: a multi-turn
                  prompt (its first system message is the system prompt; the last user message is the question)
    answer        required: a str letter (mcq), an int (arithmetic), a list of {Action, Action_Input} (tooluse;
                  a non-string Action_Input is JSON-encoded)
    verifier      required: mcq | tooluse | arithmetic
    demonstration, system, id   optional str
The task is the file's stem; id defaults to "<stem>/<line number>". Every mistake (not UTF-8, not JSON, a field
missing or of the wrong type, a lone surrogate) is a CaopdError naming the file, the line and the field.
"""

import json
import os

from caopd_jax.calibration.verifiers import VERIFIERS
from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError, InputNotFoundError


def _jsonl_answer(answer, verifier: str, where: str):
  """The answer of a JSONL row, checked against its verifier's type."""
  if verifier == "mcq" and isinstance(answer, str) and answer.strip():
    return answer.strip()
  if verifier == "arithmetic" and isinstance(answer, int) and not isinstance(answer, bool):
    return answer
  if (verifier == "tooluse" and isinstance(answer, list) and answer
      and all(isinstance(s, dict) and isinstance(s.get("Action"), str) and "Action_Input" in s for s in answer)):
    return [{"Action": s["Action"], "Action_Input": s["Action_Input"] if isinstance(s["Action_Input"], str)
             else json.dumps(s["Action_Input"])} for s in answer]
  expected = {"mcq": "a non-empty string (the letter)", "arithmetic": "an integer",
              "tooluse": 'a non-empty list of {"Action": str, "Action_Input": ...}'}[verifier]
  raise CaopdError(f"{where}: field 'answer' must be {expected} for verifier '{verifier}', got {answer!r}")


def _check_unicode(value, where: str, field: str = "") -> None:
  """CaopdError naming the field of a string that is not valid Unicode text: JSON's \\ud83d escapes can spell a
  lone surrogate, which no tokenizer can encode (it would fail the first batch holding it, on every rerun)."""
  if isinstance(value, str):
    try:
      value.encode("utf-8")
    except UnicodeEncodeError as e:
      raise CaopdError(f"{where}: field '{field}' holds a lone surrogate (U+{ord(value[e.start]):04X} at character "
                       f"{e.start}, an unpaired \\u escape), which is not text; fix or remove that line") from None
  elif isinstance(value, dict):
    for key, item in value.items():
      _check_unicode(item, where, f"{field}.{key}" if field else str(key))
  elif isinstance(value, list):
    for index, item in enumerate(value):
      _check_unicode(item, where, f"{field}[{index}]")


def _jsonl_example(row, where: str, default_id: str, task: str) -> Example:
  if not isinstance(row, dict):
    raise CaopdError(f"{where}: expected a JSON object, got {type(row).__name__}")
  _check_unicode(row, where)
  if row.get("question") is None and row.get("messages") is None:
    raise CaopdError(f"{where}: required field 'question' (or 'messages') is missing; each line needs question or "
                     "messages, answer, verifier")
  for name in ("answer", "verifier"):
    if row.get(name) is None:
      raise CaopdError(f"{where}: required field '{name}' is missing; each line needs question or messages, answer, "
                       "verifier")
  if row["verifier"] not in VERIFIERS:
    raise CaopdError(f"{where}: field 'verifier' is {row['verifier']!r}; use one of {sorted(VERIFIERS)}")
  for name in ("question", "demonstration", "system", "id"):
    if name in row and not isinstance(row[name], str | None):
      raise CaopdError(f"{where}: field '{name}' must be a string, got {type(row[name]).__name__}")
  messages = _messages(row["messages"], where) if row.get("messages") is not None else None
  question = row["question"] if messages is None else next(m["content"] for m in reversed(messages)
                                                           if m["role"] == "user")
  system = row.get("system") if messages is None else next((m["content"] for m in messages
                                                            if m["role"] == "system"), None)
  return Example(id=row.get("id") or default_id, question=question,
                 answer=_jsonl_answer(row["answer"], row["verifier"], where), verifier=row["verifier"], task=task,
                 system=system, demonstration=row.get("demonstration"), messages=messages)


def _messages(value, where: str) -> tuple[dict, ...]:
  """The {role, content} turns of a row's `messages`, checked: roles system / user / assistant, string contents,
  the last turn the user's (the student answers it)."""
  if not isinstance(value, list) or not value:
    raise CaopdError(f"{where}: field 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
  for k, m in enumerate(value):
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(
        m.get("content"), str):
      raise CaopdError(f"{where}: field 'messages[{k}]' must be {{\"role\": system | user | assistant, "
                       f"\"content\": str}}, got {m!r}"[:300])
  if value[-1]["role"] != "user":
    raise CaopdError(f"{where}: field 'messages' must end with the user's turn (the student answers it), not "
                     f"{value[-1]['role']!r}")
  return tuple({"role": m["role"], "content": m["content"]} for m in value)


def read_jsonl(path: str) -> list[Example]:
  """Examples of a JSONL file (schema in the module docstring).

  Raises:
    InputNotFoundError when the file is missing; CaopdError naming the file, line and field for a
    line that is not UTF-8, not JSON, or lacks / mistypes a field.
  """
  if not os.path.isfile(path):
    raise InputNotFoundError(f"JSONL file {path} does not exist")
  task, examples = os.path.splitext(os.path.basename(path))[0], []
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      where = f"{path}: line {number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise CaopdError(f"{where} is not valid UTF-8 (byte {e.start} of the line: {raw[e.start:e.start + 1]!r}); "
                         "save the file as UTF-8") from e
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise CaopdError(f"{where} is not valid JSON ({e.msg} at column {e.colno}); "
                         "write one JSON object per line") from e
      examples.append(_jsonl_example(row, where, f"{task}/{number}", task))
  return examples
