"""The demo pipeline: base model -> plain OPD and CaOPD from it -> evaluate all three -> report.

Stages reuse what an earlier run of the same command left in the output folder (the base model,
finished or interrupted training runs), so an interrupted demo continues where it stopped.
"""

import copy
import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from caopd_jax import plots, weights
from caopd_jax.data.sources import load_examples
from caopd_jax.demo.base_model import train_base_model
from caopd_jax.distill.prompts import PromptConfig
from caopd_jax.errors import CaopdError
from caopd_jax.eval.core import evaluate
from caopd_jax.eval.curves import rollout_curves
from caopd_jax.eval.report import metrics_table
from caopd_jax.files import atomic_file, write_json
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.train.loop import train

RUNS = (("OPD", "opd", False), ("CaOPD", "caopd", True))
BASE_FIELDS = ("fast", "base_examples", "base_steps", "base_batch_size", "base_lr", "base_layers", "base_hidden",
               "base_heads", "base_teacher_fraction")


def _apply_fast(config) -> None:
  """The CI budget: every stage runs, a few steps each."""
  d = config.demo
  d.output_dir, d.base_examples, d.base_steps, d.eval_examples, d.eval_samples = d.output_dir + "-fast", 200, 20, 16, 2
  config.train.steps, config.checkpoint.every, config.rollout.prompts_per_step = 3, 2, 2
  config.train.batch_size = config.train.micro_batch_size = 16


def _base_model(config, prompts: PromptConfig) -> str:
  """The base model's folder, trained now unless the same settings built it before."""
  d = config.demo
  path, stamp = os.path.join(d.output_dir, "base"), os.path.join(d.output_dir, "base_settings.json")
  settings = {name: d[name] for name in BASE_FIELDS} | {"seed": config.seed, "prompts": config.prompts.to_dict()}
  if os.path.exists(stamp):
    with open(stamp) as f:
      if json.load(f) == json.loads(json.dumps(settings)):
        return path
    raise CaopdError(f"{d.output_dir} holds a demo built with other base-model settings; remove it or set "
                     "--config.demo.output_dir to a new folder")
  examples = load_examples("arithmetic", "train", num_examples=d.base_examples, seed=config.seed,
                           difficulty=list(config.data.difficulty))
  print(f"[1/4] base model: {d.base_steps} SFT steps on {len(examples)} problems", flush=True)
  loss = train_base_model(path, examples, prompts, steps=d.base_steps, batch_size=d.base_batch_size, lr=d.base_lr,
                          layers=d.base_layers, hidden=d.base_hidden, heads=d.base_heads,
                          teacher_fraction=d.base_teacher_fraction, seed=config.seed,
                          progress=config.log.progress)
  print(f"      final SFT loss {loss:.3f} nats/token -> {path}", flush=True)
  write_json(stamp, settings)
  return path


def run_demo(config) -> dict:
  """Runs the demo of `config` (configs/demo.py); returns {model name: metrics summary}."""
  config = copy.deepcopy(config)
  if config.demo.fast:
    _apply_fast(config)
    print("demo.fast: every stage with a tiny budget, to check the plumbing; the metrics it prints mean nothing "
          "(a 20-step base model answers at random). Drop --config.demo.fast for the real demo.", flush=True)
  out = config.demo.output_dir
  prompts = PromptConfig(**config.prompts.to_dict())
  started = time.perf_counter()
  base = _base_model(config, prompts)
  folders, seconds = {"base": base}, {"base model": time.perf_counter() - started}
  for step, (name, folder, calibrate) in enumerate(RUNS, start=2):
    print(f"[{step}/4] {name}: {config.train.steps} steps, {config.rollout.prompts_per_step} prompts x "
          f"{config.rollout.num_samples} rollouts per step", flush=True)
    run = copy.deepcopy(config)
    run.model.path, run.distill.calibrate = base, calibrate
    run.train.output_dir = folders[name] = os.path.join(out, folder)
    stage_start = time.perf_counter()
    stopped_by = train(run).stopped_by
    seconds[name] = time.perf_counter() - stage_start
    if stopped_by:
      raise CaopdError(f"the {name} run was stopped by {stopped_by} (saved); run the demo again to resume it")
  examples = load_examples("arithmetic", "eval", num_examples=config.demo.eval_examples, seed=config.seed,
                           difficulty=list(config.data.difficulty))
  modes = {"greedy": (1, 0.0), "sampled": (config.demo.eval_samples, config.rollout.temperature)}
  print(f"[4/4] evaluating base, OPD and CaOPD on {len(examples)} held-out problems: greedy, and "
        f"{config.demo.eval_samples} samples at temperature {config.rollout.temperature}", flush=True)
  results, stage_start = {mode: {} for mode in modes}, time.perf_counter()
  for name, path in folders.items():
    model_config, params = weights.load(path, jnp.float32)
    tokenizer = load_tokenizer(weights.tokenizer_path(path))
    for mode, (samples, temperature) in modes.items():
      records, results[mode][name] = evaluate(
          model_config, params, tokenizer, examples, prompts, max_new_tokens=config.distill.max_completion_tokens,
          num_samples=samples, temperature=temperature, seed=config.seed, progress=config.log.progress)
      write_json(os.path.join(out, "eval", f"{name}_{mode}.json"), {"metrics": results[mode][name],
                                                                     "records": records}, indent=1)
  seconds["evaluation"] = time.perf_counter() - stage_start
  _report(out, results, folders, config, seconds)
  return results


def _timing(seconds: dict) -> str:
  """One line: the demo's wall time by stage (stages an earlier run finished take ~0 s), and the machine."""
  parts = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
  total = sum(seconds.values())
  return (f"wall time {total // 60:.0f} min {total % 60:.0f} s ({parts}; the environment's setup not included) on "
          f"{os.cpu_count()} CPU core(s) of a {platform.machine()} {jax.devices()[0].platform} machine, "
          f"jax {jax.__version__}")


def _report(out: str, results: dict, folders: dict, config, seconds: dict) -> None:
  """Prints the tables; writes results.md, reliability_{greedy,sampled}.png and curves.png into `out`."""
  sections = []
  for mode, runs in results.items():
    plots.reliability_diagram(runs, os.path.join(out, f"reliability_{mode}.png"))
    how = "greedy decoding" if mode == "greedy" else (
        f"{config.demo.eval_samples} samples per problem at temperature {config.rollout.temperature}, as in training")
    sections.append(f"## Held-out problems, {how}\n\n{metrics_table(runs)}\n\n![reliability](reliability_{mode}.png)\n")
  curves = {name: rollout_curves(folders[name]) for name, _, _ in RUNS}
  plots.curves(curves, os.path.join(out, "curves.png"), "rollouts during training")
  timing = _timing(seconds)
  text = (f"# Demo results\n\n{timing}\n\n" + "\n".join(sections) + "\n## Training\n\n![curves](curves.png)\n")
  with atomic_file(os.path.join(out, "results.md")) as tmp, open(tmp, "w") as f:
    f.write(text)
  print("\n" + "\n".join(sections).replace("](", "] (") + f"\nreport: {out}/results.md (with the reliability "
        f"diagrams and training curves as PNG files beside it)\n{timing}", flush=True)
