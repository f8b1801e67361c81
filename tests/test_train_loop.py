"""The trainer end to end on a tiny model: config errors, exact resume after SIGKILL, SIGTERM save, non-finite stop.

Runs `python -m caopd_jax.train` in subprocesses, as a user does, on a 1-layer character-level model.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import caopd_jax.train

from caopd_jax import weights
from caopd_jax.calibration.confidence import parse_confidence
from caopd_jax.calibration.verifiers import get_verifier
from caopd_jax.config_files import load_file, parse_args
from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.train import loop
from tiny_run import ROOT, command, losses, wait_for_steps
from tiny_run import train as train_cli
from caopd_jax.run_folder import read_metrics
from caopd_jax.train.config import validate

@pytest.fixture(scope="module")
def setup(tiny_run):
  """(config file path, folder for runs) with a random 1-layer model saved as an Orbax checkpoint."""
  return tiny_run[:2]


@pytest.fixture(scope="module")
def reference_run(tiny_run):
  return tiny_run[2]


def test_run_folder_loads_as_a_model(reference_run):
  logged = losses(reference_run)
  assert [s for s, _, _ in logged] == list(range(1, 9))
  assert all(np.isfinite(loss) for _, loss, _ in logged)
  assert sorted(os.listdir(reference_run / "checkpoints")) == ["4", "6", "8"]   # every 2 steps, keep the last 3
  config, params = weights.load(str(reference_run))                      # the latest student
  _, older = weights.load(str(reference_run), step=6)
  assert config.num_layers == 1 and load_tokenizer(str(reference_run)).vocab_size == config.vocab_size
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(older)))
  records = read_metrics(reference_run)            # the held-out evaluation ran at steps 4 and 8 only
  assert [r["step"] for r in records if "eval/accuracy" in r] == [4, 8]
  assert all(0.0 <= records[3][k] <= 1.0 for k in ("eval/accuracy", "eval/ece", "eval/confidence_format_adherence"))
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(reference_run / "tensorboard"))


def test_the_trainer_says_what_it_does_and_shows_rollouts(tiny_run):
  """With the progress bar off: the start-up summary, the sampler's and the step's first compiles with their times,
  and log.samples rollouts every log.samples_every steps (and after the first iteration) whose verdict, target and
  stated confidence are those of the completion shown."""
  _, _, run, out = tiny_run
  assert re.search(r"run folder \S+reference: llama, 0\.00B params from \S+base \(float32\); mesh \{'data': 1, "
                   r"'fsdp': 1, 'tensor': 1\} on 1 x cpu; per iteration 2 prompts x 4 rollouts \(CaOPD on\)", out), out
  assert re.search(r"step 1: sampling 8 rollouts; the sampler compiles for prompt width \d+ on this first call \(1 of "
                   r"at most 4\)\nstep 1: rollouts took [0-9.]+ s, compilation included", out), out
  assert re.search(r"step 1: compiling the training step .*\nstep 1: took [0-9.]+ s, compilation included", out), out
  records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 2, 4, 4, 8, 8]
  for r in records:
    a, op, b = re.findall(r"What is (\d+) ([+-]) (\d+)\?", r["prompt"])[-1]
    answer = int(a) + int(b) if op == "+" else int(a) - int(b)
    assert r["correct"] == get_verifier("arithmetic")(r["completion"], answer)
    assert r["stated"] == parse_confidence(r["completion"]) and re.fullmatch(r"[01]\.\d\d", r["target"])
    assert f"step {r['step']} sample: {'right' if r['correct'] else 'wrong'}, target {r['target']}" in out
  # where each iteration's time went: sampling, host work, the step; tokens per second of sampling
  for m in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()):
    assert m["speed/rollout_s"] > 0 and m["speed/host_s"] > 0 and m["speed/step_time_s"] > 0, m
    completion_tokens = m["rollout/mean_length"] * 8
    assert m["speed/rollout_tokens_per_s"] == pytest.approx(completion_tokens / m["speed/rollout_s"], rel=1e-6)


def test_sigkill_then_resume_repeats_the_losses_exactly(setup, reference_run):
  config_file, root = setup
  run_dir = root / "killed"
  process = subprocess.Popen(command(config_file, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_steps(run_dir, 5, process)
  process.kill()
  process.wait()
  assert len(read_metrics(run_dir)) < 8
  result = train_cli(config_file, run_dir)
  assert result.returncode == 0, result.stderr
  assert "resumed" in result.stdout + result.stderr
  assert losses(run_dir) == losses(reference_run)
  _, resumed = weights.load(str(run_dir))
  _, reference = weights.load(str(reference_run))
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)


def test_sigterm_saves_and_the_run_resumes(setup, reference_run):
  config_file, root = setup
  run_dir = root / "terminated"
  process = subprocess.Popen(command(config_file, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for_steps(run_dir, 1, process)
  process.send_signal(signal.SIGTERM)
  out, err = process.communicate(timeout=300)
  assert process.returncode == 128 + signal.SIGTERM, err   # not 0: the run did not finish
  assert "stopped by SIGTERM" in out
  stopped_at = len(read_metrics(run_dir))
  assert stopped_at < 8 and str(stopped_at) in os.listdir(run_dir / "checkpoints")
  assert train_cli(config_file, run_dir).returncode == 0
  assert losses(run_dir) == losses(reference_run)


@pytest.mark.parametrize("failing_call", [2, 3])
def test_a_step_failing_after_sigterm_still_saves_the_last_step(setup, reference_run, monkeypatch, capsys,
                                                                 failing_call):
  """A stop signal sent to the process group also kills XLA's compiler subprocesses (ptxas on GPUs, seen on the
  H200 under `timeout`): the step that was compiling fails, and the run must still save and exit cleanly. Two
  optimizer steps per rollout batch here: call 2 fails mid-batch (the resume goes on with the next batch), call 3
  fails before any step of batch 2 (the resume redoes batch 2, so the run equals the uninterrupted one)."""
  config_file, root = setup
  real = loop.setup.build

  def build_failing_after_one_step(*args, **kwargs):
    program, calls = real(*args, **kwargs), []

    def step(state, batch):
      calls.append(1)
      if len(calls) == failing_call:
        os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("INTERNAL: ptxas exited with non-zero error code 15")
      return program.step_fn(state, batch)
    return program._replace(step_fn=step)

  monkeypatch.setattr(loop.setup, "build", build_failing_after_one_step)
  config = load_file(config_file)
  config.train.output_dir = str(root / f"signal_in_compile_{failing_call}")
  config.checkpoint.every = 100  # the only checkpoint is the one written after the failure
  config.train.remat = "none"    # what auto chooses here, set: the memory plan would compile the wrapped step
  result = loop.train(config)
  run_dir = result.run_dir
  assert result.stopped_by == "SIGTERM" and result.step == failing_call - 1
  assert f"RuntimeError after SIGTERM during step {failing_call}" in capsys.readouterr().out
  done = failing_call - 1
  assert len(read_metrics(run_dir)) == done and str(done) in os.listdir(os.path.join(run_dir, "checkpoints"))
  monkeypatch.undo()
  resumed = caopd_jax.train.train(config)                  # the Python API (a notebook's) resumes the same way
  assert resumed == (run_dir, 8, None) and [r["step"] for r in read_metrics(run_dir)] == list(range(1, 9))
  if failing_call == 3:
    assert losses(run_dir) == losses(reference_run)
  with pytest.raises(RuntimeError, match="ptxas"):  # without a stop signal the error is the run's error
    monkeypatch.setattr(loop.setup, "build", lambda *a, **k: real(*a, **k)._replace(
        step_fn=lambda state, batch: (_ for _ in ()).throw(RuntimeError("ptxas exited with non-zero error code 15"))))
    config.train.output_dir = str(root / "compile_error")
    loop.train(config)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(setup):
  config_file, root = setup
  run_dir = root / "exploded"
  result = train_cli(config_file, run_dir, "--config.optim.lr=1e38", "--config.optim.warmup_fraction=0",
                  "--config.optim.weight_decay=1", "--config.checkpoint.every=1",
                  "--config.train.batch_size=8")  # one step per rollout batch: a checkpoint after every step
  assert result.returncode == 2
  assert "are not finite" in result.stderr and "the last good checkpoint is step" in result.stderr
  bad_step = int(result.stderr.split("error: step ")[1].split(":")[0])
  steps = sorted(int(s) for s in os.listdir(run_dir / "checkpoints") if s.isdigit())
  assert steps[-1] == bad_step - 1
  _, params = weights.load(str(run_dir))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(params))


def test_a_run_continues_from_another_run_s_student_with_a_fresh_optimizer_and_schedule(setup, reference_run):
  """Continual training (task A, then task B from A's model): model.path = run A's folder starts a new run B from
  A's latest student. B counts from step 1 on its own warmup + cosine schedule (not A's step 8 of it), so with
  warmup its first step has lr 0 and leaves A's weights exactly as they were; then it trains on B's task."""
  from caopd_jax.train.optim import learning_rate_schedule
  config_file, root = setup
  stage_b = root / "stage_b"
  result = train_cli(config_file, stage_b, f"--config.model.path={reference_run}", "--config.data.difficulty=3",
                     "--config.train.steps=4", "--config.optim.warmup_fraction=0.5", "--config.checkpoint.every=1",
                     "--config.checkpoint.keep=4", "--config.eval.every=0",
                     "--config.train.batch_size=8")   # one step per rollout batch: a checkpoint after every step
  assert result.returncode == 0, result.stderr
  assert (f"continual training: starting from the student of run {reference_run} at its step 8, with a fresh "
          "optimizer, learning-rate schedule (warmup included) and EMA teacher") in result.stdout
  records = read_metrics(stage_b)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  fresh = learning_rate_schedule(1e-2, 4, 0.5)
  np.testing.assert_allclose([r["train/lr"] for r in records], [float(fresh(k)) for k in range(4)], rtol=1e-6)
  _, a = weights.load(str(reference_run))
  _, b1 = weights.load(str(stage_b), step=1)
  _, b2 = weights.load(str(stage_b), step=2)
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b1)))
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b2)))
  saved = json.loads((stage_b / "config.json").read_text())
  assert saved["model"]["path"] == str(reference_run) and saved["data"]["difficulty"] == [3]


def test_resume_with_another_config_is_refused(setup, reference_run):
  config_file, _ = setup
  result = train_cli(config_file, reference_run, "--config.optim.lr=0.5")
  assert result.returncode == 2 and "optim.lr: 0.01 -> 0.5" in result.stderr


@pytest.mark.parametrize("override, message", [
    ("--config.optim.lrr=1", "did you mean optim.lr"),
    ("--config.train.steps=many", "not a valid int"),
    ("--config.train.batch_size=3", "must divide rollout.prompts_per_step x rollout.num_samples"),
    ("--config.train.micro_batch_size=3", "must divide train.batch_size"),
    ("--config.distill.divergence=kl", "is not one of"),
    ("--config.distill.calibrate=false", None),
    ("--mesh=8", "expected 1, auto, a preset"),
    ("--mesh=fsdp:4", "needs 4 devices, but 1 are visible"),
    ("--config.sharding.rules=vocab=pipeline", "sharding.rules entry 'vocab=pipeline'"),
    ("--config.prompts.fewshot=('one string',)", "config.prompts: PromptConfig.fewshot must be"),
    ("--config.train.steps=0", "must be > 0, or -1"),
    ("--config.seed=-1", r"config.seed must be in \[0, 2\*\*32\), got -1"),
    ("--config.rollout.decode_chunk=0", "config.rollout.decode_chunk must be > 0"),
    ("--config.optim.lr=nan", "config.optim.lr must be > 0, got nan"),
    ("--config.optim.weight_decay=inf", "config.optim.weight_decay = inf is not a finite number"),
    ("--config.distill.overlong_prompts=cut", "distill.overlong_prompts = 'cut' is not one of"),
    ("--config.optim.mu_dtype=float16", r"config.optim.mu_dtype = 'float16' is not one of \['float32', 'bfloat16'\]"),
    ("--config.train.update_rounding=up", "config.train.update_rounding = 'up' is not one of"),
])
def test_config_errors(setup, override, message):
  config_file, _ = setup
  overrides = [override] + (["--config.distill.calibration_weight=0.5"] if message is None else [])
  with pytest.raises(CaopdError, match=message or "calibration_weight > 0 needs distill.calibrate=True"):
    config, _ = parse_args([f"--config={config_file}", *overrides])
    validate(config)


def test_pallas_cannot_serve_the_sampled_token_estimator_of_a_cut_support(setup):
  config_file, _ = setup
  config, _ = parse_args([f"--config={config_file}", "--config.distill.token_stats=pallas",
                          "--config.distill.divergence=sampled_token"])
  validate(config)   # temperature 1, no top-k / top-p: the support is whole
  config.rollout.top_p = 0.9
  with pytest.raises(CaopdError, match="has no term for the tokens the sampler cannot draw"):
    validate(config)


def _arithmetic_jsonl(path, questions) -> str:
  """A JSONL dataset of arithmetic questions (answer 7) with the given texts."""
  path.write_text("".join(json.dumps({"question": q, "answer": 7, "verifier": "arithmetic"}) + "\n"
                          for q in questions))
  return str(path)


# 24 questions of 14 to 290 characters (the character model: a token per character)
VARIED = [f"What is 3 + 4?{' Think.' * n}" for n in range(0, 48, 2)]


def test_varied_prompt_widths_compile_the_step_a_bounded_number_of_times(setup, tmp_path):
  """prompt_buckets=4: four student and four teacher widths, so at most 16 step programs (and 4 sampler prefills),
  counted by JAX's own compile log, each announced by the trainer (and one more: the memory plan's candidate)."""
  config_file, _ = setup
  data = _arithmetic_jsonl(tmp_path / "varied.jsonl", VARIED)
  result = subprocess.run(
      command(config_file, tmp_path / "run", f"--config.data.name={data}", "--config.distill.max_prompt_tokens=400",
               "--config.train.prompt_buckets=4", "--config.train.steps=12", "--config.eval.every=0",
               "--config.distill.divergence=sampled_token", "--config.rollout.top_p=0.9"),
      capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_LOG_COMPILES": "1"})
  assert result.returncode == 0, result.stderr
  step_compiles = result.stderr.count("Finished XLA compilation of jit(train_step)")
  announced = result.stdout.count("compiling the training step for prompt widths")
  planned = result.stdout.count("memory: compiling the step")      # remat auto: one candidate, at the widest rungs
  assert planned == 1 and 2 <= announced <= 16 and step_compiles == announced + planned, (step_compiles, announced)
  assert result.stderr.count("Finished XLA compilation of jit(_prefill_in_layout)") <= 4
  widths = {line.split("prompt widths ")[1].split(":")[0] for line in result.stdout.splitlines()
            if "compiling the training step" in line}
  rungs = (112, 208, 304, 400)
  assert widths <= {f"{s} (student) / {t} (teacher)" for s in rungs for t in rungs}, widths
  assert all(np.isfinite(r["train/loss"]) for r in read_metrics(tmp_path / "run"))


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_overlong_prompts_follow_the_policy_and_steps_minus_one_sizes_the_run(setup, tmp_path, policy):
  """max_prompt_tokens=200 with VARIED: the longer questions are cut (truncate) or left out (drop); train.steps=-1
  is one pass over the usable examples; the data report, its file and the per-iteration counts say so."""
  config_file, _ = setup
  data = _arithmetic_jsonl(tmp_path / "varied.jsonl", VARIED)
  result = train_cli(config_file, tmp_path / "run", f"--config.data.name={data}",
                     "--config.distill.max_prompt_tokens=200", f"--config.distill.overlong_prompts={policy}",
                     "--config.train.steps=-1", "--config.data.num_epochs=1", "--config.eval.every=0")
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / "run" / "data_report.json").read_text())
  assert report["read"] == 24 and report["usable"] + report["dropped"] == 24
  assert report["student_tokens"]["max"] <= 200 and report["teacher_tokens"]["max"] <= 200
  if policy == "truncate":
    assert report["dropped"] == 0 and report["truncated"] > 0
  else:
    assert report["dropped"] > 0 and report["truncated"] == 0
  summary = f"data: 24 examples read, {report['usable']} usable ({report['truncated']} truncated to fit 200 prompt"
  assert summary in result.stdout
  records = read_metrics(tmp_path / "run")
  assert len(records) == report["usable"] // 2 * 2   # 2 prompts per rollout batch, 8 rows, 4 per optimizer step
  assert "(train.steps=-1: sized from the data)" in result.stdout
  # each rollout batch's count is logged with both of its steps; one epoch meets every truncated example once
  assert sum(r["rollout/truncated_prompts"] for r in records[::2]) == report["truncated"]


@pytest.mark.parametrize("overrides, message", [
    (("--config.train.steps=100", "--config.data.num_epochs=1"), "config.train.steps=100 needs more data than"),
    (("--config.distill.max_prompt_tokens=20",), "has 0 usable examples of 24"),
])
def test_data_that_cannot_supply_the_run_stops_before_step_1(setup, tmp_path, overrides, message):
  config_file, _ = setup
  data = _arithmetic_jsonl(tmp_path / "varied.jsonl", VARIED)
  result = train_cli(config_file, tmp_path / "run", f"--config.data.name={data}", *overrides)
  assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_model_fails_before_compiling(setup, tmp_path):
  config_file, _ = setup
  result = train_cli(config_file, tmp_path / "run", f"--config.model.path={tmp_path}/nope")
  assert result.returncode == 2 and f"{tmp_path}/nope does not exist" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_config_file_with_unknown_field(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("from caopd_jax.train.config import default_config\n"
                 "def get_config():\n  c = default_config()\n  c.optim.lrr = 1\n  return c\n")
  with pytest.raises(CaopdError, match='lrr.*Did you mean "lr"'):
    parse_args([f"--config={bad}"])
  with pytest.raises(InputNotFoundError, match="does not exist"):
    parse_args([f"--config={tmp_path}/missing.py"])


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_each_process_reads_its_share_of_the_one_process_batches(setup):
  """grain deals the stream round-robin: with 2 processes, process i reads items i, i + 2, ... of each one-process
  batch, so the shares are disjoint and, interleaved, are the one-process batches (the order the global batch uses)."""
  config_file, _ = setup
  script = os.path.join(ROOT, "tests", "multi_device", "training_batches.py")
  alone = subprocess.run([sys.executable, script, config_file], capture_output=True, text=True, timeout=300)
  assert alone.returncode == 0, alone.stderr[-2000:]
  expected = json.loads(alone.stdout.splitlines()[-1])["batches"]
  outputs = _two_processes([sys.executable, script, config_file])
  shares = {d["process"]: d["batches"] for d in (json.loads(out.splitlines()[-1]) for out, _ in outputs)}
  assert sorted(shares) == [0, 1] and len({len(b) for b in expected}) == 1 and len(expected[0]) == 2
  for j, batch in enumerate(expected):
    assert shares[0][j] == batch[0::2] and shares[1][j] == batch[1::2]


def test_two_processes_join_their_shares_into_the_one_process_batch():
  """distill/global_batch.py in two processes: prompts, rows and per-prompt statistics equal build_batch on the
  whole batch, with both teachers, overlong prompts dropped or truncated on either side, and a process that kept
  none."""
  script = os.path.join(ROOT, "tests", "multi_device", "global_batch.py")
  reports = [json.loads(out.splitlines()[-1]) for out, _ in _two_processes([sys.executable, script])]
  assert sorted(r["process"] for r in reports) == [0, 1]
  for report in reports:
    cases = report["cases"]
    assert set(cases) == {"demo", "correct_solution", "some_overlong", "some_truncated", "process1_all_overlong"}
    for case in cases.values():
      assert case["same_prompts"] and case["differences"] == [], case
    assert cases["some_overlong"]["counts"]["dropped_overlong"] == 3
    assert cases["some_truncated"]["counts"]["truncated_prompts"] == 3 and cases["some_truncated"]["kept"] == 10
    assert cases["correct_solution"]["counts"]["no_correct_fallback"] == 3
    assert report["left_out"]["failed_prompts"] == 5 and report["left_out"]["rows_without_loss"] == 5 * 4
    assert all("unknown verifier 'no_such_verifier'" in f for f in report["left_out"]["failures"])
    expected_failure = "host out of memory" if report["process"] == 1 else "process 1 failed while verifying"
    assert report["failure"] is not None and expected_failure in report["failure"], report["failure"]
  kept_by_process1 = [r["cases"]["process1_all_overlong"]["kept_here"] for r in reports if r["process"] == 1]
  assert kept_by_process1 == [0]


def test_more_processes_than_prompts_leave_some_shares_empty(monkeypatch):
  """3 processes, 2 prompts per batch: processes 0 and 1 read one prompt each, process 2 none; every process's
  iterator is at the same position, so process 0's checkpointed state resumes any of them."""
  from caopd_jax.data.arithmetic import arithmetic_task
  from caopd_jax.train.config import default_config
  from caopd_jax.train.loop import training_batches
  config = default_config()
  config.rollout.prompts_per_step, config.data.num_epochs = 2, 1
  examples = arithmetic_task(8, seed=0, difficulty=1)
  whole = [[e.id for e in batch] for batch in training_batches(examples, config)]
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  shares, states = [], []
  for index in range(3):
    monkeypatch.setattr(jax, "process_index", lambda index=index: index)
    batches = training_batches(examples, config)
    shares.append([[e.id for e in next(batches)] for _ in range(2)])
    states.append(batches.get_state())
  assert len(whole) == 4 and all(len(batch) == 2 for batch in whole)
  for j in range(2):
    assert [shares[0][j], shares[1][j], shares[2][j]] == [whole[j][:1], whole[j][1:], []]
  assert states[0] == states[1] == states[2]


def _two_processes(command, timeout=300):
  """(stdout, stderr) of `command` run as two CPU processes joined by jax.distributed; asserts both succeed."""
  port = _free_port()
  procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                     JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu"))
           for i in range(2)]
  outputs = [p.communicate(timeout=timeout) for p in procs]
  assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
  return outputs


def test_two_processes_run_the_same_command_like_one(setup, reference_run):
  """jax.distributed from the environment: 2 processes x 2 CPU devices, --mesh=auto (data 2 x fsdp 2). Only
  process 0 logs; checkpoints are written collectively and load back. Step 1 (rollouts from the same start)
  matches the one-device run; later steps may sample differently (sharded sums round differently)."""
  config_file, root = setup
  run_dir = root / "two_processes"
  port = _free_port()
  procs = []
  for index in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(index), XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    procs.append(subprocess.Popen(command(config_file, run_dir, "--mesh=auto"), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert outputs[0][0].strip().endswith(str(run_dir)) and str(run_dir) not in outputs[1][0]   # process 0 prints
  logged = losses(run_dir)
  assert [s for s, _, _ in logged] == list(range(1, 9)) and all(np.isfinite(v) for _, v, _ in logged)
  first, reference_first = read_metrics(run_dir)[0], read_metrics(reference_run)[0]
  for key in ("rollout/mean_length", "rollout/accuracy", "rollout/format_adherence"):   # the same rollouts
    assert first[key] == reference_first[key], key
  for key in ("train/calibration_ce", "train/entropy"):   # (the step-1 KL is ~1e-5: rounding-level, not compared)
    np.testing.assert_allclose(first[key], reference_first[key], rtol=1e-4, err_msg=key)
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["4", "6", "8"]
  config, params = weights.load(str(run_dir))
  assert config.num_layers == 1 and all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
