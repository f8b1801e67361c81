"""caopd_jax.data.sources / arithmetic: the paper's eval sets, our JSONL schema, the synthetic task, bad input."""

import json
import os
import re

import pyarrow as pa
import pytest

from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.data import arithmetic, sources
from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError, InputNotFoundError

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def write_save_to_disk(folder, rows, state=True):
  """A save_to_disk-style folder holding `rows` in one Arrow IPC stream file; returns (folder, file)."""
  os.makedirs(folder)
  path = os.path.join(folder, "data-00000-of-00001.arrow")
  table = pa.Table.from_pylist(rows)
  with pa.ipc.new_stream(path, table.schema) as writer:
    writer.write_table(table)
  if state:
    with open(os.path.join(folder, "state.json"), "w") as f:
      json.dump({"_data_files": [{"filename": os.path.basename(path)}]}, f)
  return str(folder), path


def science_row(answer="B", **extra):
  return {"prompt": [{"role": "system", "content": "Pick one."}, {"role": "user", "content": "Q?\nA: x\nB: y"}],
          "answer": answer, **extra}


def tooluse_row(action_input='{"a": 1}', **extra):
  return {"prompt": "Tools...\nUse the following format:\nAction: ...\n\nBegin!\nQuestion: q", "name": "N",
          "description": "D", "nl_documentation": "doc", "instruction": "q",
          "golden_answer": [{"Action": "get", "Action_Input": action_input}], **extra}


def write_jsonl(path, lines: list[bytes | str]):
  with open(path, "wb") as f:
    f.write(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
  return str(path)


# --- the paper's eval sets

def test_science_eval_every_row_loads():
  examples = sources.load_examples("science", data_dir=DATA)
  assert len(examples) == 507 and len({e.id for e in examples}) == 507
  for e in examples:
    assert e.verifier == "mcq" and e.task == "science" and e.answer in "ABCD" and e.demonstration is None
    assert [m["role"] for m in e.messages] == ["system", "user"]
    assert e.system == e.messages[0]["content"] and e.question == e.messages[1]["content"]
    assert sources.fallback_demonstration(e) == f"<answer>{e.answer}</answer>\nConfidence: 1.00"
    assert get_verifier("mcq")(sources.fallback_demonstration(e), e.answer)
    wrong = "ABCD"[("ABCD".index(e.answer) + 1) % 4]
    assert not get_verifier("mcq")(f"<answer>{wrong}</answer>\nConfidence: 1.00", e.answer)


def test_tooluse_eval_every_row_loads():
  examples = sources.read_save_to_disk(os.path.join(DATA, "tooluse_eval"))  # schema "auto"
  assert len(examples) == 97
  for e in examples:
    assert e.verifier == "tooluse" and e.system is None and e.messages is None and e.demonstration is None
    assert "Begin!" in e.question and e.answer and all(set(step) == {"Action", "Action_Input"} for step in e.answer)
    demo = sources.fallback_demonstration(e)
    assert demo.startswith(f"Action: {e.answer[0]['Action']}\nAction Input: {e.answer[0]['Action_Input']}")
    assert demo.endswith("\nConfidence: 1.00") and get_verifier("tooluse")(demo, e.answer)
    gold = e.answer[0]
    wrong_tool = f"Action: {gold['Action']}X\nAction Input: {gold['Action_Input']}\nConfidence: 1.00"
    wrong_input = f"Action: {gold['Action']}\nAction Input: {{\"__not_an_argument__\": 1}}\nConfidence: 1.00"
    assert not get_verifier("tooluse")(wrong_tool, e.answer)
    assert not get_verifier("tooluse")(wrong_input, e.answer)


def test_data_dir_from_environment(tmp_path, monkeypatch):
  write_save_to_disk(tmp_path / "science_train", [science_row(output_text="<answer>B</answer>")])
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
  [e] = sources.load_examples("science", split="train")
  assert e.demonstration == "<answer>B</answer>\nConfidence: 1.00"  # a gold demonstration gets the 1.00 line


def test_train_rows_carry_demonstrations(tmp_path):
  folder, _ = write_save_to_disk(tmp_path / "t", [tooluse_row(golden_response=["Thought: t", "Action: get",
                                                                               "Action Input: {}\nConfidence: 0.9"])],
                                 state=False)
  [e] = sources.load_examples(folder)
  assert e.demonstration == "Thought: t\nAction: get\nAction Input: {}\nConfidence: 0.9"


# --- bad input

def test_missing_folder_and_unknown_name(tmp_path):
  with pytest.raises(InputNotFoundError, match="does not exist"):
    sources.read_save_to_disk(str(tmp_path / "nope"))
  with pytest.raises(InputNotFoundError, match=re.escape(str(tmp_path / "science_eval"))):
    sources.load_examples("science", data_dir=str(tmp_path))
  with pytest.raises(InputNotFoundError):
    sources.load_examples(str(tmp_path / "missing.jsonl"))
  with pytest.raises(CaopdError, match="unknown dataset 'chemistry'.*science.*tooluse.*arithmetic"):
    sources.load_examples("chemistry")


@pytest.mark.parametrize("row, field", [
    (science_row(answer=None), "'answer'"),
    ({"prompt": [{"role": "system", "content": None}], "answer": "A"}, r"'prompt\[0\].content'"),
])
def test_null_science_field_names_file_row_field(tmp_path, row, field):
  _, path = write_save_to_disk(tmp_path / "s", [science_row(), row])
  with pytest.raises(CaopdError, match=f"{re.escape(path)}: row 1: field {field}"):
    sources.read_save_to_disk(str(tmp_path / "s"), schema="science")


def test_tooluse_null_and_missing_column(tmp_path):
  _, path = write_save_to_disk(tmp_path / "t", [tooluse_row(), tooluse_row(action_input=None)])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: row 1: field 'golden_answer\[0\].Action_Input'"):
    sources.read_save_to_disk(str(tmp_path / "t"))
  row = tooluse_row()
  del row["instruction"]
  _, path = write_save_to_disk(tmp_path / "u", [row])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: .*\['instruction'\] are missing"):
    sources.read_save_to_disk(str(tmp_path / "u"), schema="tooluse")


def test_not_an_arrow_stream(tmp_path):
  os.makedirs(tmp_path / "x")
  (tmp_path / "x" / "data.arrow").write_bytes(b"not arrow")
  with pytest.raises(CaopdError, match="not an Arrow IPC stream"):
    sources.read_save_to_disk(str(tmp_path / "x"))


# --- JSONL

def test_jsonl_reads_the_documented_schema(tmp_path):
  path = write_jsonl(tmp_path / "mine.jsonl", [
      json.dumps({"question": "2+2?", "answer": 4, "verifier": "arithmetic", "demonstration": "<answer>4</answer>"}),
      "",
      json.dumps({"question": "Q", "answer": " c ", "verifier": "mcq", "system": "S", "id": "q7"}),
      json.dumps({"question": "T", "answer": [{"Action": "f", "Action_Input": {"k": 1}}], "verifier": "tooluse"}),
  ])
  a, b, c = sources.load_examples(path)
  assert a == Example(id="mine/1", question="2+2?", answer=4, verifier="arithmetic", task="mine",
                      demonstration="<answer>4</answer>")
  assert (b.id, b.answer, b.system) == ("q7", "c", "S")
  assert c.answer == [{"Action": "f", "Action_Input": '{"k": 1}'}]


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "answer": 1', "line 2 is not valid JSON"),
    ('{"question": "q", "answer": "A"}', "line 2: required field 'verifier'"),
    ('{"question": "q", "answer": "A", "verifier": "essay"}', "line 2: field 'verifier' is 'essay'"),
    ('{"question": "q", "answer": "7", "verifier": "arithmetic"}', "line 2: field 'answer' must be an integer"),
    ('["q"]', "line 2: expected a JSON object"),
])
def test_jsonl_bad_line_names_file_and_line(tmp_path, line, message):
  path = write_jsonl(tmp_path / "bad.jsonl", ['{"question": "q", "answer": "A", "verifier": "mcq"}', line])
  with pytest.raises(CaopdError, match=f"{re.escape(path)}: {message}"):
    sources.read_jsonl(path)


def test_jsonl_not_utf8_names_the_line(tmp_path):
  latin1 = '{"question": "caf\xe9", "answer": "A", "verifier": "mcq"}'.encode("latin-1")
  path = write_jsonl(tmp_path / "latin1.jsonl", ['{"question": "q", "answer": "A", "verifier": "mcq"}', latin1])
  with pytest.raises(CaopdError, match=f"{re.escape(path)}: line 2 is not valid UTF-8"):
    sources.read_jsonl(path)


# --- arithmetic

def _solve(question):
  a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", question).groups()
  return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op], int(a), op, int(b)


def test_arithmetic_is_deterministic_and_correct():
  examples = arithmetic.arithmetic_task(200, seed=3, difficulty=[1, 2, 3, 4])
  assert examples == arithmetic.arithmetic_task(200, seed=3, difficulty=[1, 2, 3, 4])
  assert examples != arithmetic.arithmetic_task(200, seed=4, difficulty=[1, 2, 3, 4])
  for e in examples:
    result, a, op, b = _solve(e.question)
    assert e.answer == result >= 0 and e.verifier == "arithmetic"
    assert e.demonstration == f"{a} {op} {b} = {result}\n<answer>{result}</answer>\nConfidence: 1.00"
    assert get_verifier("arithmetic")(e.demonstration, e.answer)
  train, evaluation = sources.load_examples("arithmetic", "train"), sources.load_examples("arithmetic", "eval")
  assert len(train) == 1000 and [e.question for e in train] != [e.question for e in evaluation]


@pytest.mark.parametrize("level, ops, digits", [
    (1, {"+", "-"}, {1}), (2, {"+", "-"}, {2}), (3, {"+", "-", "*"}, {2, 3}), (4, {"*"}, {3, 4}),
])
def test_arithmetic_levels_have_documented_ranges(level, ops, digits):
  seen_ops = set()
  for e in arithmetic.arithmetic_task(300, seed=0, difficulty=level):
    _, a, op, b = _solve(e.question)
    seen_ops.add(op)
    lengths = {len(str(a)), len(str(b))}
    if level == 1:
      assert lengths == {1}
    elif level == 3:
      assert lengths == ({2} if op == "*" else {3})
    else:
      assert lengths <= digits
  assert seen_ops == ops


def test_arithmetic_mix_and_bad_level():
  levels = [len(str(_solve(e.question)[1])) for e in arithmetic.arithmetic_task(4, seed=1, difficulty=[1, 2])]
  assert levels[0] == 1 and levels[1] == 2
  with pytest.raises(CaopdError, match="difficulty 5"):
    arithmetic.arithmetic_task(3, seed=0, difficulty=5)
