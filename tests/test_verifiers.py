"""Task verifiers (CAOPD.md section 6): strict MCQ, ToolAlpaca tool calls, integer answers."""

import pytest
from hypothesis import given, settings, strategies as st

from caopd_jax.calibration import (VERIFIERS, first_json_object, get_verifier, parse_integer_answer, parse_mcq_answer,
                                   parse_tool_call, verify_arithmetic, verify_mcq, verify_tooluse)
from caopd_jax.errors import CaopdError


# --- multiple choice
@pytest.mark.parametrize("text, gold, expected", [
    ("<reasoning>r</reasoning>\n<answer>B</answer>\nConfidence: 0.8", "B", True),
    ("<answer> b </answer>", "B", True),                                  # stripped, upper-cased
    ("<answer>B</answer>", " b ", True),
    ("<answer>A</answer> on reflection <answer>C</answer>", "C", True),   # the LAST tag
    ("<answer>A</answer> on reflection <answer>C</answer>", "A", False),
    ("<ANSWER>D</ANSWER>", "D", True),
    ("Confidence: 0.9\n<answer>A</answer>", "A", True),                  # confidence before the answer
    ("<answer>A", "A", False),                                            # unclosed: strict rule rejects
    ("Answer: A", "A", False),
    ("A", "A", False),
    ("<answer>(A)</answer>", "A", False),                                 # content must be the letter
    ("<answer></answer>", "A", False),
    ("", "A", False),
])
def test_verify_mcq(text, gold, expected):
  assert verify_mcq(text, gold) is expected
  assert VERIFIERS["mcq"] is verify_mcq


@pytest.mark.parametrize("text, expected", [
    ("<answer>c</answer>", "C"),
    ("<answer>A</answer><answer>B</answer>", "B"),
    ("<answer> </answer>\nAnswer: D", "D"),          # an empty tag falls through
    ("reasoning...\n<answer>b", "B"),                 # unclosed tag
    ("<answer> (C) and more", "C"),
    ("I think\n(B)\n", "B"),                          # bare letter line
    ("I think\nC.\nConfidence: 0.5", "C"),
    ("The answer is: d", "D"),
    ("Answer: (A)", "A"),
    ("no idea", None),
    ("", None),
])
def test_parse_mcq_answer(text, expected):
  assert parse_mcq_answer(text) == expected


def test_parse_mcq_answer_fallback_order():
  # an unclosed tag outranks a bare letter line, which outranks "Answer: X"
  assert parse_mcq_answer("Answer: A\nB\n<answer>C") == "C"
  assert parse_mcq_answer("Answer: A\nB\n") == "B"


# --- tool use
GOLD = [{"Action": "getWeather", "Action_Input": '{"city": "Paris", "units": {"temp": "C"}}'},
        {"Action": "getTime", "Action_Input": "{}"}]


@pytest.mark.parametrize("text, expected", [
    ('Thought: t\nAction: getWeather\nAction Input: {"city": "Paris", "units": {"temp": "C"}}', True),
    ('Action: getWeather\nAction Input: {"units": {"temp": "C"}, "city": "Paris"}', True),     # reordered keys
    ('Action: getWeather\nAction Input:\n```json\n{"units":{"temp":"C"},\n "city":"Paris"}\n```', True),
    ('Action: getWeather\nAction Input: {"city": "Paris", "units": {"temp": "C"}}\nObservation: {"x": 1}', True),
    ('Action:  getWeather  \nAction Input: {"city": "Paris", "units": {"temp": "C"}} trailing', True),
    ('Action: getTime\nAction Input: {}', False),                        # only the FIRST gold step counts
    ('Action: getWeather\nAction Input: {"city": "Lyon", "units": {"temp": "C"}}', False),
    ('Action: getWeather\nAction Input: {"city": "Paris"}', False),
    ('Thought: I will call getWeather\nAction Input: {"city": "Paris"}', False),     # no Action line
    ('Action: getWeather\nAction Input: {city: Paris, units: {temp: C}}', False),    # unparseable input
    ('Action: getWeather\nAction Input: {"city": "Paris", "units": {"temp": "C"', False),  # unbalanced
    ('Action: getWeather', False),                                       # no input at all
    ("", False),
])
def test_verify_tooluse(text, expected):
  assert verify_tooluse(text, GOLD) is expected


def test_tooluse_braces_inside_strings():
  gold = [{"Action": "echo", "Action_Input": '{"text": "a } b { c \\" }"}'}]
  text = 'Action: echo\nAction Input: {"text": "a } b { c \\" }"} and then {"other": 1}'
  assert parse_tool_call(text) == ("echo", '{"text": "a } b { c \\" }"}')
  assert verify_tooluse(text, gold)
  assert first_json_object('x {"a": "{{"} y') == '{"a": "{{"}'
  assert first_json_object('{"a": 1') is None and first_json_object("none") is None


def test_tooluse_non_json_compares_as_text():
  gold = [{"Action": "search", "Action_Input": "  weather in Paris "}]
  assert verify_tooluse("Action: search\nAction Input: weather in Paris\nObservation: ...", gold)
  assert not verify_tooluse("Action: search\nAction Input: weather in Lyon", gold)
  assert verify_tooluse("Action: getTime\nAction Input: {}", {"Action": "getTime", "Action_Input": "{}"})


@pytest.mark.parametrize("gold", [[], [{"Action": "x"}], "getWeather", None])
def test_tooluse_bad_gold(gold):
  with pytest.raises(CaopdError, match="golden_answer"):
    verify_tooluse("Action: x\nAction Input: {}", gold)


# --- arithmetic
@pytest.mark.parametrize("text, expected", [
    ("<answer>42</answer>", 42),
    ("<answer> -1,234 </answer>", -1234),
    ("<answer>7</answer> wait, <answer>8</answer>", 8),
    ("<answer>forty two</answer> 42", None),          # a tag must hold a whole integer; no fallback then
    ("<answer>4.5</answer>", None),
    ("so 3 + 4 = 7.\nConfidence: 0.9", 7),            # last integer before the Confidence key
    ("total is -12\nConfidence: 85%", -12),
    ("total is 1,234,567", 1234567),
    ("1,2,3", 3),
    ("pi is 3.14", None),
    ("x2 and y3", None),
    ("10-3", 3),
    ("no numbers here", None),
    ("Confidence: 0.5 then 12", None),
])
def test_parse_integer_answer(text, expected):
  assert parse_integer_answer(text) == expected


def test_verify_arithmetic():
  assert verify_arithmetic("the answer is 1,234.\nConfidence: 0.7", 1234)
  assert verify_arithmetic("<answer>-5</answer>", "-5")
  assert verify_arithmetic("<answer>1234</answer>", "1,234")
  assert not verify_arithmetic("the answer is 12\nConfidence: 0.7", 1234)
  for bad in ("12.5", "twelve", True, 3.0, None):
    with pytest.raises(CaopdError, match="integer"):
      verify_arithmetic("12", bad)


# --- registry and robustness
def test_get_verifier():
  assert get_verifier("tooluse") is verify_tooluse
  with pytest.raises(CaopdError) as e:
    get_verifier("mathh")
  assert "'mathh'" in str(e.value) and "arithmetic, mcq, tooluse" in str(e.value)


@given(st.text(alphabet=st.characters(codec=None)) | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
@settings(max_examples=200, deadline=None)
def test_parsers_never_crash(text):
  for candidate in (text, "<answer>" + text, "Action: t\nAction Input: {" + text, text + "\nConfidence: 0.5"):
    parse_mcq_answer(candidate)
    parse_tool_call(candidate)
    parse_integer_answer(candidate)
    assert isinstance(verify_mcq(candidate, "A"), bool)
    assert isinstance(verify_tooluse(candidate, GOLD), bool)
    assert isinstance(verify_arithmetic(candidate, 3), bool)
