"""Batched on-policy rollouts: K samples per prompt from one jitted prefill and a jitted decode loop.

    out = sample(config, params, [[1, 2, 3], [4, 5]], jax.random.key(0), num_samples=8, max_new_tokens=256)
    out.tokens          # int32 [prompts, K, max_new_tokens]

The model code is the training code (the layers of `models.transformer`: the prefill scans them as training does,
`models.prefill_with_cache`; the decode step unrolls them, `models.forward_with_cache`), with a static-shape KV
cache. Prompts are left-padded to a bucketed length (a power of two, at least 16, or the
caller's `prompt_width`) and the prompt count to a power of two, so a run compiles a handful of shapes. Each prompt is prefilled once and its cache repeated K times. The decode
loop is a `lax.while_loop` that stops early when every row is done, run in
chunks of `chunk` steps so a progress bar can advance between chunks; the cache
is donated from chunk to chunk. Row (i, k) draws from its own PRNG stream
fold_in(fold_in(rng, i), k), so other prompts in the batch never change its samples. Between chunks, once at
most half of the rows are still decoding, the batch shrinks to them (`compaction`): finished rows stop costing
decode steps, and every row draws the same tokens as in the full batch.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models
from caopd_jax.errors import CaopdError
from caopd_jax.models import decode_attention, kv_cache
from caopd_jax.models.config import ModelConfig
from caopd_jax.rollout import compaction
from caopd_jax.rollout.sampling import choose
from caopd_jax.sharding.distributed import to_host
from caopd_jax.sharding.layout import activate, constrain
from caopd_jax.sharding.rules import Layout

MIN_PROMPT_BUCKET = 16


class Settings(NamedTuple):
  """Static decoding settings (hashable: part of the compiled program)."""
  num_samples: int
  max_new_tokens: int
  temperature: float
  top_k: int
  top_p: float
  stop_token_ids: tuple[int, ...]


class Rollouts(NamedTuple):
  """Completions of every (prompt, sample); NumPy arrays, P prompts, K samples, N = max_new_tokens.

  tokens int32 [P, K, N]: completion tokens, 0 after the end. mask bool [P, K, N]: real tokens
  (a stop token included). lengths int32 [P, K]. stopped bool [P, K]: ended with a stop token;
  truncated = ~stopped (ran out of max_new_tokens, or of its row budget). logprobs float32 [P, K, N]: log-prob of each
  token under the distribution it was drawn from (temperature/top-k/top-p applied; 0 for greedy);
  model_logprobs float32 [P, K, N]: under the unmodified model (temperature 1). Both 0 where ~mask.
  thresholds float32 [P, K, N]: the support of that distribution at each step, as a raw logit: the token
  could be any v with logit >= threshold (`sampling.choose`); -inf where ~mask or nothing was filtered.
  """
  tokens: np.ndarray
  mask: np.ndarray
  lengths: np.ndarray
  stopped: np.ndarray
  logprobs: np.ndarray
  model_logprobs: np.ndarray
  thresholds: np.ndarray

  @property
  def truncated(self) -> np.ndarray:
    return ~self.stopped

  def text(self, tokenizer, prompt: int, sample: int) -> str:
    """The text of completion (prompt, sample), its special tokens (the stop token) left out: what verifiers read."""
    return tokenizer.decode(self.tokens[prompt, sample, :self.lengths[prompt, sample]].tolist(),
                            skip_special_tokens=True)


class DecodeState(NamedTuple):
  """The decode loop's carry; B = padded prompts x K rows."""
  step: jax.Array          # int32 []: tokens generated so far
  cache: kv_cache.KVCache
  hidden: jax.Array        # [B, D] final hidden state after the last token fed in
  positions: jax.Array     # int32 [B]: RoPE position of the next token
  done: jax.Array          # bool [B]
  keys: jax.Array          # [B] PRNG keys
  budgets: jax.Array       # int32 [B]: the row is done (truncated) after this many tokens
  tokens: jax.Array        # int32 [B, N]
  logprobs: jax.Array      # float32 [B, N]
  model_logprobs: jax.Array  # float32 [B, N]
  thresholds: jax.Array    # float32 [B, N]


def _bucket(n: int, minimum: int = 1) -> int:
  return max(minimum, 1 << (n - 1).bit_length())


# On GPUs, XLA's Triton GEMM autotuner compiles dozens of tile configurations for each fused matmul: the prefill of
# SmolLM2-135M, its layers then unrolled, took 57 s to compile on an H200, 4.6 s with cuBLAS, for a call that runs
# once per batch (bench/RESULTS.md, "Compile time"). The decode loop keeps Triton: with it, decoding ran 40-60%
# faster.
PREFILL_GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}


def _prefill_in_layout(config: ModelConfig, settings: Settings, cache_length: int, params, tokens, mask, keys,
                       budgets, layout: Layout | None) -> DecodeState:
  """tokens/mask [Bp, P] left-padded prompts; keys, budgets [Bp * K] -> the decode state before the first token."""
  with activate(layout):
    return _prefill_body(config, settings, cache_length, params, tokens, mask, keys, budgets)


@functools.cache
def _prefill(backend: str):
  """The jitted prefill for a JAX backend ("cpu", "gpu", "tpu"), with the GPU compiler options on GPUs."""
  options = PREFILL_GPU_COMPILER_OPTIONS if backend == "gpu" else None
  return jax.jit(_prefill_in_layout, static_argnums=(0, 1, 2, 8), compiler_options=options)


def _prefill_body(config, settings, cache_length, params, tokens, mask, keys, budgets) -> DecodeState:
  k = settings.num_samples
  positions = models.default_positions(mask)
  hidden, cache = models.prefill_with_cache(config, params, tokens, mask, positions, cache_length)
  rows = tokens.shape[0] * k
  n = settings.max_new_tokens
  cache = kv_cache.repeat(cache, k)
  cache = cache._replace(k=tuple(constrain(x, kv_cache.NAMES) for x in cache.k),
                         v=tuple(constrain(x, kv_cache.NAMES) for x in cache.v))
  return DecodeState(
      step=jnp.zeros((), jnp.int32), cache=cache, hidden=jnp.repeat(hidden[:, -1], k, axis=0),
      positions=jnp.repeat(mask.sum(axis=1).astype(jnp.int32), k), done=jnp.zeros((rows,), bool), keys=keys,
      budgets=budgets,
      tokens=jnp.zeros((rows, n), jnp.int32), logprobs=jnp.zeros((rows, n), jnp.float32),
      model_logprobs=jnp.zeros((rows, n), jnp.float32), thresholds=jnp.full((rows, n), -jnp.inf, jnp.float32))


@functools.partial(jax.jit, static_argnums=(0, 1, 5), donate_argnums=(3,))
def _decode(config: ModelConfig, settings: Settings, params, state: DecodeState, until: jax.Array,
            layout: Layout | None) -> DecodeState:
  """Generates tokens until step `until`, max_new_tokens, or every row is done."""
  with activate(layout):
    return _decode_body(config, settings, params, state, until)


def _decode_body(config, settings, params, state: DecodeState, until) -> DecodeState:
  unembed = models.unembedding(config, params)
  layers = models.unstack_layers(params)  # once per call, outside the loop
  stop_ids = jnp.asarray(settings.stop_token_ids or (-1,), jnp.int32)
  limit = jnp.minimum(until, settings.max_new_tokens)

  def cond(s: DecodeState):
    return (s.step < limit) & ~jnp.all(s.done)

  def body(s: DecodeState) -> DecodeState:
    logits = jnp.einsum("bd,dv->bv", s.hidden, unembed, preferred_element_type=jnp.float32)
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(s.keys, s.step)
    model_all = jax.nn.log_softmax(logits, axis=-1)
    token, logprob, threshold = choose(step_keys, logits, model_all, settings.temperature, settings.top_k,
                                       settings.top_p)
    model_logprob = jnp.take_along_axis(model_all, token[:, None], axis=-1)[:, 0]
    active = ~s.done
    token = jnp.where(active, token, 0)
    put = lambda buf, value: jax.lax.dynamic_update_slice(buf, value[:, None], (0, s.step))  # noqa: E731
    hidden, cache = models.forward_with_cache(config, params, token[:, None], active[:, None], s.positions[:, None],
                                              s.cache, layers)
    return DecodeState(
        step=s.step + 1, cache=cache, hidden=hidden[:, 0],
        positions=s.positions + 1, done=s.done | (active & (jnp.isin(token, stop_ids) | (s.step + 1 >= s.budgets))),
        keys=s.keys, budgets=s.budgets,
        tokens=put(s.tokens, token), logprobs=put(s.logprobs, jnp.where(active, logprob, 0.0)),
        model_logprobs=put(s.model_logprobs, jnp.where(active, model_logprob, 0.0)),
        thresholds=put(s.thresholds, jnp.where(active, threshold, -jnp.inf)))

  return jax.lax.while_loop(cond, body, state)


def _check(config: ModelConfig, prompts, settings: Settings, max_length: int) -> None:
  if not len(prompts):
    raise CaopdError("no prompts given")
  for name, ok in (("num_samples >= 1", settings.num_samples >= 1),
                   ("max_new_tokens >= 0", settings.max_new_tokens >= 0),
                   ("temperature >= 0", settings.temperature >= 0), ("top_k >= 0", settings.top_k >= 0),
                   ("0 < top_p <= 1", 0 < settings.top_p <= 1)):
    if not ok:
      raise CaopdError(f"sampling setting out of range: need {name} (got {settings})")
  for i, p in enumerate(prompts):
    if len(p) == 0:
      raise CaopdError(f"prompt {i} is empty: a completion needs at least one token to condition on")
    if min(p) < 0 or max(p) >= config.vocab_size:
      raise CaopdError(f"prompt {i} has token ids outside [0, {config.vocab_size})")
    if len(p) + settings.max_new_tokens > max_length:
      raise CaopdError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={settings.max_new_tokens} it needs "
                       f"{len(p) + settings.max_new_tokens} cache slots, more than max_length={max_length}; "
                       "shorten the prompt or lower max_new_tokens")


def sample(config: ModelConfig, params, prompts: Sequence[Sequence[int]], rng: jax.Array, *, num_samples: int = 1,
           max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           stop_token_ids: Sequence[int] = (), max_length: int | None = None, chunk: int = 64,
           progress: bool = False, layout: Layout | None = None, prompt_width: int | None = None,
           row_budgets: np.ndarray | None = None, compact: bool = True) -> Rollouts:
  """K = `num_samples` completions of each tokenized prompt (see `Rollouts`).

  temperature 0 is greedy; top_k 0 and top_p 1 disable those filters. A stop token ends a
  completion (it is kept, masked in). `max_length` bounds prompt + completion (default: the
  model's max_position_embeddings). `progress` shows a bar over decode steps. `layout`: the sharding
  layout of `params` (`sharding.Layout`); the KV cache and decode rows are split by its rules.
  `prompt_width`: pad the prompts to this many columns (at least the longest prompt) instead of the
  power-of-two bucket, e.g. a training run's width ladder, so that it compiles once per width it uses.
  `row_budgets`: int [P, K], each row's own token limit (1..max_new_tokens; a row that reaches it is truncated),
  e.g. for benchmarks that give a random model a stated completion-length distribution. `compact`: shrink the
  decode batch as rows finish (`compaction`; the tokens are the same either way).
  """
  settings = Settings(num_samples, max_new_tokens, float(temperature), int(top_k), float(top_p),
                      tuple(int(t) for t in stop_token_ids))
  max_length = max_length or config.max_position_embeddings
  _check(config, prompts, settings, max_length)
  n, k, steps = len(prompts), num_samples, max_new_tokens
  if steps == 0:
    empty = np.zeros((n, k, 0))
    return Rollouts(empty.astype(np.int32), empty.astype(bool), np.zeros((n, k), np.int32),
                    np.zeros((n, k), bool), empty.astype(np.float32), empty.astype(np.float32),
                    empty.astype(np.float32))

  longest = max(len(p) for p in prompts)
  if prompt_width is not None and not longest <= prompt_width <= max_length - steps:
    raise CaopdError(f"prompt_width={prompt_width} must hold the longest prompt ({longest} tokens) and leave "
                     f"max_new_tokens={steps} within max_length={max_length}")
  width = prompt_width or min(_bucket(longest, MIN_PROMPT_BUCKET), max_length - steps)
  rows = _bucket(n)
  tokens = np.zeros((rows, width), np.int32)
  mask = np.zeros((rows, width), bool)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):] = p
    mask[i, width - len(p):] = True
  mask[n:, -1] = True  # bucket-filler rows: one dummy token each, dropped from the result
  keys = jax.vmap(lambda i: jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(rng, i), j))(
      jnp.arange(k)))(jnp.arange(rows)).reshape(rows * k)
  budgets = np.full((rows, k), steps, np.int32)
  budgets[:n] = _checked_budgets(row_budgets, n, k, steps)

  cache_length = decode_attention.cache_length(width + steps, params["embed"].dtype)
  state = _prefill(jax.default_backend())(config, settings, cache_length, params, tokens, mask, keys,
                                          budgets.reshape(-1), layout)
  outputs = _Outputs(rows * k, steps)
  row_ids, shards = np.arange(rows * k), compaction.row_shards(layout)
  bar = _progress_bar(steps, n * k) if progress else None
  for until in range(chunk, steps + chunk, chunk):
    state = _decode(config, settings, params, state, jnp.int32(until), layout)
    done_steps = int(to_host(state.step))
    if bar is not None:
      bar.update(done_steps - bar.n)
    if done_steps < min(until, steps) or done_steps == steps:  # every row is done, or the budget is spent
      break
    keep = compaction.plan(to_host(state.done), shards) if compact else None
    if keep is not None:
      outputs.collect(state, row_ids)
      state, row_ids = compaction.gather(state, jnp.asarray(keep), layout), row_ids[keep]
  if bar is not None:
    bar.close()
  outputs.collect(state, row_ids)
  return outputs.rollouts(n, rows, k, budgets[:n], settings.stop_token_ids)


def _checked_budgets(row_budgets, n: int, k: int, steps: int) -> np.ndarray:
  if row_budgets is None:
    return np.full((n, k), steps, np.int32)
  budgets = np.asarray(row_budgets)
  if budgets.shape != (n, k) or not np.issubdtype(budgets.dtype, np.integer):
    raise CaopdError(f"row_budgets must be integers of shape (prompts, num_samples) = ({n}, {k}); got "
                     f"{budgets.dtype} {budgets.shape}")
  if budgets.min() < 1 or budgets.max() > steps:
    raise CaopdError(f"row_budgets must lie in 1..max_new_tokens={steps}; got {budgets.min()}..{budgets.max()}")
  return budgets.astype(np.int32)


class _Outputs:
  """Host copies of every row's outputs, by original row: rows leave the device batch as it shrinks."""

  def __init__(self, rows: int, steps: int):
    self.tokens = np.zeros((rows, steps), np.int32)
    self.logprobs = np.zeros((rows, steps), np.float32)
    self.model_logprobs = np.zeros((rows, steps), np.float32)
    self.thresholds = np.full((rows, steps), -np.inf, np.float32)

  def collect(self, state: DecodeState, row_ids: np.ndarray) -> None:
    """Copies the rows of `state` (row r of the batch is original row row_ids[r]) to the host."""
    for name in ("tokens", "logprobs", "model_logprobs", "thresholds"):
      getattr(self, name)[row_ids] = to_host(getattr(state, name))

  def rollouts(self, n: int, rows: int, k: int, budgets: np.ndarray, stop_token_ids) -> Rollouts:
    """The first n prompts' rows as `Rollouts`; budgets int32 [n, K]."""
    take = lambda x: x.reshape(rows, k, -1)[:n]  # noqa: E731
    out_tokens, logprobs, model_logprobs, thresholds = map(take, (
        self.tokens, self.logprobs, self.model_logprobs, self.thresholds))
    positions = np.arange(out_tokens.shape[-1])
    is_stop = np.isin(out_tokens, stop_token_ids) & (positions < budgets[..., None])
    stopped = is_stop.any(-1)
    lengths = np.where(stopped, is_stop.argmax(-1) + 1, budgets).astype(np.int32)
    out_mask = positions < lengths[..., None]
    return Rollouts(np.where(out_mask, out_tokens, 0), out_mask, lengths, stopped, logprobs * out_mask,
                    model_logprobs * out_mask, np.where(out_mask, thresholds, -np.inf).astype(np.float32))


def compile_for(config: ModelConfig, params, layout: Layout, settings: Settings, prompts: int, width: int,
                platform: str):
  """(prefill, decode) compiled ahead of time for abstract `params` (ShapeDtypeStructs with shardings) on
  `layout`'s devices: `prompts` prompts (padded to a power of two, as `sample` does) of `width` columns, for the
  JAX platform of those devices (e.g. a TPU topology's, from a CPU)."""
  rows = _bucket(prompts)
  replicated = layout.replicated()
  tokens = jax.ShapeDtypeStruct((rows, width), jnp.int32, sharding=replicated)
  mask = jax.ShapeDtypeStruct((rows, width), jnp.bool_, sharding=replicated)
  key_shape = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), rows * settings.num_samples))
  keys = jax.ShapeDtypeStruct(key_shape.shape, key_shape.dtype, sharding=replicated)
  budgets = jax.ShapeDtypeStruct((rows * settings.num_samples,), jnp.int32, sharding=replicated)
  cache_length = decode_attention.cache_length(width + settings.max_new_tokens, params["embed"].dtype)
  prefill = _prefill(platform).trace(config, settings, cache_length, params, tokens, mask, keys, budgets,
                                     layout).lower(
      lowering_platforms=(platform,)).compile()
  state = jax.tree.map(lambda out, sharding: jax.ShapeDtypeStruct(out.shape, out.dtype, sharding=sharding),
                       prefill.out_info, prefill.output_shardings)
  until = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
  decode = _decode.trace(config, settings, params, state, until, layout).lower(
      lowering_platforms=(platform,)).compile()
  return prefill, decode


def _progress_bar(steps: int, sequences: int):
  from tqdm.auto import tqdm
  return tqdm(total=steps, desc=f"decoding {sequences} sequences", unit="tok", leave=False)
