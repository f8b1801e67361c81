"""Every verifier and parser is total: any text in, its declared type out, never an exception, and fast on the
degenerate rollouts that once killed runs (issue: deep brackets, huge integers, tens of thousands of unclosed tags).

Readers checked, on arbitrary text (hypothesis) and on those cases: the training verifiers and eval parsers of
calibration/verifiers.py, confidence parsing and the rewrite's text helpers, and the paper protocol's rules
(eval/reference_rules.py). Speed per character is measured in bench/verifier_speed.py (bench/RESULTS.md).
"""

import string

import pytest
from hypothesis import given, settings, strategies as st

from caopd_jax.calibration import confidence, rewrite, verifiers
from caopd_jax.eval import reference_rules
from caopd_jax.eval.protocols import PROTOCOLS

TOOL_GOLD = [{"Action": "getWeather", "Action_Input": '{"days": 3}'}]
FRAGMENTS = ["<answer>", "</answer>", "<ANSWER>", "<confidence>", "</confidence>", "Confidence:", "confidence: ",
             "**Confidence:**", "Action:", "Action Input:", "Action_Input:", "{", "}", "[", "]", '"', "\\", ":", "\n",
             " ", "0.", "7", "-", ",", "%", "/", "e", "A", "b", "Begin!", "\ud83d", "\x00", "İ", "…"]
TEXTS = st.one_of(st.text(), st.lists(st.sampled_from(FRAGMENTS + list(string.printable)), max_size=60).map("".join))


def _readers():
  """(name, reader, check of its result) for every text reader that training or evaluation applies to a rollout."""
  def optional(kind):
    return lambda value: value is None or isinstance(value, kind)

  def pair(first, second):
    return lambda value: isinstance(value, tuple) and first(value[0]) and second(value[1])

  is_bool = lambda value: isinstance(value, bool)  # noqa: E731
  readers = [
      ("verify_mcq", lambda t: verifiers.verify_mcq(t, "B"), is_bool),
      ("verify_tooluse", lambda t: verifiers.verify_tooluse(t, TOOL_GOLD), is_bool),
      ("verify_arithmetic", lambda t: verifiers.verify_arithmetic(t, 7), is_bool),
      ("parse_mcq_answer", verifiers.parse_mcq_answer, optional(str)),
      ("parse_tool_call", verifiers.parse_tool_call, optional(tuple)),
      ("parse_integer_answer", verifiers.parse_integer_answer, optional(int)),
      ("parse_confidence", confidence.parse_confidence, lambda v: v is None or 0.0 <= v <= 1.0),
      ("confidence_start", confidence.confidence_start, lambda v: isinstance(v, int) and v >= 0),
      ("strip_confidence", rewrite.strip_confidence, lambda v: isinstance(v, str)),
      ("reference read_confidence", reference_rules.read_confidence, pair(optional(float), optional(str))),
      ("reference read_mcq_answer", reference_rules.read_mcq_answer, optional(str)),
      ("reference read_tool_call", reference_rules.read_tool_call, optional(dict)),
  ]
  gold = {"mcq": [{"Answer": "B"}], "tooluse": TOOL_GOLD, "arithmetic": 7}
  for protocol in PROTOCOLS.values():
    for verifier, answer in gold.items():
      readers.append((f"{protocol.name} grader {verifier}",
                      lambda t, p=protocol, v=verifier, a=answer: p.grader(v)(t, a), pair(is_bool, lambda _: True)))
    readers.append((f"{protocol.name} confidence", protocol.read_confidence, pair(optional(float), optional(str))))
  return readers


READERS = _readers()


@settings(max_examples=300, deadline=None)
@given(text=TEXTS)
def test_every_reader_is_total_on_arbitrary_text(text):
  for name, read, check in READERS:
    assert check(read(text)), (name, text)


NESTED = "Thought: call it\nAction: getWeather\nAction Input: {\"days\": " + "[" * 100_000 + "]" * 100_000 + "}"
DEGENERATE = {
    "brackets nested 100,000 deep in the action input": NESTED,
    "brackets nested 1,000 deep (past the JSON parser's recursion limit)": NESTED.replace("[" * 100_000, "[" * 1000)
                                                                              .replace("]" * 100_000, "]" * 1000),
    "an integer answer of 5,000 digits": "<answer>" + "9" * 5000 + "</answer>\nConfidence: 0.5",
    "a bare integer of 5,000 digits": "The result is " + "1" * 5000,
    "40,000 unclosed answer tags": "<answer>" * 40_000,
    "40,000 unclosed confidence tags": "<confidence>" * 40_000 + "Confidence: 0.3",
    "a confidence of 10,000 digits": "Confidence: " + "9" * 10_000,
    "100,000 opening braces": "Action: x\nAction Input: " + "{" * 100_000,
    "a lone surrogate and NUL": "<answer>\ud83d\x00B</answer>",
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_rollouts_are_read_without_error(case):
  """Each of these raised (RecursionError, ValueError) or ran for minutes (131 s for the unclosed tags) before."""
  text = DEGENERATE[case]
  for name, read, check in READERS:
    assert check(read(text)), (name, case)


def test_degenerate_answers_are_wrong_not_errors():
  assert verifiers.verify_tooluse(NESTED, TOOL_GOLD) is False
  assert verifiers.verify_arithmetic(DEGENERATE["an integer answer of 5,000 digits"], 7) is False
  assert verifiers.parse_integer_answer("<answer>" + "9" * 5000 + "</answer>") is None   # more than MAX_DIGITS
  assert verifiers.parse_integer_answer("<answer>" + "9" * 4000 + "</answer>") == int("9" * 4000)
  assert verifiers.verify_mcq("<answer>" * 40_000 + "</answer> <answer>B</answer>", "B") is True
  assert confidence.parse_confidence("Confidence: 1e-5") == pytest.approx(1e-5)   # not 1.0 (the exponent was lost)
