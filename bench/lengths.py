"""Completion lengths for benchmarks of random-weight models, which rarely emit end-of-sequence on their own.

    draw("lognormal:300:0.6", (4, 8), maximum=1024, seed=0)   # int32 [4, 8]: median 300, sigma 0.6, clipped
    draw("full", (4, 8), maximum=1024)                         # every row runs to the budget

Both pipelines of a comparison take the same spec and seed, so their rows stop at the same lengths: ours through
`rollout.sample(row_budgets=...)`, HF `generate` through a logits processor that forces end-of-sequence.
"""

import numpy as np


def draw(spec: str, shape: tuple, maximum: int, seed: int = 0) -> np.ndarray:
  """int32 `shape` lengths in 1..maximum from `spec`: "full" or "lognormal:MEDIAN:SIGMA"."""
  if spec == "full":
    return np.full(shape, maximum, np.int32)
  kind, *numbers = spec.split(":")
  if kind != "lognormal" or len(numbers) != 2:
    raise ValueError(f"length spec {spec!r}: use 'full' or 'lognormal:MEDIAN:SIGMA' (e.g. lognormal:300:0.6)")
  median, sigma = map(float, numbers)
  lengths = np.random.default_rng(seed).lognormal(np.log(median), sigma, size=shape)
  return np.clip(np.rint(lengths), 1, maximum).astype(np.int32)
