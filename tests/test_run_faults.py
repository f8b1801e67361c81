"""What real multi-day runs meet, on the tiny CPU run of tiny_run.py: torn metrics lines, damaged checkpoints, moved
run folders, foreign output folders, full disks, and kills at any moment. Each case loses no data and needs no hand
edit of the run folder: the run resumes and ends equal to an uninterrupted one."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from caopd_jax import weights
from caopd_jax.run_folder import read_metrics
from tiny_run import ROOT, command, losses, train

FAULTS = os.path.join(ROOT, "tests", "fault_injection.py")


@pytest.fixture(scope="module")
def setup(tiny_run):
  return tiny_run[:2]


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory):
  """The uninterrupted run of 8 steps (checkpoints at 4, 6, 8), and its state as a kill right after step 4's
  checkpoint leaves it (to resume from): the same folder without checkpoints 6 and 8 and metrics past step 4."""
  half = tmp_path_factory.mktemp("faults") / "half"
  shutil.copytree(tiny_run[2], half)
  for step in ("6", "8"):
    shutil.rmtree(half / "checkpoints" / step)
  lines = (half / "metrics.jsonl").read_text().splitlines(keepends=True)
  (half / "metrics.jsonl").write_text("".join(lines[:4]))
  return tiny_run[2], half


def _same_as_reference(run_dir, reference_dir):
  """Every metrics line (but the timings) and the final student equal the uninterrupted run's, bit for bit."""
  untimed = lambda records: [{k: v for k, v in r.items() if not k.startswith("speed/")} for r in records]  # noqa: E731
  assert untimed(read_metrics(run_dir)) == untimed(read_metrics(reference_dir))
  (_, ours), (_, theirs) = weights.load(str(run_dir)), weights.load(str(reference_dir))
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)


def test_a_torn_last_metrics_line_is_dropped_on_resume(setup, reference, tmp_path):
  """Before: JSONDecodeError in the logger on every resume."""
  config_file, _ = setup
  run = tmp_path / "run"
  shutil.copytree(reference[1], run)
  with open(run / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "train/loss": 0.12')   # an append cut short by a full disk or a crash
  result = train(config_file, run)
  assert result.returncode == 0, result.stderr
  assert "dropped a torn last line" in result.stdout
  _same_as_reference(run, reference[0])


def test_a_failed_append_leaves_only_whole_lines(tmp_path):
  """A full disk mid-append (here: the file-size limit) cuts the partial line back off and says so in one line."""
  script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))   # the first line (31 bytes) fits, the second does not
sys.path.insert(0, {ROOT!r})
from caopd_jax.train.logger import RunLogger
log = RunLogger({str(tmp_path)!r}, 10, tensorboard=False, progress=False)
log.log(1, {{"train/loss": 1.0}})
log.log(2, {{"train/loss": 2.0, "train/a_longer_name": 3.0}})
"""
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
  assert "could not append to" in result.stderr and "File too large" in result.stderr, result.stderr
  assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train/loss": 1.0}\n'


def _damage(step_dir, how: str) -> None:
  data = max((os.path.join(d, f) for d, _, files in os.walk(step_dir / "train_state") for f in files),
             key=os.path.getsize)
  if how == "truncated array file":
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 3)
  elif how == "one bit flipped":
    with open(data, "r+b") as f:
      f.seek(os.path.getsize(data) // 2)
      byte = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([byte[0] ^ 0x04]))
  elif how == "item folder deleted":
    shutil.rmtree(step_dir / "loop")


@pytest.mark.parametrize("how", ["truncated array file", "one bit flipped", "item folder deleted",
                                 "empty stray step folder"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(setup, reference, tmp_path, how):
  """Before: a raw traceback (or, for the flipped bit, training on a silently damaged state)."""
  config_file, _ = setup
  run = tmp_path / "run"
  shutil.copytree(reference[0], run)
  newest = run / "checkpoints" / ("10" if how == "empty stray step folder" else "8")
  if how == "empty stray step folder":
    newest.mkdir()
  else:
    _damage(newest, how)
  result = train(config_file, run)
  assert result.returncode == 0, result.stderr
  step = newest.name
  assert f"checkpoint step {step}" in result.stdout and "trying the one before" in result.stdout, result.stdout
  aside = os.listdir(run / "damaged_checkpoints")
  assert len(aside) == 1 and aside[0].startswith(f"{step}-")   # kept, not deleted
  _same_as_reference(run, reference[0])


def test_a_moved_run_resumes_by_a_relative_path_on_another_mesh(setup, reference, tmp_path):
  """Before: refused, because train.output_dir and the mesh were compared with the saved config."""
  config_file, _ = setup
  shutil.copytree(reference[1], tmp_path / "moved")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run(command(config_file, "moved", "--mesh=data:2"), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr
  assert "resumed moved at step 4" in result.stdout
  assert [r["step"] for r in read_metrics(tmp_path / "moved")] == list(range(1, 9))


def test_output_folders_a_run_must_not_write_into(setup, tmp_path):
  """Before: an empty output_dir trained into the current folder and overwrote a model folder's config.json."""
  config_file, _ = setup
  model, notes = tmp_path / "hf_model", tmp_path / "notes"
  model.mkdir()
  (model / "config.json").write_text('{"model_type": "qwen3"}')
  (model / "model.safetensors").write_bytes(b"weights")
  notes.mkdir()
  (notes / "todo.txt").write_text("the run goes here")
  for output_dir, extra, message in [
      ("", [], "config.train.output_dir is empty"),
      (str(model), [], "holds a config.json that is not a run's"),
      (str(model), ["--config.train.allow_other_files=True"], "holds a config.json that is not a run's"),
      (str(notes), [], "holds files a run did not write (todo.txt)"),
      ("gs://bucket/runs/x", [], "is a remote path"),
  ]:
    result = subprocess.run(command(config_file, output_dir, *extra), capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
  assert (model / "config.json").read_text() == '{"model_type": "qwen3"}'
  assert sorted(os.listdir(tmp_path)) == ["hf_model", "notes"] and os.listdir(notes) == ["todo.txt"]
  result = train(config_file, notes, "--config.train.allow_other_files=True", "--config.train.steps=2")
  assert result.returncode == 0 and "todo.txt" in os.listdir(notes) and "checkpoints" in os.listdir(notes)


def _in_small_file_system(setup_commands: str, config_file, folder, size_kib: int):
  """Trains the run folder `folder`/fs/run in a user + mount namespace where `folder`/fs is a fresh tmpfs of
  `size_kib` KiB, after `setup_commands` (bash; $FS is the mount point); copies the run folder to `folder`/after.
  A real full disk or read-only file system, for any user, without touching the machine's mounts."""
  if shutil.which("unshare") is None:
    pytest.skip("needs util-linux's unshare to make a small file system in a namespace")
  fs = folder / "fs"
  fs.mkdir()
  script = (f'set -e; FS={fs}; mount -t tmpfs -o size={size_kib}k tmpfs "$FS"; {setup_commands}; set +e; '
            f'"$@"; status=$?; cp -r "$FS/run" {folder}/after; exit $status')
  result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script, "bash",
                           *command(config_file, fs / "run")], capture_output=True, text=True, timeout=600,
                          cwd=folder)
  if "mount:" in result.stderr and "permission denied" in result.stderr.lower():
    pytest.skip(f"this machine does not let a user namespace mount a tmpfs: {result.stderr[:200]}")
  return result


def _disk_usage_kib(folder) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files) // 1024


def test_a_full_disk_stops_before_the_checkpoint_in_one_sentence(setup, reference, tmp_path):
  """A file system with room for the logs but not for the next checkpoint: one sentence, the checkpoint of step 4
  intact, and the run resumes from it once there is space. Before: ~540 lines of Orbax tracebacks."""
  config_file, _ = setup
  size = _disk_usage_kib(reference[1]) + 2048   # 2 MiB for metrics and logs: less than a checkpoint's margin
  result = _in_small_file_system(f'cp -r {reference[1]} "$FS/run"', config_file, tmp_path, size)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[-1]], result.stderr[-2000:]
  assert "not enough free space for the checkpoint of step 6" in result.stderr
  assert "the checkpoint of step 4 is intact" in result.stderr and "Traceback" not in result.stderr
  assert sorted(os.listdir(tmp_path / "after" / "checkpoints")) == ["4"]
  result = train(config_file, tmp_path / "after")   # space again: the run goes on from step 4
  assert result.returncode == 0, result.stderr
  _same_as_reference(tmp_path / "after", reference[0])


def test_a_read_only_run_folder_stops_in_one_sentence(setup, reference, tmp_path):
  config_file, _ = setup
  result = _in_small_file_system(f'cp -r {reference[1]} "$FS/run"; mount -o remount,ro "$FS"', config_file,
                                 tmp_path, 16 * 1024)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert "run is not writable (a read-only file system or its permissions)" in result.stderr
  assert sorted(os.listdir(tmp_path / "after" / "checkpoints")) == ["4"]


def test_a_checkpoint_write_failing_midway_ends_in_one_error_and_keeps_the_last_one(setup, reference, tmp_path):
  """A write that fails after the room check (fault_injection.py `full`: the file-size limit drops to 0 during step
  6's save, as on a disk filled meanwhile): the last line is one error naming the step and the intact checkpoint
  (Orbax's threads log their own errors before it)."""
  config_file, _ = setup
  run = tmp_path / "run"
  shutil.copytree(reference[1], run)
  result = subprocess.run([sys.executable, FAULTS, "full", "1", "--", *command(config_file, run)[3:]],
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert re.match(r"error: could not write the checkpoint of step 6 ", last) and "File too large" in last, last
  assert "the checkpoint of step 4 is intact" in last
  result = train(config_file, run)   # the limit lifted: the run goes on from step 4
  assert result.returncode == 0, result.stderr
  _same_as_reference(run, reference[0])


def test_kills_at_random_moments_leave_a_run_equal_to_the_uninterrupted_one(setup, reference, tmp_path):
  """Fault injection (tests/fault_injection.py): SIGKILL inside metrics appends, inside asynchronous checkpoint
  saves and at random times, one per attempt, then the same command again; the final run must equal the
  uninterrupted one line for line and bit for bit, with no step missing or doubled and every checkpoint left
  restoring (its fingerprints checked)."""
  config_file, _ = setup
  run = tmp_path / "run"
  rng = random.Random(20261201)
  faults = [("append", 3), ("save", 1), ("timer", rng.randint(3000, 9000)), ("append", 2), ("save", 2),
            ("timer", rng.randint(3000, 9000)), ("append", 1), ("save", 1)]
  kills = 0
  for fault, n in faults:
    result = subprocess.run([sys.executable, FAULTS, fault, str(n), "--", *command(config_file, run)[3:]],
                            capture_output=True, text=True, timeout=600)
    if result.returncode == -signal.SIGKILL:
      kills += 1
    else:
      assert result.returncode == 0, result.stderr   # the run ended before the fault fired
  print(f"fault injection: {kills} kills of {len(faults)} faults survived")
  assert kills >= 6, kills
  result = train(config_file, run)
  assert result.returncode == 0, result.stderr
  steps = [r["step"] for r in read_metrics(run)]
  assert steps == list(range(1, 9))
  _same_as_reference(run, reference[0])
  assert losses(run) == losses(reference[0])
  assert not os.path.exists(run / "damaged_checkpoints")
  for step in sorted(os.listdir(run / "checkpoints")):
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(weights.load(str(run), step=int(step))[1]))
