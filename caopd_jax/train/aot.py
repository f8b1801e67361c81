"""Ahead-of-time compile check of the training step for a target mesh, before renting the hardware.

    python -m caopd_jax.train.aot --config=configs/qwen3_8b_science.py --model=qwen3-8b --mesh=fsdp:8
    python -m caopd_jax.train.aot --config=... --model=qwen3-8b --mesh=fsdp:32 --topology=v5p:4x4x2

It builds the step exactly as training does (same config, sharding rules, loss settings), lowers it
with abstract sharded inputs of the config's batch shape (prompt and completion widths at their
distill.max_* budgets) and compiles it. Reports per-device memory (arguments, temporaries, outputs)
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
  """Compiles the training step of `config` for `devices`; returns memory per device, FLOPs and timings."""
  import jax
  import jax.numpy as jnp
  from caopd_jax import models
  from caopd_jax.sharding.mesh import make_mesh
  from caopd_jax.sharding.rules import Layout
  from caopd_jax.train.config import rules_from_config
  from caopd_jax.train.loop import distill_and_loss_settings
  from caopd_jax.train.loss import LossBatch
  from caopd_jax.train.optim import learning_rate_schedule, make_optimizer
  from caopd_jax.train.step import init_state, make_train_step, state_shardings

  layout = Layout(make_mesh(config.mesh, devices), rules_from_config(config))
  o, d = config.optim, config.distill
  optimizer = make_optimizer(o.lr, config.train.steps, warmup_fraction=o.warmup_fraction, weight_decay=o.weight_decay,
                             clip_norm=o.clip_norm)
  params = models.param_shapes(model_config, jnp.dtype(config.model.dtype))
  state = jax.eval_shape(lambda p: init_state(p, optimizer, jnp.dtype(config.model.teacher_dtype)), params)
  shardings = state_shardings(layout, model_config, state)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  rows, c = config.train.batch_size, d.max_completion_tokens
  row_sharding = layout.sharding(("batch",), (rows,))
  spec = lambda width, dtype: jax.ShapeDtypeStruct((rows, width), dtype, sharding=row_sharding)  # noqa: E731
  batch = LossBatch(spec(d.max_prompt_tokens + c, jnp.int32), spec(d.max_prompt_tokens + c, jnp.int32),
                    spec(2 * d.max_prompt_tokens + c, jnp.int32), spec(2 * d.max_prompt_tokens + c, jnp.int32),
                    spec(c, jnp.int32), spec(c, jnp.float32), spec(c, jnp.float32), spec(c, jnp.bool_),
                    spec(c, jnp.float32), spec(c, jnp.float32))
  step = make_train_step(model_config, distill_and_loss_settings(config)[1], optimizer,
                         learning_rate_schedule(o.lr, config.train.steps, o.warmup_fraction), d.teacher_ema,
                         config.train.batch_size // config.train.micro_batch_size, layout, shardings)
  started = time.perf_counter()
  lowered = step.lower(abstract, batch)
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
