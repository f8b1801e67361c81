"""The training program, built once from a config: the device mesh and sharding layout, the optimizer and its
schedule, the train state's shapes and shardings, and the jitted step. The trainer (loop.py), the compile check
(aot.py) and the step benchmark (bench/train_step.py) all build it here, so the program a check compiles or a
benchmark times is the one a run executes.

    program = build(config, model_config, total_steps)
    state = initial_state(program, params)                     # step 0, placed on the mesh
    state, metrics = program.step_fn(state, batch)             # batch: LossBatch, placed rows (place_batch)
    program.step_fn.lower(abstract_state(program), batch_spec(program, student_width, teacher_width))
    compile_step(program, config)                              # the same, compiled at the widest rungs

train.remat=auto / micro_batch_size=0 are settled before build (train/memory_plan.py).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from caopd_jax import hardware, models
from caopd_jax.distill import settings as distill_settings
from caopd_jax.distill.loss import BATCH_DTYPES, LossBatch
from caopd_jax.distill.settings import LossSettings
from caopd_jax.distill.step import TrainState, init_state, make_train_step, place_initial_state, state_shardings
from caopd_jax.models.config import ModelConfig
from caopd_jax.sharding.distributed import place
from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout
from caopd_jax.train.config import rules_from_config
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer


class Program(NamedTuple):
  """layout: mesh and rules; optimizer, schedule: AdamW on warmup + cosine (train/optim.py); loss: the loss's static
  settings; state_shapes: TrainState of ShapeDtypeStructs (step 0); shardings: TrainState of shardings; step_fn: the
  jitted (state, batch) -> (state, metrics), state donated; rows: sequences per optimizer step (train.batch_size);
  completion: completion columns (distill.max_completion_tokens)."""
  layout: Layout
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  loss: LossSettings
  state_shapes: TrainState
  shardings: TrainState
  step_fn: Callable
  rows: int
  completion: int
  teacher_dtype: jnp.dtype


def build(config, model_config: ModelConfig, total_steps: int, devices=None) -> Program:
  """The program of `config` (a validated train config) for `model_config`, scheduled over `total_steps`; `devices`:
  the devices of the mesh (default: this process's JAX devices; a TPU topology's for an AOT compile)."""
  o = config.optim
  if config.train.remat == "auto" or config.train.micro_batch_size == 0:
    raise ValueError("train.remat / micro_batch_size are auto: settle them first (train/memory_plan.resolve)")
  layout = Layout(make_mesh(config.mesh, devices), rules_from_config(config))
  schedule = learning_rate_schedule(o.lr, total_steps, o.warmup_fraction)
  optimizer = make_optimizer(o.lr, total_steps, warmup_fraction=o.warmup_fraction, weight_decay=o.weight_decay,
                             clip_norm=o.clip_norm, b1=o.b1, b2=o.b2, eps=o.eps, mu_dtype=jnp.dtype(o.mu_dtype))
  teacher_dtype = jnp.dtype(config.model.teacher_dtype)
  params = models.param_shapes(model_config, jnp.dtype(config.model.dtype))
  shapes = jax.eval_shape(lambda p: init_state(p, optimizer, teacher_dtype), params)
  shardings = state_shardings(layout, model_config, shapes)
  device = layout.mesh.devices.flat[0]
  loss = distill_settings.from_config(config)[1]._replace(platform=device.platform,
                                                          vmem_limit=hardware.chip_of(device).vmem_limit)
  step_fn = make_train_step(model_config, loss, optimizer, schedule, config.distill.teacher_ema,
                            config.train.batch_size // config.train.micro_batch_size, layout, shardings,
                            rounding=config.train.update_rounding, seed=config.seed)
  return Program(layout, optimizer, schedule, loss, shapes, shardings, step_fn, config.train.batch_size,
                 config.distill.max_completion_tokens, teacher_dtype)


def initial_state(program: Program, params) -> TrainState:
  """Step 0 from the student's `params` (the teacher a copy), placed on the program's mesh."""
  return place_initial_state(params, program.optimizer, program.teacher_dtype, program.shardings)


def abstract_state(program: Program) -> TrainState:
  """The state as the step receives it: ShapeDtypeStructs with their shardings (for `step_fn.lower`)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), program.state_shapes,
                      program.shardings)


def batch_spec(program: Program, student_width: int, teacher_width: int) -> LossBatch:
  """The batch as the step receives it, for prompt widths `student_width` / `teacher_width` (a width rung each):
  ShapeDtypeStructs of BATCH_DTYPES with the rows sharding."""
  rows = program.layout.sharding(("batch",), (program.rows,))
  widths = {"student": student_width + program.completion, "teacher": teacher_width + program.completion}
  shape = lambda name: (program.rows, widths[name.split("_")[0]] if name.startswith(  # noqa: E731
      ("student", "teacher")) else program.completion)
  return LossBatch(**{name: jax.ShapeDtypeStruct(shape(name), dtype, sharding=rows)
                      for name, dtype in BATCH_DTYPES._asdict().items()})


def compile_step(program: Program, config):
  """The step compiled ahead of time at the widest prompt rungs of `config` (the most memory a run's step needs)."""
  teacher_width = distill_settings.from_config(config)[0].teacher_budget
  return program.step_fn.lower(abstract_state(program),
                               batch_spec(program, config.distill.max_prompt_tokens, teacher_width)).compile()


def place_batch(program: Program, batch: LossBatch) -> LossBatch:
  """A host batch (NumPy, BATCH_DTYPES) as global arrays, rows split by the layout."""
  rows = program.layout.sharding(("batch",), (program.rows,))
  return place(LossBatch(*(np.asarray(x, dtype) for x, dtype in zip(batch, BATCH_DTYPES))), rows)
