"""`python -m caopd_jax.eval --model PATH --dataset NAME_OR_PATH --output DIR [options]`.

Evaluates accuracy and calibration and writes inference.json, metrics.json and reliability.png
into DIR (eval/report.py). The model is an HF folder, a .gguf file, or an Orbax checkpoint / run
folder of this project (latest step, or --step). A training run folder also supplies the prompt
wording it was trained with (its config.json); `--prompts CONFIG.py` takes a training config's
wording instead (e.g. a base model with its runs' few-shot turns); otherwise data/prompts.py's defaults.
"""

import argparse
import json
import os
import sys

from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m caopd_jax.eval", description=__doc__.split("\n\n")[0])
  p.add_argument("--model", required=True, help="HF folder, .gguf file, or caopd-jax checkpoint / run folder")
  p.add_argument("--step", type=int, default=None, help="step of a run folder (default: latest)")
  p.add_argument("--dataset", required=True, help="science, tooluse, arithmetic, a save_to_disk folder or .jsonl")
  p.add_argument("--split", default="eval", help="split of a named dataset (default: eval)")
  p.add_argument("--output", required=True, help="folder for inference.json, metrics.json, reliability.png")
  p.add_argument("--num_samples", type=int, default=1, help="completions per example (K)")
  p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature when not --greedy")
  p.add_argument("--greedy", action="store_true", help="greedy decoding (the paper's eval); implies K=1")
  p.add_argument("--max_new_tokens", type=int, default=1024)
  p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only")
  p.add_argument("--batch_size", type=int, default=64, help="examples per rollout batch")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--arithmetic_examples", type=int, default=500, help="size of the arithmetic eval split")
  p.add_argument("--difficulty", default="1,2", help="arithmetic levels to mix, e.g. 1 or 1,2 (see data/arithmetic.py)")
  p.add_argument("--prompts", default=None, help="a training config file whose prompt wording to use (e.g. to "
                 "evaluate a base model with the prompts its runs train with); default: the run's, else built-in")
  p.add_argument("--no_progress", action="store_true")
  return p


def _prompt_config(model: str, config_file: str | None):
  """The PromptConfig of --prompts (a training config file), else of a training run folder (its config.json),
  else the defaults."""
  from caopd_jax.data.prompts import PromptConfig
  if config_file:
    from caopd_jax.config_files import load_file
    return PromptConfig(**load_file(config_file).prompts.to_dict())
  path = os.path.join(model, "config.json")
  if os.path.isdir(model) and os.path.isfile(path):
    with open(path) as f:
      saved = json.load(f)
    if isinstance(saved.get("prompts"), dict):
      return PromptConfig(**saved["prompts"])
  return PromptConfig()


def main(argv=None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  if args.greedy and args.num_samples != 1:
    raise CaopdError("--greedy gives one completion per example; drop --num_samples or --greedy")
  if args.num_samples < 1 or args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
    raise CaopdError("--num_samples, --max_new_tokens and --limit must be >= 1")
  import jax.numpy as jnp
  from caopd_jax import models
  from caopd_jax.data.sources import load_examples
  from caopd_jax.eval.core import evaluate
  from caopd_jax.eval.report import metrics_table, write_report
  from caopd_jax.tokenizers import load_tokenizer
  try:
    levels = [int(level) for level in args.difficulty.split(",")]
  except ValueError:
    raise CaopdError(f"--difficulty={args.difficulty!r}: give levels like 1 or 1,2") from None
  examples = load_examples(args.dataset, args.split, num_examples=args.arithmetic_examples, seed=args.seed,
                           difficulty=levels)[:args.limit]
  config, params = models.load(args.model, jnp.dtype(args.dtype), args.step)
  tokenizer = load_tokenizer(models.tokenizer_path(args.model, args.step))
  records, summary = evaluate(config, params, tokenizer, examples, _prompt_config(args.model, args.prompts),
                              max_new_tokens=args.max_new_tokens, num_samples=args.num_samples,
                              temperature=0.0 if args.greedy else args.temperature, batch_size=args.batch_size,
                              seed=args.seed, progress=not args.no_progress)
  name = os.path.basename(os.path.normpath(args.model))
  write_report(args.output, name, records, summary)
  print(metrics_table({name: summary}))
  print(f"{len(records)} completions of {len(examples)} examples -> {args.output}/")
  return 0


if __name__ == "__main__":
  run_main(main)
