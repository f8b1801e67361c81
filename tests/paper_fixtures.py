"""Fixture folders in the exact format of the paper's training sets, with rows we wrote ourselves.

The reference (SalesforceAIResearch/CaOPD) ships `data/science_data/train_data` and
`data/tooluse_data/train_data` as `datasets.save_to_disk` folders: one Arrow IPC stream file
`data-00000-of-00001.arrow` (schema metadata `huggingface` = the features), `dataset_info.json`
and `state.json`. Their rows are not ours to commit, but their schemas are known
(../shared/data/reference_train_schemas/); the features below are copied from those files.

  write_science_train(folder, rows=SCIENCE_TRAIN_ROWS) -> arrow file path
      rows: {"messages": [{"role", "content"}, ...] (system + user), "output_text": demonstration}
  write_tooluse_train(folder, rows=TOOLUSE_TRAIN_ROWS) -> arrow file path
      rows: {"prompt", "name", "description", "nl_documentation", "instruction": str,
             "golden_answer": [{"Action", "Action_Input"}], "golden_response": [str, one per step]}
  write_save_to_disk(folder, rows, features=None, state=True) -> arrow file path
      any rows; features (Hugging Face features JSON) fixes the Arrow types and writes dataset_info.json;
      None lets pyarrow infer the types (for malformed-input tests). state=False omits state.json.
  science_train_row(letter, question=..., system=SCIENCE_SYSTEM) -> a science train row answering `letter`.

Every folder is created (with parents); the folder must not exist yet.
"""

import json
import os

import pyarrow as pa

_STRING = {"dtype": "string", "_type": "Value"}
SCIENCE_TRAIN_FEATURES = {"messages": [{"content": _STRING, "role": _STRING}], "output_text": _STRING}
TOOLUSE_TRAIN_FEATURES = {
    **{name: _STRING for name in ("prompt", "name", "description", "nl_documentation", "instruction")},
    "golden_answer": {"feature": {"Action": _STRING, "Action_Input": _STRING}, "_type": "List"},
    "golden_response": {"feature": _STRING, "_type": "List"},
}
ARROW_FILE = "data-00000-of-00001.arrow"

# In the format of the eval set's system prompt (the train split's is not visible to us), in our words: the
# letter on its own line inside the answer tags.
SCIENCE_SYSTEM = (
    "\nAnswer the multiple-choice question below. Reply in exactly this format:\n<reasoning>\n...\n</reasoning>\n"
    "<answer>\n...\n</answer>\n\nInside the answer tags put only the letter of the option you choose (A, B, C or D), "
    "on its own line, for example:\n<answer>\nC\n</answer>\n")


def science_train_row(letter: str, question: str = "How many carbon atoms does benzene have?\n\nA: 4\nB: 6\nC: 8\n"
                      "D: 12", system: str = SCIENCE_SYSTEM) -> dict:
  """A science train row whose demonstration reasons briefly and answers `letter` in the eval prompt's format."""
  return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
          "output_text": f"<reasoning>\nChecking each option against the question, {letter} is the one that "
                         f"holds.\n</reasoning>\n<answer>\n{letter}\n</answer>"}


SCIENCE_TRAIN_ROWS = (
    science_train_row("B"),
    {"messages": [{"role": "system", "content": SCIENCE_SYSTEM},
                  {"role": "user", "content": "Which gas is produced when zinc reacts with hydrochloric acid?\n\n"
                                              "A: O2\nB: Cl2\nC: H2\nD: CO2"}],
     # the reasoning quotes the format's tag; the final tag is the answer
     "output_text": "<reasoning>\nZn + 2 HCl -> ZnCl2 + H2, so not <answer>B</answer>: chlorine stays as chloride.\n"
                    "</reasoning>\n<answer>\nc\n</answer>\nConfidence: 0.95"},
    science_train_row("D", question="What is the molar mass of water in g/mol, rounded?\n\nA: 10\nB: 16\nC: 17\nD: 18",
                      system=SCIENCE_SYSTEM + "\nThen end with a final line `Confidence: <number in [0,1]>`."),
)

_TOOLUSE_DOC = (
    "getRandomAxolotlImage: Retrieve a random axolotl image.\nParameters: {}\nOutput: Successful response.\n"
    "getAxolotlFacts: Retrieve facts about axolotls.\nParameters: {\"category\": \"string. One of: [habits, "
    "habitat]. The category of facts.\", \"limit\": \"integer. The maximum number of facts to return.\"}\n"
    "Output: Successful response.")


def _tooluse_prompt(question: str) -> str:
  return ("Answer the user's question with the tools below.\nTools:\nName: Axolotl\nDescription: Collection of "
          f"axolotl pictures and facts\nDocumentation:\n{_TOOLUSE_DOC}\n\nUse the following format:\nThought: what "
          "to do next\nAction: the tool to call, one of the tool names.\nAction Input: the tool's input as JSON, "
          f"with values taken from the user's request.\n\nBegin!\nQuestion: {question}")


def _tooluse_row(instruction: str, steps: list[tuple[str, str, str]]) -> dict:
  """A tool-use train row; steps: (thought, action, action input) per step, as ToolAlpaca writes them."""
  return {"prompt": _tooluse_prompt(instruction), "name": "Axolotl",
          "description": "Collection of axolotl pictures and facts", "nl_documentation": _TOOLUSE_DOC,
          "instruction": instruction,
          "golden_answer": [{"Action": action, "Action_Input": given} for _, action, given in steps],
          "golden_response": [f"Thought: {thought}\nAction: {action}\nAction Input: {given}"
                              for thought, action, given in steps]}


TOOLUSE_TRAIN_ROWS = (
    _tooluse_row("Show me a random axolotl picture, please.",
                 [("I need a random axolotl image.", "getRandomAxolotlImage", "{}")]),
    _tooluse_row("Give me two facts about axolotl habitats, then a random picture.",
                 [("I need facts about habitats first.", "getAxolotlFacts", '{"category": "habitat", "limit": 2}'),
                  ("Now a random image.", "getRandomAxolotlImage", "{}")]),
)


def _arrow_type(feature) -> pa.DataType:
  """The Arrow type `datasets` stores a Hugging Face feature as (Value string, List, [..] and struct dicts)."""
  if isinstance(feature, list):
    return pa.list_(_arrow_type(feature[0]))
  if feature.get("_type") == "List":
    return pa.list_(_arrow_type(feature["feature"]))
  if feature.get("_type") == "Value":
    return pa.type_for_alias(feature["dtype"])
  return pa.struct([(name, _arrow_type(sub)) for name, sub in feature.items()])


def write_save_to_disk(folder, rows, features: dict | None = None, state: bool = True) -> str:
  """A save_to_disk folder holding `rows` in one Arrow IPC stream file (module docstring); returns the file."""
  os.makedirs(folder)
  if features is None:
    table = pa.Table.from_pylist(list(rows))
  else:
    metadata = {"huggingface": json.dumps({"info": {"features": features}})}
    schema = pa.schema([(name, _arrow_type(f)) for name, f in features.items()], metadata=metadata)
    table = pa.Table.from_pylist(list(rows), schema=schema)
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
      json.dump(info, f, indent=2)
  path = os.path.join(folder, ARROW_FILE)
  with pa.ipc.new_stream(path, table.schema) as writer:
    writer.write_table(table)
  if state:
    with open(os.path.join(folder, "state.json"), "w") as f:
      json.dump({"_data_files": [{"filename": ARROW_FILE}], "_fingerprint": "0123456789abcdef",
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
                 "_split": None}, f, indent=2)
  return path


def write_science_train(folder, rows=SCIENCE_TRAIN_ROWS) -> str:
  """The reference's science train format (messages, output_text); returns the Arrow file's path."""
  return write_save_to_disk(folder, rows, SCIENCE_TRAIN_FEATURES)


def write_tooluse_train(folder, rows=TOOLUSE_TRAIN_ROWS) -> str:
  """The reference's tool-use train format (eval columns + golden_response); returns the Arrow file's path."""
  return write_save_to_disk(folder, rows, TOOLUSE_TRAIN_FEATURES)
