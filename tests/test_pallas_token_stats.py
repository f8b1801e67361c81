"""The Pallas token-stats kernels, GPU and TPU layouts (interpret mode on CPU), against a float64 reference.

Forward outputs within 1e-4 for float32 inputs; gradients w.r.t. h and W by `jax.vjp` with random
cotangents on every output, against float64 finite-free closed forms (jax.grad of the naive
reference in float64). Compiles for real TPUs: tests/test_tpu_compile.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax.kernels import token_stats_tpu
from caopd_jax.kernels.fused_token_stats import token_stats_pallas, vocab_runs
from caopd_jax.losses.token_stats import token_stats_naive

TILE = 16
FIELDS = ("logsumexp", "logprob", "entropy", "teacher_logprob", "kl_ts", "kl_st")


def _reference(h, w, y, ht, wt, temperature):
  """float64 naive statistics (jax x64 scoped to this call)."""
  with jax.enable_x64(True):
    f64 = lambda x: jnp.asarray(np.asarray(x, np.float64))  # noqa: E731
    return token_stats_naive(f64(h), f64(w), jnp.asarray(np.asarray(y)), f64(ht), f64(wt),
                             temperature=temperature, with_kl=True)


def _inputs(n, v, d=8, scale=1.0, seed=0, same_teacher=False, zero_w=False, negative=False):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, d)).astype(np.float32) * scale
  w = np.zeros((d, v), np.float32) if zero_w else rng.normal(size=(d, v)).astype(np.float32)
  if negative:
    h, w = np.abs(h), -np.abs(w)          # every logit < 0
  ht, wt = (h, w) if same_teacher else (rng.normal(size=(n, d)).astype(np.float32),
                                        rng.normal(size=(d, v)).astype(np.float32))
  y = rng.integers(0, v, n)
  y[: min(n, 3)] = [t for t in (0, min(TILE - 1, v - 1), v - 1)][: min(n, 3)]   # targets at tile edges
  return h, w, y, ht, wt


CASES = [(5, 4 * TILE), (5, 4 * TILE - 1), (5, 4 * TILE + 1), (7, 53), (1, TILE // 2 + 3), (33, 29)]


def _check_against_float64(h, w, y, ht, wt, **layout):
  """Forward outputs and vjp gradients (random cotangents on every output) of the kernels vs float64."""
  temperature, n = 0.9, h.shape[0]
  kernel = lambda h, w: token_stats_pallas(h, w, jnp.asarray(y), jnp.asarray(ht), jnp.asarray(wt),  # noqa: E731
                                           temperature=temperature, with_kl=True, chunk_size=TILE, block_n=8,
                                           **layout)
  ours = kernel(jnp.asarray(h), jnp.asarray(w))
  ref = _reference(h, w, y, ht, wt, temperature)
  for field in FIELDS:
    np.testing.assert_allclose(np.asarray(getattr(ours, field)), np.asarray(getattr(ref, field)), atol=1e-4,
                               rtol=1e-4, err_msg=field)
  cotangents = [np.random.default_rng(1).normal(size=n).astype(np.float32) for _ in FIELDS]

  def scalar(fn, h, w):
    stats = fn(h, w)
    return sum(jnp.sum(getattr(stats, f) * c) for f, c in zip(FIELDS, cotangents))

  dh, dw = jax.grad(lambda h, w: scalar(kernel, h, w), argnums=(0, 1))(jnp.asarray(h), jnp.asarray(w))
  with jax.enable_x64(True):
    naive = lambda h, w: token_stats_naive(h, w, jnp.asarray(y), jnp.asarray(ht, jnp.float64),  # noqa: E731
                                           jnp.asarray(wt, jnp.float64), temperature=temperature, with_kl=True)
    rh, rw = jax.grad(lambda h, w: scalar(naive, h, w), argnums=(0, 1))(jnp.asarray(h, jnp.float64),
                                                                         jnp.asarray(w, jnp.float64))
  scale = lambda r: max(float(np.max(np.abs(r))), 1e-3)  # noqa: E731
  assert float(np.max(np.abs(np.asarray(dh) - np.asarray(rh)))) <= 1e-4 * scale(rh) + 1e-5
  assert float(np.max(np.abs(np.asarray(dw) - np.asarray(rw)))) <= 1e-4 * scale(rw) + 1e-5
  return ours


@pytest.mark.parametrize("n, v", CASES)
@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("variant", ["plain", "peaky", "negative", "zero_w", "same_teacher"])
def test_forward_and_gradients_match_float64(n, v, variant, platform):
  """Both layouts: the GPU one (a program per row block looping over the tiles) and the TPU one (a program per
  row block, tile and D chunk, accumulators in VMEM scratch across the grid)."""
  h, w, y, ht, wt = _inputs(n, v, scale=30.0 if variant == "peaky" else 1.0, negative=variant == "negative",
                            zero_w=variant == "zero_w", same_teacher=variant == "same_teacher")
  ours = _check_against_float64(h, w, y, ht, wt, platform=platform)
  if variant == "zero_w":
    np.testing.assert_allclose(np.asarray(ours.entropy), np.log(v), rtol=1e-6)
  if variant == "same_teacher":
    np.testing.assert_allclose(np.asarray(ours.kl_st), 0.0, atol=1e-5)


@pytest.mark.parametrize("n, v", [(5, 4 * TILE - 1), (7, 53), (33, 29)])
@pytest.mark.parametrize("platform, backward, block_d, d, chunk_rows", [
    ("gpu", "dlogits", 4, 8, 16), ("gpu", "dlogits", 8, 12, 4096), ("gpu", "atomic", 4, 8, None),
    ("gpu", "atomic", 8, 12, None), ("gpu", "atomic", None, 8, None), ("tpu", "dlogits", 4, 12, 16),
    ("tpu", "dlogits", 8, 12, 4096)])
def test_d_chunks_and_every_backward_match_float64(n, v, platform, backward, block_d, d, chunk_rows):
  """Tile matmuls in D chunks (D padded to whole chunks; on the TPU layout one grid step per chunk) with each
  backward strategy; dlogits with chunks of 16 rows covers several row chunks and a padded last one."""
  h, w, y, ht, wt = _inputs(n, v, d=d, scale=3.0)
  _check_against_float64(h, w, y, ht, wt, platform=platform, backward=backward, block_d=block_d,
                         chunk_rows=chunk_rows or 4096)


@pytest.mark.parametrize("runs", [1, 2, 3, 7])
@pytest.mark.parametrize("variant", ["plain", "peaky", "negative"])
def test_the_gpu_forward_split_into_vocabulary_runs_matches_float64(runs, variant):
  """The GPU forward with the vocabulary's 7 tiles (V 107) in 1, 2, 3 (tiles 0-2, 3-5, 6 and two padding tiles) or
  7 runs, joined by merge_carries. The peaky inputs put each row's largest logits in different runs by factors of
  e^30, so every run's sums are moved to a max far above its own; the student-only statistics as well."""
  h, w, y, ht, wt = _inputs(9, 7 * TILE - 5, scale=30.0 if variant == "peaky" else 1.0,
                            negative=variant == "negative")
  _check_against_float64(h, w, y, ht, wt, platform="gpu", vocab_runs=runs)
  alone = token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), chunk_size=TILE, block_n=8,
                             vocab_runs=runs)
  ref = _reference(h, w, y, h, w, 1.0)
  for field in ("logsumexp", "logprob", "entropy"):
    np.testing.assert_allclose(np.asarray(getattr(alone, field)), np.asarray(getattr(ref, field)), atol=1e-4,
                               rtol=1e-4, err_msg=field)


def test_the_vocabulary_runs_fill_whole_waves_of_programs():
  """By hand, Qwen3's 594 tiles of 256: 4,096 rows in blocks of 64 on 132 SMs take 2 runs (128 programs, 97% of one
  wave; 1 run fills 48%, 4 runs 256 of 264 (the fewer wins a tie)); 8,192 rows 1 (128 programs); 100 blocks 5 (500
  programs in 4 waves of 132: 95%; 1 run: 76%); a lone block as many runs as allowed; never more runs than tiles.
  A run count below 1 is refused with its name."""
  assert vocab_runs(64, 594, 132) == 2
  assert vocab_runs(128, 594, 132) == 1
  assert vocab_runs(512, 594, 132) == 1
  assert vocab_runs(100, 594, 132) == 5
  assert vocab_runs(1, 594, 132) == 8
  assert vocab_runs(1, 3, 132) == 3
  h, w, y, _, _ = _inputs(3, 37)
  with pytest.raises(ValueError, match="vocab_runs must be a positive number of runs .* got 0"):
    token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), vocab_runs=0)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_student_only_and_padded_rows_get_no_gradient(platform):
  h, w, y, _, _ = _inputs(3, 37)
  stats = token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), chunk_size=TILE, block_n=8,
                             platform=platform)
  assert stats.teacher_logprob is None and stats.kl_ts is None
  ref = _reference(h, w, y, h, w, 1.0)
  np.testing.assert_allclose(np.asarray(stats.logprob), np.asarray(ref.logprob), atol=1e-4)
  # rows 3..7 of the row block are padding: a loss on row 0 only must leave the other rows' dh at 0
  dh = jax.grad(lambda h: token_stats_pallas(h, jnp.asarray(w), jnp.asarray(y), chunk_size=TILE, block_n=8,
                                             platform=platform).logprob[0])(jnp.asarray(h))
  assert np.all(np.asarray(dh)[1:] == 0) and np.any(np.asarray(dh)[0] != 0)


def test_tpu_tiles_are_sized_to_the_vmem_limit():
  """block_d_for pads D by at most 127 columns; vmem_bytes by hand at Qwen3-8B's head (bf16, with the teacher):
  per model h [512, 4096] + two W tiles [1024, 512] (12 MiB), 15 lane-wide float32 row vectors (3.75 MiB), the dS
  block twice (1 MiB) and 8 float32 [512, 512] (8 MiB); tiles_for takes the largest row block within 3/4 of the
  limit (v4's 16 MiB: 128 rows, 9.19 MiB; 256 would need 14.4), never more rows than there are (rounded to 8)."""
  assert [token_stats_tpu.block_d_for(d) for d in (4096, 3584, 2560, 576, 200, 5120)] == [1024, 896, 640, 640,
                                                                                            256, 1024]
  mib = 2**20
  assert token_stats_tpu.vmem_bytes(512, 512, 1024, 4096, 2, True) == 12 * mib + 3.75 * mib + mib + 8 * mib
  assert token_stats_tpu.tiles_for(2048, 4096, 2, True, 64 * mib) == (512, 512, 1024)
  assert token_stats_tpu.tiles_for(2048, 4096, 2, True, 16 * mib) == (128, 512, 1024)
  assert token_stats_tpu.vmem_bytes(128, 512, 1024, 4096, 2, True) == 9633792
  assert token_stats_tpu.vmem_bytes(256, 512, 1024, 4096, 2, True) > 0.75 * 16 * mib
  assert token_stats_tpu.tiles_for(20, 576, 4, False, 16 * mib) == (24, 512, 640)
  assert token_stats_tpu.tiles_for(8, 10**6, 2, True, 16 * mib) is None


def test_tpu_layout_with_the_tiles_tiles_for_picks():
  """The TPU layout (interpret mode) at the tiles tiles_for chooses for an odd shape: 20 rows (one block of 24),
  D 200 (one chunk of 256: 56 padded columns), V 700 (two tiles of 512, the second mostly masked)."""
  n, d, v = 20, 200, 700
  bn, bv, bd = token_stats_tpu.tiles_for(n, d, 4, True, 16 * 2**20)
  assert (bn, bv, bd) == (24, 512, 256)
  h, w, y, ht, wt = _inputs(n, v, d=d, scale=0.3)
  ours = token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), jnp.asarray(ht), jnp.asarray(wt),
                            with_kl=True, chunk_size=bv, block_n=bn, block_d=bd, platform="tpu")
  ref = _reference(h, w, y, ht, wt, 1.0)
  for field in FIELDS:
    np.testing.assert_allclose(np.asarray(getattr(ours, field)), np.asarray(getattr(ref, field)), atol=1e-4,
                               rtol=1e-4, err_msg=field)


def test_tpu_tiles_set_by_hand_must_fit_the_vmem_limit():
  h, w, y, ht, wt = _inputs(512, 1024, d=4096)
  with pytest.raises(ValueError, match=r"block_n 512, block_v 512, block_d 1024\) need about 37.8 MiB of VMEM, "
                                       r"more than the limit 16 MiB"):
    token_stats_pallas(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), jnp.asarray(ht), jnp.asarray(wt),
                       chunk_size=512, block_n=512, block_d=1024, platform="tpu", interpret=False,
                       vmem_limit=16 * 2**20)
