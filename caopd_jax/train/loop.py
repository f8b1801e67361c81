"""The training loop: sample K rollouts -> verify, P_acc, rewrite -> jitted steps; checkpoints, logs, signals.

One iteration takes `rollout.prompts_per_step` prompts, samples `rollout.num_samples` completions of
each from the current student, builds the distillation batch (distill/batch.py) and runs
prompts_per_step x num_samples / train.batch_size optimizer steps on it, in order. Checkpoints are
taken between iterations, so a run resumes at an iteration boundary: the rollouts of iteration i
come from fold_in(seed, step), the data iterator's position is saved, and XLA on CPU is
deterministic, so a resumed run repeats the uninterrupted run's losses exactly. With several processes,
each reads its share of the prompts and does the host work for them; `global_batch` joins the shares.
"""

import os
import time
from typing import NamedTuple

import grain
import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import hardware, models, rollout, run_folder, weights
from caopd_jax.weights import orbax_checkpoint
from caopd_jax.calibration.rewrite import confidence_line_ids
from caopd_jax.data.pipeline import batch_iterator
from caopd_jax.data.sources import load_examples
from caopd_jax.distill import settings as distill_settings
from caopd_jax.distill.global_batch import share_batch, share_prompts
from caopd_jax.distill.loss import LossBatch
from caopd_jax.distill.padding import bucket, loss_batch, width_rungs
from caopd_jax.distill.prompt_fit import screen_examples
from caopd_jax.distill.settings import DistillSettings
from caopd_jax.errors import CaopdError
from caopd_jax.eval.core import evaluate
from caopd_jax.files import write_json
from caopd_jax.sharding import rollout_layout
from caopd_jax.sharding.distributed import to_host
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.train import memory_plan, samples, setup
from caopd_jax.train.checkpoint import RunCheckpoints, check_output_dir, check_resumable
from caopd_jax.train.config import validate
from caopd_jax.train.logger import COUNTS, RunLogger
from caopd_jax.train.signals import StopSignals

def planned_steps(config, usable: int) -> int:
  """The run's optimizer steps: train.steps, or with -1 what data.num_epochs (at least 1) passes over the `usable`
  examples give; CaopdError when the data cannot supply them."""
  per_batch = config.rollout.prompts_per_step * config.rollout.num_samples // config.train.batch_size
  epochs = config.data.num_epochs
  steps = usable * max(epochs, 1) // config.rollout.prompts_per_step * per_batch   # grain drops a short last batch
  if config.train.steps == -1:
    return steps
  if epochs and config.train.steps > steps:
    raise CaopdError(f"config.train.steps={config.train.steps} needs more data than data.num_epochs={epochs} "
                     f"pass(es) over {usable:,} usable examples give ({steps:,} steps at "
                     f"{config.rollout.prompts_per_step} prompts per rollout batch and {per_batch} optimizer step(s) "
                     "per batch); set train.steps=-1 to size the run from the data, lower it, or raise "
                     "data.num_epochs (0 repeats the data)")
  return config.train.steps


def training_batches(examples, config):
  """This process's share of each prompt batch: every process iterates the same seeded stream of whole
  batches and keeps items i, i + n, ... of each (process i of n; a share may be empty), so the iterator
  state is the same everywhere; `global_batch` joins the shares into the one-process batch."""
  return batch_iterator(examples, config.rollout.prompts_per_step, config.seed, config.data.num_epochs or None,
                        shard=grain.sharding.NoSharding(), share=(jax.process_index(), jax.process_count()))


def _rollout_metrics(batch, rollouts, sampling_s: float, host_s: float) -> dict:
  """rollout/* scalars of one iteration's batch (and its policy counts, COUNTS); speed/rollout_s (sampling, compile
  included on a new prompt width), speed/host_s (verify, rewrite, teacher prompts, padding: `sampling_s` and
  `host_s`) and speed/rollout_tokens_per_s (completion tokens per second of sampling)."""
  stated = batch.stats["mean_confidence"]
  adherence = batch.stats["format_adherence"]
  parsed = adherence > 0
  weights = adherence[parsed]
  return {"rollout/accuracy": float(batch.correct.mean()),
          "rollout/mean_confidence": float(np.average(stated[parsed], weights=weights)) if parsed.any() else np.nan,
          "rollout/format_adherence": float(adherence.mean()),
          "rollout/edited": float(batch.edited.mean()),
          "rollout/truncated": float(rollouts.truncated.mean()),
          "rollout/mean_length": float(rollouts.lengths.mean()),
          **{key: float(batch.counts[key.removeprefix("rollout/")]) for key, _ in COUNTS},
          "speed/rollout_s": sampling_s, "speed/host_s": host_s,
          "speed/rollout_tokens_per_s": float(rollouts.lengths.sum() / max(sampling_s, 1e-9))}


def _held_out(config) -> list:
  """The examples of the periodic evaluation ([] when it is off); loaded up front so a bad split fails early."""
  if not config.eval.every:
    return []
  return load_examples(config.data.name, config.eval.split, data_dir=config.data.data_dir or None,
                       num_examples=config.eval.limit, seed=config.seed,
                       difficulty=list(config.data.difficulty))[:config.eval.limit]


def _eval_metrics(config, model_config, params, tokenizer, examples, prompts, layout) -> dict:
  """eval/* scalars of a greedy evaluation of `params` on `examples`."""
  _, summary = evaluate(model_config, params, tokenizer, examples, prompts,
                        max_new_tokens=config.distill.max_completion_tokens, seed=config.seed, progress=False,
                        layout=layout)
  keys = ("accuracy", "ece", "brier_score", "auroc", "mean_confidence", "confidence_format_adherence")
  return {f"eval/{key}": summary[key] for key in keys}


def _training_data(config, tokenizer, distill: DistillSettings, primary: bool) -> tuple[list, int]:
  """(the training examples as trained on: screened by the overlong-prompt policy, the run's optimizer steps).

  Prints the data report (and writes it to the run folder's data_report.json on the primary process); stops before
  any work when no full rollout batch of usable examples exists or the steps need more data than there is."""
  examples = load_examples(config.data.name, config.data.split, data_dir=config.data.data_dir or None,
                           num_examples=config.data.num_examples, seed=config.seed,
                           difficulty=list(config.data.difficulty))
  examples, report = screen_examples(examples, tokenizer, distill, progress=config.log.progress and primary)
  if primary:
    print(report.summary(config.distill.max_prompt_tokens), flush=True)
    os.makedirs(config.train.output_dir, exist_ok=True)
    write_json(os.path.join(config.train.output_dir, run_folder.DATA_REPORT), report.to_json())
  if report.usable < config.rollout.prompts_per_step:
    raise CaopdError(f"{config.data.name} (split {config.data.split}) has {report.usable} usable examples of "
                     f"{report.read} ({report.dropped} over distill.max_prompt_tokens="
                     f"{config.distill.max_prompt_tokens} with distill.overlong_prompts="
                     f"{config.distill.overlong_prompts!r}), fewer than one rollout "
                     f"batch (rollout.prompts_per_step={config.rollout.prompts_per_step}); raise "
                     "distill.max_prompt_tokens, set distill.overlong_prompts=truncate, or use more data")
  return examples, planned_steps(config, report.usable)


class TrainResult(NamedTuple):
  """run_dir: the run folder; step: the optimizer steps done; stopped_by: the signal that stopped the run before
  its last step ("SIGTERM", "SIGINT"; the state was saved), or None."""
  run_dir: str
  step: int
  stopped_by: str | None


def _say_where_it_continues_from(config, step: int | None, logger: RunLogger) -> None:
  """A new run whose model.path is another run's folder (continual training: task A, then task B from it)."""
  path = config.model.path   # a Hub id or a file is no run
  if os.path.isdir(path) and weights.source_kind(path) == "orbax" and (source_step := orbax_checkpoint.run_step(path, step)) is not None:
    logger.message(f"continual training: starting from the student of run {path} at its step {source_step}, with "
                   "a fresh optimizer, learning-rate schedule (warmup included) and EMA teacher (these weights); "
                   "this run counts its own steps from 1")


def train(config) -> TrainResult:
  """Runs (or resumes) the training run of `config` (a validated train config)."""
  validate(config)
  check_output_dir(config.train.output_dir, config.train.allow_other_files)
  check_resumable(config.train.output_dir, config.to_dict())   # before anything is loaded or written
  dtype = jnp.dtype(config.model.dtype)
  step_arg = None if config.model.step < 0 else config.model.step
  model_config, params = weights.load(config.model.path, dtype, step_arg)
  tokenizer = load_tokenizer(weights.tokenizer_path(config.model.path, step_arg))
  primary = jax.process_index() == 0
  d = config.distill
  if d.max_prompt_tokens + d.max_completion_tokens > model_config.max_position_embeddings:
    raise CaopdError(f"config.distill.max_prompt_tokens + max_completion_tokens = {d.max_prompt_tokens} + "
                     f"{d.max_completion_tokens} is more than the model's context "
                     f"({model_config.max_position_embeddings} tokens); lower them")
  line = len(confidence_line_ids(tokenizer, "0.00")) + 1
  if d.calibrate and line > d.max_completion_tokens:
    raise CaopdError(f"config.distill.max_completion_tokens={d.max_completion_tokens} cannot hold the "
                     f"rewritten confidence line ({line} tokens with EOS for this tokenizer); raise it")
  distill = distill_settings.from_config(config)[0]
  examples, total = _training_data(config, tokenizer, distill, primary)
  held_out = _held_out(config)
  student_rungs = width_rungs(d.max_prompt_tokens, config.train.prompt_buckets)
  teacher_rungs = width_rungs(distill.teacher_budget, config.train.prompt_buckets)
  planned, memory = memory_plan.resolve(config, model_config, jax.devices(), config.train.output_dir,
                                       say=lambda text: print(text, flush=True) if primary else None, save=primary)
  program = setup.build(planned, model_config, total)
  layout = program.layout
  state = setup.initial_state(program, params)
  del params
  data = training_batches(examples, config)
  run_dir = config.train.output_dir
  checkpoints = RunCheckpoints(run_dir, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  resumed = None
  if checkpoints.latest_step() is not None:
    resumed = checkpoints.restore_latest(state, lambda text: print(text, flush=True) if primary else None)
  if resumed is None:
    if primary:
      checkpoints.write_run_files(config.to_dict(), model_config, tokenizer)
  else:
    state, loop_state = resumed
    data.set_state(loop_state["data"])
  step = int(to_host(state.step))
  logger = RunLogger(run_dir, total, step, tensorboard=config.log.tensorboard, progress=config.log.progress,
                     primary=primary)
  devices = layout.mesh.devices.flat
  logger.message(f"run folder {os.path.abspath(run_dir)}: {model_config.family}, "
                 f"{model_config.num_params() / 1e9:.2f}B params from {config.model.path} ({config.model.dtype}); "
                 f"mesh {dict(layout.mesh.shape)} on {layout.mesh.size} x {devices[0].device_kind}; per iteration "
                 f"{config.rollout.prompts_per_step} prompts x {config.rollout.num_samples} rollouts "
                 f"(CaOPD {'on' if d.calibrate else 'off: plain OPD'}), steps of {config.train.batch_size} sequences")
  logger.message(f"{total:,} optimizer steps" + (" (train.steps=-1: sized from the data)"
                                                 if config.train.steps == -1 else ""))
  logger.message(memory.summary())
  decode_layout, why = rollout_layout.choose(config.rollout.layout, layout, model_config.num_params()
                                             * jnp.dtype(config.model.dtype).itemsize,
                                             hardware.chip_of(devices[0]).hbm_bytes)
  if layout.mesh.size > 1:
    logger.message(f"rollouts (rollout.layout={config.rollout.layout}): {why}")
  if resumed is not None:
    logger.message(f"resumed {run_dir} at step {step}")
  else:
    _say_where_it_continues_from(config, step_arg, logger)
  compiled = set()   # (student width, teacher width) of every step program compiled so far
  sampled_widths = set()   # prompt widths the sampler has compiled for
  rows = config.rollout.prompts_per_step * config.rollout.num_samples
  pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
  saved = step
  try:
    with StopSignals() as stop:
      try:
        while step < total and not stop.requested:
          batch_start = (step, data.get_state())  # where a resume restarts if this batch fails before a step
          try:
            example_batch = next(data)
          except StopIteration:
            logger.message(f"the data ran out after {config.data.num_epochs} epoch(s) at step {step}")
            break
          started = time.perf_counter()
          prompts, shared = share_prompts(example_batch, tokenizer, distill)   # this process's, everyone's
          width = bucket(max(map(len, shared.ids)), student_rungs)
          new_width = width not in sampled_widths
          if new_width:
            sampled_widths.add(width)
            logger.message(f"step {step + 1}: sampling {rows} rollouts; the sampler compiles for prompt width {width} "
                           f"on this first call ({len(sampled_widths)} of at most {len(student_rungs)})")
          rollouts = rollout.sample(
              model_config, rollout_layout.place(state.student, decode_layout, models.logical_axes(model_config)),
              shared.ids,
              jax.random.fold_in(jax.random.key(config.seed), step),
              num_samples=config.rollout.num_samples, max_new_tokens=config.distill.max_completion_tokens,
              temperature=config.rollout.temperature, top_k=config.rollout.top_k, top_p=config.rollout.top_p,
              stop_token_ids=tokenizer.stop_ids, chunk=config.rollout.decode_chunk, layout=decode_layout,
              prompt_width=width)
          sampled = time.perf_counter()
          if new_width:
            logger.message(f"step {step + 1}: rollouts took {sampled - started:.1f} s, compilation included")
          batch = share_batch(prompts, shared, rollouts, tokenizer, distill, pad_id)
          for failure in batch.failures:
            logger.message(f"step {step + 1}: a prompt is left out of this batch, its host-side work failed: {failure}")
          arrays = loss_batch(batch, rows, pad_id, student_rungs, teacher_rungs)
          rollout_metrics = _rollout_metrics(batch, rollouts, sampled - started, time.perf_counter() - sampled)
          widths = (arrays.student_tokens.shape[1] - d.max_completion_tokens,
                    arrays.teacher_tokens.shape[1] - d.max_completion_tokens)
          new_program = widths not in compiled
          if new_program:
            compiled.add(widths)
            logger.message(f"step {step + 1}: compiling the training step for prompt widths {widths[0]} (student) / "
                           f"{widths[1]} (teacher): compile {len(compiled)} of at most "
                           f"{len(student_rungs) * len(teacher_rungs)} (train.prompt_buckets)")
          for start in range(0, rows, config.train.batch_size):
            if step >= total:
              break
            started = time.perf_counter()
            part = setup.place_batch(program, LossBatch(*(a[start:start + config.train.batch_size] for a in arrays)))
            state, metrics = program.step_fn(state, part)
            metrics = jax.tree.map(to_host, metrics)
            seconds = time.perf_counter() - started
            if new_program:
              logger.message(f"step {step + 1}: took {seconds:.1f} s, compilation included")
              new_program = False
            if not metrics["finite"]:
              checkpoints.wait()
              last = checkpoints.latest_step()
              kept = f"the last good checkpoint is step {last}" if last is not None else "no checkpoint was written yet"
              raise CaopdError(f"step {step + 1}: the loss ({metrics['loss']}), the gradient norm "
                               f"({metrics['grad_norm']}) or the updated params are not finite, so this step is not "
                               f"saved; {kept} (in {run_dir}). Try a lower optim.lr")
            step += 1
            student_tokens = float(arrays.student_mask[start:start + config.train.batch_size].sum())
            evaluated = _eval_metrics(config, model_config, state.student, tokenizer, held_out, distill.prompts,
                                      layout) if (
                held_out and step % config.eval.every == 0) else {}
            logger.log(step, {**{f"train/{k}": v for k, v in metrics.items() if k != "finite"}, **rollout_metrics,
                              "speed/train_tokens_per_s": student_tokens / seconds, "speed/step_time_s": seconds,
                              **evaluated})
          every = config.log.samples_every
          if every and (batch_start[0] == 0 or step // every > batch_start[0] // every):
            logger.samples(samples.pick(rollouts, batch, shared.ids, tokenizer, config.log.samples, step))
          if step // config.checkpoint.every > saved // config.checkpoint.every or step >= total or stop.requested:
            checkpoints.save(state, {"data": data.get_state(), "step": step})
            saved = step
      except Exception as error:  # a stop signal also reaches XLA's compiler subprocesses (ptxas), failing the call
        # Saved only where that is safe: one process (a lone save of several would wait on the others), the
        # state's buffers intact, and not the loop's own errors (a non-finite loss stays an error).
        if (not stop.requested or isinstance(error, CaopdError) or jax.process_count() > 1
            or any(leaf.is_deleted() for leaf in jax.tree.leaves(state))):
          raise
        logger.message(f"{type(error).__name__} after {stop.requested} during step {step + 1}: {str(error)[:200]}")
        if step == batch_start[0]:  # no step of this batch was applied: its prompts come again on resume
          data.set_state(batch_start[1])  # (after a partial batch, the resume goes on with the next batch)
      if stop.requested:
        logger.message(f"stopped by {stop.requested} at step {step}; checkpoint saved in {run_dir}; "
                       "run the same command again to resume")
    if saved != step:
      checkpoints.save(state, {"data": data.get_state(), "step": step})
  finally:
    checkpoints.wait()
    checkpoints.close()
    logger.close()
  return TrainResult(run_dir, step, stop.requested if step < total else None)
