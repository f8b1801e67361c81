"""The jitted training step: gradient accumulation over micro-batches, optax update, EMA teacher.

    step_fn = make_train_step(model_config, loss_settings, optimizer, schedule, ema_rate, micro_batches)
    state, metrics = step_fn(state, batch)       # batch: loss.LossBatch of train.batch_size rows

The teacher is stored in its own dtype (float32 by default, for its small EMA moves) and runs its forward in the
student's (the compute dtype, model.dtype). Updates and EMA moves are written into bfloat16 weights with
stochastic rounding by default (rounding.py).

The batch is split into `micro_batches` equal slices that a `lax.scan` runs one after another,
summing float32 gradients; the summed loss and gradient equal the full batch's (loss.py). Micro-batch
i holds rows i, i + M, i + 2M, ... so that under a sharded layout every device keeps its own rows. A step
whose loss or gradient norm is not finite leaves the state unchanged (metrics["finite"] is 0) so that the caller
can stop with the last good state. AdamW's step from a finite gradient is finite, so the update cannot make finite
params non-finite; params that are non-finite after the update (a weight already NaN where the forward does not
read it, e.g. an unused token's embedding) also give finite 0, but the update stays applied: the trainer then stops
without saving, and the last checkpoint is the good state.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from caopd_jax import models
from caopd_jax.distill import rounding as update_rounding
from caopd_jax.distill.loss import LossBatch, micro_batch_loss, normalizers
from caopd_jax.distill.settings import LossSettings
from caopd_jax.models.config import ModelConfig
from caopd_jax.sharding.distributed import place
from caopd_jax.sharding.layout import activate, constrain
from caopd_jax.sharding.rules import Layout

METRIC_SUMS = ("divergence", "calibration_ce", "entropy", "kl_estimate", "is_weight", "sampled_tokens", "loss_tokens")


class TrainState(NamedTuple):
  """step int32 []: optimizer steps done; student, teacher: param trees; opt_state: the optimizer's state."""
  step: jax.Array
  student: Any
  teacher: Any
  opt_state: Any


def _all_finite(tree) -> jax.Array:
  """bool []: every element of every leaf is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def init_state(student, optimizer: optax.GradientTransformation, teacher_dtype=jnp.float32) -> TrainState:
  """Step 0: the teacher starts as a copy of the student (in `teacher_dtype`)."""
  teacher = jax.tree.map(lambda p: jnp.array(p, dtype=teacher_dtype), student)
  return TrainState(jnp.zeros((), jnp.int32), student, teacher, optimizer.init(student))


def state_shardings(layout: Layout, config: ModelConfig, state_like: TrainState) -> TrainState:
  """Shardings of a TrainState by the layout's rules: student and teacher params by their logical axes, optimizer
  moments like the params they follow, counters replicated."""
  params = layout.params(models.logical_axes(config), state_like.student)
  return TrainState(layout.replicated(), params, layout.params(models.logical_axes(config), state_like.teacher),
                    layout.following(state_like.opt_state, state_like.student, params))


def place_initial_state(params, optimizer: optax.GradientTransformation, teacher_dtype, shardings: TrainState
                        ) -> TrainState:
  """Step 0 of `init_state` from the student's `params`, placed with the state's `shardings` (`state_shardings`)."""
  init = jax.jit(lambda p: init_state(p, optimizer, teacher_dtype), out_shardings=shardings)
  return init(place(params, shardings.student))


def make_train_step(config: ModelConfig, settings: LossSettings, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, ema_rate: float, micro_batches: int, layout: Layout | None = None,
                    shardings: TrainState | None = None, *, rounding: str = "stochastic", seed: int = 0):
  """The jitted `(state, batch) -> (state, metrics)`; the state argument is donated.

  `rounding` writes the update and the EMA move into bfloat16 weights (rounding.ROUNDING); the stochastic bits of
  step n come from (`seed`, n), so a resumed run rounds as an unbroken one.

  With `layout` and the state's `shardings` (`state_shardings`), the step is compiled for the layout's
  mesh: state in and out as sharded, the batch as placed by the caller (`sharding.distributed.place`),
  and activations constrained by the rules while tracing.

  metrics (float32 scalars): loss, divergence, calibration_ce (per-sequence means over the batch),
  entropy and kl_estimate (means over all loss-mask tokens, the first `skip_first` included;
  kl_estimate = mean of log p_s - log p_t of the completion tokens, the Monte Carlo reverse KL: an estimate,
  so it can come out negative), is_weight (mean importance weight min(p_s / q, cap) over the loss tokens the student
  sampled; 1 when rollouts come from the same params at temperature 1), loss_tokens (that token count),
  grad_norm (before clipping), lr (of
  this step), finite (1.0 if the update was applied and the updated student is finite).
  """
  grad_fn = jax.value_and_grad(micro_batch_loss, has_aux=True)

  def train_step(state: TrainState, batch: LossBatch):
    with activate(layout):
      return _step(state, batch)

  def _step(state: TrainState, batch: LossBatch):
    norm = normalizers(batch, settings)
    split = jax.tree.map(lambda x: constrain(jnp.swapaxes(x.reshape(x.shape[0] // micro_batches, micro_batches,
                                                                    *x.shape[1:]), 0, 1),
                                             (None, "batch") + (None,) * (x.ndim - 1)), batch)

    teacher_compute = jax.tree.map(lambda t, s: t.astype(s.dtype), state.teacher, state.student)

    def accumulate(carry, micro):
      grads, loss, sums = carry
      (micro_loss, micro_sums), micro_grads = grad_fn(state.student, teacher_compute, micro, norm, config, settings)
      grads = jax.tree.map(lambda g, m: g + m.astype(jnp.float32), grads, micro_grads)
      return (grads, loss + micro_loss, jax.tree.map(jnp.add, sums, micro_sums)), None

    zeros = (jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.student), jnp.zeros((), jnp.float32),
             {name: jnp.zeros((), jnp.float32) for name in METRIC_SUMS})
    (grads, loss, sums), _ = jax.lax.scan(accumulate, zeros, split)
    grad_norm = optax.global_norm(grads)
    finite_grads = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(state: TrainState) -> TrainState:
      updates, opt_state = optimizer.update(grads, state.opt_state, state.student)
      update_key, ema_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), state.step))
      student = update_rounding.apply_updates(state.student, updates, update_key, rounding)
      teacher = update_rounding.ema_update(state.teacher, student, ema_rate, ema_key, rounding)
      return TrainState(state.step + 1, student, teacher, opt_state)

    # A branch, not a select of new and old: a select would read and write the whole state once more after the
    # update (~25 GB at 0.6B with float32 moments and teacher), since it waits for the params' finiteness check.
    new_state = jax.lax.cond(finite_grads, update, lambda state: state, state)
    finite = finite_grads & _all_finite(new_state.student)
    tokens = jnp.maximum(sums["loss_tokens"], 1.0)
    metrics = {"loss": loss, "divergence": sums["divergence"], "calibration_ce": sums["calibration_ce"],
               "entropy": sums["entropy"] / tokens, "kl_estimate": sums["kl_estimate"] / tokens,
               "is_weight": sums["is_weight"] / jnp.maximum(sums["sampled_tokens"], 1.0),
               "loss_tokens": sums["loss_tokens"], "grad_norm": grad_norm,
               "lr": jnp.asarray(schedule(state.step), jnp.float32), "finite": finite.astype(jnp.float32)}
    return new_state, metrics

  if layout is None:
    return jax.jit(train_step, donate_argnums=0)
  return jax.jit(train_step, donate_argnums=0, in_shardings=(shardings, None),
                 out_shardings=(shardings, layout.replicated()))
