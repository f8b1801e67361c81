"""One builder for the training program (train/setup.py): the trainer, the AOT compile check and the step benchmark
get the same program. Checked against what the trainer really feeds its step in a run."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from caopd_jax import models, weights
from caopd_jax.config_files import load_file
from caopd_jax.distill.settings import from_config
from caopd_jax.errors import CaopdError
from caopd_jax.train import aot, loop, memory_plan, setup
from caopd_jax.train.config import default_config


def _spec(x):
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


def test_the_compile_check_lowers_the_program_a_run_executes(tiny_run, tmp_path, monkeypatch):
  """The first step of a real run (one width rung, so the run's batch has the widest prompts): its state and batch
  have the avals and shardings of setup.abstract_state / batch_spec, and the AOT check's lowering of the program is
  the run's, text for text. Before: aot.py built its own optimizer (no b1/b2/eps) and fed integer masks."""
  config_file = tiny_run[0]
  config = load_file(config_file)
  config.train.output_dir, config.train.steps, config.train.prompt_buckets = str(tmp_path / "run"), 1, 1
  config.eval.every, config.optim.b1, config.optim.eps = 0, 0.8, 1e-6   # a run's own optimizer settings
  seen = {}
  real_build = setup.build

  class Recording:
    """The step, recording what the run passes it (the memory plan's builds only lower it)."""
    def __init__(self, step_fn):
      self.step_fn, self.lower = step_fn, step_fn.lower

    def __call__(self, state, batch):
      seen.setdefault("args", jax.tree.map(_spec, (state, batch)))
      return self.step_fn(state, batch)

  def build(*args, **kwargs):
    program = real_build(*args, **kwargs)
    seen["program"] = program          # the last build before the first step is the run's
    return program._replace(step_fn=Recording(program.step_fn))

  monkeypatch.setattr(loop.setup, "build", build)
  assert loop.train(config).step == 1
  program, (state, batch) = seen["program"], seen["args"]
  teacher_width = from_config(config)[0].teacher_budget
  expected_batch = setup.batch_spec(program, config.distill.max_prompt_tokens, teacher_width)
  assert jax.tree.map(_spec, expected_batch) == batch
  assert setup.abstract_state(program) == state
  model_config, _ = weights.load(config.model.path)
  monkeypatch.undo()
  planned, _ = memory_plan.resolve(config, model_config, jax.devices(), say=lambda text: None)
  checked = setup.build(planned, model_config, 1, jax.devices())
  assert checked.step_fn.lower(setup.abstract_state(checked), expected_batch).as_text() == (
      program.step_fn.lower(state, batch).as_text())
  report = aot.compile_report(config, model_config, jax.devices(), say=lambda text: None)
  assert report["params"] == model_config.num_params() and report["step"]["total"] > 0
  assert report["sampler"]["decode"]["total"] > report["sampler"]["decode"]["arguments"] > 0


def test_the_benchmark_feeds_the_trainers_batch_dtypes():
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
  from train_step import random_batch  # noqa: E402
  spec = setup.LossBatch(*(jax.ShapeDtypeStruct((2, w), d) for w, d in zip(
      (12, 12, 16, 16, 4, 4, 4, 4, 4, 4), setup.BATCH_DTYPES)))
  batch = random_batch(spec, vocab=50)
  assert [x.dtype for x in batch] == [np.dtype(d) for d in setup.BATCH_DTYPES]
  np.testing.assert_array_equal(batch.student_tokens[:, -4:], batch.completion)
  np.testing.assert_array_equal(batch.teacher_tokens[:, -4:], batch.completion)


def test_the_benchmark_times_the_trainers_step(monkeypatch):
  """bench/train_step.py's config is the trainer's default but for BENCH_FIELDS (the shape and the bf16 student),
  and with its flags' defaults the teacher storage, the Adam moments and the update rounding are the trainer's:
  the step it times is the step a run of that shape takes (issue 22: the trainer ran a float32 teacher forward
  that the benchmark never timed)."""
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
  import train_step as bench  # noqa: E402
  from caopd_jax.train.config import flat_items
  monkeypatch.setattr(sys, "argv", ["train_step.py"])
  captured = {}

  def stop(config, *args):
    captured["config"] = config
    raise SystemExit

  monkeypatch.setattr(bench.setup, "build", stop)
  with pytest.raises(SystemExit):
    bench.main()
  ours, trainer = dict(flat_items(captured["config"].to_dict())), dict(flat_items(default_config().to_dict()))
  assert {key for key in trainer if ours[key] != trainer[key]} <= set(bench.BENCH_FIELDS)
  for key in ("model.teacher_dtype", "optim.mu_dtype", "train.update_rounding"):
    assert ours[key] == trainer[key], key


@pytest.mark.parametrize("remat", ["none", "layers"])
def test_step_flops_match_xla_on_a_program_without_loops(remat):
  """aot.step_flops counts from the shapes because XLA counts a loop body once; with one layer, one micro-batch and
  the naive loss head (no loop has more than one iteration) XLA's own count is exact, and ours is within 5% of it
  (the rest: XLA's elementwise FLOPs)."""
  c = default_config()
  c.model.path, c.distill.token_stats, c.train.remat = "unused", "naive", remat
  c.rollout.prompts_per_step, c.rollout.num_samples, c.train.batch_size, c.train.micro_batch_size = 2, 4, 8, 8
  c.distill.max_prompt_tokens, c.distill.max_completion_tokens = 96, 32
  model_config = dataclasses.replace(models.preset("smollm2-135m"), num_layers=1, vocab_size=4096)
  compiled = setup.compile_step(setup.build(c, model_config, 1, jax.devices()[:1]), c)
  cost = compiled.cost_analysis()
  xla = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  ours = aot.step_flops(c, model_config)
  assert abs(ours["executed"] - xla) <= 0.05 * xla


def test_aot_reads_a_gguf_model_s_shapes_from_its_metadata(smollm2_gguf):
  """`train.aot --config=configs/smollm2_arith.py` (BUILD.md) needs no --model: the GGUF's header gives the
  shapes without loading weights, the same config the weights loader builds."""
  config = ml_collections.ConfigDict({"model": {"path": smollm2_gguf}})
  assert aot._model_config(config, None) == weights.load(smollm2_gguf)[0]
  config.model.path = "/nowhere/model.bin"
  with pytest.raises(CaopdError, match="--model=PRESET is needed"):
    aot._model_config(config, None)
