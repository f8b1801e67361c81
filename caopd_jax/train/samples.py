"""A few of an iteration's rollouts, for people to read: what the student wrote, the verifier's verdict, the
CaOPD target its prompt got (P_acc) and the confidence it stated. Written by the trainer every
log.samples_every optimizer steps to RUN/samples.jsonl, TensorBoard's text tab and the console.

    records = pick(rollouts, batch, prompt_ids, tokenizer, count=2, step=10)
"""

import numpy as np

from caopd_jax.calibration.confidence import parse_confidence

PROMPT_TAIL = 300      # characters of the prompt kept in a record: its end, where the question is


def pick(rollouts, batch, prompt_ids, tokenizer, count: int, step: int) -> list[dict]:
  """`count` records spread over the prompts (row r: prompt r mod P, sample r div P) of one iteration:
  rollouts (rollout.Rollouts [P, K]), batch (distill DistillBatch: correct [P, K], stats["target"] [P]),
  prompt_ids (P token lists). A record: {"step", "prompt" (its last PROMPT_TAIL characters), "completion",
  "correct", "target" (P_acc, two decimals), "stated" (the parsed confidence, None when none is stated)}."""
  prompts, samples = np.shape(batch.correct)
  records = []
  for row in range(min(count, prompts * samples)):
    p, k = row % prompts, row // prompts
    text = rollouts.text(tokenizer, p, k)
    records.append({"step": step, "prompt": tokenizer.decode(list(prompt_ids[p]))[-PROMPT_TAIL:],
                    "completion": text, "correct": bool(batch.correct[p, k]), "target": batch.stats["target"][p],
                    "stated": parse_confidence(text)})
  return records


def one_line(record: dict, width: int = 100) -> str:
  """A record as a console line: verdict, target, stated confidence and the completion's last `width` characters."""
  stated = "none" if record["stated"] is None else f"{record['stated']:.2f}"
  tail = record["completion"][-width:].replace("\n", "\\n")
  return (f"step {record['step']} sample: {'right' if record['correct'] else 'wrong'}, target {record['target']}, "
          f"stated {stated}: ...{tail}")


def as_markdown(records: list[dict]) -> str:
  """The records as a TensorBoard text entry (markdown)."""
  return "\n\n".join(f"**{'right' if r['correct'] else 'wrong'}**, target {r['target']}, stated {r['stated']}\n\n"
                     f"    {r['completion']}".replace("\n", "\n    ") for r in records)
