"""The decoder-only transformer (Flax NNX) and its pure functional entry points.

`Transformer` defines the parameters; the functions below are what the rest of
the project calls. They take `(config, params, ...)` where `params` is a plain
nested dict of arrays (`nnx.State.to_pure_dict()` layout), so params can be
saved, sharded, donated and differentiated like any pytree:

    params = init(config, jax.random.key(0))
    out = logits(config, params, token_ids, attention_mask)    # float32 [B, T, V]

Layers are stacked (every layer weight has a leading `layers` dim) and the
training forward runs them with `jax.lax.scan`, so compile time does not grow
with depth (unless `unroll`: `hidden_states`, config `train.unroll_layers`). So does the sampler's prefill
(`prefill_with_cache`); its decode step (`forward_with_cache`) unrolls them, so that each layer updates its own
cache buffer in place.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from caopd_jax.models import rope as rope_lib
from caopd_jax.models import kv_cache
from caopd_jax.models.config import ModelConfig
from caopd_jax.models.kv_cache import KVCache
from caopd_jax.models.layers import DecoderLayer, RMSNorm, _param
from caopd_jax.sharding.layout import constrain

Params = dict
# What the backward keeps of each layer (`remat` of the training forward); see Transformer.__call__.
REMAT_POLICIES = {"layers": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Transformer(nnx.Module):
  """Token embedding, L stacked decoder layers, final RMSNorm, (untied) LM head."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
    c = config
    self.config = c
    self.embed = _param(rngs, (c.vocab_size, c.hidden_size), ("vocab", "embed"), None, "normal", dtype)
    self.layers = DecoderLayer(c, rngs=rngs, num_layers=c.num_layers, dtype=dtype)
    self.final_norm = RMSNorm((c.hidden_size,), ("embed",), c.rms_norm_eps, rngs=rngs, dtype=dtype)
    if not c.tie_embeddings:
      self.lm_head = _param(rngs, (c.hidden_size, c.vocab_size), ("embed", "vocab"), None, "normal", dtype)

  def __call__(self, token_ids: jnp.ndarray, positions: jnp.ndarray, attention_mask: jnp.ndarray,
               cache: KVCache | None = None, layers: list | None = None, lengths: jnp.ndarray | None = None,
               remat: str = "none", unroll: bool = False):
    """Final hidden states [B, T, D] of T new tokens; with a cache, (hidden, updated cache).

    token_ids, positions int [B, T]; attention_mask bool [B, T] (True = real token). lengths int [B]:
    the rows are right-padded with these many real tokens (no sliding window), and attention takes
    the fused path (`attention.attend_right_padded`) instead of a [B, T, T] mask. remat (training):
    "none" keeps every layer's activations for the backward, "layers" recomputes each layer in the
    backward (activation memory of one layer, ~1/3 more compute), "dots" keeps only matmul outputs.
    Without `cache` (training) the layers run as one `lax.scan` over the stacked weights, or with `unroll`
    one after another on static slices of them (no per-layer weight copies: a faster step, a longer compile). With
    `cache` (decoding; a prompt's first cache comes from `prefill`) the tokens go into slots
    cache.index .. cache.index + T - 1 and attend to everything cached; the layers then run unrolled over `layers`
    (`unstack_layers(params)`), so each layer writes and reads its own cache buffer in place.
    """
    c = self.config
    x, full_cs, sliding_cs = self._embed(token_ids, positions)

    if cache is not None:
      layer_def = nnx.graphdef(self.layers)
      cache = kv_cache.mark(cache, attention_mask)
      masks = kv_cache.attention_masks(c, cache, token_ids.shape[1])
      new_k, new_v = [], []
      for i, weights in enumerate(layers):
        kind = "sliding" if c.is_sliding[i] else "full"
        cos, sin = sliding_cs if kind == "sliding" else full_cs
        x, (k, v) = nnx.merge(layer_def, weights)(x, cos, sin, masks[kind], (cache.k[i], cache.v[i], cache.index))
        new_k.append(k)
        new_v.append(v)
      return self.final_norm(x), KVCache(tuple(new_k), tuple(new_v), cache.valid, cache.index + token_ids.shape[1])

    masks = _attention_masks(c, attention_mask) if lengths is None else {"full": lengths, "sliding": lengths}
    if unroll:
      x = self._unrolled_layers(x, full_cs, sliding_cs, masks, remat)
    else:
      x, _ = self._scan_layers(x, full_cs, sliding_cs, masks, remat=remat)
    return self.final_norm(x)

  def prefill(self, token_ids: jnp.ndarray, positions: jnp.ndarray, attention_mask: jnp.ndarray,
              cache_length: int) -> tuple[jnp.ndarray, KVCache]:
    """(final hidden [B, P, D], a cache of `cache_length` slots holding the P prompt tokens in slots 0 .. P-1).

    Arguments as in `__call__` (T = P). Unlike a decode step, the layers run as one `lax.scan` over the stacked
    weights, as in training: the program compiles one layer body, not L (the unrolled prefill of a 28-layer
    model took ~8 s to compile on an H200, bench/RESULTS.md). Each layer attends within the prompt (a P-slot
    cache) and the keys/values are then padded to `cache_length` slots, one buffer per layer for the decode.
    """
    c = self.config
    b, p = token_ids.shape
    x, full_cs, sliding_cs = self._embed(token_ids, positions)
    prompt = KVCache((), (), attention_mask, jnp.zeros((), jnp.int32))
    empty = jnp.zeros((b, c.num_kv_heads, p, c.head_dim), self.embed[...].dtype)
    x, (keys, values) = self._scan_layers(x, full_cs, sliding_cs, kv_cache.attention_masks(c, prompt, p),
                                          cache=(empty, empty, 0))
    pad = lambda stacked: tuple(  # noqa: E731
        jnp.pad(layer, ((0, 0), (0, 0), (0, cache_length - p), (0, 0))) for layer in stacked)
    valid = jnp.pad(attention_mask, ((0, 0), (0, cache_length - p)))
    return self.final_norm(x), KVCache(pad(keys), pad(values), valid, jnp.asarray(p, jnp.int32))

  def _embed(self, token_ids: jnp.ndarray, positions: jnp.ndarray):
    """(embeddings [B, T, D], rotary (cos, sin) of full-attention layers, those of sliding-window layers)."""
    c = self.config
    x = constrain(jnp.take(self.embed[...], token_ids, axis=0), ("batch", "length", "act_embed"))
    full_cs = rope_lib.cos_sin(c.rope, c.head_dim, positions)
    sliding_cs = rope_lib.cos_sin(c.sliding_rope, c.head_dim, positions) if c.sliding_rope else full_cs
    return x, full_cs, sliding_cs

  def _scan_layers(self, x, full_cs, sliding_cs, masks: dict, cache: tuple | None = None, remat: str = "none"):
    """x [B, T, D] through every layer as one `lax.scan` -> (x, per-layer outputs stacked on a leading L dim:
    the layers' (k, v) cache buffers when `cache` = (k, v, index) is given to each, else None)."""
    c = self.config
    layer_def, layer_weights = nnx.split(self.layers)

    def body(h, per_layer):
      weights, sliding = per_layer
      cos, sin = jax.tree.map(lambda f, s: jnp.where(sliding, s, f), full_cs, sliding_cs)
      mask = jnp.where(sliding, masks["sliding"], masks["full"])
      h = constrain(h, ("batch", "length", "act_embed"))   # FSDP: rows stay split, weights are gathered
      return nnx.merge(layer_def, weights)(h, cos, sin, mask, cache)

    if remat != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[remat])
    return jax.lax.scan(body, x, (layer_weights, jnp.asarray(np.array(c.is_sliding))))

  def _unrolled_layers(self, x, full_cs, sliding_cs, masks: dict, remat: str):
    """x [B, T, D] through every layer in turn, each on its static slice of the stacked weights -> x [B, T, D].

    The same layers as `_scan_layers` without a cache. XLA reads each layer's weights in place, where the scan
    copies every layer's slice out of the stack (and writes its gradients into one): the Qwen3-0.6B step is 3-5%
    faster on an H200 (the 1.7B one is not), at 3-4x its compile time (bench/RESULTS.md)."""
    c = self.config
    layer_def, layer_weights = nnx.split(self.layers)

    def layer(h, weights, sliding: bool):
      cos, sin = sliding_cs if sliding else full_cs
      h = constrain(h, ("batch", "length", "act_embed"))
      return nnx.merge(layer_def, weights)(h, cos, sin, masks["sliding" if sliding else "full"], None)[0]

    if remat != "none":
      layer = jax.checkpoint(layer, policy=REMAT_POLICIES[remat], static_argnums=(2,))
    for i, sliding in enumerate(c.is_sliding):
      x = layer(x, jax.tree.map(lambda w: w[i], layer_weights), bool(sliding))  # noqa: B023
    return x


def _attention_masks(config: ModelConfig, attention_mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """{"full": mask, "sliding": mask}, bool [B, T, T]: causal, padding and (sliding layers) window."""
  t = attention_mask.shape[1]
  idx = jnp.arange(t)
  full = (idx[None, :] <= idx[:, None])[None] & attention_mask[:, None, :].astype(bool)
  if config.sliding_window is None:
    return {"full": full, "sliding": full}
  return {"full": full, "sliding": full & ((idx[:, None] - idx[None, :]) < config.sliding_window)[None]}


@functools.lru_cache(maxsize=32)
def graphdef(config: ModelConfig) -> nnx.GraphDef:
  """The module structure for `config` (no weights), cached per config."""
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  return nnx.split(abstract)[0]


def init(config: ModelConfig, rng: jax.Array, dtype=jnp.float32) -> Params:
  """Random parameters (normal std 0.02, norms 1, biases 0) as a nested dict."""
  model = Transformer(config, rngs=nnx.Rngs(params=rng), dtype=dtype)
  return nnx.state(model, nnx.Param).to_pure_dict()


def param_shapes(config: ModelConfig, dtype=jnp.float32) -> Params:
  """`jax.ShapeDtypeStruct` of every parameter, without allocating any."""
  return jax.eval_shape(lambda: init(config, jax.random.key(0), dtype))


def logical_axes(config: ModelConfig) -> Params:
  """Tree of the same structure as params holding each parameter's logical axis names."""
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  state = nnx.state(abstract, nnx.Param)
  return jax.tree.map(lambda p: p.get_metadata()["axes"], state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable)).to_pure_dict()


def default_positions(attention_mask: jnp.ndarray) -> jnp.ndarray:
  """Positions [B, T] that count real tokens only: left padding does not shift them."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def _prepare(token_ids, attention_mask, positions):
  if attention_mask is None:
    attention_mask = jnp.ones(token_ids.shape, bool)
  attention_mask = attention_mask.astype(bool)
  if positions is None:
    positions = default_positions(attention_mask)
  return attention_mask, positions


def hidden_states(config: ModelConfig, params: Params, token_ids: jnp.ndarray,
                  attention_mask: jnp.ndarray | None = None, positions: jnp.ndarray | None = None, *,
                  contiguous: bool = False, remat: str = "none", unroll: bool = False) -> jnp.ndarray:
  """Final (normed) hidden states [B, T, D] in the params' dtype; arguments as in `logits`.

  contiguous=True promises that each row's real tokens form one run (padding only on the left and/or
  right, as in prompt + completion rows). The rows are then rotated so that the run comes first,
  attention runs on row lengths (cuDNN flash attention on GPUs with bf16 weights; no [B, T, T] mask
  or scores), and the result is rotated back. Models with a sliding window take the mask path.
  remat: "none", "layers" or "dots" (see Transformer.__call__): activation memory vs recompute. unroll: the layers
  one after another instead of a `lax.scan` (see Transformer.__call__): the same result, a faster step, a longer
  compile.
  """
  attention_mask, positions = _prepare(token_ids, attention_mask, positions)
  model = nnx.merge(graphdef(config), params)
  if not contiguous or config.sliding_window is not None:
    return model(token_ids, positions, attention_mask, remat=remat, unroll=unroll)
  lead = jnp.argmax(attention_mask, axis=1)    # leading padding of each row (0 for a row without tokens)
  front = lambda x: _rotate_rows(x, lead)  # noqa: E731
  h = model(front(token_ids), front(positions), front(attention_mask), lengths=jnp.sum(attention_mask, axis=1),
            remat=remat, unroll=unroll)
  return _rotate_rows(h, -lead)


def _rotate_rows(x: jnp.ndarray, shift: jnp.ndarray) -> jnp.ndarray:
  """Row b of x [B, T, ...] rotated left by shift[b] (int [B]) along T."""
  t = x.shape[1]
  index = (jnp.arange(t)[None, :] + shift[:, None]) % t
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def forward_with_cache(config: ModelConfig, params: Params, token_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                       positions: jnp.ndarray, cache: KVCache, layers: list[Params]) -> tuple[jnp.ndarray, KVCache]:
  """(final hidden [B, T, D], the cache with the T tokens added): the sampler's prefill and decode step.

  layers: `unstack_layers(params)`, computed once outside a decode loop. The layer code is the
  training forward's (`hidden_states`); only the driver differs (unrolled, cache updated in place).
  """
  return nnx.merge(graphdef(config), params)(token_ids, positions, attention_mask.astype(bool), cache, layers)


def prefill_with_cache(config: ModelConfig, params: Params, token_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                       positions: jnp.ndarray, cache_length: int) -> tuple[jnp.ndarray, KVCache]:
  """(final hidden [B, P, D], a new cache of `cache_length` slots holding the P tokens): the sampler's prefill,
  the layers scanned as in training (`Transformer.prefill`); token_ids [B, P] left-padded, attention_mask bool."""
  return nnx.merge(graphdef(config), params).prefill(token_ids, positions, attention_mask.astype(bool), cache_length)


def unstack_layers(params: Params) -> list[Params]:
  """Per-layer weight trees [params["layers"] at layer i for each i]: the decode path's input.

  Computed once outside a decode loop, it costs one copy of the layer weights per call.
  """
  stacked = params["layers"]
  count = jax.tree.leaves(stacked)[0].shape[0]
  return [jax.tree.map(lambda w, i=i: w[i], stacked) for i in range(count)]


def unembedding(config: ModelConfig, params: Params) -> jnp.ndarray:
  """The output projection W [D, V]."""
  return params["embed"].T if config.tie_embeddings else params["lm_head"]


def logits(config: ModelConfig, params: Params, token_ids: jnp.ndarray,
           attention_mask: jnp.ndarray | None = None, positions: jnp.ndarray | None = None) -> jnp.ndarray:
  """float32 logits [B, T, V].

  token_ids: int [B, T]. attention_mask: [B, T], 1/True for real tokens, 0 for
  padding (either side); default all ones. positions: int [B, T] rotary
  positions; default counts real tokens from 0 (see `default_positions`).
  """
  h = hidden_states(config, params, token_ids, attention_mask, positions)
  return jnp.einsum("btd,dv->btv", h, unembedding(config, params), preferred_element_type=jnp.float32)
