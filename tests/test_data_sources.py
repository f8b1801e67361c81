"""caopd_jax.data.sources / arithmetic: the paper's eval sets, our JSONL schema, the synthetic task, bad input."""

import json
import os
import re

import pytest

import paper_fixtures
from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.data import arithmetic, sources
from caopd_jax.data.example import Example
from caopd_jax.distill import prompts
from caopd_jax.distill.prompts import PromptConfig, student_messages
from caopd_jax.errors import CaopdError, InputNotFoundError
from paper_fixtures import write_save_to_disk


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

def test_science_eval_every_row_loads(paper_data):
  examples = sources.load_examples("science", data_dir=paper_data)
  assert len(examples) == 507 and len({e.id for e in examples}) == 507
  for e in examples:
    assert e.verifier == "mcq" and e.task == "science" and e.answer in "ABCD" and e.demonstration is None
    assert [m["role"] for m in e.messages] == ["system", "user"]
    assert e.system == e.messages[0]["content"] and e.question == e.messages[1]["content"]
    assert sources.fallback_demonstration(e) == f"<answer>{e.answer}</answer>\nConfidence: 1.00"
    assert get_verifier("mcq")(sources.fallback_demonstration(e), e.answer)
    wrong = "ABCD"[("ABCD".index(e.answer) + 1) % 4]
    assert not get_verifier("mcq")(f"<answer>{wrong}</answer>\nConfidence: 1.00", e.answer)


def test_tooluse_eval_every_row_loads(paper_data):
  examples = sources.read_save_to_disk(sources.dataset_folder("tooluse", "eval", paper_data))  # schema "auto"
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
  write_save_to_disk(tmp_path / "t", [tooluse_row(golden_response=["Thought: t", "Action: get",
                                                                    "Action Input: {}\nConfidence: 0.9"])], state=False)
  [e] = sources.load_examples(str(tmp_path / "t"))
  assert e.demonstration == "Thought: t\nAction: get\nAction Input: {}\nConfidence: 0.9"


# --- the reference's training sets (rows of ours, in its exact schemas: paper_fixtures)

def test_science_train_schema(tmp_path):
  """Prompt from `messages`, demonstration from `output_text`, gold letter from its LAST answer tag."""
  paper_fixtures.write_science_train(tmp_path / "science_train")
  examples = sources.load_examples("science", "train", data_dir=str(tmp_path))
  assert examples == sources.read_save_to_disk(str(tmp_path / "science_train"))  # "auto" detects it too
  assert [e.answer for e in examples] == ["B", "C", "D"]  # row 1 quotes "<answer>B</answer>" in its reasoning
  for e, row in zip(examples, paper_fixtures.SCIENCE_TRAIN_ROWS):
    assert (e.verifier, e.task, e.messages) == ("mcq", "science", tuple(row["messages"]))
    assert (e.system, e.question) == (row["messages"][0]["content"], row["messages"][1]["content"])
    assert e.demonstration.startswith(row["output_text"]) and get_verifier("mcq")(e.demonstration, e.answer)
  assert examples[0].demonstration == f"{paper_fixtures.SCIENCE_TRAIN_ROWS[0]['output_text']}\nConfidence: 1.00"
  assert examples[1].demonstration.endswith("</answer>\nConfidence: 0.95")  # its own line is kept


def test_science_train_student_prompt_asks_for_confidence_once(tmp_path):
  paper_fixtures.write_science_train(tmp_path / "s")
  plain, _, asks = sources.read_save_to_disk(str(tmp_path / "s"))
  instruction = prompts.PromptConfig().confidence_instruction
  assert prompts.student_messages(plain)[0]["content"] == f"{plain.system.rstrip()}\n\n{instruction}"
  assert prompts.student_messages(asks)[0]["content"] == asks.system  # it already asks for `Confidence:`


@pytest.mark.parametrize("demo", ["<reasoning>\nno tag at all\n</reasoning>", "<answer>\n\n</answer>",
                                  "<answer>B or C</answer>", "<answer>B"])
def test_science_train_row_without_answer_letter_names_file_and_row(tmp_path, demo):
  good = paper_fixtures.science_train_row("A")
  path = paper_fixtures.write_science_train(tmp_path / "s", [good, {**good, "output_text": demo}])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: row 1: field 'output_text' .*<answer>X</answer>"):
    sources.read_save_to_disk(str(tmp_path / "s"))


def test_tooluse_train_schema(tmp_path):
  paper_fixtures.write_tooluse_train(tmp_path / "tooluse_data" / "train_data")  # the reference's layout
  examples = sources.load_examples("tooluse", "train", data_dir=str(tmp_path))
  assert len(examples) == len(paper_fixtures.TOOLUSE_TRAIN_ROWS)
  for e, row in zip(examples, paper_fixtures.TOOLUSE_TRAIN_ROWS):
    assert (e.question, e.answer, e.verifier, e.system, e.messages) == (
        row["prompt"], row["golden_answer"], "tooluse", None, None)
    assert e.demonstration == "\n".join(row["golden_response"]) + "\nConfidence: 1.00"
    assert get_verifier("tooluse")(e.demonstration, e.answer)
  assert examples[0].demonstration.startswith("Thought: I need a random axolotl image.\nAction: getRandomAxolotlImage"
                                              "\nAction Input: {}\n")


def test_named_dataset_layouts_ours_first(tmp_path):
  paper_fixtures.write_science_train(tmp_path / "science_data" / "train_data", [paper_fixtures.science_train_row("A")])
  assert [e.answer for e in sources.load_examples("science", "train", data_dir=str(tmp_path))] == ["A"]
  paper_fixtures.write_science_train(tmp_path / "science_train", [paper_fixtures.science_train_row("D")])
  assert sources.dataset_folder("science", "train", str(tmp_path)) == str(tmp_path / "science_train")
  assert [e.answer for e in sources.load_examples("science", "train", data_dir=str(tmp_path))] == ["D"]


def test_default_data_dir_is_data_in_the_working_directory(tmp_path, monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.chdir(tmp_path)
  assert os.path.abspath(sources.default_data_dir()) == str(tmp_path / "data")
  paper_fixtures.write_science_train(tmp_path / "data" / "science_data" / "train_data")
  assert len(sources.load_examples("science", "train")) == len(paper_fixtures.SCIENCE_TRAIN_ROWS)


def test_missing_named_dataset_says_where_it_looked_and_where_the_sets_come_from(tmp_path, monkeypatch):
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(InputNotFoundError) as error:
    sources.load_examples("tooluse", "train")
  message = str(error.value)
  for part in (str(tmp_path / "data" / "tooluse_train"), str(tmp_path / "data" / "tooluse_data" / "train_data"),
               "$CAOPD_DATA_DIR", "data.data_dir", "SalesforceAIResearch/CaOPD",
               "data/science_data/{train_data,eval_data}", "data/tooluse_data/{train_data,eval_data}", "CC BY-NC 4.0"):
    assert part in message, part
  assert "shared" not in message


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
  path = write_save_to_disk(tmp_path / "s", [science_row(), row])
  with pytest.raises(CaopdError, match=f"{re.escape(path)}: row 1: field {field}"):
    sources.read_save_to_disk(str(tmp_path / "s"), schema="science")


def test_tooluse_null_and_missing_column(tmp_path):
  path = write_save_to_disk(tmp_path / "t", [tooluse_row(), tooluse_row(action_input=None)])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: row 1: field 'golden_answer\[0\].Action_Input'"):
    sources.read_save_to_disk(str(tmp_path / "t"))
  row = tooluse_row()
  del row["instruction"]
  path = write_save_to_disk(tmp_path / "u", [row])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: .*\['instruction'\] are missing"):
    sources.read_save_to_disk(str(tmp_path / "u"), schema="tooluse")


@pytest.mark.parametrize("schema, accepted", [
    ("auto", r"accepted schemas \(science eval .*\['prompt'\] are missing; science train .*\['output_text'\] are "
             r"missing; tooluse eval/train "),
    ("science", r"science schemas \(science eval .*; science train .*\)"),
    ("tooluse", r"tooluse schemas \(tooluse eval/train needs \['prompt', 'name', ")])
def test_no_schema_matches_names_file_columns_and_schemas(tmp_path, schema, accepted):
  path = write_save_to_disk(tmp_path / "x", [{"messages": [{"role": "user", "content": "q"}], "answer": "A"}])
  with pytest.raises(CaopdError, match=rf"{re.escape(path)}: columns \['messages', 'answer'\] match none of the "
                                       rf"{accepted}"):
    sources.read_save_to_disk(str(tmp_path / "x"), schema=schema)


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


def test_jsonl_rows_may_carry_a_multi_turn_conversation(tmp_path):
  """`messages` instead of `question`: the student's prompt is the conversation (with the confidence instruction
  added to its system message and the few-shot turns after it), its last user turn the question."""
  turns = [{"role": "system", "content": "You add numbers."}, {"role": "user", "content": "What is 1 + 1?"},
           {"role": "assistant", "content": "<answer>2</answer>"}, {"role": "user", "content": "And 2 + 3?"}]
  path = write_jsonl(tmp_path / "chat.jsonl", [json.dumps({"messages": turns, "answer": 5, "verifier": "arithmetic"})])
  (example,) = sources.load_examples(path)
  assert (example.question, example.system, example.answer) == ("And 2 + 3?", "You add numbers.", 5)
  student = student_messages(example, PromptConfig(fewshot=()))
  assert [m["role"] for m in student] == ["system", "user", "assistant", "user"]
  assert student[0]["content"].startswith("You add numbers.\n\n") and "Confidence:" in student[0]["content"]
  assert [m["content"] for m in student[1:]] == ["What is 1 + 1?", "<answer>2</answer>", "And 2 + 3?"]


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "answer": 1', "line 2 is not valid JSON"),
    ('{"question": "q", "answer": "A"}', "line 2: required field 'verifier'"),
    ('{"question": "q", "answer": "A", "verifier": "essay"}', "line 2: field 'verifier' is 'essay'"),
    ('{"question": "q", "answer": "7", "verifier": "arithmetic"}', "line 2: field 'answer' must be an integer"),
    ('["q"]', "line 2: expected a JSON object"),
    ('{"answer": 7, "verifier": "arithmetic"}', "line 2: required field 'question' \\(or 'messages'\\) is missing"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "7"}], "answer": 7, '
     '"verifier": "arithmetic"}', "line 2: field 'messages' must end with the user's turn"),
    ('{"messages": [{"role": "tool", "content": "q"}], "answer": 7, "verifier": "arithmetic"}',
     "line 2: field 'messages\\[0\\]' must be"),
    ('{"question": "q \\ud83d", "answer": "A", "verifier": "mcq"}', "line 2: field 'question' holds a lone surrogate"),
    ('{"question": "q", "answer": [{"Action": "f", "Action_Input": "\\udc00"}], "verifier": "tooluse"}',
     "line 2: field 'answer\\[0\\].Action_Input' holds a lone surrogate"),
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
