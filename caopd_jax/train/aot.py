"""Ahead-of-time compile check of the training step for a target mesh, before renting the hardware.

    python -m caopd_jax.train.aot --config=configs/paper.py:qwen3-8b,science --model=qwen3-8b --mesh=fsdp:8
    python -m caopd_jax.train.aot --config=... --model=qwen3-8b --mesh=fsdp:32 --topology=v5p:4x4x2

It builds the step with the trainer's own builder (train/setup.py: same optimizer, sharding rules, loss
settings, batch dtypes), lowers it with abstract sharded inputs of the config's widest batch (prompt widths at
their budgets, completion at distill.max_completion_tokens) and compiles it. Reports per-device memory (arguments, temporaries, outputs)
and FLOPs; a configuration error (mesh size, rules, batch sizes that do not divide) fails here.
Devices: `--topology` compiles for a TPU slice through JAX's AOT topology API (needs libtpu, no TPU);
otherwise this machine's devices, and on a CPU a mesh larger than the visible devices re-runs itself
with that many host devices. `--model` is a preset name (random-weight shapes); default: the model
config of config.model.path (a HF folder or a caopd-jax checkpoint/run; nothing is loaded but its config).
"""

import json
import os
import sys
import time

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError


def _option(rest: list, name: str) -> str | None:
  for arg in list(rest):
    if arg.startswith(f"--{name}="):
      rest.remove(arg)
      return arg.split("=", 1)[1]
  return None


def _model_config(config, preset: str | None):
  from caopd_jax import models
  from caopd_jax.weights import hf_checkpoint, orbax_checkpoint
  if preset:
    return models.preset(preset)
  path = config.model.path
  if path and os.path.isdir(path) and hf_checkpoint.is_hf_folder(path):
    return hf_checkpoint.read_config(path)
  if path and os.path.isdir(path) and orbax_checkpoint.is_orbax_checkpoint(path):
    return orbax_checkpoint.read_config(orbax_checkpoint.resolve(path)[0])
  raise CaopdError(f"--model=PRESET is needed: config.model.path={path!r} is not a HF folder or caopd-jax "
                   f"checkpoint whose config can be read without loading weights")


def compile_report(config, model_config, devices) -> dict:
  """Compiles the training step of `config` for `devices` (train/setup.py: the trainer's own program, at the widest
  prompt rungs); returns memory per device, FLOPs and timings."""
  from caopd_jax.distill.settings import from_config
  from caopd_jax.train import setup
  program = setup.build(config, model_config, max(config.train.steps, 1), devices)
  layout, teacher_width = program.layout, from_config(config)[0].teacher_budget
  batch = setup.batch_spec(program, config.distill.max_prompt_tokens, teacher_width)
  started = time.perf_counter()
  lowered = program.step_fn.lower(setup.abstract_state(program), batch)
  compiled = lowered.compile()
  seconds = time.perf_counter() - started
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gib = lambda n: round(n / 2**30, 3)  # noqa: E731
  report = {"mesh": str(layout.mesh.shape), "devices": len(layout.mesh.devices.flat),
            "platform": layout.mesh.devices.flat[0].platform, "compile_s": round(seconds, 1),
            "params": model_config.num_params(), "flops_per_device": (cost or {}).get("flops")}
  if memory is not None:
    report.update(argument_gib=gib(memory.argument_size_in_bytes), temp_gib=gib(memory.temp_size_in_bytes),
                  output_gib=gib(memory.output_size_in_bytes),
                  total_gib=gib(memory.argument_size_in_bytes + memory.temp_size_in_bytes))
  return report


def _devices(topology: str | None, mesh_size: int, argv: list):
  import jax
  if topology:
    from jax.experimental import topologies
    try:
      return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
    except Exception as e:  # no libtpu here
      raise CaopdError(f"--topology={topology}: JAX cannot describe this TPU topology here ({e}); install libtpu "
                       "(pip install 'jax[tpu]') on this machine, or check without --topology") from e
  if jax.default_backend() == "cpu" and jax.device_count() < mesh_size:
    if os.environ.get("CAOPD_AOT_REEXEC"):
      raise CaopdError(f"the mesh needs {mesh_size} devices and this CPU shows {jax.device_count()}")
    env = dict(os.environ, CAOPD_AOT_REEXEC="1",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={mesh_size}")
    os.execve(sys.executable, [sys.executable, "-m", "caopd_jax.train.aot", *argv], env)
  return jax.devices()


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  config, rest = parse_args(argv)
  preset, topology = _option(rest, "model"), _option(rest, "topology")
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE, --mesh=..., "
                     "--model=PRESET, --topology=NAME")
  from caopd_jax.sharding.mesh import requested_spec
  spec = requested_spec(config.mesh)
  devices = _devices(topology, spec.size if spec else 1, argv)
  report = compile_report(config, _model_config(config, preset), devices)
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  run_main(main)
