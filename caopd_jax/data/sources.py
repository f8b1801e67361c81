"""Readers that turn data sources into lists of `Example`, and `load_examples`, the dispatcher.

Sources:
  save_to_disk folders  the paper's sets (Hugging Face `datasets.save_to_disk`: Arrow IPC stream
                        files + state.json), read with pyarrow; `datasets` is not needed.
      science:  `prompt` (list of {role, content}: system + user), `answer` (letter); train rows
                also `messages` and `output_text`. The demonstration is `output_text`; `messages`
                (the reference's pre-built student prompt) is not read: prompts.py builds the
                student prompt from `prompt`.
      tooluse:  `prompt` (str: tools, format, `Begin!` line, question), `name`, `description`,
                `nl_documentation`, `instruction`, `golden_answer` (list of {Action, Action_Input});
                train rows also `golden_response` (list of str, one per step). The demonstration
                is the steps joined with "\n", as the reference does.
      A demonstration without a `Confidence:` line gets "\nConfidence: 1.00" appended (it is gold).
      Eval rows have no demonstration (Example.demonstration is None); the teacher context then
      uses `fallback_demonstration(example)`, the gold answer written as a minimal answer.
  JSONL files           one JSON object per line (blank lines skipped):
      question (str, required), answer (required: str letter for mcq, int for arithmetic,
      list of {Action, Action_Input} for tooluse; a non-string Action_Input is JSON-encoded),
      verifier (required: mcq | tooluse | arithmetic), demonstration, system, id (optional str).
      task is the file's stem; id defaults to "<stem>/<line number>".
  arithmetic            the built-in synthetic task (arithmetic.py).
"""

import glob
import json
import os

import pyarrow as pa
import pyarrow.ipc

from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.data.example import VERIFIERS, Example
from caopd_jax.errors import CaopdError, InputNotFoundError

DATA_DIR_ENV = "CAOPD_DATA_DIR"
DATASETS = ("science", "tooluse", "arithmetic")
SCHEMAS = {  # schema -> (columns every row needs, train-only columns)
    "science": (("prompt", "answer"), ("messages", "output_text")),
    "tooluse": (("prompt", "name", "description", "nl_documentation", "instruction", "golden_answer"),
                ("golden_response",)),
}
FULL_CONFIDENCE = "Confidence: 1.00"
EVAL_SEED_OFFSET = 1_000_003  # arithmetic eval items come from seed + this, so train and eval differ


def default_data_dir() -> str:
  """$CAOPD_DATA_DIR, else `../shared/data` beside the repository holding this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.environ.get(DATA_DIR_ENV) or os.path.join(os.path.dirname(repo), "shared", "data")


def with_confidence_line(text: str) -> str:
  """`text`, with "\nConfidence: 1.00" appended when it has no `Confidence:` line."""
  return text if "Confidence:" in text else f"{text.rstrip()}\n{FULL_CONFIDENCE}"


def fallback_demonstration(example: Example) -> str:
  """The gold answer written as a minimal demonstration, for sources without one.

  mcq / arithmetic: "<answer>X</answer>\nConfidence: 1.00"; tooluse: one
  "Action: name\nAction Input: {json}" per gold step, then the confidence line.
  """
  if example.verifier == "tooluse":
    body = "\n".join(f"Action: {step['Action']}\nAction Input: {step['Action_Input']}" for step in example.answer)
  else:
    body = f"<answer>{example.answer}</answer>"
  return f"{body}\n{FULL_CONFIDENCE}"


# --- save_to_disk folders

def _arrow_files(folder: str) -> list[str]:
  """The Arrow files of a save_to_disk folder, in state.json's order."""
  if not os.path.isdir(folder):
    raise InputNotFoundError(f"dataset folder {folder} does not exist; pass a `datasets.save_to_disk` folder")
  state = os.path.join(folder, "state.json")
  if os.path.exists(state):
    with open(state, encoding="utf-8") as f:
      names = [entry["filename"] for entry in json.load(f).get("_data_files", [])]
  else:
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.arrow")))
  if not names:
    raise InputNotFoundError(f"{folder} has no .arrow files; pass a `datasets.save_to_disk` folder")
  return [os.path.join(folder, name) for name in names]


def _read_table(path: str) -> pa.Table:
  if not os.path.exists(path):
    raise InputNotFoundError(f"{path} is listed in state.json but does not exist; re-save the dataset")
  try:
    with pa.ipc.open_stream(path) as reader:
      return reader.read_all()
  except pa.ArrowInvalid as e:
    raise CaopdError(f"{path} is not an Arrow IPC stream (as `datasets.save_to_disk` writes): {e}") from e


def _field(row: dict, name: str, where: str):
  """row[name] (dotted/indexed names like "prompt[1].content" walk into it); None raises."""
  value = row
  for key in name.replace("[", ".").replace("]", "").split("."):
    value = value.get(key) if isinstance(value, dict) else (value[int(key)] if key.isdigit() else None)
    if value is None:
      raise CaopdError(f"{where}: field '{name}' is missing or null; every row needs it")
  return value


def _science_example(row: dict, where: str, row_id: str) -> Example:
  prompt = _field(row, "prompt", where)
  messages = tuple({"role": _field(row, f"prompt[{k}].role", where), "content": _field(row, f"prompt[{k}].content", where)}
                   for k in range(len(prompt)))
  system = next((m["content"] for m in messages if m["role"] == "system"), None)
  users = [m["content"] for m in messages if m["role"] == "user"]
  if not users:
    raise CaopdError(f"{where}: field 'prompt' has no user message; it must be [system, user] chat messages")
  demo = row.get("output_text") if "output_text" in row else None
  if "output_text" in row:
    demo = with_confidence_line(_field(row, "output_text", where))
  return Example(id=row_id, question=users[-1], answer=_field(row, "answer", where).strip(), verifier="mcq",
                 task="science", system=system, demonstration=demo, messages=messages)


def _tooluse_example(row: dict, where: str, row_id: str) -> Example:
  for name in SCHEMAS["tooluse"][0]:
    _field(row, name, where)
  gold = row["golden_answer"]
  if not gold:
    raise CaopdError(f"{where}: field 'golden_answer' is empty; it needs at least one {{Action, Action_Input}}")
  answer = [{"Action": _field(row, f"golden_answer[{k}].Action", where),
             "Action_Input": _field(row, f"golden_answer[{k}].Action_Input", where)} for k in range(len(gold))]
  demo = None
  if "golden_response" in row:
    demo = with_confidence_line("\n".join(_field(row, "golden_response", where)))
  return Example(id=row_id, question=row["prompt"], answer=answer, verifier="tooluse", task="tooluse",
                 demonstration=demo)


def read_save_to_disk(path: str, schema: str = "auto") -> list[Example]:
  """Examples of a `datasets.save_to_disk` folder of the science or tooluse schema.

  Args:
    path: the folder (holding state.json and data-*.arrow Arrow IPC stream files).
    schema: "science", "tooluse", or "auto" (tooluse when a `golden_answer` column exists).
  Returns:
    one Example per row, id "<folder name>/<row index>".
  Raises:
    InputNotFoundError when the folder or its Arrow files are missing; CaopdError naming the file,
    row and field for a missing column or a null field.
  """
  if schema not in ("science", "tooluse", "auto"):
    raise CaopdError(f"unknown save_to_disk schema {schema!r}; use 'science', 'tooluse' or 'auto'")
  name, examples = os.path.basename(os.path.normpath(path)), []
  for file in _arrow_files(path):
    table = _read_table(file)
    kind = schema if schema != "auto" else ("tooluse" if "golden_answer" in table.column_names else "science")
    required, _ = SCHEMAS[kind]
    missing = [c for c in required if c not in table.column_names]
    if missing:
      raise CaopdError(f"{file}: the {kind} schema needs columns {list(required)} but {missing} are missing "
                       f"(columns: {table.column_names}); pass the right schema or fix the dataset")
    build = _science_example if kind == "science" else _tooluse_example
    for row in table.to_pylist():
      examples.append(build(row, f"{file}: row {len(examples)}", f"{name}/{len(examples)}"))
  return examples
