"""Joins the shares of a batch that each process reads (distill/global_batch.py) and prints, as JSON, the fields
that differ from build_batch on the whole batch in one process (run by tests/test_train_loop.py in two
processes joined by jax.distributed). Cases: demo and correct-solution teachers, some prompts over
max_prompt_tokens (dropped or truncated), and every prompt of process 1 over it (process 1 then contributes
nothing). Then process 1's examples name an unknown verifier: each of its prompts is left out and counted, and
every process sees that in the joined batch. Last, process 1 fails outside any one prompt's work: that error must
reach process 0 too, not leave it waiting."""

import dataclasses
import json

import jax
import numpy as np

from caopd_jax.data.arithmetic import arithmetic_task
from caopd_jax.distill import batch as batch_module
from caopd_jax.distill.batch import build_batch, prepare_prompts
from caopd_jax.distill.global_batch import share_batch, share_prompts
from caopd_jax.distill.settings import DistillSettings
from caopd_jax.rollout import Rollouts
from caopd_jax.sharding.distributed import initialize
from caopd_jax.tokenizers.characters import character_tokenizer

K, C, WIDTH = 4, 48, 40

initialize()
tokenizer = character_tokenizer()
pad = tokenizer.pad_id


def rollouts_for(examples) -> Rollouts:
  """K completions per example: right or wrong answers, stated confidences, one with no confidence line."""
  tokens = np.zeros((len(examples), K, WIDTH), np.int32)
  lengths = np.zeros((len(examples), K), np.int32)
  for i, example in enumerate(examples):
    for k in range(K):
      answer = example.answer if (i + k) % 3 and i % 4 != 1 else example.answer + 1  # prompts 1, 5, 9: none right
      text = f"<answer>{answer}</answer>" + (f"\nConfidence: 0.{(i + 2 * k) % 10}" if k != 3 else "")
      ids = tokenizer.encode(text)[:WIDTH - 1] + [tokenizer.eos_id]
      tokens[i, k, :len(ids)], lengths[i, k] = ids, len(ids)
  mask = np.arange(WIDTH) < lengths[..., None]
  logprobs = np.where(mask, -0.25, 0.0).astype(np.float32)
  return Rollouts(tokens, mask, lengths, np.ones(lengths.shape, bool), logprobs, logprobs * 2,
                  np.where(mask, 0.5, -np.inf).astype(np.float32))


def differences(a, b) -> list[str]:
  bad = [f for f in a._fields if f not in ("stats", "counts") and not np.array_equal(getattr(a, f), getattr(b, f))]
  bad += [f"stats.{name}" for name in a.stats if name != "target"
          and not np.array_equal(a.stats[name], b.stats[name], equal_nan=True)]
  bad += ["stats.target"] if list(a.stats["target"]) != list(b.stats["target"]) else []
  return bad + (["counts"] if a.counts != b.counts else [])


examples = arithmetic_task(10, seed=3, difficulty=1)
long = lambda e: dataclasses.replace(e, question=e.question + " Think." * 40)  # noqa: E731
some_long = [long(e) if i in (2, 3, 6) else e for i, e in enumerate(examples)]
cases = {"demo": (examples, "demo", "drop"), "correct_solution": (examples, "correct_solution", "drop"),
         "some_overlong": (some_long, "demo", "drop"), "some_truncated": (some_long, "demo", "truncate"),
         "process1_all_overlong": ([long(e) if i % 2 else e for i, e in enumerate(examples)], "correct_solution",
                                   "drop")}
report = {}
for name, (batch_examples, mode, policy) in cases.items():
  settings = DistillSettings(teacher_mode=mode, max_prompt_tokens=800, max_completion_tokens=C,
                             overlong_prompts=policy)
  whole = prepare_prompts(batch_examples, tokenizer, settings)
  rollouts = rollouts_for(whole.examples)
  expected = build_batch(whole, rollouts, tokenizer, settings)
  local, shared = share_prompts(batch_examples[jax.process_index()::jax.process_count()], tokenizer, settings)
  joined = share_batch(local, shared, rollouts, tokenizer, settings, pad)
  report[name] = {"same_prompts": shared.ids == whole.ids, "differences": differences(joined, expected),
                  "kept": len(whole.ids), "kept_here": len(local.ids), "counts": expected.counts}

# Process 1's prompts fail in their verifier: each is left out and counted, the joined batch says so everywhere.
settings = DistillSettings(max_prompt_tokens=800, max_completion_tokens=C)
mine = examples[jax.process_index()::jax.process_count()]
if jax.process_index() == 1:
  mine = [dataclasses.replace(e, verifier="no_such_verifier") for e in mine]
local, shared = share_prompts(mine, tokenizer, settings)
joined = share_batch(local, shared, rollouts_for(examples), tokenizer, settings, pad)
left_out = {"failed_prompts": joined.counts["failed_prompts"], "failures": joined.failures,
            "rows_without_loss": int((joined.loss_mask.sum(axis=1) == 0).sum())}
# An error outside any one prompt's work on process 1 stops every process, naming it.
if jax.process_index() == 1:
  batch_module.rewrite_batch = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("host out of memory"))
local, shared = share_prompts(examples[jax.process_index()::jax.process_count()], tokenizer, settings)
try:
  share_batch(local, shared, rollouts_for(examples), tokenizer, settings, pad)
  failure = None
except Exception as error:  # noqa: BLE001
  failure = f"{type(error).__name__}: {error}"
print(json.dumps({"process": jax.process_index(), "cases": report, "left_out": left_out, "failure": failure}))
