"""Every model family against transformers: logits, greedy next tokens, bf16 bound, presets, axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hf_reference
from caopd_jax import models, weights
from caopd_jax.weights import hf_config

# Relative error = max |ours - ref| / max |ref| over real (unpadded) positions.
F32_TOLERANCE = 1e-4
# bfloat16 has 8 mantissa bits (relative rounding 2^-9 = 0.002 per op); through a few layers of
# random weights we measured 0.010-0.022 for these tiny models (3 batches each). 0.03 leaves room without hiding bugs:
# a wrong weight mapping or mask gives errors of order 1.
BF16_TOLERANCE = 0.03

_logits = jax.jit(models.logits, static_argnums=0)


def _rel_err(ours, ref, mask):
  return float(np.abs(ours - ref)[mask].max() / np.abs(ref[mask]).max())


def test_float32_logits_match_transformers(family):
  name, model, config, params, _ = family
  ids, mask = hf_reference.padded_batch(config.vocab_size)
  ref = hf_reference.reference_logits(model, ids, mask)
  ours = np.asarray(_logits(config, params, ids, mask))
  assert ours.dtype == np.float32 and ours.shape == ref.shape
  assert _rel_err(ours, ref, mask) <= F32_TOLERANCE, name
  np.testing.assert_array_equal(ours.argmax(-1)[mask], ref.argmax(-1)[mask])


def test_bfloat16_logits_within_bound(family):
  name, model, config, _, path = family
  config16, params16 = weights.load(path, dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params16))
  ids, mask = hf_reference.padded_batch(config.vocab_size, seed=1)
  ref = hf_reference.reference_logits(model, ids, mask)
  ours = np.asarray(_logits(config16, params16, ids, mask))
  assert ours.dtype == np.float32
  assert _rel_err(ours, ref, mask) <= BF16_TOLERANCE, name


def test_padding_does_not_change_real_tokens(family):
  """A left-padded row gives the same logits as the same tokens unpadded."""
  _, _, config, params, _ = family
  ids, mask = hf_reference.padded_batch(config.vocab_size)
  alone = np.asarray(_logits(config, params, ids[1:2, 3:], mask[1:2, 3:]))
  padded = np.asarray(_logits(config, params, ids, mask))[1:2, 3:]
  np.testing.assert_allclose(padded, alone, atol=1e-5, rtol=1e-5)


def test_contiguous_rows_take_the_fused_attention_path_with_the_same_result(family):
  """hidden_states(contiguous=True) (rows rotated so the real run comes first, attention on row lengths) equals
  the mask path for rows padded left, right, both and not at all, and for a row with no real token; gradients too.
  For OLMo-3 (sliding window) it is the mask path itself."""
  _, _, config, params, _ = family
  t = 12
  ids = np.random.default_rng(3).integers(0, config.vocab_size, (5, t))
  mask = np.zeros((5, t), bool)
  for row, (start, stop) in enumerate([(0, t), (4, t), (0, 7), (3, 9), (0, 0)]):
    mask[row, start:stop] = True

  def loss(p, contiguous):
    h = models.hidden_states(config, p, jnp.asarray(ids), jnp.asarray(mask), contiguous=contiguous)
    return jnp.sum(jnp.where(jnp.asarray(mask)[..., None], h, 0.0) ** 2), h

  (l_mask, h_mask), g_mask = jax.value_and_grad(loss, has_aux=True)(params, False)
  (l_fused, h_fused), g_fused = jax.value_and_grad(loss, has_aux=True)(params, True)
  assert np.all(np.isfinite(np.asarray(h_fused)))
  np.testing.assert_allclose(np.asarray(h_fused)[mask], np.asarray(h_mask)[mask], atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(float(l_fused), float(l_mask), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_fused), jax.tree.leaves(g_mask)):
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * max(1.0, float(np.abs(b).max())), rtol=1e-4)


def test_config_round_trips_through_transformers(family):
  name, model, config, _, _ = family
  hf = hf_config.to_hf(config)
  kwargs = {k: v for k, v in hf.items() if k not in ("architectures", "model_type")}
  again = transformers.AutoConfig.for_model(hf["model_type"], **kwargs)
  assert hf_config.from_hf(again.to_dict()) == config, name


def test_olmo3_uses_sliding_window_and_yarn():
  config = hf_config.from_hf(transformers.AutoConfig.for_model(
      "olmo3", **{k: v for k, v in hf_reference.FAMILY_CONFIGS["olmo3"].items() if k != "model_type"}).to_dict())
  assert config.layer_types == ("sliding", "sliding", "sliding", "full")
  assert config.rope.kind == "yarn" and config.sliding_rope.kind == "default"
  assert config.sliding_window == 4


@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_presets_have_the_published_parameter_count(name):
  """Our count equals transformers' count for the same architecture (built on the meta device)."""
  config = models.preset(name)
  hf = hf_config.to_hf(config)
  kwargs = {k: v for k, v in hf.items() if k not in ("architectures", "model_type")}
  with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(hf["model_type"],
                                                                                            **kwargs))
  assert config.num_params() == model.num_parameters()
  shapes = models.param_shapes(config)
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == config.num_params()


def test_every_parameter_has_logical_axes_of_its_rank():
  for name in ("qwen2.5-7b-instruct", "olmo3-7b-instruct", "qwen3-8b"):
    config = models.preset(name)
    shapes = jax.tree_util.tree_flatten_with_path(models.param_shapes(config))[0]
    axes = dict(jax.tree_util.tree_flatten_with_path(models.logical_axes(config),
                                                     is_leaf=lambda x: isinstance(x, tuple))[0])
    assert len(axes) == len(shapes)
    for path, shape in shapes:
      ax = axes[path]
      assert len(ax) == len(shape.shape), path
      stacked = path[0].key == "layers"
      assert (ax[0] == "layers") == stacked, path
      if stacked:
        assert shape.shape[0] == config.num_layers
