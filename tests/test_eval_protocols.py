"""Eval protocols (eval/protocols.py, eval/reference_rules.py) and `python -m caopd_jax.eval --score`.

Fixed inference records, in the reference's record format, cover every rule where `paper` (the reference's
eval/run_eval_{chemistry,tooluse}.py) and `strict` (our training verifiers) differ; their metrics are computed
by hand in the comments, under both protocols. When $CAOPD_REFERENCE_REPO names an extracted copy of the
reference repository (its eval/ folder suffices), the reference's own scripts score the same files and every
number they write must equal ours to the last digit; otherwise that test skips.
"""

import json
import os
import subprocess
import sys

import pytest

from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.eval import reference_rules
from caopd_jax.eval.__main__ import main as eval_main

REFERENCE_ENV = "CAOPD_REFERENCE_REPO"


def _step(action, given="{}"):
  return [{"Action": action, "Action_Input": given}]


# (response, golden_answer, paper (correct, confidence), strict (correct, confidence)); confidence None: unstated
SCIENCE = [
    # the FIRST <answer> tag (paper) vs the LAST (strict); 0.3 is a bin boundary
    ("<answer>B</answer>\nOn second thought, <answer>C</answer>\nConfidence: 0.3", [{"Answer": "B"}],
     (True, 0.3), (False, 0.3)),
    ("<reasoning>r</reasoning>\n<answer>A</answer>\nConfidence: 0.6", [{"Answer": "A"}], (True, 0.6), (True, 0.6)),
    # an unclosed tag counts in the reference only
    ("Thinking.\n<answer>D\nConfidence: 0.7", [{"Answer": "D"}], (True, 0.7), (False, 0.7)),
    # "answer is C" counts in the reference only; its `Confidence: 90%` is the run "90" clipped to 1.0, ours 0.9
    ("The answer is C.\nConfidence: 90%", [{"Answer": "C"}], (True, 1.0), (False, 0.9)),
    # a 1-10 tag: 8 -> 0.8 in both
    ("<answer>A</answer>\n<confidence>8</confidence>", [{"Answer": "B"}], (False, 0.8), (False, 0.8)),
    ("<answer>B</answer>", [{"Answer": "B"}], (True, None), (True, None)),
    # E is no option for the reference (nothing parsed); our fallback parser reads it (wrong either way)
    ("Answer: E\nConfidence: 0.2", [{"Answer": "A"}], (False, 0.2), (False, 0.2)),
    # markdown bold: not a confidence for the reference, 0.9 for us
    ("**Confidence:** 0.9\n<answer>C</answer>", [{"Answer": "C"}], (True, None), (True, 0.9)),
]

TOOLUSE = [
    # a tool without arguments and no `Action Input:` at all: `{}` in the reference, "" (wrong) in ours
    ("Thought: list them.\nAction: listCountries\nConfidence: 0.9", _step("listCountries"), (True, 0.9),
     (False, 0.9)),
    ('Action: getWeather\nAction Input: {"unit": "C", "city": "Paris"}\nConfidence: 0.7',
     _step("getWeather", '{"city": "Paris", "unit": "C"}'), (True, 0.7), (True, 0.7)),
    # a brace inside a JSON string closes the reference's count early; ours skips strings
    ('Action: search\nAction Input: {"q": "a}b"}\nConfidence: 0.6', _step("search", '{"q": "a}b"}'), (False, 0.6),
     (True, 0.6)),
    # `Action:` in the middle of a line counts in the reference only
    ("I will call it. Action: getTime\nAction Input: {}\nConfidence: 0.3", _step("getTime"), (True, 0.3),
     (False, 0.3)),
    ("Action: getDate\nAction Input: {}\n<confidence>75%</confidence>", _step("getTime"), (False, 0.75),
     (False, 0.75)),
    # a dict gold input is JSON-dumped by the reference, str()-ed by our verifier
    ('Action: add\nAction Input: {\n  "a": 1,\n  "b": 2\n}\nConfidence: 1.0', _step("add", {"b": 2, "a": 1}),
     (True, 1.0), (False, 1.0)),
    ("I cannot help.\nConfidence: 0.1", _step("getTime"), (False, 0.1), (False, 0.1)),
    # a non-JSON input: `{}` in the reference (no brace after the marker), the rest of the line in ours
    ("Action: search\nAction Input: q=cats\nConfidence: 0.5", _step("search", "q=cats"), (False, 0.5), (True, 0.5)),
]

ARITHMETIC = [
    ("<answer>12</answer>\nConfidence: 0.7", 12, (True, 0.7), (True, 0.7)),
    ("It is 5.\nConfidence: 0.3", 6, (False, 0.3), (False, 0.3)),
    # `Confidence: 7`: clipped to 1.0 by the reference's rule, a 1-10 scale (0.7) for us
    ("7\nConfidence: 7", 7, (True, 1.0), (True, 0.7)),
    ("<answer>-3</answer>", -3, (True, None), (True, None)),
]

# hand-computed metrics of each set: (protocol, dataset) -> {key: value}
EXPECTED = {
    # c = 1 1 1 1 0 1 0 1, p = .3 .6 .7 1 .8 0 .2 0 (unstated = 0). Bins with linspace edges: 0 -> bin 0 {1, 1}:
    # |0 - 2|; .2 and .3 (an edge one ulp above 0.3) -> bin 2 {0, 1}: |.5 - 1|; .6 -> bin 5: .4; .7 -> bin 6: .3;
    # .8 -> bin 8 {0}: .8; 1 -> bin 9: 0. ECE = 4.0 / 8. Brier: .49 .16 .09 0 .64 1 .04 1 = 3.42 / 8.
    # SPR: correct {.3 .6 .7 1 0 0} vs incorrect {.8 .2}: wins .3>.2 .6>.2 .7>.2 1>.8 1>.2 = 5 of 12, no ties.
    ("paper", "science"): {"accuracy": 6 / 8, "ece": 4.0 / 8, "brier_score": 3.42 / 8, "mean_confidence": 3.6 / 8,
                           "overconfidence_gap": 3.6 / 8 - 6 / 8, "spr": 5 / 12, "auroc": 5 / 12,
                           "confidence_format_adherence": 6 / 8, "answer_parse_rate": 7 / 8},
    # c = 0 1 0 0 0 1 0 1, p = .3 .6 .7 .9 .8 0 .2 .9. Exact edges: bin 0 {1}: 1; bin 2 {0}: .2; bin 3 {0}: .3;
    # bin 6 {1}: .4; bin 7 {0}: .7; bin 8 {0}: .8; bin 9 {0, 1}: |1.8 - 1| = .8. ECE = 4.2 / 8.
    # Brier: .09 .16 .49 .81 .64 1 .04 .01 = 3.24 / 8. SPR: correct {.6 0 .9} vs incorrect {.3 .7 .9 .8 .2}:
    # .6 beats .3 .2; .9 beats .3 .7 .8 .2 and ties .9: 6 of 15, AUROC 6.5 of 15. Parsed: all but row 4.
    ("strict", "science"): {"accuracy": 3 / 8, "ece": 4.2 / 8, "brier_score": 3.24 / 8, "mean_confidence": 4.4 / 8,
                            "overconfidence_gap": 4.4 / 8 - 3 / 8, "spr": 6 / 15, "auroc": 6.5 / 15,
                            "confidence_format_adherence": 7 / 8, "answer_parse_rate": 7 / 8},
    # c = 1 1 0 1 0 1 0 0, p = .9 .7 .6 .3 .75 1 .1 .5. Linspace: .1 -> bin 1 {0}: .1; .3 -> bin 2 {1}: .7;
    # .5 and .6 -> bin 5 {0, 0}: 1.1; .7 -> bin 6 {1}: .3; .75 -> bin 7 {0}: .75; .9, 1 -> bin 9 {1, 1}: .1.
    # ECE = 3.05 / 8. Brier: .01 .09 .36 .49 .5625 0 .01 .25 = 1.7725 / 8. SPR: correct {.9 .7 .3 1} vs
    # incorrect {.6 .75 .1 .5}: 4 + 3 + 1 + 4 = 12 of 16. Row 7 has no Action: 7 of 8 parsed.
    ("paper", "tooluse"): {"accuracy": 4 / 8, "ece": 3.05 / 8, "brier_score": 1.7725 / 8, "mean_confidence": 4.85 / 8,
                           "overconfidence_gap": 4.85 / 8 - 4 / 8, "spr": 12 / 16, "auroc": 12 / 16,
                           "confidence_format_adherence": 1.0, "answer_parse_rate": 7 / 8},
    # c = 0 1 1 0 0 0 0 1, same p. Exact: bin 1 {0}: .1; bin 3 {0}: .3; bin 5 {1}: .5; bin 6 {1}: .4;
    # bin 7 {1, 0}: |1.45 - 1| = .45; bin 9 {0, 0}: 1.9. ECE = 3.65 / 8. Brier: .81 .09 .16 .09 .5625 1 .01 .25
    # = 2.9725 / 8. SPR: correct {.7 .6 .5} each beat .3 and .1: 6 of 15. Rows 4 (no `Action:` at a line
    # start) and 7 are unparsed: 6 of 8.
    ("strict", "tooluse"): {"accuracy": 3 / 8, "ece": 3.65 / 8, "brier_score": 2.9725 / 8, "mean_confidence": 4.85 / 8,
                            "overconfidence_gap": 4.85 / 8 - 3 / 8, "spr": 6 / 15, "auroc": 6 / 15,
                            "confidence_format_adherence": 1.0, "answer_parse_rate": 6 / 8},
    # c = 1 0 1 1, p = .7 .3 1 0. Linspace: bin 0 {1}: 1; .3 -> bin 2 {0}: .3; .7 -> bin 6 {1}: .3; bin 9: 0.
    # SPR: correct {.7 1 0} vs incorrect {.3}: 2 of 3.
    ("paper", "arithmetic"): {"accuracy": 0.75, "ece": 1.6 / 4, "brier_score": 1.18 / 4, "mean_confidence": 0.5,
                              "spr": 2 / 3, "confidence_format_adherence": 0.75},
    # p = .7 .3 .7 0. Exact: bin 0 {1}: 1; bin 3 {0}: .3; bin 7 {1, 1}: |1.4 - 2| = .6. ECE = 1.9 / 4.
    # SPR: correct {.7 .7 0} vs incorrect {.3}: 2 of 3.
    ("strict", "arithmetic"): {"accuracy": 0.75, "ece": 1.9 / 4, "brier_score": 1.27 / 4, "mean_confidence": 1.7 / 4,
                               "spr": 2 / 3, "confidence_format_adherence": 0.75},
}
SETS = {"science": SCIENCE, "tooluse": TOOLUSE, "arithmetic": ARITHMETIC}


def _write_records(path, rows) -> str:
  path.write_text(json.dumps([{"response": response, "golden_answer": gold, "engine": "vllm"}
                              for response, gold, *_ in rows], indent=1))
  return str(path)


def _score(tmp_path, dataset, protocol, rows=None, name="records.json"):
  """Runs --score on `rows` (default: the dataset's set); returns (scored records, metrics.json)."""
  out = tmp_path / f"{dataset}-{protocol}"
  source = _write_records(tmp_path / name, SETS[dataset] if rows is None else rows)
  assert eval_main(["--score", source, "--dataset", dataset, "--protocol", protocol, "--output", str(out)]) == 0
  return json.loads((out / "inference.json").read_text()), json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("protocol", ["paper", "strict"])
@pytest.mark.parametrize("dataset", ["science", "tooluse", "arithmetic"])
def test_score_fixed_records_under_both_protocols(tmp_path, capsys, dataset, protocol):
  records, summary = _score(tmp_path, dataset, protocol)
  column = 2 if protocol == "paper" else 3
  assert [(r["correct"], r["confidence"]) for r in records] == [row[column] for row in SETS[dataset]]
  assert all(r["engine"] == "vllm" for r in records)  # the input's fields are kept
  assert summary["protocol"] == protocol and summary["decoding"] is None and summary["n_samples"] == len(records)
  for key, value in EXPECTED[protocol, dataset].items():
    assert summary[key] == pytest.approx(value, abs=1e-12), key
  assert summary["confidence_notes"] == 0
  printed = capsys.readouterr().out
  assert f"| {protocol} |" in printed and f"under the {protocol} protocol" in printed
  assert (tmp_path / f"{dataset}-{protocol}" / "reliability.png").stat().st_size > 1000


def test_paper_bins_and_valid_block_are_the_reference_s(tmp_path):
  _, summary = _score(tmp_path, "science", "paper")
  counts = [b["count"] for b in summary["bin_stats"]]
  assert counts == [2, 0, 2, 0, 0, 1, 1, 0, 1, 1]  # 0.3 shares bin 2 with 0.2; 0.6 in bin 5, 0.7 in bin 6
  assert summary["bin_stats"][2] == {"bin": 2, "low": 0.2, "high": 0.3, "count": 2,
                                     "mean_conf": pytest.approx(0.25), "accuracy": 0.5}
  # rows with a confidence: c = 1 1 1 1 0 0, p = .3 .6 .7 1 .8 .2; ECE (.5 + .4 + .3 + .8 + 0) / 6
  valid = summary["valid_confidence_only"]
  assert valid["n_valid"] == 6 and valid["accuracy"] == pytest.approx(4 / 6)
  assert valid["ece"] == pytest.approx(2.0 / 6) and valid["spr"] == pytest.approx(5 / 8)
  assert valid["brier_score"] == pytest.approx(1.42 / 6) and valid["mean_confidence"] == pytest.approx(0.6)


def test_confidences_the_reference_cannot_score_get_a_note(tmp_path):
  rows = [("<answer>A</answer>\nConfidence: 0.8.", [{"Answer": "A"}]),           # the reference raises ValueError
          ("<answer>B</answer>\n<confidence>nan</confidence>", [{"Answer": "A"}]),  # ... makes every metric NaN
          ("<answer>C</answer>\n<confidence>500</confidence>", [{"Answer": "C"}]),  # 5.0, unclipped, as there
          ("I do not know.", [])]                                                  # no gold: right iff no letter
  records, summary = _score(tmp_path, "science", "paper", rows)
  assert [(r["correct"], r["confidence"]) for r in records] == [(True, 0.8), (False, None), (True, 5.0), (True, None)]
  assert "crash on 'Confidence: 0.8.'; read as 0.8" in records[0]["confidence_note"]
  assert "nan" in records[1]["confidence_note"] and "confidence_note" not in records[2]
  # p = .8 0 5 0, c = 1 0 1 1: mean p 5.8 / 4; Brier (.04 + 0 + 16 + 1) / 4; two notes
  assert summary["confidence_notes"] == 2 and summary["mean_confidence"] == pytest.approx(5.8 / 4)
  assert summary["brier_score"] == pytest.approx(17.04 / 4)
  with pytest.raises(CaopdError, match=r"records.json: record 3: the record has no gold letter; only --protocol paper"):
    _score(tmp_path, "science", "strict", rows)


def test_mcq_rules():
  read = reference_rules.read_mcq_answer
  assert read("<answer> b </answer> <answer>C</answer>") == "B"
  assert read("<answer>A or B</answer> then <answer>D</answer>") == "D"  # the first tag holding one letter A-D
  assert read("<answer>E</answer>") is None and read("<answer>c  \nmore") == "C" and read("<answer>c more") is None
  assert read("A\nreasons\n b \nConfidence: 1") == "B"  # the last bare-letter line
  assert read("the answer is a guess") == "A" and read("ANSWER: B") is None  # `[Aa]nswer` only
  assert reference_rules.gold_letter([{"Answer": " c "}]) == "C" and reference_rules.gold_letter("b") == "B"
  assert reference_rules.gold_letter([{"Answer": ""}]) is None and reference_rules.gold_letter(None) is None
  with pytest.raises(CaopdError, match="list of"):
    reference_rules.gold_letter({"Answer": "A"})


def test_tool_call_rules():
  read = reference_rules.read_tool_call
  assert read("Action:\nlookup\nAction_Input: {\"id\": 3}") == {"Action": "lookup", "Action_Input": '{"id": 3}'}
  assert read("Reaction: none") == {"Action": "none", "Action_Input": "{}"}  # `Action:` anywhere, any case
  assert read("Action: a\nAction Input: {\"x\": {\"y\": 1}") == {"Action": "a", "Action_Input": "{}"}  # unbalanced
  assert read("Action: a\naction input: {\"x\": 1}")["Action_Input"] == "{}"  # the marker is case-sensitive
  assert read("Action: a\nAction Input: {\"x\": \"\u00e9\"}")["Action_Input"] == '{"x": "\\u00e9"}'
  assert read("no call") is None
  grade = reference_rules.grade_tooluse
  assert grade("Action: t\nAction Input: {}", [{"Action": "t", "Action_Input": ""}])[0]  # a falsy gold input is {}
  assert grade("Action: t", [{"action": "t", "Action Input": {}}])[0]
  assert grade("no call", [])[0] and not grade("Action: t", [])[0]
  with pytest.raises(CaopdError, match="tool name"):
    grade("Action: t", [{"Action": 5}])


def test_confidence_rules():
  read = reference_rules.read_confidence
  assert read("Confidence: 0.4\nconfidence:\n0.65") == (0.65, None)  # the last, any case, across a newline
  assert read("Confidence: 1.5") == (1.0, None) and read("<confidence>0.9</confidence>\nConfidence: 0.2")[0] == 0.2
  assert read("<confidence>85</confidence>") == (0.85, None) and read("<confidence>-5</confidence>") == (-0.5, None)
  assert read("<confidence>about 7 of 10</confidence>") == (0.7, None) and read("<confidence></confidence>")[0] is None
  assert read("<CONFIDENCE>0.5</CONFIDENCE>") == (None, None)  # tags are case-sensitive
  assert read("<confidence> 85 %") == (0.85, None) and read("<confidence>3") == (0.3, None)  # unclosed
  assert read("<confidence>x</confidence> <confidence>0.5") == (None, None)  # a closed tag wins, even empty
  assert read("Confidence: ...")[0] is None and "crash" in read("Confidence: 1.2.3")[1]
  assert read("Confidence: 1.2.3")[0] == 1.0 and read("Confidence: .5.")[0] == 0.5
  assert read("<confidence>inf</confidence>")[0] is None


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "gsm8k"], "--score grades with the rules of a named dataset: --dataset science or tooluse or "
                             "arithmetic; got 'gsm8k'"),
    (["--dataset", "science", "--max_new_tokens", "9"], "--max_new_tokens applies to --model only"),
    (["--dataset", "science", "--protocol", "lenient"], None),
])
def test_score_bad_arguments(tmp_path, argv, message):
  source = _write_records(tmp_path / "records.json", SCIENCE)
  argv = ["--score", source, "--output", str(tmp_path / "out"), *argv]
  if message is None:
    with pytest.raises(SystemExit):  # argparse: invalid choice
      eval_main(argv)
  else:
    with pytest.raises(CaopdError, match=message):
      eval_main(argv)
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ("[]", r"bad.json must hold a non-empty JSON list of records"),
    ('{"response": "x"}', r"must hold a non-empty JSON list of records; got dict"),
    ("[{", r"bad.json is not valid JSON"),
    ('[{"response": "x", "golden_answer": "A"}, {"response": null, "golden_answer": "A"}]',
     r"bad.json: record 1 needs 'response' \(a string\) and 'golden_answer'"),
    ('[{"response": "x", "golden_answer": "A"}, {"id": "q7", "response": "x", "golden_answer": {"Answer": "A"}}]',
     r"bad.json: record 1 \(id q7\): golden_answer must be a list of \{\"Answer\": \"A\"\}"),
])
def test_score_names_the_file_and_record_of_a_malformed_input(tmp_path, content, message):
  (tmp_path / "bad.json").write_text(content)
  with pytest.raises(CaopdError, match=message):
    eval_main(["--score", str(tmp_path / "bad.json"), "--dataset", "science", "--output", str(tmp_path / "out")])
  with pytest.raises(InputNotFoundError, match="missing.json does not exist"):
    eval_main(["--score", str(tmp_path / "missing.json"), "--dataset", "science", "--output", str(tmp_path / "o")])


def _reference_metrics(script: str, inference: str, output: str) -> dict:
  repo = os.environ[REFERENCE_ENV]
  subprocess.run([sys.executable, os.path.join(repo, "eval", script), "--input", inference, "--output", output],
                 check=True, capture_output=True, text=True)
  with open(output) as f:
    return json.load(f)


def assert_reference_values_equal(reference, ours, where="metrics"):
  """Every key the reference wrote has the same value in ours, exactly (==, no tolerance), recursively."""
  if isinstance(reference, dict):
    for key, value in reference.items():
      assert key in ours, f"{where}.{key} missing"
      assert_reference_values_equal(value, ours[key], f"{where}.{key}")
  elif isinstance(reference, list):
    assert len(reference) == len(ours), where
    for i, (a, b) in enumerate(zip(reference, ours)):
      assert_reference_values_equal(a, b, f"{where}[{i}]")
  else:
    assert reference == ours and type(reference) is type(ours), f"{where}: reference {reference!r}, ours {ours!r}"


@pytest.mark.skipif(not os.environ.get(REFERENCE_ENV), reason=f"set ${REFERENCE_ENV} to an extracted copy of the "
                    "CaOPD reference repository (with eval/run_eval_chemistry.py) to compare against its scripts")
@pytest.mark.parametrize("dataset, script", [("science", "run_eval_chemistry.py"), ("tooluse", "run_eval_tooluse.py")])
def test_paper_protocol_equals_the_reference_scripts(tmp_path, dataset, script):
  extra = {"science": [("<answer>C</answer>\n<confidence>500</confidence>", [{"Answer": "C"}]), ("I pass.", [])],
           "tooluse": [("Action: x\nAction Input: {}\n<confidence>", _step("x")), ("No call.", [])]}[dataset]
  rows = SETS[dataset] + extra
  _, ours = _score(tmp_path, dataset, "paper", rows)
  reference = _reference_metrics(script, str(tmp_path / "records.json"), str(tmp_path / "reference.json"))
  assert "valid_confidence_only" in reference and len(reference["bin_stats"]) == 10
  assert_reference_values_equal(reference, ours)
