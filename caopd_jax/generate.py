"""Text generation from any supported checkpoint with the batched KV-cache sampler.

    python -m caopd_jax.generate --model PATH [--chat] --prompt TEXT [--prompt TEXT ...]
        [--num_samples K] [--temperature T] [--top_p P] [--top_k K] [--max_new_tokens N] [--seed S]

Every prompt gets K samples in one batch; temperature 0 (the default) is greedy.
A progress bar runs on stderr while decoding; the completions go to stdout.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from caopd_jax import compilation_cache, rollout, weights
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError
from caopd_jax.tokenizers import load_tokenizer


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m caopd_jax.generate", description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="HF folder, .gguf file, or caopd-jax Orbax checkpoint")
  parser.add_argument("--prompt", required=True, action="append",
                      help="prompt text (the user message with --chat); repeat for a batch of prompts")
  parser.add_argument("--chat", action="store_true", help="wrap each prompt with the model's chat template")
  parser.add_argument("--system", default=None, help="system message (with --chat)")
  parser.add_argument("--num_samples", type=int, default=1, help="completions per prompt (K)")
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0, help="0 = no top-k filter")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args(argv)
  for ok, message in ((args.max_new_tokens >= 1, "--max_new_tokens must be at least 1"),
                      (args.num_samples >= 1, "--num_samples must be at least 1"),
                      (args.temperature >= 0, "--temperature must be >= 0"),
                      (0 < args.top_p <= 1, "--top_p must be in (0, 1]"), (args.top_k >= 0, "--top_k must be >= 0")):
    if not ok:
      parser.error(message)
  if args.num_samples > 1 and args.temperature == 0:
    print("warning: greedy decoding (--temperature 0) gives K identical samples", file=sys.stderr)
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  compilation_cache.enable()
  start = time.time()
  config, params = weights.load(args.model, dtype=jnp.dtype(args.dtype))
  tokenizer = load_tokenizer(weights.tokenizer_path(args.model))
  texts = args.prompt
  if args.chat:
    system = [{"role": "system", "content": args.system}] if args.system else []
    texts = [tokenizer.apply_chat_template(system + [{"role": "user", "content": p}]) for p in args.prompt]
  prompts = [tokenizer.encode(t) for t in texts]
  for i, p in enumerate(prompts):
    if not p:
      raise CaopdError(f"prompt {i + 1} is empty after tokenization")
  print(f"[{config.family}, {config.num_params() / 1e6:.0f}M params, loaded in {time.time() - start:.1f}s; "
        f"{len(prompts)} prompt(s) x {args.num_samples} sample(s)]", file=sys.stderr)
  start = time.time()
  out = rollout.sample(config, params, prompts, jax.random.key(args.seed), num_samples=args.num_samples,
                       max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       top_k=args.top_k, stop_token_ids=tuple(tokenizer.stop_ids) + config.eos_token_ids,
                       progress=True)
  seconds = time.time() - start
  for i, text in enumerate(texts):
    print(f"=== prompt {i + 1}/{len(texts)} ===\n{text}")
    for k in range(args.num_samples):
      n = int(out.lengths[i, k])
      how = "stopped" if out.stopped[i, k] else "truncated"
      print(f"--- sample {k + 1}/{args.num_samples} ({n} tokens, {how}) ---")
      print(tokenizer.decode(out.tokens[i, k, :n].tolist()))
  print(f"[{int(out.lengths.sum())} tokens in {seconds:.1f}s, compile included]", file=sys.stderr)
  return 0


if __name__ == "__main__":
  run_main(main)
