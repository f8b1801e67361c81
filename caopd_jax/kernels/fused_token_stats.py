"""Pallas kernels: per-row softmax statistics of h @ W in one online pass over vocabulary tiles, and their VJP.

Same contract as `losses.token_stats` (the pure-JAX reference and fallback): from final hidden
states h [N, D], the unembedding W [D, V] and target ids y [N] (and the teacher's h_t, W_t) to
float32 per row: logsumexp, log p(y), entropy, and optionally log q(y), KL(q || p), KL(p || q),
never writing [N, V] to memory. Two kernel sets share the tile arithmetic (`token_stats_tiles.py`):
GPUs (Triton, here: one program per row block, W a pointer it loops over) and TPUs (Mosaic,
`token_stats_tpu.py`: every operand tiled, since a TPU block is a copy in VMEM).

Forward: a loop over vocabulary tiles (any V: W is zero-padded to whole tiles and the padded columns
are masked; padded rows are zero with zero cotangent; D is zero-padded to whole chunks).

Backward (custom_vjp): the logits' cotangent of a tile is recomputed from per-row residuals
(lse, entropy, teacher lse, KL_st), then
  - "dlogits" (the default): per chunk of `chunk_rows` rows a kernel writes dS [rows, V] (h's dtype)
    and two float32-accumulated matmuls give dH and the chunk's share of dW (workspace rows x V, not N x V);
  - "atomic" (NVIDIA GPUs): a 2-D grid of (row block, vocabulary tile) programs, each adding its
    dS W^T and H^T dS into float32 dH [N, D] and dW [D, V] with atomic adds, D in chunks, so that
    no program holds a [rows, D] accumulator (which does not fit a GPU SM at D >= 1024); 5x slower
    than dlogits on the H200.
The teacher gets no gradient. Which implementation a loss uses is kernels/registry.py's choice.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from caopd_jax.kernels import token_stats_tiles as tiles
from caopd_jax.kernels import token_stats_tpu
from caopd_jax.kernels.token_stats_tiles import KL_ST, KL_TS, LOGP, LSE, STATS, T_LOGP, Tiling
from caopd_jax.losses.token_stats import TokenStats, prepare_inputs

try:  # the Triton backend: Pallas' GPU path for kernels written with block specs, pl.ds slicing and atomics
  from jax.experimental.pallas import triton as pltriton
except ImportError:  # pragma: no cover - jaxlib without GPU Pallas
  pltriton = None

BACKWARDS = ("dlogits", "atomic")
PLATFORMS = ("gpu", "tpu")


# The GPU forward's grid when the device does not say how many SMs it has (an H100 / H200's count), and the most
# runs it splits the vocabulary into.
DEFAULT_SMS, MAX_RUNS = 132, 8


class Launch(NamedTuple):
  """Static (hashable) launch choices: the kernels' platform ("gpu": Triton, the layout the CPU interpreter runs by
  default; "tpu": Mosaic), backward strategy, interpreter, Triton warps and pipeline stages, rows of dS at a time,
  TPU VMEM, and the GPU forward's grid (its vocabulary runs, or the SM count that vocab_runs() fills)."""
  platform: str
  backward: str
  interpret: bool
  num_warps: int = 4
  num_stages: int = 2
  chunk_rows: int = 4096
  vmem_limit: int = token_stats_tpu.DEFAULT_VMEM_LIMIT
  vocab_runs: int = 0
  sms: int = DEFAULT_SMS


# Defaults per platform (block_d None: all of D). GPU: the fastest of a sweep on an H200 at N 8192, D 1024,
# V 151936 (bench/RESULTS.md); TPU: token_stats_tpu.tiles_for sizes them for the chip's VMEM; cpu: interpreted.
DEFAULTS = {"gpu": dict(block_n=64, block_v=256, block_d=64, num_warps=8, num_stages=3),
            "cpu": dict(block_n=64, block_v=128, block_d=None, num_warps=4, num_stages=2)}


def _pad_to(x, size, axis):
  return jnp.pad(x, [(0, size - x.shape[axis]) if a == axis else (0, 0) for a in range(x.ndim)])


def _operands(h, w, y, ht, wt, tiling: Tiling, vocab_pad=None):
  """h [Np, Dp], W [Dp, Vp], y [Np, 1] (and h_t, W_t) zero-padded to whole blocks (Vp: vocab_pad if given)."""
  n_pad = -(-h.shape[0] // tiling.block_n) * tiling.block_n
  v_pad = vocab_pad or -(-tiling.vocab // tiling.block_v) * tiling.block_v
  d_pad = -(-h.shape[1] // tiling.block_d) * tiling.block_d
  pad = lambda a, rows, cols: _pad_to(_pad_to(a, rows, 0), cols, 1)  # noqa: E731
  ops = [pad(h, n_pad, d_pad), pad(w, d_pad, v_pad), _pad_to(y.astype(jnp.int32)[:, None], n_pad, 0)]
  if tiling.teacher:
    ops += [pad(ht, n_pad, d_pad), pad(wt, d_pad, v_pad)]
  return ops


def _specs(ops, tiling: Tiling):
  """BlockSpecs of the operands for a GPU grid whose first index is the row block (W whole: a GPU block is a
  pointer)."""
  def spec(x, kind):
    if kind == "rows":
      return pl.BlockSpec((tiling.block_n, x.shape[1]), lambda i, *_: (i, 0))
    return pl.BlockSpec(x.shape, lambda *_: (0,) * x.ndim)
  kinds = ["rows", "full", "rows"] + (["rows", "full"] if tiling.teacher else [])
  return [spec(x, kind) for x, kind in zip(ops, kinds)]


def _compiler_params(launch: Launch):
  """Triton on NVIDIA GPUs (kernels/README.md says why not Mosaic GPU); the platform default elsewhere."""
  if launch.interpret or pltriton is None or launch.platform != "gpu":
    return None
  return pltriton.CompilerParams(num_warps=launch.num_warps, num_stages=launch.num_stages)


def _call(kernel, grid, in_specs, out_specs, out_shape, launch, **kw):
  return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
                        interpret=launch.interpret, compiler_params=_compiler_params(launch), **kw)


def vocab_runs(row_blocks: int, tiles: int, sms: int) -> int:
  """How many runs to split the vocabulary tiles into so that row_blocks x runs programs fill whole waves of `sms`
  programs (a forward program takes one SM: its tiles fill the shared memory): the run count of 1 ... MAX_RUNS (at
  most one a tile) whose last wave is fullest, the fewest on a tie. 4,096 rows in blocks of 64 on an H200's 132
  SMs: 2 runs (128 programs; one run left 68 SMs idle); 8,192 rows or more: 1."""
  def filled(runs):
    programs = row_blocks * runs
    return programs / (-(-programs // sms) * sms)
  return max(range(1, min(MAX_RUNS, tiles) + 1), key=lambda runs: (filled(runs), -runs))


def _forward(h, w, y, ht, wt, tiling: Tiling, launch: Launch):
  """float32 [N, STATS] per-row statistics."""
  if launch.platform == "tpu":
    ops = _operands(h, w, y, ht, wt, tiling)
    return token_stats_tpu.forward(ops, tiling, launch.interpret, launch.vmem_limit)[:h.shape[0], :STATS]
  tiles_total = -(-tiling.vocab // tiling.block_v)
  n_blocks = -(-h.shape[0] // tiling.block_n)
  runs = launch.vocab_runs or vocab_runs(n_blocks, tiles_total, launch.sms)
  per_run = -(-tiles_total // runs)
  runs = -(-tiles_total // per_run)              # no run of padding tiles only
  ops = _operands(h, w, y, ht, wt, tiling, vocab_pad=runs * per_run * tiling.block_v)
  out = _call(functools.partial(tiles.forward_kernel, tiling=tiling, tiles_per_run=per_run), (n_blocks, runs),
              _specs(ops, tiling), pl.BlockSpec((tiling.block_n, tiles.CARRY_WIDTH), lambda i, r: (i, r)),
              jax.ShapeDtypeStruct((n_blocks * tiling.block_n, runs * tiles.CARRY_WIDTH), jnp.float32),
              launch)(*ops)
  carries = out[:h.shape[0]].reshape(h.shape[0], runs, tiles.CARRY_WIDTH).transpose(1, 0, 2)
  merged = tiles.merge_carries(tuple(carries[:, :, k:k + 1] for k in range(tiles.CARRY)))
  return tiles.stack(tiles.row_statistics(merged, tiling), STATS)


def _split(refs, tiling: Tiling, n_out):
  """(h, W, y, h_t, W_t, residuals, cotangents, outputs...) from a kernel's refs."""
  h_ref, w_ref, y_ref = refs[:3]
  ht_ref, wt_ref = refs[3:5] if tiling.teacher else (None, None)
  return (h_ref, w_ref, y_ref, ht_ref, wt_ref, *refs[-2 - n_out:])


def _atomic_kernel(*refs, tiling: Tiling):
  """Program (i, j): tile j's cotangent for row block i, added into dH[i] and dW[:, j] chunk by chunk of D."""
  h_ref, w_ref, y_ref, ht_ref, wt_ref, res_ref, g_ref, _, _, dh_ref, dw_ref = _split(refs, tiling, 4)
  i, j = pl.program_id(0), pl.program_id(1)
  ds = tiles.logits_cotangent(h_ref, ht_ref, w_ref, wt_ref, y_ref[...], res_ref[...], g_ref[...], j, tiling)
  ds = ds.astype(h_ref.dtype)
  rows, cols, bd = pl.ds(i * tiling.block_n, tiling.block_n), pl.ds(j * tiling.block_v, tiling.block_v), tiling.block_d

  def chunk(k, carry):
    d = pl.ds(k * bd, bd)
    pltriton.atomic_add(dh_ref, (rows, d), tiles.dot(ds, w_ref[d, cols], ((1,), (1,))))
    pltriton.atomic_add(dw_ref, (d, cols), tiles.dot(h_ref[:, d], ds, ((0,), (0,))))
    return carry

  jax.lax.fori_loop(0, tiles.d_chunks(h_ref, tiling), chunk, 0)


def _backward_atomic(ops, extra, tiling: Tiling, launch: Launch):
  """float32 dH [Np, Dp] and dW [Dp, Vp] from the 2-D atomic-add grid."""
  (n_pad, d_pad), v_pad = ops[0].shape, ops[1].shape[1]
  stat_rows = pl.BlockSpec((tiling.block_n, STATS), lambda i, j: (i, 0))
  zeros = [jnp.zeros((n_pad, d_pad), jnp.float32), jnp.zeros((d_pad, v_pad), jnp.float32)]
  whole = [pl.BlockSpec(z.shape, lambda i, j: (0, 0)) for z in zeros]
  return _call(functools.partial(_atomic_kernel, tiling=tiling), (n_pad // tiling.block_n, v_pad // tiling.block_v),
               _specs(ops, tiling) + [stat_rows, stat_rows] + whole, whole,
               [jax.ShapeDtypeStruct(z.shape, jnp.float32) for z in zeros], launch,
               input_output_aliases={len(ops) + 2: 0, len(ops) + 3: 1})(*ops, *extra, *zeros)


def _dlogits_kernel(*refs, tiling: Tiling):
  """Program (i, j): the cotangent dS / T [bn, bv] of vocabulary tile j for row block i, in h's dtype."""
  h_ref, w_ref, y_ref, ht_ref, wt_ref, res_ref, g_ref, ds_ref = _split(refs, tiling, 1)
  ds_ref[...] = tiles.logits_cotangent(h_ref, ht_ref, w_ref, wt_ref, y_ref[...], res_ref[...], g_ref[...],
                                       pl.program_id(1), tiling).astype(ds_ref.dtype)


def _write_ds(chunk_ops, res, g, tiling: Tiling, launch: Launch):
  """dS / T [rows, Vp] in h's dtype of one chunk of rows (the platform's dlogits kernel)."""
  if launch.platform == "tpu":
    widen = lambda x: _pad_to(x, token_stats_tpu.LANES, 1)  # noqa: E731  (lane-wide row statistics)
    return token_stats_tpu.dlogits(chunk_ops, widen(res), widen(g), tiling, launch.interpret, launch.vmem_limit)
  rows, v_pad = chunk_ops[0].shape[0], chunk_ops[1].shape[1]
  stat_rows = pl.BlockSpec((tiling.block_n, STATS), lambda i, j: (i, 0))
  return _call(functools.partial(_dlogits_kernel, tiling=tiling), (rows // tiling.block_n, v_pad // tiling.block_v),
               _specs(chunk_ops, tiling) + [stat_rows, stat_rows],
               pl.BlockSpec((tiling.block_n, tiling.block_v), lambda i, j: (i, j)),
               jax.ShapeDtypeStruct((rows, v_pad), chunk_ops[0].dtype), launch)(*chunk_ops, res, g)


def _backward_dlogits(ops, extra, tiling: Tiling, launch: Launch):
  """float32 dH [Np, Dp] and dW [Dp, Vp]: per chunk of `launch.chunk_rows` rows, a kernel writes dS [rows, Vp]
  (recomputed tile by tile, no atomics) and two float32-accumulated matmuls (cuBLAS on GPUs, the MXU on TPUs)
  give the chunk's dH and its share of dW. Workspace: chunk_rows x Vp in h's dtype."""
  (n_pad, d_pad), v_pad = ops[0].shape, ops[1].shape[1]
  rows = min(launch.chunk_rows, n_pad)
  n_chunks = -(-n_pad // rows)
  row_ops = [0, 2] + ([3] if tiling.teacher else [])       # h, y, h_t are split into row chunks
  chunked = [_pad_to(ops[k], n_chunks * rows, 0).reshape(n_chunks, rows, -1) for k in row_ops]
  chunked += [_pad_to(x, n_chunks * rows, 0).reshape(n_chunks, rows, STATS) for x in extra]
  w, wt = ops[1], (ops[4] if tiling.teacher else None)

  def step(dw, chunk):
    h, y, ht = chunk[0], chunk[1], (chunk[2] if tiling.teacher else None)
    ds = _write_ds([h, w, y] + ([ht, wt] if tiling.teacher else []), *chunk[-2:], tiling, launch)
    return dw + tiles.dot(h, ds, ((0,), (0,))), tiles.dot(ds, w, ((1,), (1,)))

  dw, dh = jax.lax.scan(step, jnp.zeros((d_pad, v_pad), jnp.float32), chunked)
  return dh.reshape(n_chunks * rows, d_pad), dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def fused_stats(h, w, y, ht, wt, tiling: Tiling, launch: Launch):
  """float32 [N, STATS] (columns LSE, LOGP, ENT, T_LOGP, KL_TS, KL_ST, LSE_T); differentiable in h and w."""
  return _forward(h, w, y, ht, wt, tiling, launch)


def _fused_fwd(h, w, y, ht, wt, tiling, launch):
  out = _forward(h, w, y, ht, wt, tiling, launch)
  return out, (h, w, y, ht, wt, out)


def _fused_bwd(tiling, launch, residuals, g):
  h, w, y, ht, wt, res = residuals
  ops = _operands(h, w, y, ht, wt, tiling)
  n_pad = ops[0].shape[0]
  extra = [_pad_to(res, n_pad, 0), _pad_to(g.astype(jnp.float32), n_pad, 0)]
  backward = {"dlogits": _backward_dlogits, "atomic": _backward_atomic}[launch.backward]
  dh, dw = backward(ops, extra, tiling, launch)
  zeros = lambda x: None if x is None else jnp.zeros_like(x)  # noqa: E731
  return (dh[:h.shape[0], :h.shape[1]].astype(h.dtype), dw[:w.shape[0], :tiling.vocab].astype(w.dtype), None,
          zeros(ht), zeros(wt))


fused_stats.defvjp(_fused_fwd, _fused_bwd)


def token_stats_pallas(h_s, w_s, targets, h_t=None, w_t=None, *, temperature=1.0, chunk_size=None, with_kl=False,
                       block_n=None, block_d=None, backward=None, interpret=None, platform=None, vmem_limit=None,
                       num_warps=None, num_stages=None, chunk_rows=4096, vocab_runs=None) -> TokenStats:
  """`losses.token_stats` through the Pallas kernels.

  platform: the kernels to build, "gpu" (Triton) or "tpu" (Mosaic); default: JAX's backend, and the GPU layout
  on a CPU (the TPU one runs there too, interpreted). chunk_size: the vocabulary tile (block_v); block_n: rows per
  program; block_d: the D chunk of the tile matmuls; num_warps, num_stages: Triton's (None: the platform's
  DEFAULTS; on TPUs token_stats_tpu.tiles_for within `vmem_limit` bytes of scoped VMEM, hardware.Chip's).
  backward: "dlogits" (the default; chunk_rows rows of dS at a time) or "atomic" (GPUs). interpret: run in
  Pallas' interpreter (default: unless JAX's backend is the kernels' platform; an AOT compile for a TPU topology
  from a CPU passes False). vocab_runs: the GPU forward's runs of vocabulary tiles per row block (None: enough
  to fill the device's SMs, `vocab_runs()`).
  """
  backend = jax.default_backend()
  platform = platform or ("tpu" if backend == "tpu" else "gpu")
  interpret = backend != platform if interpret is None else interpret
  backward = backward or "dlogits"
  if platform not in PLATFORMS:
    raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
  if backward not in BACKWARDS or (backward == "atomic" and (platform != "gpu" or pltriton is None)):
    raise ValueError(f"backward must be one of {BACKWARDS} (atomic: GPUs, with Pallas' Triton backend), "
                     f"got {backward!r} for platform {platform!r}")
  if vocab_runs is not None and (not isinstance(vocab_runs, int) or vocab_runs < 1):
    raise ValueError(f"vocab_runs must be a positive number of runs (or None: as many as fill the GPU), got "
                     f"{vocab_runs!r}")
  lead = targets.shape
  h_s, targets, h_t, w_t = prepare_inputs(h_s, w_s, targets, h_t, w_t, with_kl)
  dim, vocab = w_s.shape
  defaults = dict(DEFAULTS["gpu" if platform == "gpu" and not interpret else "cpu"])
  vmem_limit = vmem_limit or token_stats_tpu.DEFAULT_VMEM_LIMIT
  compiled_for_tpu = platform == "tpu" and not interpret
  if compiled_for_tpu and None in (block_n, chunk_size, block_d):
    chosen = token_stats_tpu.tiles_for(h_s.shape[0], dim, h_s.dtype.itemsize, h_t is not None, vmem_limit,
                                       chunk_size or 512)
    if chosen is None:
      raise ValueError(f"no TPU tiling of the token-stats kernels fits {vmem_limit / 2**20:.0f} MiB of VMEM at "
                       f"D {dim} ({h_s.dtype}); use distill.token_stats=xla_chunked")
    defaults.update(zip(("block_n", "block_v", "block_d"), chosen))
  tiling = Tiling(vocab, block_n or defaults["block_n"], min(chunk_size or defaults["block_v"], vocab),
                  block_d or defaults["block_d"] or dim, float(temperature), h_t is not None, with_kl)
  if compiled_for_tpu:       # tiles set by the caller: the estimate must hold for them too
    need = token_stats_tpu.vmem_bytes(tiling.block_n, tiling.block_v, tiling.block_d, dim, h_s.dtype.itemsize,
                                      tiling.teacher)
    if need > vmem_limit:
      raise ValueError(f"TPU tiles (block_n {tiling.block_n}, block_v {tiling.block_v}, block_d {tiling.block_d}) "
                       f"need about {need / 2**20:.1f} MiB of VMEM, more than the limit {vmem_limit / 2**20:.0f} MiB")
  launch = Launch(platform, backward, interpret, num_warps or defaults["num_warps"],
                  num_stages or defaults["num_stages"], chunk_rows, vmem_limit, vocab_runs or 0,
                  getattr(jax.devices()[0], "core_count", 0) or DEFAULT_SMS)
  out = fused_stats(h_s, w_s, targets, h_t, w_t, tiling, launch)
  pick = lambda k: out[:, k].reshape(lead)  # noqa: E731
  fields = {"logsumexp": pick(LSE), "logprob": pick(LOGP), "entropy": pick(tiles.ENT)}
  if tiling.teacher:
    fields["teacher_logprob"] = pick(T_LOGP)
    if with_kl:
      fields.update(kl_ts=pick(KL_TS), kl_st=pick(KL_ST))
  return TokenStats(**fields)
