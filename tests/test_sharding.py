"""Meshes and sharding: `--mesh` parsing and presets, the rule table, distributed start-up from the environment
(in this process), and the 8-device checks of tests/multi_device/check_meshes.py (in a subprocess, since the
CPU device count is fixed when JAX starts)."""

import os
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec

from caopd_jax.errors import CaopdError
from caopd_jax.sharding import distributed
from caopd_jax.sharding.mesh import PRESETS, MeshSpec, parse_mesh
from caopd_jax.sharding.rules import DEFAULT_RULES, Layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, devices, processes, expected", [
    ("1", 8, 1, MeshSpec()), ("auto", 8, 1, MeshSpec(fsdp=8)), ("auto", 16, 2, MeshSpec(data=2, fsdp=8)),
    ("data:2,fsdp:4", 8, 1, MeshSpec(2, 4, 1)), ("tensor:2, fsdp:2 ,data:2", 8, 1, MeshSpec(2, 2, 2)),
    ("gpu-8-fsdp4-tp2", 8, 1, MeshSpec(1, 4, 2)), ("tpu-v5e-256", 256, 64, MeshSpec(4, 64, 1))])
def test_mesh_strings_and_presets(text, devices, processes, expected):
  assert parse_mesh(text, devices, processes) == expected


@pytest.mark.parametrize("text, message", [
    ("data:3", "needs 3 devices, but 8"), ("pipeline:8", "unknown axis 'pipeline'"), ("fsdp:4,fsdp:2", "twice"),
    ("eight", "expected 1, auto, a preset"), ("data:0,fsdp:8", "below 1")])
def test_bad_mesh_strings_say_what_is_wrong(text, message):
  with pytest.raises(CaopdError, match=message):
    parse_mesh(text, 8, 1)


def test_every_preset_is_a_valid_mesh():
  for name, spec in PRESETS.items():
    assert parse_mesh(name, spec.size, 1) == spec


class _FakeMesh:
  def __init__(self, **shape):
    self.shape = shape


def test_rules_split_only_dimensions_that_divide_and_never_reuse_an_axis():
  layout = Layout(_FakeMesh(data=2, fsdp=4, tensor=2), DEFAULT_RULES)
  assert layout.spec(("layers", "embed", "mlp"), (28, 1024, 3072)) == PartitionSpec(None, "fsdp", "tensor")
  assert layout.spec(("embed", "kv_heads", "head_dim"), (576, 3, 64)) == PartitionSpec("fsdp", None, None)
  assert layout.spec(("batch", "length"), (16, 9)) == PartitionSpec(("data", "fsdp"), None)
  assert layout.spec(("batch",), (6,)) == PartitionSpec(None)        # 6 rows do not split over 8
  assert layout.spec(("vocab", "embed"), (151936, 1024)) == PartitionSpec("tensor", "fsdp")
  unit = Layout(_FakeMesh(data=1, fsdp=1, tensor=1), DEFAULT_RULES)
  assert unit.spec(("layers", "embed", "mlp"), (2, 64, 128)) == PartitionSpec(None, None, None)


def test_cluster_environment_from_variables():
  assert distributed.cluster_environment({}) is None
  assert distributed.cluster_environment({"SLURM_NTASKS": "1"}) is None
  assert distributed.cluster_environment({"SLURM_NTASKS": "4"}) == {}
  assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}) == {}
  assert distributed.cluster_environment({"TPU_WORKER_HOSTNAMES": "localhost"}) is None
  assert distributed.cluster_environment({"CAOPD_DISTRIBUTED": "auto"}) == {}
  explicit = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
  assert distributed.cluster_environment(explicit) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                                                       "process_id": 1}
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    distributed.cluster_environment({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
  assert distributed.initialize({}) is False and jax.process_count() == 1


def test_eight_device_meshes_match_one_device():
  """The subprocess runs tests/multi_device/check_meshes.py on 8 CPU devices; its report is shown on failure."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           os.path.join(ROOT, "tests", "multi_device", "check_meshes.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
  assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
