"""caopd_jax.distill.prompts: student/teacher messages on the paper's eval sets and on synthetic examples."""

import pytest

from caopd_jax.calibration import rewrite
from caopd_jax.data import sources
from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.data.example import Example
from caopd_jax.distill import prompts

CONFIG = prompts.PromptConfig()


@pytest.fixture(scope="module")
def eval_examples(paper_data):
  return sources.load_examples("science", data_dir=paper_data) + sources.load_examples("tooluse", data_dir=paper_data)


def test_every_eval_row_builds_student_and_teacher_prompts(eval_examples, ours_smollm2):
  for e in eval_examples:
    student, teacher = prompts.student_messages(e), prompts.teacher_messages(e)
    demo = sources.fallback_demonstration(e)
    student_text, teacher_text = prompts.render(ours_smollm2, student), prompts.render(ours_smollm2, teacher)
    for text in (student_text, teacher_text):
      assert e.question.split("\nBegin!\n")[-1] in text
      assert e.system is None or e.system.strip() in text
    assert demo in teacher_text and demo not in student_text
    assert student_text.endswith("<|im_start|>assistant\n")
    assert teacher[:-1] == student[:-1] and teacher[-1]["content"].startswith(student[-1]["content"])
    assert teacher[-1]["content"].endswith(CONFIG.demo_instruction)
    if e.verifier == "tooluse":
      assert student[-1]["content"].count(CONFIG.tooluse_confidence_instruction + "\n\nBegin!\n") == 1
      assert student[-1]["content"].replace(CONFIG.tooluse_confidence_instruction + "\n", "") == e.question
    else:
      assert student[0] == {"role": "system", "content": f"{e.system.rstrip()}\n\n{CONFIG.confidence_instruction}"}
      assert student[1] == {"role": "user", "content": e.question}


def test_defaults_when_the_source_has_no_system_message():
  mcq = Example(id="m", question="Q?\nA: 1\nB: 2", answer="A", verifier="mcq", task="mine")
  [system, user] = prompts.student_messages(mcq)
  assert system["content"] == f"{CONFIG.mcq_system}\n\n{CONFIG.confidence_instruction}"
  assert user["content"] == mcq.question
  [arith] = arithmetic_task(1, seed=0, difficulty=2)
  system = prompts.student_messages(arith)[0]["content"]
  assert system == f"{CONFIG.arithmetic_system}\n\n{CONFIG.confidence_instruction}" and "<answer>N</answer>" in system
  teacher = prompts.teacher_messages(arith)[-1]["content"]
  assert f"{CONFIG.demo_header}\n{arith.demonstration}" in teacher
  tool = Example(id="t", question="Tools: f\nQuestion: q", answer=[{"Action": "f", "Action_Input": "{}"}],
                 verifier="tooluse", task="mine")
  assert prompts.student_messages(tool) == [
      {"role": "user", "content": f"{tool.question}\n{CONFIG.tooluse_confidence_instruction}"}]


def test_fewshot_turns_go_after_the_system_message_for_student_and_teacher():
  shots = (("What is 3 + 4?", "3 + 4 = 7\n<answer>7</answer>\nConfidence: 0.90"), ("What is 9 - 5?", "<answer>4</answer>"))
  config = prompts.PromptConfig(fewshot=[list(p) for p in shots])     # lists (as from a saved config.json) work
  assert config.fewshot == shots
  [e] = arithmetic_task(1, seed=0, difficulty=1)
  student = prompts.student_messages(e, config)
  assert [m["role"] for m in student] == ["system", "user", "assistant", "user", "assistant", "user"]
  assert student[1]["content"] == shots[0][0] and student[2]["content"] == shots[0][1]
  assert student[-1]["content"] == e.question
  teacher = prompts.teacher_messages(e, config=config)
  assert teacher[:5] == student[:5] and e.demonstration in teacher[-1]["content"]
  tool = Example(id="t", question="Tools: f\nBegin!", answer=[{"Action": "f", "Action_Input": "{}"}],
                 verifier="tooluse", task="mine")
  assert [m["role"] for m in prompts.student_messages(tool, config)] == ["user", "assistant"] * 2 + ["user"]
  with pytest.raises(ValueError, match="pairs"):
    prompts.PromptConfig(fewshot=("just one string",))


def test_correct_solution_mode_and_overrides():
  [e] = arithmetic_task(1, seed=0, difficulty=1)
  config = prompts.PromptConfig(solution_header="SOLVED:", solution_instruction="Do it right.", arithmetic_system="SYS")
  rollout = f"I think it is {e.answer}.\n<answer>{e.answer}</answer>\nConfidence: 0.4"
  [system, user] = prompts.teacher_messages(e, mode="correct_solution", solution=rollout, config=config)
  assert system["content"].startswith("SYS\n\n")
  assert user["content"] == f"{e.question}\n\nSOLVED:\n{rollout}\n\nDo it right."
  assert e.demonstration not in user["content"]
  with pytest.raises(ValueError, match="solution"):
    prompts.teacher_messages(e, mode="correct_solution")
  with pytest.raises(ValueError, match="mode"):
    prompts.teacher_messages(e, mode="oracle")


def test_caopd_target_patches_demonstration_and_adds_note_before_instruction():
  [e] = arithmetic_task(1, seed=0, difficulty=1)
  user = prompts.teacher_messages(e, target="0.38")[-1]["content"]
  note = rewrite.confidence_note("0.38", CONFIG.confidence_note)
  assert user.endswith(f"{note}\n\n{CONFIG.demo_instruction}")
  assert rewrite.patch_demonstration(e.demonstration, "0.38") in user and "Confidence: 1.00" not in user


def test_privileged_context_as_a_previous_turn():
  [e] = arithmetic_task(1, seed=0, difficulty=1)
  config = prompts.PromptConfig(privileged_placement="turn", fewshot=(("What is 1 + 1?", "<answer>2</answer>"),))
  student = prompts.student_messages(e, config)
  teacher = prompts.teacher_messages(e, target="0.38", config=config)
  # system, the few-shot pair, then the question answered by the patched demonstration, then the question + note
  assert [m["role"] for m in teacher] == ["system", "user", "assistant", "user", "assistant", "user"]
  assert teacher[:3] == student[:3] and teacher[3] == student[-1]
  assert teacher[4]["content"] == rewrite.patch_demonstration(e.demonstration, "0.38")
  assert teacher[5]["content"] == f"{e.question}\n\n{rewrite.confidence_note('0.38', CONFIG.confidence_note)}"
  assert CONFIG.demo_header not in str(teacher) and CONFIG.demo_instruction not in str(teacher)
  # plain OPD, and CaOPD with the note switched off: the teacher's last turn is exactly the student's
  assert prompts.teacher_messages(e, config=config)[-1] == student[-1]
  quiet = prompts.PromptConfig(privileged_placement="turn", confidence_note="")
  [*_, answer, last] = prompts.teacher_messages(e, mode="correct_solution", solution="<answer>5</answer>\nConfidence: 1",
                                                target="0.50", config=quiet)
  assert answer["content"] == "<answer>5</answer>\nConfidence: 0.50" and last["content"] == e.question
  with pytest.raises(ValueError, match="privileged_placement"):
    prompts.PromptConfig(privileged_placement="system")
  with pytest.raises(ValueError, match="placeholder"):
    prompts.PromptConfig(confidence_note="Be calibrated.")
