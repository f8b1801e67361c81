"""train.remat=auto and train.micro_batch_size=0: the search (against hand-set footprints), real compiles of a
small model (remat and micro-batch change XLA's per-device bytes the way the search assumes), the clear error of a
config that fits no setting, and the run folder's cache. The same on a real TPU topology: tests/test_tpu_compile.py."""

import dataclasses
import json
import types

import jax
import pytest

from caopd_jax import hardware, models
from caopd_jax.errors import CaopdError
from caopd_jax.train import memory_plan
from caopd_jax.train.config import default_config

GIB = 2**30


def _config(batch=8, remat="auto", micro=0):
  c = default_config()
  c.model.path = "unused"
  c.rollout.prompts_per_step, c.rollout.num_samples = 2, 4
  c.train.batch_size, c.train.remat, c.train.micro_batch_size = batch, remat, micro
  c.distill.max_prompt_tokens, c.distill.max_completion_tokens = 64, 64
  return c


def _chip(monkeypatch, gib: float):
  chip = hardware.Chip("test", int(gib * GIB), 0.0, 0)
  monkeypatch.setattr(memory_plan.hardware, "chip_of", lambda device: chip)
  return int(chip.hbm_bytes * (1 - memory_plan.HEADROOM))


def _footprints(table):
  """measure() from {remat: (GiB fixed, GiB per sequence of the micro-batch)}, recording the calls."""
  calls = []

  def measure(config, model_config, devices):
    calls.append((config.train.remat, config.train.micro_batch_size))
    fixed, per_row = table[config.train.remat]
    return int((fixed + per_row * config.train.micro_batch_size) * GIB)
  return measure, calls


def test_the_least_recomputation_then_the_largest_micro_batch_that_fits(monkeypatch):
  budget = _chip(monkeypatch, 10.0)                     # 9 GiB usable
  assert budget == int(9 * GIB)
  # none: 4 + 1/seq -> micro-batch 5 would fit, but 8's divisors are 8, 4, 2, 1: 4 (8 GiB) is the largest
  measure, calls = _footprints({"none": (4.0, 1.0), "dots": (4.0, 0.5), "layers": (4.0, 0.1)})
  plan = memory_plan.choose(_config(), None, jax.devices(), measure, say=lambda text: None)
  assert (plan.remat, plan.micro_batch_size, plan.device_bytes) == ("none", 4, 8 * GIB)
  assert calls == [("none", 8), ("none", 1), ("none", 4)]   # largest, smallest, then bisection (4 fits: done)
  # none fits no micro-batch (6 GiB fixed + 4/seq): dots, whose largest (8) fits at once
  measure, calls = _footprints({"none": (6.0, 4.0), "dots": (4.0, 0.5), "layers": (4.0, 0.1)})
  plan = memory_plan.choose(_config(), None, jax.devices(), measure, say=lambda text: None)
  assert (plan.remat, plan.micro_batch_size) == ("dots", 8) and calls == [("none", 8), ("none", 1), ("dots", 8)]


def test_gpus_try_dots_first_the_fastest_step_measured_there(monkeypatch):
  """On an H200 remat dots gave a faster step than none, with less memory (bench/RESULTS.md): a GPU run takes it
  though none would fit too; other platforms keep the least recomputation first."""
  _chip(monkeypatch, 10.0)
  measure, calls = _footprints({"none": (4.0, 0.5), "dots": (4.0, 0.5), "layers": (4.0, 0.1)})
  gpu = types.SimpleNamespace(platform="gpu", id=0)
  plan = memory_plan.choose(_config(), None, [gpu], measure, say=lambda text: None)
  assert (plan.remat, plan.micro_batch_size) == ("dots", 8) and calls == [("dots", 8)]
  assert memory_plan.remat_order("tpu") == memory_plan.remat_order("cpu") == ("none", "dots", "layers")


def test_explicit_settings_are_kept_and_a_compiler_refusal_counts_as_over(monkeypatch):
  _chip(monkeypatch, 10.0)
  config = _config(remat="none", micro=2)
  assert memory_plan.resolve(config, None, jax.devices(), measure=None)[1].summary().endswith("(as configured)")
  for refusal, recorded in ((memory_plan.Refused(20 * GIB), 20 * GIB), (memory_plan.Refused(0), 0), (None, 0)):
    measure = lambda config, model_config, devices: refusal if config.train.remat == "none" else GIB  # noqa: E731
    plan = memory_plan.choose(_config(micro=2), None, jax.devices(), measure, say=lambda text: None)
    assert (plan.remat, plan.micro_batch_size) == ("dots", 2) and plan.tried[0] == ["none", 2, recorded, True]
    assert plan.summary().endswith("(2 compile(s); over: none/2)")


def test_the_compilers_refusal_is_read_for_the_bytes_it_names():
  tpu = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 201.32G "
         "of 95.74G hbm. Exceeded hbm capacity by 105.58G. ... HLO temporaries (201.32G) exceeds available HBM (95.74G)")
  refused = memory_plan.refusal(RuntimeError(tpu))
  assert isinstance(refused, memory_plan.Refused) and refused == int(201.32 * GIB)
  assert memory_plan._describe(refused, True) == "refused by the compiler: needs more than 201.32 GiB"
  unnamed = memory_plan.refusal(RuntimeError("RESOURCE_EXHAUSTED: out of memory"))
  assert isinstance(unnamed, memory_plan.Refused) and unnamed == 0
  assert memory_plan.refusal(ValueError("shapes do not match")) is None


def test_the_chip_says_what_jax_may_allocate_and_an_unknown_one_stops_auto(monkeypatch):
  class Device:
    def __init__(self, platform, kind, limit=None):
      self.platform, self.device_kind, self.limit = platform, kind, limit

    def memory_stats(self):
      if self.limit is None:
        raise RuntimeError("no memory_stats on a topology device")
      return {"bytes_limit": self.limit}

  h200 = hardware.chip_of(Device("gpu", "NVIDIA H200", limit=int(105.8 * GIB)))   # the allocator's 75%
  assert (h200.name, h200.hbm_bytes, h200.peak_flops) == ("H200", int(105.8 * GIB), 989e12)
  assert hardware.chip_of(Device("tpu", "TPU v5 lite")).hbm_bytes == int(15.75 * GIB)
  cpu = hardware.chip_of(jax.devices("cpu")[0])
  assert 0 < cpu.hbm_bytes * jax.local_device_count("cpu") <= hardware._host_memory()
  unknown = hardware.chip_of(Device("tpu", "TPU v9 ultra"))
  assert (unknown.hbm_bytes, unknown.vmem_limit) == (0, 16 * 2**20)
  monkeypatch.setattr(memory_plan.hardware, "chip_of", lambda device: unknown)
  with pytest.raises(CaopdError, match="memory of a 'TPU v9 ultra' device is unknown.*set both explicitly"):
    memory_plan.choose(_config(), None, jax.devices(), None, say=lambda text: None)


def test_a_config_that_fits_no_setting_stops_with_the_bytes_and_what_to_change(monkeypatch):
  _chip(monkeypatch, 2.0)
  measure, calls = _footprints({"none": (4.0, 1.0), "dots": (3.0, 1.0), "layers": (2.5, 0.5)})
  with pytest.raises(CaopdError) as error:
    memory_plan.choose(_config(), None, jax.devices(), measure, say=lambda text: None)
  text = str(error.value)
  assert "train.remat=layers with train.micro_batch_size=1, is 3.00 GiB per device" in text
  assert "test has 2.00 GiB, 1.80 GiB usable (10% kept as headroom)" in text
  assert "--mesh" in text and "distill.max_prompt_tokens=64" in text and "train.batch_size (8)" in text
  assert calls == [(r, m) for r in ("none", "dots", "layers") for m in (8, 1)]   # no bisection without a fit


def test_real_compiles_order_the_footprints_as_the_search_assumes():
  """XLA's memory analysis of the real step (CPU): more sequences per micro-batch cost more bytes, and recomputing
  layers costs fewer than keeping their activations."""
  model_config = dataclasses.replace(models.preset("smollm2-135m"), num_layers=4)
  devices = jax.devices()[:1]
  measure = lambda remat, micro: memory_plan.step_bytes(  # noqa: E731
      memory_plan.with_memory(_config(), remat, micro), model_config, devices)
  none_1, none_4, dots_4, layers_4 = measure("none", 1), measure("none", 4), measure("dots", 4), measure("layers", 4)
  assert none_1 < none_4 and layers_4 <= dots_4 <= none_4 and layers_4 < none_4


def test_the_decision_is_cached_in_the_run_folder(monkeypatch, tmp_path):
  _chip(monkeypatch, 10.0)
  measure, calls = _footprints({"none": (4.0, 1.0), "dots": (4.0, 0.5), "layers": (4.0, 0.1)})
  config, model_config = _config(), models.preset("smollm2-135m")
  resolved, plan = memory_plan.resolve(config, model_config, jax.devices(), str(tmp_path), measure,
                                       say=lambda text: None)
  assert (resolved.train.remat, resolved.train.micro_batch_size) == ("none", 4) and len(calls) == 3
  saved = json.loads((tmp_path / "memory_plan.json").read_text())
  assert saved["remat"] == "none" and saved["micro_batch_size"] == 4 and saved["tried"][0] == ["none", 8, 12 * GIB, False]
  again, cached = memory_plan.resolve(config, model_config, jax.devices(), str(tmp_path), measure,
                                      say=lambda text: None)
  assert len(calls) == 3 and cached == plan                     # no compile: read back
  config.train.steps, config.train.output_dir, config.model.path = 7, "elsewhere", "moved"   # same step: kept
  memory_plan.resolve(config, model_config, jax.devices(), str(tmp_path), measure, say=lambda text: None)
  assert len(calls) == 3
  config.distill.max_completion_tokens = 32                     # the step changes: decided again
  memory_plan.resolve(config, model_config, jax.devices(), str(tmp_path), measure, say=lambda text: None)
  assert len(calls) == 6
  before = (tmp_path / "memory_plan.json").read_text()
  monkeypatch.setattr(memory_plan.jax, "process_count", lambda: 2)    # more hosts (mesh auto shards differently)
  memory_plan.resolve(config, model_config, jax.devices(), str(tmp_path), measure, say=lambda text: None, save=False)
  assert len(calls) == 9 and (tmp_path / "memory_plan.json").read_text() == before   # save=False: not written
