"""The expected confidence: the mean of the model's distribution over the values it could state, instead of the
value its decoding wrote.

Greedy decoding writes a confidence such as "0.63" digit by digit, each digit the argmax given the ones before,
so a model whose belief is spread over 0.13 ... 1.00 can state "0.0" while its mean belief is 0.5 (the demo's
CaOPD model does, README "The demo's result"). The expected readout keeps the completion and re-reads only the
value: by teacher forcing it scores every value of VALUES (the ways a completion writes a probability: "0", "1",
"0.0" ... "1.0", "0.00" ... "1.00") in place of the stated one, followed by the rest of the completion and its
stop token, and returns

    expected = sum_i p_i v_i / sum_i p_i,   mass = sum_i p_i

where p_i is the probability of the completion with value i given the text before the value, and `mass` says
how much of the model's probability the values cover (a model writing "70%" puts little mass on them).

    readouts = expected_confidences(config, params, tokenizer, [(prompt, response, stop_id), ...])
    # one Readout(expected, mass) per record, None where the response states no `Confidence: <number>`

The text before the value (prompt + response) is encoded once per record and prefilled into a KV cache that
all candidates share; the candidates' tokens (a few each) run as one batch over it.
"""

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from caopd_jax import models
from caopd_jax.calibration.confidence import stated_value_span
from caopd_jax.models import decode_attention, kv_cache
from caopd_jax.models.config import ModelConfig
from caopd_jax.tokenizers.base import Tokenizer

VALUES = ("0", "1", *(f"{d / 10:.1f}" for d in range(11)), *(f"{c / 100:.2f}" for c in range(101)))
_NUMBERS = np.array([float(v) for v in VALUES])
# One scoring call's bounds: candidate sequences (records x len(VALUES); activations and cache copies scale with it)
# and bytes of float32 logits (those sequences x their tokens x vocab).
_SEQUENCES, _LOGIT_BYTES = 2048, 1 << 29


class Readout(NamedTuple):
  expected: float   # sum_i p_i v_i / sum_i p_i over VALUES
  mass: float       # sum_i p_i: the probability, given the text before the value, that the model writes one of them


def _candidates(tokenizer: Tokenizer, prompt: str, response: str, stop_id: int | None
                ) -> tuple[list[int], list[list[int]]] | None:
  """(the shared prefix ids, each value's ids after it) for one record, or None when it states no number."""
  span = stated_value_span(response)
  if span is None:
    return None
  head, tail = prompt + response[:span[0]], response[span[1]:]
  end = [stop_id] if stop_id is not None else []
  full = [tokenizer.encode(head + value + tail) + end for value in VALUES]
  shared = min(len(ids) for ids in full) - 1   # every candidate keeps at least one token to score
  for ids in full[1:]:
    shared = next((i for i, (a, b) in enumerate(zip(full[0][:shared], ids)) if a != b), shared)
  if shared <= 0:
    return None   # no text before the value: nothing to condition on
  return full[0][:shared], [ids[shared:] for ids in full]


@functools.partial(jax.jit, static_argnums=0)
def _log_likelihoods(config: ModelConfig, params, prefix, prefix_mask, suffix, suffix_mask) -> jax.Array:
  """log p(suffix | prefix) float32 [R, C].

  prefix, prefix_mask: int/bool [R, P], left-padded (the last slot real). suffix, suffix_mask: int/bool [R, C, S],
  right-padded, at least one real token each: the C candidate continuations of each record.
  """
  r, c, s = suffix.shape
  layers = models.unstack_layers(params)
  dtype = params["embed"].dtype
  cache = kv_cache.init(config, r, decode_attention.cache_length(prefix.shape[1] + s - 1, dtype), dtype)
  hidden, cache = models.forward_with_cache(config, params, prefix, prefix_mask, models.default_positions(prefix_mask),
                                            cache, layers)
  first = jnp.repeat(hidden[:, -1:], c, axis=0)                                  # [R*C, 1, D]
  tokens, mask = suffix.reshape(r * c, s), suffix_mask.reshape(r * c, s)
  if s > 1:
    start = jnp.repeat(jnp.sum(prefix_mask, axis=1), c)[:, None]
    rest, _ = models.forward_with_cache(config, params, tokens[:, :-1], mask[:, :-1],
                                        start + jnp.arange(s - 1)[None], kv_cache.repeat(cache, c), layers)
    first = jnp.concatenate([first, rest], axis=1)                               # [R*C, S, D]
  logits = jnp.einsum("btd,dv->btv", first, models.unembedding(config, params), preferred_element_type=jnp.float32)
  picked = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(mask, picked, 0.0), axis=1).reshape(r, c)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _score_chunk(config: ModelConfig, params, chunk: list[tuple[list[int], list[list[int]]]], rows: int
                 ) -> np.ndarray:
  """log p [len(chunk), len(VALUES)] of a chunk of `_candidates`, padded to `rows` records (fewer compiles)."""
  width = _round_up(max(len(prefix) for prefix, _ in chunk), 64)
  depth = _round_up(max(len(ids) for _, values in chunk for ids in values), 4)
  prefix = np.zeros((rows, width), np.int32)
  prefix_mask = np.zeros((rows, width), bool)
  suffix = np.zeros((rows, len(VALUES), depth), np.int32)
  suffix_mask = np.zeros((rows, len(VALUES), depth), bool)
  prefix_mask[:, -1] = suffix_mask[:, :, 0] = True   # padding rows: one token each, results dropped
  for r, (ids, values) in enumerate(chunk):
    prefix[r, width - len(ids):], prefix_mask[r, width - len(ids):] = ids, True
    for c, value_ids in enumerate(values):
      suffix[r, c, :len(value_ids)], suffix_mask[r, c, :len(value_ids)] = value_ids, True
  scores = _log_likelihoods(config, params, prefix, prefix_mask, suffix, suffix_mask)
  return np.asarray(scores)[:len(chunk)]


def expected_confidences(config: ModelConfig, params, tokenizer: Tokenizer,
                         records: Sequence[tuple[str, str, int | None]], *, progress: bool = True
                         ) -> list[Readout | None]:
  """One Readout per (prompt text, response text, id of the stop token that ended it or None) record.

  None where the response states no `Confidence: <number>` (calibration.confidence.stated_value_span).
  """
  prepared = [_candidates(tokenizer, prompt, response, stop) for prompt, response, stop in records]
  todo = [i for i, p in enumerate(prepared) if p is not None]
  if not todo:
    return [None] * len(records)
  depth = max(len(ids) for i in todo for ids in prepared[i][1])
  rows = max(1, min(len(todo), _SEQUENCES // len(VALUES),
                    _LOGIT_BYTES // (len(VALUES) * _round_up(depth, 4) * config.vocab_size * 4)))
  out: list[Readout | None] = [None] * len(records)
  for start in tqdm(range(0, len(todo), rows), desc="reading expected confidences", unit="batch",
                    disable=not progress, leave=False):
    indices = todo[start:start + rows]
    log_p = _score_chunk(config, params, [prepared[i] for i in indices], rows)
    for i, row in zip(indices, log_p):
      top = row.max()
      weights = np.exp(row - top)
      out[i] = Readout(float(weights @ _NUMBERS / weights.sum()), float(np.exp(top) * weights.sum()))
  return out
