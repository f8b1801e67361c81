"""Convert weights between a Hugging Face folder, a GGUF file and a caopd-jax Orbax checkpoint.

    python -m caopd_jax.convert SRC DST --to {orbax,hf,gguf} [--dtype bfloat16] [--gguf_type q8_0] [--step N]

SRC is any source `caopd_jax.models.load` reads (HF folder, .gguf, Orbax
checkpoint or run folder). The tokenizer travels with the weights when SRC has
one. Output is written atomically: on any error nothing is left at DST.
"""

import argparse
import os
import sys
import time

import jax.numpy as jnp

from caopd_jax import weights
from caopd_jax.cli import run_main
from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.tokenizers import load_tokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m caopd_jax.convert", description=__doc__.split("\n\n")[0])
  parser.add_argument("src", help="HF model folder, .gguf file, or caopd-jax Orbax checkpoint / run folder")
  parser.add_argument("dst", help="output folder (must not exist unless --overwrite)")
  parser.add_argument("--to", required=True, choices=("orbax", "hf", "gguf"),
                      help="output format: Orbax checkpoint folder, HF folder, or one .gguf file")
  parser.add_argument("--gguf_type", default="f32", choices=("f32", "f16", "q8_0"),
                      help="weight type of 2-D tensors with --to gguf (norms and biases stay f32)")
  parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="dtype of the saved weights")
  parser.add_argument("--step", type=int, default=None, help="step of an Orbax run folder (default: latest)")
  parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists (after success only)")
  return parser.parse_args(argv)


def _source_tokenizer(src: str, step: int | None):
  """The tokenizer stored with SRC, or None (with a warning) when it has none."""
  try:
    return load_tokenizer(weights.tokenizer_path(src, step))
  except InputNotFoundError:
    print(f"warning: {src} has no tokenizer; writing weights only", file=sys.stderr)
    return None


def main(argv=None) -> int:
  args = parse_args(argv)
  if os.path.abspath(args.src) == os.path.abspath(args.dst):
    raise CaopdError("SRC and DST are the same path; write to a new folder")
  start = time.time()
  print(f"loading {args.src} ({weights.source_kind(args.src)}) as {args.dtype} ...", file=sys.stderr)
  config, params = weights.load(args.src, dtype=DTYPES[args.dtype], step=args.step)
  tokenizer = _source_tokenizer(args.src, args.step)
  print(f"writing {args.to} to {args.dst} ...", file=sys.stderr)
  weights.save(args.dst, config, params, format=args.to, tokenizer=tokenizer, overwrite=args.overwrite,
              gguf_type=args.gguf_type)
  print(f"converted {config.family} ({config.num_params() / 1e6:.1f}M params) to {args.dst} "
        f"in {time.time() - start:.1f}s")
  return 0


def cli() -> None:
  run_main(main)


if __name__ == "__main__":
  cli()
