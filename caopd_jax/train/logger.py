"""Per-step metrics to three places: RUN/metrics.jsonl, tensorboardX scalars, and a console progress bar.

metrics.jsonl has one JSON object per optimizer step ({"step": N, "loss": ..., ...}); on resume
the lines past the restored step (logged after the last checkpoint, to be recomputed) are
dropped, so the file always describes one uninterrupted run. Scalar names are grouped as
tensorboard tags: train/*, rollout/*, speed/*.
"""

import json
import math
import os

from caopd_jax.weights.atomic import atomic_file

METRICS_FILE = "metrics.jsonl"
# (metric key, short label) shown on the progress bar; the policy counts only when they are not 0.
HEADLINE = (("train/loss", "loss"), ("rollout/accuracy", "acc"), ("rollout/mean_confidence", "conf"),
            ("train/kl_estimate", "kl"))
COUNTS = (("rollout/truncated_prompts", "cut"), ("rollout/no_correct_fallback", "fallback"),
          ("rollout/skipped_no_correct", "skipped"), ("rollout/truncated_body", "body_cut"),
          ("rollout/teacher_cut", "teacher_cut"), ("rollout/teacher_overlong", "teacher_over"),
          ("rollout/rewrite_reencode", "reencoded"), ("rollout/rewrite_inexact", "inexact"))


def read_metrics(run_dir: str) -> list[dict]:
  """The metrics.jsonl records of a run folder, in step order ([] if none)."""
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class RunLogger:
  """Writes each step's metrics; `start_step` > 0 resumes (see the module docstring). In a multi-process run
  only the primary process (process 0) writes files and shows the bar; the others log nothing."""

  def __init__(self, run_dir: str, total_steps: int, start_step: int = 0, *, tensorboard: bool = True,
               progress: bool = True, primary: bool = True):
    self.primary = primary
    self.path = os.path.join(run_dir, METRICS_FILE)
    self.writer = self.bar = None
    if not primary:
      return
    kept = [r for r in read_metrics(run_dir) if r["step"] <= start_step]
    with atomic_file(self.path) as tmp, open(tmp, "w") as f:  # a kill here keeps the old file
      f.writelines(json.dumps(r) + "\n" for r in kept)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=start_step + 1)
    if progress:
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total_steps, initial=start_step, desc="training", unit="step", dynamic_ncols=True)

  def log(self, step: int, metrics: dict) -> None:
    """Records `metrics` (name -> float) for optimizer step `step` (1-based: the step just done).

    A non-finite value (e.g. the mean stated confidence when no rollout stated one) is written as
    null and left out of tensorboard and the progress bar.
    """
    if not self.primary:
      return
    record = {"step": step, **{k: float(v) if math.isfinite(float(v)) else None for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.writer is not None:
      for name, value in record.items():
        if name != "step" and value is not None:
          self.writer.add_scalar(name, value, step)
    if self.bar is not None:
      self.bar.set_postfix({label: f"{record[key]:.3g}" for key, label in HEADLINE + COUNTS
                            if record.get(key) is not None and (record[key] or (key, label) in HEADLINE)},
                           refresh=False)
      self.bar.update(step - self.bar.n)

  def message(self, text: str) -> None:
    """Prints a line without breaking the progress bar (primary process only)."""
    if not self.primary:
      return
    if self.bar is not None:
      self.bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    if self.bar is not None:
      self.bar.close()
