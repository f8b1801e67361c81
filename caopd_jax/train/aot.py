"""Ahead-of-time check that a config fits its hardware, before renting it: the training program compiled for the
target's devices, and a table of what each device holds.

    python -m caopd_jax.train.aot --config=configs/paper.py:qwen3-8b,science --model=qwen3-8b
    python -m caopd_jax.train.aot --config=configs/smollm2_arith.py --topology=v5e:2x2 --mesh=auto

The target is `--topology` (a TPU slice, compiled through JAX's AOT topology API: needs libtpu, no TPU; BUILD.md),
else the config's `target` (a TPU topology name, "gpu:N" or "cpu"; "" = this machine), else this machine's
devices (on a CPU a mesh larger than the visible devices re-runs itself with that many host devices). It settles
train.remat / micro_batch_size as a run would (train/memory_plan.py: auto compiles candidates), compiles the chosen
training step with the trainer's own builder (train/setup.py) at the widest prompt rungs, and the sampler's prefill
and decode (rollout/sampler.compile_for) at the rollout batch; then prints per device: arguments, temporaries and
their total against the device's memory (hardware.py) less memory_plan.HEADROOM, the step's FLOPs, its time at the
devices' peak and its MFU ceiling. Exit status 2 with a one-line error when the step or the sampler does not fit.

`--model` is a preset name (random-weight shapes); default: the model config of config.model.path (a HF folder or
a caopd-jax checkpoint/run; nothing is loaded but its config). FLOPs are counted from the shapes (step_flops):
the model's (student forward + backward, teacher forward) and those executed (plus recomputation). The MFU ceiling
is model / executed: what the step would reach if every executed FLOP ran at peak (communication, memory-bound
work and idle time only lower it): an upper bound for comparing settings, not a measurement.
"""

import os
import sys
import time

from caopd_jax.cli import run_main
from caopd_jax.config_files import parse_args
from caopd_jax.errors import CaopdError
from caopd_jax.hardware import GIB
from caopd_jax.train import memory_plan



def _option(rest: list, name: str) -> str | None:
  for arg in list(rest):
    if arg.startswith(f"--{name}="):
      rest.remove(arg)
      return arg.split("=", 1)[1]
  return None


def _model_config(config, preset: str | None):
  from caopd_jax import models
  from caopd_jax.weights import gguf_checkpoint, hf_checkpoint, orbax_checkpoint
  if preset:
    return models.preset(preset)
  path = config.model.path
  if path and os.path.isfile(path) and path.endswith(".gguf"):
    return gguf_checkpoint.read_config(gguf_checkpoint.open_reader(path), path)   # metadata only, no weights
  if path and os.path.isdir(path) and hf_checkpoint.is_hf_folder(path):
    return hf_checkpoint.read_config(path)
  if path and os.path.isdir(path) and orbax_checkpoint.is_orbax_checkpoint(path):
    return orbax_checkpoint.read_config(orbax_checkpoint.resolve(path)[0])
  raise CaopdError(f"--model=PRESET is needed: config.model.path={path!r} is not a HF folder, GGUF file or caopd-jax "
                   f"checkpoint whose config can be read without loading weights")


def _device_bytes(shapes, shardings) -> int:
  """Per-device bytes of a tree of ShapeDtypeStructs laid out by a matching tree of shardings."""
  import jax
  import numpy as np
  return sum(int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
             for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)))


def step_flops(config, model_config) -> dict:
  """FLOPs of one optimizer step (all devices), counted from the shapes (XLA's cost analysis counts a loop's body
  once, not per iteration): "model" (student forward + backward over prompt and completion, 3 x 2 FLOPs per
  multiply-add, the loss head on the completion only; the teacher's forward) and "executed" (plus the student's
  layers' forward again under remat=layers; dots keeps the matmul outputs)."""
  from caopd_jax.distill.settings import from_config
  c = model_config
  body = c.num_layers * (c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
                         + 3 * c.hidden_size * c.intermediate_size)          # multiply-adds per token
  completion = config.distill.max_completion_tokens
  sequences = config.train.batch_size

  def forward(prompt):   # FLOPs of one forward over `sequences` of prompt + completion: (layers, loss head)
    length = prompt + completion
    attention = c.num_layers * c.num_heads * c.head_dim * length * length   # causal: half of 2 x 2 x L^2 MACs
    return sequences * (2 * body * length + 2 * attention), sequences * 2 * c.hidden_size * c.vocab_size * completion

  student, teacher = forward(config.distill.max_prompt_tokens), forward(from_config(config)[0].teacher_budget)
  model = 3 * sum(student) + sum(teacher)
  return {"model": model, "executed": model + (student[0] if config.train.remat == "layers" else 0)}


def compile_report(config, model_config, devices, say=print) -> dict:
  """Settles the memory settings of `config` for `devices` (memory_plan), compiles its training step and sampler
  there, and returns per-device memory (bytes), FLOPs, the MFU bound and compile times (`table` prints them)."""
  from caopd_jax import hardware
  from caopd_jax.rollout import sampler
  from caopd_jax.train import setup
  config, plan = memory_plan.resolve(config, model_config, devices, say=say)
  program = setup.build(config, model_config, max(config.train.steps, 1), devices)
  chip = hardware.chip_of(devices[0])
  started = time.perf_counter()
  step = setup.compile_step(program, config)
  step_seconds = time.perf_counter() - started
  r = config.rollout
  settings = sampler.Settings(r.num_samples, config.distill.max_completion_tokens, float(r.temperature), r.top_k,
                              float(r.top_p), (0,))
  started = time.perf_counter()
  prefill, decode = sampler.compile_for(model_config, setup.abstract_state(program).student, program.layout,
                                        settings, r.prompts_per_step, config.distill.max_prompt_tokens,
                                        devices[0].platform)
  sampler_seconds = time.perf_counter() - started
  # while sampling, the whole train state stays resident; the sampler's own arguments hold the student's params
  resident = (_device_bytes(program.state_shapes, program.shardings)
              - _device_bytes(program.state_shapes.student, program.shardings.student))
  flops = step_flops(config, model_config)
  return {"mesh": dict(program.layout.mesh.shape), "devices": len(devices), "chip": chip.name,
          "device_memory": chip.hbm_bytes, "budget": int(chip.hbm_bytes * (1 - memory_plan.HEADROOM)),
          "remat": config.train.remat, "micro_batch_size": config.train.micro_batch_size, "plan": plan.summary(),
          "params": model_config.num_params(), "step": memory_plan.footprint(step),
          "sampler": {name: {**memory_plan.footprint(c), "total": memory_plan.footprint(c)["total"] + resident}
                      for name, c in (("prefill", prefill), ("decode", decode))},
          "flops": flops, "peak_flops": chip.peak_flops * len(devices),
          "compile_s": {"step": round(step_seconds, 1), "sampler": round(sampler_seconds, 1)}}


def table(report: dict) -> str:
  """The report as a text table: per-device GiB of each program against the usable memory."""
  budget = report["budget"]
  rows = [("training step", report["step"]), ("sampler prefill", report["sampler"]["prefill"]),
          ("sampler decode", report["sampler"]["decode"])]
  lines = [f"{report['chip']} x {report['devices']} (mesh {report['mesh']}), {report['params'] / 1e9:.2f}B params; "
           f"{report['plan']}",
           f"{'program':<17}{'arguments':>11}{'temporaries':>13}{'total':>9}{'usable':>9}   per device, GiB",
           *(f"{name:<17}{m['arguments'] / GIB:>11.2f}{m['temporaries'] / GIB:>13.2f}{m['total'] / GIB:>9.2f}"
             f"{budget / GIB:>9.2f}   {'fits' if m['total'] <= budget else 'DOES NOT FIT'}" for name, m in rows),
           _flops_line(report),
           f"compile: {report['compile_s']['step']} s (step), {report['compile_s']['sampler']} s (sampler)"]
  return "\n".join(lines)


def _flops_line(report: dict) -> str:
  """Model FLOPs per step, the step's time at the devices' peak, and the MFU ceiling (module docstring)."""
  flops = report["flops"]
  line = f"step: {flops['model'] / 1e15:.2f} PFLOP (model)"
  if report["peak_flops"]:
    line += (f", {flops['executed'] / report['peak_flops']:.2f} s at peak; MFU ceiling "
             f"{flops['model'] / flops['executed']:.0%} (recomputation only)")
  return line


def target_devices(target: str, mesh_size: int, argv: list):
  """The devices of a target: a TPU topology name (JAX's AOT topology API; needs libtpu), "gpu:N" (this machine's
  first N GPUs), "cpu", or "" (this machine's devices; on a CPU, `mesh_size` host devices by re-running)."""
  import jax
  if target.startswith("gpu"):
    wanted = int(target.partition(":")[2] or 1)
    gpus = jax.devices("gpu") if jax.default_backend() == "gpu" else []
    if len(gpus) < wanted:
      raise CaopdError(f"target {target}: this machine has {len(gpus)} GPU(s); check this config on a host with "
                       f"{wanted}, or pass --topology=... to check a TPU slice instead")
    return gpus[:wanted]
  if target and target != "cpu":
    from jax.experimental import topologies
    try:
      return topologies.get_topology_desc(topology_name=target, platform="tpu").devices
    except Exception as e:  # no libtpu here, or an unknown name
      raise CaopdError(f"TPU topology {target!r}: JAX cannot describe it here ({e}); install libtpu (BUILD.md, "
                       "'TPU without a TPU'), and name a slice like v5p:2x2x1, v5e:4x4 or v6e:2x2") from e
  if jax.default_backend() == "cpu" and jax.device_count() < mesh_size:
    if os.environ.get("CAOPD_AOT_REEXEC"):
      raise CaopdError(f"the mesh needs {mesh_size} devices and this CPU shows {jax.device_count()}")
    env = dict(os.environ, CAOPD_AOT_REEXEC="1",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={mesh_size}")
    os.execve(sys.executable, [sys.executable, "-m", "caopd_jax.train.aot", *argv], env)
  return jax.devices("cpu") if target == "cpu" else jax.devices()


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  from caopd_jax.train.config import field_notes
  config, rest = parse_args(argv, usage=__doc__ + "\nflags: --model=PRESET, --topology=NAME (e.g. v5p:4x4x2)",
                            notes=field_notes())
  preset, topology = _option(rest, "model"), _option(rest, "topology")
  if rest:
    raise CaopdError(f"unknown arguments {rest}; use --config=FILE, --config.FIELD=VALUE, --mesh=..., "
                     "--model=PRESET, --topology=NAME")
  from caopd_jax.sharding.mesh import requested_spec
  spec = requested_spec(config.mesh)
  devices = target_devices(topology or config.target, spec.size if spec else 1, argv)
  print(f"checking {topology or config.target or 'this machine'}: {len(devices)} x {devices[0].device_kind}",
        flush=True)
  report = compile_report(config, _model_config(config, preset), devices)
  print(table(report))
  over = [name for name, m in (("the training step", report["step"]), ("the sampler's prefill",
          report["sampler"]["prefill"]), ("the sampler's decode", report["sampler"]["decode"]))
          if m["total"] > report["budget"]]
  if over:
    raise CaopdError(f"{' and '.join(over)} do(es) not fit {report['chip']}: see the table; use more devices, "
                     "shorter sequences or fewer rollouts per step (rollout.prompts_per_step, num_samples)")
  return 0


if __name__ == "__main__":
  run_main(main)
