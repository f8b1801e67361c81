"""`python -m caopd_jax.eval --model PATH --dataset NAME_OR_PATH --output DIR [--protocol paper|strict] [options]`
`python -m caopd_jax.eval --score FILE --dataset science|tooluse|arithmetic --output DIR [--protocol paper|strict]`

The first evaluates a model: it samples completions and scores them. The second scores an existing
inference file without a model (ours, the CaOPD reference's, or any engine's in that format: a JSON list of
records with `response` and `golden_answer`, eval/protocols.py). Both write inference.json (the scored
records), metrics.json and reliability.png into DIR (eval/report.py) and print the metrics table.

--protocol (eval/protocols.py) picks the scoring rules and, with --model, the decoding defaults: `paper` (the
default) is the reference's eval code, greedy, 2048 new tokens on science and 1024 elsewhere; `strict` is our
training verifiers and exact bin edges, temperature 1.0, 1024 new tokens. --greedy, --temperature and
--max_new_tokens override the decoding; metrics.json records the protocol and the decoding used.
--confidence expected re-reads each stated confidence as the mean of the model's distribution over the values it
could have written (metrics.json's `confidence_readout`; inference.json keeps `stated_confidence`).

The model is an HF folder, a .gguf file, or an Orbax checkpoint / run folder of this project (latest step,
or --step). A training run folder also supplies the prompt wording it was trained with (its config.json);
`--prompts CONFIG.py` takes a training config's wording instead (e.g. a base model with its runs' few-shot
turns); otherwise distill/prompts.py's defaults.
"""

import argparse
import json
import os
import sys

from caopd_jax import compilation_cache
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError
from caopd_jax.eval.protocols import PROTOCOLS, TASK_VERIFIERS, Protocol, get_protocol
from caopd_jax.eval.report import metrics_table, write_report
from caopd_jax.eval.scoring import read_inference, samples_per_question, score, summarise


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m caopd_jax.eval", description=__doc__.split("\n\n")[0])
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--model", help="HF folder, .gguf file, or caopd-jax checkpoint / run folder")
  source.add_argument("--score", metavar="FILE", help="score this inference file (JSON list of records with "
                      "response and golden_answer) instead of evaluating a model")
  p.add_argument("--step", type=int, default=None, help="step of a run folder (default: latest)")
  p.add_argument("--dataset", required=True, help="science, tooluse, arithmetic, a save_to_disk folder or .jsonl "
                 "(with --score: the name whose rules grade the file)")
  p.add_argument("--protocol", default="paper", choices=list(PROTOCOLS), help="scoring rules and decoding defaults: "
                 "paper (the reference's eval, greedy) or strict (our verifiers, temperature 1.0); default paper")
  p.add_argument("--split", default="eval", help="split of a named dataset (default: eval)")
  p.add_argument("--data_dir", default=None, help="root of the named datasets (science, tooluse): the reference "
                 "repository's data/ folder or ours; default $CAOPD_DATA_DIR, else ./data")
  p.add_argument("--output", required=True, help="folder for inference.json, metrics.json, reliability.png")
  p.add_argument("--num_samples", type=int, default=1, help="completions per example (K)")
  p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the protocol's)")
  p.add_argument("--greedy", action="store_true", help="greedy decoding (the paper protocol's default); K=1")
  p.add_argument("--max_new_tokens", type=int, default=None, help="default: the protocol's for the dataset, at most "
                 "what the model's context leaves after the longest prompt")
  p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only")
  p.add_argument("--batch_size", type=int, default=64, help="examples per rollout batch")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--arithmetic_examples", type=int, default=500, help="size of the arithmetic eval split")
  p.add_argument("--difficulty", default="1,2", help="arithmetic levels to mix, e.g. 1 or 1,2 (see data/arithmetic.py)")
  p.add_argument("--prompts", default=None, help="a training config file whose prompt wording to use (e.g. to "
                 "evaluate a base model with the prompts its runs train with); default: the run's, else built-in")
  p.add_argument("--confidence", default="stated", choices=["stated", "expected"], help="stated: the value each "
                 "completion wrote (default); expected: the mean of the model's distribution over the values it "
                 "could have written there (eval/expected_confidence.py), e.g. for greedy decoding")
  p.add_argument("--no_progress", action="store_true")
  return p


def _prompt_config(model: str, config_file: str | None):
  """The PromptConfig of --prompts (a training config file), else of a training run folder (its config.json),
  else the defaults."""
  from caopd_jax.distill.prompts import PromptConfig
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


def _decoding(args, protocol: Protocol, task: str, room: int) -> tuple[float, int]:
  """(temperature, max_new_tokens): the flags where given, else the protocol's defaults for `task`, the new tokens
  capped at `room` (the model's context less the longest prompt) with a note."""
  if args.greedy and args.temperature is not None:
    raise CaopdError("--greedy means temperature 0; give --greedy or --temperature, not both")
  temperature = 0.0 if args.greedy else protocol.temperature if args.temperature is None else args.temperature
  if temperature == 0 and args.num_samples > 1:
    how = ("--greedy" if args.greedy else f"--temperature {args.temperature}" if args.temperature is not None
           else f"the {protocol.name} protocol's default")
    raise CaopdError(f"greedy decoding ({how}) gives one completion per example; give --temperature T to sample "
                     f"--num_samples {args.num_samples}, or drop --num_samples")
  if args.max_new_tokens:
    return temperature, args.max_new_tokens
  if room < 1:
    raise CaopdError(f"the longest prompt leaves no room for new tokens in the model's context ({room} tokens "
                     "left); use shorter prompts (--prompts) or a model with a longer context")
  if room < protocol.new_tokens(task):
    print(f"max_new_tokens: {room}, what the model's context leaves after the longest prompt (the {protocol.name} "
          f"protocol's default is {protocol.new_tokens(task)}; --max_new_tokens sets it)")
  return temperature, min(room, protocol.new_tokens(task))


def _score(args, protocol: Protocol) -> int:
  """--score FILE: grade an inference file's records, write the report, print the table."""
  if args.dataset not in TASK_VERIFIERS:
    raise CaopdError(f"--score grades with the rules of a named dataset: --dataset {' or '.join(TASK_VERIFIERS)}; "
                     f"got {args.dataset!r}")
  given = {"--step": args.step, "--prompts": args.prompts, "--limit": args.limit, "--greedy": args.greedy or None,
           "--temperature": args.temperature, "--max_new_tokens": args.max_new_tokens,
           "--num_samples": None if args.num_samples == 1 else args.num_samples,
           "--confidence": None if args.confidence == "stated" else args.confidence}
  model_only = [flag for flag, value in given.items() if value is not None]
  if model_only:
    raise CaopdError(f"{', '.join(model_only)} applies to --model only; --score reads finished completions")
  records = read_inference(args.score)
  records = score(records, [TASK_VERIFIERS[args.dataset]] * len(records), protocol, args.score)
  summary = {**summarise(records, protocol, samples_per_question(records)), "decoding": None,
             "scored_file": os.path.abspath(args.score)}
  stem = os.path.splitext(os.path.basename(args.score))[0]
  name = os.path.basename(os.path.dirname(os.path.abspath(args.score))) if stem == "inference" else stem
  write_report(args.output, name, records, summary)
  print(metrics_table({name: summary}))
  print(f"{len(records)} records of {args.score} scored under the {protocol.name} protocol -> {args.output}/")
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  compilation_cache.enable()
  protocol = get_protocol(args.protocol)
  if args.score:
    return _score(args, protocol)
  if args.num_samples < 1 or (args.max_new_tokens or 1) < 1 or (args.limit is not None and args.limit < 1):
    raise CaopdError("--num_samples, --max_new_tokens and --limit must be >= 1")
  import jax.numpy as jnp
  from caopd_jax import weights
  from caopd_jax.data.sources import load_examples
  from caopd_jax.eval.core import evaluate, longest_prompt
  from caopd_jax.tokenizers import load_tokenizer
  try:
    levels = [int(level) for level in args.difficulty.split(",")]
  except ValueError:
    raise CaopdError(f"--difficulty={args.difficulty!r}: give levels like 1 or 1,2") from None
  examples = load_examples(args.dataset, args.split, num_examples=args.arithmetic_examples, seed=args.seed,
                           difficulty=levels, data_dir=args.data_dir)[:args.limit]
  config, params = weights.load(args.model, jnp.dtype(args.dtype), args.step)
  tokenizer = load_tokenizer(weights.tokenizer_path(args.model, args.step))
  prompts = _prompt_config(args.model, args.prompts)
  room = config.max_position_embeddings - longest_prompt(tokenizer, examples, prompts)
  temperature, max_new_tokens = _decoding(args, protocol, examples[0].task if examples else args.dataset, room)
  records, summary = evaluate(config, params, tokenizer, examples, prompts,
                              max_new_tokens=max_new_tokens, num_samples=args.num_samples, temperature=temperature,
                              batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress,
                              protocol=protocol.name, confidence=args.confidence)
  name = os.path.basename(os.path.normpath(args.model))
  write_report(args.output, name, records, summary)
  print(metrics_table({name: summary}))
  print(f"{len(records)} completions of {len(examples)} examples ({protocol.name} protocol, temperature "
        f"{temperature}, {max_new_tokens} new tokens) -> {args.output}/")
  return 0


if __name__ == "__main__":
  run_main(main)
