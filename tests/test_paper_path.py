"""The users' path end to end on CPU: the paper's science recipe (configs/paper.py:qwen3-8b,science) on a tiny Qwen3-shaped
model with a Qwen3-style tokenizer (`>\\n` and `}\\n` are single tokens) and rows in the paper's science TRAIN schema
(`messages`, `output_text`; the gold letter comes from the demonstration).

  - targets: verified rollouts -> P_acc -> the rewritten completions decode to exactly body + "\\nConfidence: X",
    answer tags intact, and the teacher prompt carries the patched demonstration and the note;
  - the trainer CLI with the shipped config file, shrunk by flags: screening, rollouts, rewrite, verification and
    optimizer steps, for the default (forward KL) and the sampled-token estimator.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hf_reference
from caopd_jax.calibration.rewrite import strip_confidence
from caopd_jax.calibration.verifiers import verify_mcq
from caopd_jax.data.sources import load_examples
from caopd_jax.distill.batch import build_batch, prepare_prompts
from caopd_jax.distill.settings import DistillSettings
from caopd_jax.rollout import Rollouts
from caopd_jax.run_folder import read_metrics
from caopd_jax.tokenizers import load_tokenizer
from paper_fixtures import write_science_train
from tokenizer_families import build_family_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
  """(HF folder of a tiny random Qwen3 model with the Qwen3-style tokenizer, data root with science_train/)."""
  folder = tmp_path_factory.mktemp("qwen3")
  build_family_tokenizer("qwen3", folder)
  tokenizer = load_tokenizer(str(folder))
  model = hf_reference.build("qwen3", vocab_size=tokenizer.vocab_size, max_position_embeddings=2048,
                             eos_token_id=tokenizer.eos_id)
  model.save_pretrained(folder)
  data = tmp_path_factory.mktemp("data")
  write_science_train(data / "science_train")
  return str(folder), str(data)


def _rollouts(tokenizer, completions: list[list[str]], width: int) -> Rollouts:
  """Rollouts whose completions are these texts, each ended by the tokenizer's EOS, as the sampler returns them."""
  p, k = len(completions), len(completions[0])
  tokens, lengths = np.zeros((p, k, width), np.int32), np.zeros((p, k), np.int32)
  for i, row in enumerate(completions):
    for j, text in enumerate(row):
      ids = tokenizer.encode(text) + [tokenizer.eos_id]
      tokens[i, j, :len(ids)], lengths[i, j] = ids, len(ids)
  mask = np.arange(width) < lengths[..., None]
  logprobs = np.where(mask, -0.7, 0.0).astype(np.float32)
  return Rollouts(tokens, mask, lengths, np.ones((p, k), bool), logprobs, logprobs,
                  np.full((p, k, width), -np.inf, np.float32))


def test_science_train_rows_get_exact_caopd_targets_with_a_qwen_tokenizer(qwen3):
  folder, data = qwen3
  tokenizer = load_tokenizer(folder)
  assert len(tokenizer.encode(">\n")) == 1 and len(tokenizer.encode("}\n")) == 1   # the glued tokens exist
  examples = load_examples("science", "train", data_dir=data)
  assert [ex.answer for ex in examples] == ["B", "C", "D"]   # from the demonstrations' answer tags
  settings = DistillSettings(max_prompt_tokens=1024, max_completion_tokens=96)
  prompts = prepare_prompts(examples, tokenizer, settings)
  completions = []
  for example in examples:
    right = f"<reasoning>\nIt is {example.answer}.\n</reasoning>\n<answer>\n{example.answer}\n</answer>\n"
    completions.append([right + "Confidence: 0.90", right + "Confidence: 1.0\n", right.rstrip(),
                        "<reasoning>\nUnsure.\n</reasoning>\n<answer>\nA\n</answer>\nConfidence: 0.80"])
  rollouts = _rollouts(tokenizer, completions, width=96)
  batch = build_batch(prompts, rollouts, tokenizer, settings)
  assert list(batch.stats["target"]) == ["0.75", "0.75", "0.75"]
  for row in range(batch.completion.shape[0]):
    n = int(batch.loss_mask[row].sum())
    ids = batch.completion[row, :n].tolist()
    assert ids[-1] == tokenizer.eos_id
    original = completions[row // 4][row % 4]
    target = tokenizer.decode(ids[:-1])
    assert target == strip_confidence(original) + "\nConfidence: 0.75", (original, target)
    assert verify_mcq(target, examples[row // 4].answer) == (row % 4 != 3)   # the answer survives the rewrite
    kept = int(batch.sampled[row].sum())
    assert 0 < kept < n and batch.sampled[row, :kept].all()
  teacher = tokenizer.decode(batch.teacher_tokens[0][batch.teacher_mask[0]].tolist())
  assert "<answer>\nB\n</answer>\nConfidence: 0.75" in teacher and "is 0.75" in teacher


@pytest.mark.parametrize("divergence", ["forward_kl", "sampled_token"])
def test_shrunk_paper_config_trains_on_the_paper_schema(qwen3, tmp_path, divergence):
  folder, data = qwen3
  run = tmp_path / "run"
  command = [sys.executable, "-m", "caopd_jax.train", f"--config={ROOT}/configs/paper.py:qwen3-8b,science",
             f"--config.model.path={folder}", f"--config.data.data_dir={data}", f"--config.train.output_dir={run}",
             "--config.model.dtype=float32", "--config.distill.max_completion_tokens=24",
             "--config.rollout.prompts_per_step=3", "--config.rollout.num_samples=4", "--config.train.batch_size=6",
             "--config.train.micro_batch_size=3", f"--config.distill.divergence={divergence}",
             "--config.log.progress=False"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert "data: 3 examples read, 3 usable (0 truncated" in result.stdout
  assert "2 optimizer steps (train.steps=-1: sized from the data)" in result.stdout   # 3 prompts x 4 / 6 rows
  records = read_metrics(run)
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["train/loss"]) and r["train/loss_tokens"] > 0 for r in records)
  assert json.loads((run / "data_report.json").read_text())["usable"] == 3
