"""Readers that turn data sources into lists of `Example`, and `load_examples`, the dispatcher.

Sources:
  save_to_disk folders  the paper's sets (Hugging Face `datasets.save_to_disk`: Arrow IPC stream
                        files + state.json), read with pyarrow; `datasets` is not needed. Each file's
                        schema is the first of SCHEMAS whose columns it has:
      science eval:   `prompt` (list of {role, content}: system + user), `answer` (letter); an
                      `output_text` column, when present, is the demonstration.
      science train:  `messages` (list of {role, content}: system + user) and `output_text` (the
                      demonstration), the reference's train split. `messages` plays the part of `prompt`
                      (Example.messages, .system, .question). It has no `answer` column: the gold letter is
                      the content of the demonstration's LAST closed `<answer>...</answer>`, stripped and
                      upper-cased: the tag the mcq verifier reads, so a demonstration is always verified
                      correct against its own gold (an earlier tag may be a quoted format example). A
                      demonstration without such a one-letter tag is an error naming file and row (a silent
                      skip would change the training set unseen). The reference reads the absent `answer`
                      column as "", scores every science rollout wrong and trains toward P_acc = 0.00 on
                      every question (docs/CAOPD.md section 10); reading the gold letter from the demonstration
                      fixes that. A file with both science schemas' columns is read as science eval.
      tooluse (eval and train): `prompt` (str: tools, format, `Begin!` line, question), `name`,
                      `description`, `nl_documentation`, `instruction`, `golden_answer` (list of {Action,
                      Action_Input}); train rows also `golden_response` (list of str, one per step): the
                      demonstration is the steps joined with "\n", as the reference does.
      A demonstration without a `Confidence:` line gets "\nConfidence: 1.00" appended (it is gold).
      Eval rows have no demonstration (Example.demonstration is None); the teacher context then
      uses `fallback_demonstration(example)`, the gold answer written as a minimal answer.
  named datasets        "science" / "tooluse" and a split: the first existing folder of `<name>_<split>`
                        (our layout, e.g. science_eval) and `<name>_data/<split>_data` (the reference
                        repository's, e.g. science_data/eval_data) under the data root: the `data_dir`
                        argument (the train config's data.data_dir), else $CAOPD_DATA_DIR, else `data` in the
                        working directory. The paper's sets: PAPER_SETS (the reference's data/ folder can be
                        the data root as it is).
  JSONL files           one JSON object per line: jsonl.py.
  arithmetic            the built-in synthetic task (arithmetic.py).
"""

import glob
import json
import os
import re

import pyarrow as pa
import pyarrow.ipc

from caopd_jax.calibration.confidence import confidence_start
from caopd_jax.calibration.rewrite import with_confidence
from caopd_jax.calibration.verifiers import parse_mcq_answer, verify_mcq
from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.data.example import Example
from caopd_jax.data.jsonl import read_jsonl
from caopd_jax.errors import CaopdError, InputNotFoundError

DATA_DIR_ENV = "CAOPD_DATA_DIR"
DATASETS = ("science", "tooluse", "arithmetic")
PAPER_SETS = ("the paper's sets come from the reference repository github.com/SalesforceAIResearch/CaOPD, folders "
              "data/science_data/{train_data,eval_data} and data/tooluse_data/{train_data,eval_data} (CC BY-NC 4.0)")
TOOLUSE_COLUMNS = ("prompt", "name", "description", "nl_documentation", "instruction", "golden_answer")
FULL_CONFIDENCE = "1.00"  # the confidence written into gold demonstrations
_LETTER = re.compile(r"[A-Z]")  # a gold letter read from a demonstration
EVAL_SEED_OFFSET = 1_000_003  # arithmetic eval items come from seed + this, so train and eval differ


def default_data_dir() -> str:
  """$CAOPD_DATA_DIR, else `data` (relative to the working directory)."""
  return os.environ.get(DATA_DIR_ENV) or "data"


def dataset_folder(name: str, split: str, data_dir: str | None = None) -> str:
  """The save_to_disk folder of named dataset `name`, `split`: `<name>_<split>`, else `<name>_data/<split>_data`
  under `data_dir` (default: default_data_dir()).

  Raises:
    InputNotFoundError saying where it looked, how to point elsewhere, and where the paper's sets come from.
  """
  root = data_dir or default_data_dir()
  looked = [os.path.join(root, f"{name}_{split}"), os.path.join(root, f"{name}_data", f"{split}_data")]
  found = [folder for folder in looked if os.path.isdir(folder)]
  if found:
    return found[0]
  origin = ("given as data_dir" if data_dir else f"from ${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV)
            else f"the default, as ${DATA_DIR_ENV} is not set")
  raise InputNotFoundError(
      f"dataset '{name}' split '{split}': neither {os.path.abspath(looked[0])} nor {os.path.abspath(looked[1])} "
      f"exists (data root {os.path.abspath(root)}, {origin}). Put the save_to_disk folder there, or point to the "
      f"data root with ${DATA_DIR_ENV}, the train config's data.data_dir or eval's --data_dir; {PAPER_SETS}, and "
      "that data/ folder works as the data root")


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


def _chat_messages(row: dict, column: str, where: str) -> tuple[dict, ...]:
  """The {role, content} messages of `column`, every field set and a user message among them."""
  messages = tuple({key: _field(row, f"{column}[{k}].{key}", where) for key in ("role", "content")}
                   for k in range(len(_field(row, column, where))))
  if not any(m["role"] == "user" for m in messages):
    raise CaopdError(f"{where}: field '{column}' has no user message; it must be [system, user] chat messages")
  return messages


def _mcq_example(messages: tuple[dict, ...], answer: str, demo: str | None, row_id: str) -> Example:
  system = next((m["content"] for m in messages if m["role"] == "system"), None)
  question = [m["content"] for m in messages if m["role"] == "user"][-1]
  return Example(id=row_id, question=question, answer=answer, verifier="mcq", task="science", system=system,
                 demonstration=None if demo is None else with_confidence_line(demo), messages=messages)


def _science_eval_example(row: dict, where: str, row_id: str) -> Example:
  demo = _field(row, "output_text", where) if "output_text" in row else None
  return _mcq_example(_chat_messages(row, "prompt", where), _field(row, "answer", where).strip(), demo, row_id)


def _science_train_example(row: dict, where: str, row_id: str) -> Example:
  demo = _field(row, "output_text", where)
  letter = parse_mcq_answer(demo)
  # verify_mcq holds only for the last closed tag's content (not for parse_mcq_answer's fallbacks)
  if not (letter and _LETTER.fullmatch(letter) and verify_mcq(demo, letter)):
    raise CaopdError(f"{where}: field 'output_text' (the demonstration) gives no answer letter: the science train "
                     "schema has no `answer` column, so the gold letter is the content of the last closed "
                     f"<answer>X</answer>, one letter; the demonstration ends {demo[-120:]!r}. Fix or remove the row")
  return _mcq_example(_chat_messages(row, "messages", where), letter, demo, row_id)


def _tooluse_example(row: dict, where: str, row_id: str) -> Example:
  for name in TOOLUSE_COLUMNS:
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


SCHEMAS = {  # name -> (task, columns every row needs, row reader); the order of detection (module docstring)
    "science eval": ("science", ("prompt", "answer"), _science_eval_example),
    "science train": ("science", ("messages", "output_text"), _science_train_example),
    "tooluse eval/train": ("tooluse", TOOLUSE_COLUMNS, _tooluse_example),
}


def _schema_of(file: str, columns: list[str], task: str) -> str:
  """The first SCHEMAS name of `task` ("auto": any) whose columns are all in `columns`."""
  names = [name for name, (of, _, _) in SCHEMAS.items() if task in ("auto", of)]
  for name in names:
    if set(SCHEMAS[name][1]) <= set(columns):
      return name
  accepted = "; ".join(f"{name} needs {list(SCHEMAS[name][1])}, {[c for c in SCHEMAS[name][1] if c not in columns]} "
                       "are missing" for name in names)
  raise CaopdError(f"{file}: columns {columns} match none of the {'accepted' if task == 'auto' else task} schemas "
                   f"({accepted}); pass a folder of the paper's sets or rename its columns")


def read_save_to_disk(path: str, schema: str = "auto") -> list[Example]:
  """Examples of a `datasets.save_to_disk` folder of one of SCHEMAS (module docstring).

  Args:
    path: the folder (holding state.json and data-*.arrow Arrow IPC stream files).
    schema: "science", "tooluse" (its schemas only), or "auto" (any); each file's columns pick the schema.
  Returns:
    one Example per row, id "<folder name>/<row index>".
  Raises:
    InputNotFoundError when the folder or its Arrow files are missing; CaopdError naming the file and
    its columns when no accepted schema matches, and the file, row and field for a null field.
  """
  if schema not in ("science", "tooluse", "auto"):
    raise CaopdError(f"unknown save_to_disk schema {schema!r}; use 'science', 'tooluse' or 'auto'")
  name, examples = os.path.basename(os.path.normpath(path)), []
  for file in _arrow_files(path):
    table = _read_table(file)
    build = SCHEMAS[_schema_of(file, table.column_names, schema)][2]
    for i, row in enumerate(table.to_pylist()):
      examples.append(build(row, f"{file}: row {i}", f"{name}/{len(examples)}"))
  return examples


# --- dispatch

def load_examples(name_or_path: str, split: str = "eval", *, data_dir: str | None = None, num_examples: int = 1000,
                  seed: int = 0, difficulty: int | list[int] = (1, 2, 3, 4)) -> list[Example]:
  """Examples of a named dataset or a path.

  Args:
    name_or_path: "science" / "tooluse" (a save_to_disk folder under the data root: dataset_folder),
      "arithmetic" (the synthetic task), a save_to_disk folder, or a .jsonl file.
    split: for named datasets: "eval" or "train" (any folder suffix for science / tooluse).
    data_dir: the data root; default $CAOPD_DATA_DIR, else `data` in the working directory.
    num_examples, seed, difficulty: for "arithmetic" (see arithmetic.arithmetic_task); the eval
      split uses seed + EVAL_SEED_OFFSET so it does not repeat the train items' stream.
  Raises:
    CaopdError for an unknown name (listing the known ones); InputNotFoundError for a missing path.
  """
  if name_or_path in ("science", "tooluse"):
    return read_save_to_disk(dataset_folder(name_or_path, split, data_dir), schema=name_or_path)
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
