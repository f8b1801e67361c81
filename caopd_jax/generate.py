"""Greedy text generation from any supported checkpoint, streamed to the terminal.

    python -m caopd_jax.generate --model PATH [--chat] --prompt TEXT [--max_new_tokens N]

This first version recomputes the whole sequence for each new token (one jitted
forward over a fixed-size buffer, so it compiles once); the batched KV-cache
sampler with temperature, top-p/top-k and K samples per prompt replaces the
decoding loop in the rollout issue.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.weights import orbax_checkpoint


def _next_token_fn(config: ModelConfig):
  @jax.jit
  def next_token(params, buffer, length):
    """buffer int [1, N] holding `length` real tokens -> argmax token after them."""
    mask = jnp.arange(buffer.shape[1])[None, :] < length
    hidden = models.hidden_states(config, params, buffer, mask)
    last = jax.lax.dynamic_index_in_dim(hidden[0], length - 1, keepdims=False)
    return jnp.argmax(last @ models.unembedding(config, params))
  return next_token


def greedy(config: ModelConfig, params: dict, prompt_ids: list[int], max_new_tokens: int,
           stop_ids: tuple[int, ...], on_token=None) -> list[int]:
  """Greedy continuation of `prompt_ids` (up to `max_new_tokens`, stopping after a stop id)."""
  if not prompt_ids:
    raise CaopdError("the prompt is empty after tokenization")
  total = len(prompt_ids) + max_new_tokens
  if total > config.max_position_embeddings:
    raise CaopdError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                     f"context of {config.max_position_embeddings} tokens")
  buffer = np.zeros((1, total), np.int32)
  buffer[0, :len(prompt_ids)] = prompt_ids
  next_token = _next_token_fn(config)
  out = []
  for length in range(len(prompt_ids), total):
    token = int(next_token(params, buffer, length))
    buffer[0, length] = token
    out.append(token)
    if on_token is not None:
      on_token(token)
    if token in stop_ids:
      break
  return out


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m caopd_jax.generate", description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True, help="HF folder, .gguf file, or caopd-jax Orbax checkpoint")
  parser.add_argument("--prompt", required=True, help="the prompt text (the user message with --chat)")
  parser.add_argument("--chat", action="store_true", help="wrap the prompt with the model's chat template")
  parser.add_argument("--system", default=None, help="system message (with --chat)")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args(argv)
  if args.max_new_tokens < 1:
    parser.error("--max_new_tokens must be at least 1")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  start = time.time()
  config, params = models.load(args.model, dtype=jnp.dtype(args.dtype))
  tok_source = args.model
  if models.source_kind(args.model) == "orbax":
    tok_source = orbax_checkpoint.resolve(args.model)
  tokenizer = load_tokenizer(tok_source)
  text = args.prompt
  if args.chat:
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    text = tokenizer.apply_chat_template(messages + [{"role": "user", "content": args.prompt}],
                                         add_generation_prompt=True)
  prompt_ids = tokenizer.encode(text)
  print(f"[{config.family}, {config.num_params() / 1e6:.0f}M params, loaded in {time.time() - start:.1f}s; "
        f"prompt {len(prompt_ids)} tokens]", file=sys.stderr)
  sys.stdout.write(text)
  stop_ids = tuple(tokenizer.stop_ids) + tuple(config.eos_token_ids)
  start = time.time()
  out, shown = [], [""]

  def stream(token):
    """Prints the newly completed text (decoding the whole tail keeps multi-byte characters intact)."""
    out.append(token)
    text_so_far = tokenizer.decode(out)
    sys.stdout.write(text_so_far[len(shown[0]):])
    sys.stdout.flush()
    shown[0] = text_so_far

  greedy(config, params, prompt_ids, args.max_new_tokens, stop_ids, on_token=stream)
  print()
  print(f"[{len(out)} tokens in {time.time() - start:.1f}s]", file=sys.stderr)
  return 0


if __name__ == "__main__":
  run_main(main)
