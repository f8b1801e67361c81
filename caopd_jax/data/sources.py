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

from caopd_jax.calibration.confidence import confidence_start
from caopd_jax.calibration.rewrite import with_confidence
from caopd_jax.calibration.verifiers import VERIFIERS
from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError, InputNotFoundError

DATA_DIR_ENV = "CAOPD_DATA_DIR"
DATASETS = ("science", "tooluse", "arithmetic")
SCHEMAS = {  # schema -> (columns every row needs, train-only columns)
    "science": (("prompt", "answer"), ("messages", "output_text")),
    "tooluse": (("prompt", "name", "description", "nl_documentation", "instruction", "golden_answer"),
                ("golden_response",)),
}
FULL_CONFIDENCE = "1.00"  # the confidence written into gold demonstrations
EVAL_SEED_OFFSET = 1_000_003  # arithmetic eval items come from seed + this, so train and eval differ


def default_data_dir() -> str:
  """$CAOPD_DATA_DIR, else `../shared/data` beside the repository holding this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.environ.get(DATA_DIR_ENV) or os.path.join(os.path.dirname(repo), "shared", "data")


def with_confidence_line(text: str) -> str:
  """`text`, with "\nConfidence: 1.00" appended when it has no `Confidence:` line."""
  return text if confidence_start(text) < len(text) else with_confidence(text.rstrip(), FULL_CONFIDENCE)


def fallback_demonstration(example: Example) -> str:
  """The gold answer written as a minimal demonstration, for sources without one.

  mcq / arithmetic: "<answer>X</answer>\nConfidence: 1.00"; tooluse: one
  "Action: name\nAction Input: {json}" per gold step, then the confidence line.
  """
  if example.verifier == "tooluse":
    body = "\n".join(f"Action: {step['Action']}\nAction Input: {step['Action_Input']}" for step in example.answer)
  else:
    body = f"<answer>{example.answer}</answer>"
  return with_confidence(body, FULL_CONFIDENCE)


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
  messages = tuple({key: _field(row, f"prompt[{k}].{key}", where) for key in ("role", "content")}
                   for k in range(len(prompt)))
  system = next((m["content"] for m in messages if m["role"] == "system"), None)
  users = [m["content"] for m in messages if m["role"] == "user"]
  if not users:
    raise CaopdError(f"{where}: field 'prompt' has no user message; it must be [system, user] chat messages")
  demo = None
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
    for i, row in enumerate(table.to_pylist()):
      examples.append(build(row, f"{file}: row {i}", f"{name}/{len(examples)}"))
  return examples


# --- JSONL files

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


def _jsonl_example(row, where: str, default_id: str, task: str) -> Example:
  if not isinstance(row, dict):
    raise CaopdError(f"{where}: expected a JSON object, got {type(row).__name__}")
  for name in ("question", "answer", "verifier"):
    if row.get(name) is None:
      raise CaopdError(f"{where}: required field '{name}' is missing; each line needs question, answer, verifier")
  if row["verifier"] not in VERIFIERS:
    raise CaopdError(f"{where}: field 'verifier' is {row['verifier']!r}; use one of {sorted(VERIFIERS)}")
  for name in ("question", "demonstration", "system", "id"):
    if name in row and not isinstance(row[name], str | None):
      raise CaopdError(f"{where}: field '{name}' must be a string, got {type(row[name]).__name__}")
  return Example(id=row.get("id") or default_id, question=row["question"],
                 answer=_jsonl_answer(row["answer"], row["verifier"], where), verifier=row["verifier"], task=task,
                 system=row.get("system"), demonstration=row.get("demonstration"))


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


# --- dispatch

def load_examples(name_or_path: str, split: str = "eval", *, data_dir: str | None = None, num_examples: int = 1000,
                  seed: int = 0, difficulty: int | list[int] = (1, 2, 3, 4)) -> list[Example]:
  """Examples of a named dataset or a path.

  Args:
    name_or_path: "science" / "tooluse" (the save_to_disk folder "<name>_<split>" under the data
      root), "arithmetic" (the synthetic task), a save_to_disk folder, or a .jsonl file.
    split: for named datasets: "eval" or "train" (any folder suffix for science / tooluse).
    data_dir: the data root; default $CAOPD_DATA_DIR, else ../shared/data beside the repository.
    num_examples, seed, difficulty: for "arithmetic" (see arithmetic.arithmetic_task); the eval
      split uses seed + EVAL_SEED_OFFSET so it does not repeat the train items' stream.
  Raises:
    CaopdError for an unknown name (listing the known ones); InputNotFoundError for a missing path.
  """
  if name_or_path in ("science", "tooluse"):
    folder = os.path.join(data_dir or default_data_dir(), f"{name_or_path}_{split}")
    if not os.path.isdir(folder):
      raise InputNotFoundError(f"dataset '{name_or_path}' split '{split}': folder {folder} does not exist; put the "
                               f"save_to_disk folder there, set ${DATA_DIR_ENV} or pass data_dir")
    return read_save_to_disk(folder, schema=name_or_path)
  if name_or_path == "arithmetic":
    if split not in ("train", "eval"):
      raise CaopdError(f"arithmetic has splits 'train' and 'eval', not {split!r}")
    return arithmetic_task(num_examples, seed + (EVAL_SEED_OFFSET if split == "eval" else 0), difficulty)
  if os.path.isdir(name_or_path):
    return read_save_to_disk(name_or_path)
  if name_or_path.endswith(".jsonl"):
    return read_jsonl(name_or_path)
  if os.path.exists(name_or_path) or os.sep in name_or_path:
    raise InputNotFoundError(f"{name_or_path} is neither a save_to_disk folder nor an existing .jsonl file")
  raise CaopdError(f"unknown dataset {name_or_path!r}; use one of {list(DATASETS)}, a save_to_disk folder "
                   "or a .jsonl file")
