"""Per-step metrics to three places: RUN/metrics.jsonl, tensorboardX scalars, and a console progress bar; and
now and then a few rollouts (samples.jsonl, TensorBoard text, the console: train/samples.py).

metrics.jsonl has one JSON object per optimizer step ({"step": N, "loss": ..., ...}); on resume
the lines past the restored step (logged after the last checkpoint, to be recomputed) are
dropped, so the file always describes one uninterrupted run. A line is appended whole or not at
all: a write that fails (a full disk) is cut back off before the error is raised, and a torn last
line that a kill or a crash of the machine left is dropped, and reported, on resume. Scalar names
are grouped as tensorboard tags: train/*, rollout/*, speed/*.
"""

import json
import math
import os

from caopd_jax import run_folder
from caopd_jax.errors import CaopdError
from caopd_jax.files import atomic_file

# (metric key, short label) shown on the progress bar; the policy counts only when they are not 0. kl_est is the
# sampled-token Monte Carlo estimate of KL(student || teacher): a mean over sampled tokens, which can be negative.
HEADLINE = (("train/loss", "loss"), ("rollout/accuracy", "acc"), ("rollout/mean_confidence", "conf"),
            ("train/kl_estimate", "kl_est"))
COUNTS = (("rollout/failed_prompts", "failed"), ("rollout/truncated_prompts", "cut"),
          ("rollout/no_correct_fallback", "fallback"), ("rollout/skipped_no_correct", "skipped"),
          ("rollout/truncated_body", "body_cut"), ("rollout/teacher_cut", "teacher_cut"),
          ("rollout/teacher_overlong", "teacher_over"), ("rollout/rewrite_reencode", "reencoded"),
          ("rollout/rewrite_inexact", "inexact"))


class RunLogger:
  """Writes each step's metrics; `start_step` > 0 resumes (see the module docstring). In a multi-process run
  only the primary process (process 0) writes files and shows the bar; the others log nothing."""

  def __init__(self, run_dir: str, total_steps: int, start_step: int = 0, *, tensorboard: bool = True,
               progress: bool = True, primary: bool = True):
    self.primary = primary
    self.path = os.path.join(run_dir, run_folder.METRICS)
    self.writer = self.bar = None
    if not primary:
      return
    records, torn = run_folder.read_metrics_file(self.path)
    kept = [r for r in records if r["step"] <= start_step]
    with atomic_file(self.path) as tmp, open(tmp, "w") as f:  # a kill here keeps the old file
      f.writelines(json.dumps(r) + "\n" for r in kept)
    if torn is not None:
      print(f"{self.path}: dropped a torn last line ({len(torn)} characters: {torn[:60]!r}...), left by an append "
            "that did not finish", flush=True)
    if tensorboard:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(os.path.join(run_dir, run_folder.TENSORBOARD), purge_step=start_step + 1)
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
    self._append((json.dumps(record) + "\n").encode())
    if self.writer is not None:
      for name, value in record.items():
        if name != "step" and value is not None:
          self.writer.add_scalar(name, value, step)
    if self.bar is not None:
      self.bar.set_postfix({label: f"{record[key]:.3g}" for key, label in HEADLINE + COUNTS
                            if record.get(key) is not None and (record[key] or (key, label) in HEADLINE)},
                           refresh=False)
      self.bar.update(step - self.bar.n)

  def _append(self, line: bytes) -> None:
    """Appends one whole line to metrics.jsonl, or nothing: a failed write is cut back off, then reported."""
    with open(self.path, "ab", buffering=0) as f:
      size, rest = f.tell(), memoryview(line)
      try:
        while rest:   # an unbuffered write may write part of the line and report how much
          rest = rest[f.write(rest):]
      except OSError as error:
        f.truncate(size)
        raise CaopdError(f"could not append to {self.path}: {error.strerror or error}; the file is as it was before "
                         "this step. Free space, then run the same command again to resume") from None

  def samples(self, records: list[dict]) -> None:
    """Writes rollouts for people (train/samples.py records) to samples.jsonl, TensorBoard text and the console."""
    if not self.primary or not records:
      return
    from caopd_jax.train.samples import as_markdown, one_line
    with open(os.path.join(os.path.dirname(self.path), run_folder.SAMPLES), "a") as f:
      f.writelines(json.dumps(record) + "\n" for record in records)
    if self.writer is not None:
      self.writer.add_text("rollouts", as_markdown(records), records[0]["step"])
    for record in records:
      self.message(one_line(record))

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
