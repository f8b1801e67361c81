"""GPU check of the Pallas token-stats kernels against the naive reference, and a first timing.

    python bench/kernel_check.py [--out results.json]

float32 inputs under `jax.default_matmul_precision("highest")`; max |diff| of every output and of
the gradients w.r.t. h and W, then forward+backward time for pallas / xla_chunked / naive.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax.kernels.fused_token_stats import token_stats_pallas
from caopd_jax.losses.token_stats import token_stats, token_stats_naive

IMPLS = {"pallas": token_stats_pallas, "xla_chunked": token_stats, "naive": token_stats_naive}


def _loss(impl, h, w, y, ht, wt, **kw):
  s = impl(h, w, y, ht, wt, with_kl=True, **kw)
  return jnp.sum(s.logsumexp * 0.3 + s.logprob - 0.7 * s.entropy + 0.5 * s.kl_ts + 0.9 * s.kl_st)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  results = {"device": str(jax.devices()[0]), "jax": jax.__version__, "cases": []}
  for n, d, v, dtype in [(256, 128, 1000, "float32"), (512, 256, 4099, "float32"), (2048, 1024, 32768, "bfloat16"),
                         (8192, 1024, 151936, "bfloat16")]:
    rng = np.random.default_rng(0)
    dt = jnp.dtype(dtype)
    h, ht = (jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d) * 4, dt) for _ in range(2))
    w, wt = (jnp.asarray(rng.normal(size=(d, v)), dt) for _ in range(2))
    y = jnp.asarray(rng.integers(0, v, n))
    case = {"n": n, "d": d, "v": v, "dtype": dtype}
    with jax.default_matmul_precision("highest"):
      grads = {}
      for name, impl in IMPLS.items():
        fn = jax.jit(jax.value_and_grad(lambda h, w, impl=impl: _loss(impl, h, w, y, ht, wt), argnums=(0, 1)))
        try:
          out = jax.block_until_ready(fn(h, w))
          start = time.perf_counter()
          for _ in range(3):
            out = jax.block_until_ready(fn(h, w))
          case[f"{name}_fwd_bwd_ms"] = (time.perf_counter() - start) / 3 * 1e3
          grads[name] = out
        except Exception as e:  # report, keep going
          case[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
      if "pallas" in grads and "naive" in grads:
        (lp, (dhp, dwp)), (ln, (dhn, dwn)) = grads["pallas"], grads["naive"]
        rel = lambda a, b: float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))) /  # noqa: E731
                                 jnp.max(jnp.abs(b.astype(jnp.float32))))
        case.update(loss_rel=float(abs(lp - ln) / abs(ln)), dh_rel=rel(dhp, dhn), dw_rel=rel(dwp, dwn))
    print(json.dumps(case), flush=True)
    results["cases"].append(case)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
