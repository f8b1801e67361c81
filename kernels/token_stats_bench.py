"""The kernels' workbench: the token-stats backends (pallas / xla_chunked / naive) on one accelerator.

    python kernels/token_stats_bench.py check            # bf16 kernels vs a float32 reference (error table)
    python kernels/token_stats_bench.py sweep            # pallas tile choices at N 8192, D 1024, V 151936
                                                         # (N, D: the first of --rows, --dims)
    python kernels/token_stats_bench.py time [--rows 8192 32768] [--dims 1024 2048 4096] [--vocab_runs 1]

Every case is the full-vocabulary mode of the loss: student and teacher, both KLs, entropy,
log p(y), bf16 inputs. "matmul" is the unavoidable work done by plain bf16 matmuls alone: the two
forward logit products (forward), plus dH and dW (forward + backward). TFLOP/s counts that work
(2 N D V per product) over the measured time, against the H200's 792 bf16 TFLOP/s. Peak memory
is XLA's compiled temp + argument + output size. Prints one JSON line per case.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax.kernels.fused_token_stats import token_stats_pallas
from caopd_jax.losses.token_stats import token_stats, token_stats_naive

VOCAB = 151936
PEAK_TFLOPS = 792.0
IMPLS = {"pallas": token_stats_pallas, "xla_chunked": token_stats, "naive": token_stats_naive}


def _inputs(n, d, v, dtype=jnp.bfloat16, seed=0):
  rng = np.random.default_rng(seed)
  h, ht = (jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d) * 4, dtype) for _ in range(2))
  w, wt = (jnp.asarray(rng.normal(size=(d, v)), dtype) for _ in range(2))
  return h, w, jnp.asarray(rng.integers(0, v, n)), ht, wt


def _loss(impl, h, w, y, ht, wt, **kw):
  s = impl(h, w, y, ht, wt, with_kl=True, **kw)
  return jnp.sum(0.3 * s.logsumexp + s.logprob - 0.7 * s.entropy + 0.5 * s.kl_ts + 0.9 * s.kl_st)


def _functions(impl, y, ht, wt, **kw):
  fwd = jax.jit(lambda h, w: _loss(impl, h, w, y, ht, wt, **kw))
  both = jax.jit(jax.value_and_grad(lambda h, w: _loss(impl, h, w, y, ht, wt, **kw), argnums=(0, 1)))
  return fwd, both


def _matmuls(h, w, ht, wt):
  """The plain bf16 products: forward (student and teacher logits), and forward + dH + dW."""
  fwd = jax.jit(lambda h, w, ht, wt: (h @ w, ht @ wt))
  def both(h, w, ht, wt):
    s, t = h @ w, ht @ wt
    return s, t, s @ w.T, h.T @ t     # dH- and dW-shaped products of the same sizes
  return fwd, jax.jit(both)


def _time(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats * 1e3


def _peak_gib(fn, *args):
  mem = fn.lower(*args).compile().memory_analysis()
  if mem is None:
    return None
  return (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**30


def check(args):
  """Max relative error of bf16 outputs and gradients against float32 naive at HIGHEST precision."""
  n, d, v = 2048, 1024, VOCAB
  h, w, y, ht, wt = _inputs(n, d, v)
  f32 = [x.astype(jnp.float32) for x in (h, w, ht, wt)]
  with jax.default_matmul_precision("highest"):
    ref = jax.jit(jax.value_and_grad(lambda h, w: _loss(token_stats_naive, h, w, y, f32[2], f32[3]),
                                     argnums=(0, 1)))(f32[0], f32[1])
    ref_stats = jax.jit(lambda: token_stats_naive(f32[0], f32[1], y, f32[2], f32[3], with_kl=True))()
  rel = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)) / jnp.max(jnp.abs(b)))  # noqa: E731
  for name, impl in IMPLS.items():
    stats = jax.jit(lambda: impl(h, w, y, ht, wt, with_kl=True))()
    (loss, (dh, dw)) = _functions(impl, y, ht, wt)[1](h, w)
    row = {"check": name, "n": n, "d": d, "v": v, "loss_rel": float(abs(loss - ref[0]) / abs(ref[0])),
           "dh_rel": rel(dh, ref[1][0]), "dw_rel": rel(dw, ref[1][1])}
    row.update({f"{f}_maxabs": float(jnp.max(jnp.abs(getattr(stats, f) - getattr(ref_stats, f))))
                for f in ("logsumexp", "logprob", "entropy", "kl_ts", "kl_st")})
    print(json.dumps(row), flush=True)


def sweep(args):
  n, d, v = args.rows[0], args.dims[0], VOCAB
  h, w, y, ht, wt = _inputs(n, d, v)
  for bn, bv, bd, warps, stages, backward, rows in [
      (64, 256, 64, 8, 3, "dlogits", 4096), (64, 256, 64, 8, 3, "dlogits", 8192), (64, 256, 32, 8, 3, "dlogits", 8192),
      (128, 128, 64, 8, 3, "dlogits", 8192), (64, 128, 64, 4, 3, "dlogits", 8192), (128, 256, 64, 8, 2, "dlogits", 8192),
      (64, 256, 64, 8, 4, "dlogits", 8192), (128, 256, 32, 8, 3, "dlogits", 8192)]:
    kw = dict(block_n=bn, chunk_size=bv, block_d=bd, num_warps=warps, num_stages=stages, backward=backward,
              chunk_rows=rows)
    row = {"sweep": kw}
    for label, fn in zip(("fwd_ms", "fwd_bwd_ms"), _functions(token_stats_pallas, y, ht, wt, **kw)):
      try:
        row[label] = round(_time(fn, h, w, repeats=3), 2)
      except Exception as e:  # report and go on: some tiles exceed shared memory or registers
        row[label] = f"{type(e).__name__}: {str(e)[:160]}"
    print(json.dumps(row), flush=True)


def time_cases(args):
  for n in args.rows:
    for d in args.dims:
      h, w, y, ht, wt = _inputs(n, d, VOCAB)
      flop = 2 * n * d * VOCAB
      mm_fwd, mm_both = _matmuls(h, w, ht, wt)
      base = {"n": n, "d": d, "v": VOCAB}
      row = dict(base, impl="matmul", fwd_ms=_time(mm_fwd, h, w, ht, wt), fwd_bwd_ms=_time(mm_both, h, w, ht, wt))
      print(json.dumps(row), flush=True)
      matmul_ms = row["fwd_bwd_ms"]
      for name in args.impls:
        row = dict(base, impl=name)
        kw = {"vocab_runs": args.vocab_runs} if name == "pallas" and args.vocab_runs else {}
        row.update(kw)
        for label, fn, work in zip(("fwd", "fwd_bwd"), _functions(IMPLS[name], y, ht, wt, **kw),
                                   (2 * flop, 4 * flop)):
          try:
            ms = _time(fn, h, w)
            row.update({f"{label}_ms": round(ms, 2), f"{label}_tflops": round(work / ms / 1e9, 1),
                        f"{label}_peak_gib": _peak_gib(fn, h, w)})
          except Exception as e:  # out of memory, for naive at the large shapes
            row[f"{label}_error"] = f"{type(e).__name__}: {str(e)[:160]}"
        if "fwd_bwd_ms" in row:
          row["vs_matmul"] = round(row["fwd_bwd_ms"] / matmul_ms, 2)
        print(json.dumps(row), flush=True)
      del h, w, ht, wt


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("mode", choices=["check", "sweep", "time"])
  parser.add_argument("--rows", type=int, nargs="+", default=[8192, 32768])
  parser.add_argument("--dims", type=int, nargs="+", default=[1024, 2048, 4096])
  parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
  parser.add_argument("--vocab_runs", type=int, default=0,
                      help="time: the pallas forward's runs of vocabulary tiles (0: as many as fill the GPU's SMs)")
  args = parser.parse_args()
  print(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__}), flush=True)
  {"check": check, "sweep": sweep, "time": time_cases}[args.mode](args)


if __name__ == "__main__":
  main()
