"""Student and teacher chat messages for an Example (docs/CAOPD.md sections 2, 4, 5).

Student: the source's messages (or [system, user(question)]) with the confidence instruction added:
  mcq / arithmetic  appended to the system message, which states the answer format (the
                    source's system message, else PromptConfig.mcq_system / .arithmetic_system),
                    unless that message already asks for a `Confidence:` line;
  tooluse           inserted as a line just before the prompt's `Begin!` line, inside the
                    format block (appended to the last user message when there is no `Begin!`).
In-context turns (PromptConfig.fewshot, default none, as in the paper): (user, assistant) pairs placed
right after the system message of every student (and so teacher) prompt; small models such as
SmolLM2-135M follow the answer and confidence format only with them.
Teacher: the student's messages with the privileged context, placed by PromptConfig.privileged_placement:
  "message" (the paper's)  the last user message extended with
      demo              demo_header + the demonstration (or sources.fallback_demonstration) + demo_instruction
      correct_solution  solution_header + a verified-correct student rollout + solution_instruction
  "turn"                   a previous exchange: the last user message, answered by the privileged text,
                           then the last user message again (headers and instructions unused). The
                           teacher's final turn is then the student's own, so a small model's teacher
                           keeps the student's format (SmolLM2-135M: configs/smollm2_arith.py). The
                           last user message appears twice: long prompts need max_prompt_tokens to match.
With a CaOPD `target` (e.g. "0.62"), the privileged text's confidence is patched to the target
and the confidence note goes just before the final instruction ("turn": at the end of the last user
message). The system message and the privileged text are always kept (the reference drops the
demonstration for science; we do not).
"""

import dataclasses
import re

from caopd_jax.calibration.confidence import CONFIDENCE_KEY
from caopd_jax.calibration.rewrite import DEFAULT_NOTE, confidence_note, patch_demonstration
from caopd_jax.data.example import Example
from caopd_jax.data.sources import fallback_demonstration
from caopd_jax.tokenizers.base import Tokenizer

_BEGIN_LINE = re.compile(r"^Begin!", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """The wording of every prompt part; override any field (e.g. from a config file).

  confidence_note is a `calibration.rewrite.confidence_note` template ({confidence} is the target); an
  empty one adds no note (the patched privileged text alone carries the target).
  """
  confidence_instruction: str = (
      "After your answer, end with one final line `Confidence: <number in [0,1]>`: the probability that "
      "your answer is correct, as a number only (for example `Confidence: 0.70`).")
  tooluse_confidence_instruction: str = (
      "Confidence: your confidence (a number in [0,1]) that this action is correct, as a number only, "
      "with no other words or explanation.")
  mcq_system: str = (
      "Given a question and its options, select the right answer. Respond in the following format:\n"
      "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n\n"
      "For the answer, only output the letter of the correct option, and nothing else.")
  arithmetic_system: str = (
      "Solve the arithmetic problem. Show the computation briefly, then give the result as "
      "<answer>N</answer> where N is an integer.")
  demo_header: str = "This is an example of a response to the question:"
  demo_instruction: str = "Now answer with a response of your own, including the thinking process."
  solution_header: str = "Correct solution:"
  solution_instruction: str = "Correctly solve the original question."
  confidence_note: str = DEFAULT_NOTE
  fewshot: tuple = ()   # ((user text, assistant text), ...): in-context turns after the system message
  privileged_placement: str = "message"   # "message" (the paper's) or "turn": see the module docstring

  def __post_init__(self):
    if self.privileged_placement not in ("message", "turn"):
      raise ValueError(f"PromptConfig.privileged_placement must be 'message' or 'turn', got "
                       f"{self.privileged_placement!r}")
    if self.confidence_note and "{confidence}" not in self.confidence_note:
      raise ValueError(f"PromptConfig.confidence_note {self.confidence_note!r:.120} has no {{confidence}} placeholder "
                       "(or set it to '' for no note)")
    pairs = tuple(tuple(pair) for pair in self.fewshot)   # lists from a saved config.json become tuples
    if any(len(pair) != 2 or not all(isinstance(t, str) for t in pair) for pair in pairs):
      raise ValueError(f"PromptConfig.fewshot must be (user text, assistant text) pairs, got {self.fewshot!r}")
    object.__setattr__(self, "fewshot", pairs)


def _with_tooluse_instruction(prompt: str, instruction: str) -> str:
  """`prompt` with `instruction` on its own line just before the `Begin!` line (else at the end)."""
  match = _BEGIN_LINE.search(prompt)
  if match is None:
    return f"{prompt.rstrip()}\n{instruction}"
  return f"{prompt[:match.start()].rstrip()}\n{instruction}\n\n{prompt[match.start():]}"


def student_messages(example: Example, config: PromptConfig = PromptConfig()) -> list[dict]:
  """The student's chat messages: [{"role", "content"}, ...], ending with a user message."""
  messages = [dict(m) for m in example.messages] if example.messages else (
      ([{"role": "system", "content": example.system}] if example.system is not None else [])
      + [{"role": "user", "content": example.question}])
  if example.verifier == "tooluse":
    messages[-1]["content"] = _with_tooluse_instruction(messages[-1]["content"], config.tooluse_confidence_instruction)
    return _with_fewshot(messages, config)
  if messages[0]["role"] != "system":
    default = config.mcq_system if example.verifier == "mcq" else config.arithmetic_system
    messages.insert(0, {"role": "system", "content": default})
  if not CONFIDENCE_KEY.search(messages[0]["content"]):   # a source's system message may ask for it already
    messages[0]["content"] = f"{messages[0]['content'].rstrip()}\n\n{config.confidence_instruction}"
  return _with_fewshot(messages, config)


def _with_fewshot(messages: list[dict], config: PromptConfig) -> list[dict]:
  """messages with config.fewshot's turns inserted after the system message (or first)."""
  turns = [{"role": role, "content": text} for pair in config.fewshot for role, text in zip(("user", "assistant"), pair)]
  at = 1 if messages and messages[0]["role"] == "system" else 0
  return messages[:at] + turns + messages[at:]


def teacher_messages(example: Example, mode: str = "demo", solution: str | None = None, target: str | None = None,
                     config: PromptConfig = PromptConfig()) -> list[dict]:
  """The teacher's chat messages: the student's, with the privileged context placed by
  `config.privileged_placement` (see the module docstring).

  Args:
    example: the Example.
    mode: "demo" (the example's demonstration, or its fallback) or "correct_solution"
      (`solution`, a student rollout the verifier marked correct).
    solution: str, required in correct_solution mode.
    target: the empirical confidence as written in completions (e.g. "0.62") when CaOPD is on:
      the privileged text's confidence becomes `target` and the confidence note (if any) is added; None
      for the plain SDFT/OPD baseline.
    config: the wording.
  """
  if mode == "demo":
    header, instruction = config.demo_header, config.demo_instruction
    privileged = example.demonstration or fallback_demonstration(example)
  elif mode == "correct_solution":
    if solution is None:
      raise ValueError("teacher_messages(mode='correct_solution') needs the verified-correct `solution`")
    header, instruction, privileged = config.solution_header, config.solution_instruction, solution
  else:
    raise ValueError(f"teacher mode must be 'demo' or 'correct_solution', got {mode!r}")
  privileged, note = privileged.strip(), []
  if target is not None:
    privileged = patch_demonstration(privileged, target)
    note = [confidence_note(target, config.confidence_note)] if config.confidence_note else []
  messages = student_messages(example, config)
  last = messages[-1]
  if config.privileged_placement == "turn":
    earlier = [{"role": "user", "content": last["content"]}, {"role": "assistant", "content": privileged}]
    if note:
      last["content"] = "\n\n".join([last["content"].rstrip(), *note])
    return messages[:-1] + earlier + [last]
  last["content"] = "\n\n".join([last["content"].rstrip(), f"{header}\n{privileged}", *note, instruction])
  return messages


def render(tokenizer: Tokenizer, messages: list[dict]) -> str:
  """The prompt text of `messages` in the tokenizer's chat template, ending with the assistant turn's start."""
  return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
