"""Evaluation protocols: the rules that turn a response into (correct, parsed answer, confidence), how the
confidences are binned, and how the eval decodes by default; defined once here, in PROTOCOLS.

             paper (the default)                                 strict
  mcq        the reference's: FIRST `<answer>X</answer>` (A-D),  our training verifier: the LAST closed `<answer>`
             then unclosed / bare-letter / `Answer: X`           (parsed_answer also shows its eval fallbacks)
  tooluse    the reference's: no input given reads `{}`, braces  verifiers.verify_tooluse: `Action:` at a line
             counted without JSON-string awareness               start, the input must be there, braces in strings
  arithmetic the strict rule (the reference has no such task)   verifiers.verify_arithmetic
  confidence reference_rules.read_confidence                     calibration.confidence.parse_confidence (also
                                                                 `70%`, 1-10 scales, fractions, markdown bold)
  bins       np.linspace edges: 0.3, 0.6, 0.7 in the LOWER bin;  exact k/10 edges: every boundary in the upper
             confidences taken as given (unclipped)             bin; confidences clipped to [0, 1]
  decoding   greedy; 2048 new tokens for science, 1024 else     temperature 1.0; 1024 new tokens

The paper column is the reference's eval/run_eval_{chemistry,tooluse}.py (reference_rules.py has every rule
and the two cases where those scripts produce no number); its metrics equal theirs to the last digit.

A record's `golden_answer` is in the reference's inference format (`golden_answer`): science
[{"Answer": "A"}], tool use the list of {"Action", "Action_Input"} steps, arithmetic the integer.
"""

import dataclasses
from typing import Any, Callable, Mapping

from caopd_jax.calibration.confidence import parse_confidence
from caopd_jax.calibration.verifiers import ANSWER_PARSERS, get_verifier
from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError
from caopd_jax.eval import reference_rules

# (response, golden_answer) -> (correct, parsed answer or None); the parsed answer is JSON-serialisable.
Grader = Callable[[str, Any], tuple[bool, Any]]
# The verifier of each named dataset: the rules `--score FILE --dataset NAME` grades with.
TASK_VERIFIERS = {"science": "mcq", "tooluse": "tooluse", "arithmetic": "arithmetic"}


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One column of the module docstring's table.

  graders: verifier name -> Grader. read_confidence: response -> (confidence or None, note for the record or
  None). edges, clip: metrics.summary's. temperature, max_new_tokens: decoding defaults, max_new_tokens per
  Example.task where `task_max_new_tokens` names it.
  """
  name: str
  graders: Mapping[str, Grader]
  read_confidence: Callable[[str], tuple[float | None, str | None]]
  edges: str
  clip: bool
  temperature: float
  max_new_tokens: int
  task_max_new_tokens: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def grader(self, verifier: str) -> Grader:
    if verifier not in self.graders:
      raise CaopdError(f"unknown verifier {verifier!r}; the {self.name} protocol grades {', '.join(self.graders)}")
    return self.graders[verifier]

  def new_tokens(self, task: str) -> int:
    """The default max_new_tokens for examples of `task`."""
    return self.task_max_new_tokens.get(task, self.max_new_tokens)


def golden_answer(example: Example) -> Any:
  """An Example's answer in the reference's inference format (module docstring)."""
  return [{"Answer": example.answer}] if example.verifier == "mcq" else example.answer


def _strict_grader(verifier: str) -> Grader:
  """Our training verifier of `verifier` on a record's golden_answer, and what its eval parser reads."""
  def grade(response: str, gold: Any) -> tuple[bool, Any]:
    if verifier == "mcq":
      gold = reference_rules.gold_letter(gold)
      if gold is None:
        raise CaopdError("the record has no gold letter; only --protocol paper scores such records (as the "
                         "reference does: correct iff no answer was read)")
    parsed = ANSWER_PARSERS[verifier](response)
    return bool(get_verifier(verifier)(response, gold)), list(parsed) if isinstance(parsed, tuple) else parsed
  return grade


def _strict_confidence(response: str) -> tuple[float | None, None]:
  return parse_confidence(response), None


_STRICT = {name: _strict_grader(name) for name in ANSWER_PARSERS}
PROTOCOLS = {
    "paper": Protocol("paper", {**_STRICT, "mcq": reference_rules.grade_mcq, "tooluse": reference_rules.grade_tooluse},
                      reference_rules.read_confidence, edges="linspace", clip=False, temperature=0.0,
                      max_new_tokens=1024, task_max_new_tokens={"science": 2048}),
    "strict": Protocol("strict", _STRICT, _strict_confidence, edges="exact", clip=True, temperature=1.0,
                       max_new_tokens=1024),
}


def get_protocol(name: str) -> Protocol:
  """The protocol registered as `name`; CaopdError listing the known ones otherwise."""
  if name not in PROTOCOLS:
    raise CaopdError(f"unknown eval protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
  return PROTOCOLS[name]
