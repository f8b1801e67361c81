"""Run by tests/test_sharding.py in a subprocess with 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).

One training step (layers scanned, and unrolled on two meshes), the loss gradient, greedy rollouts and a checkpoint
round trip on meshes (data, fsdp, tensor) = (8,1,1), (2,4,1), (1,4,2), (2,2,2) against the one-device run (`--mesh=1`).
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax import models, rollout
from caopd_jax.distill.loss import LossBatch, micro_batch_loss, normalizers
from caopd_jax.distill.settings import LossSettings
from caopd_jax.distill.step import init_state, make_train_step, place_initial_state, state_shardings
from caopd_jax.models.config import ModelConfig
from caopd_jax.sharding.distributed import place
from caopd_jax.sharding.layout import activate
from caopd_jax.sharding.mesh import make_mesh
from caopd_jax.sharding.rules import Layout
from caopd_jax.train.checkpoint import RunCheckpoints
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer

MESHES = ["data:8", "data:2,fsdp:4", "fsdp:4,tensor:2", "data:2,fsdp:2,tensor:2"]
CONFIG = ModelConfig(family="qwen3", vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=16, qk_norm="head", tie_embeddings=False)
ROWS, PROMPT, COMPLETION = 8, 12, 6
LR = 1e-2


def _batch() -> LossBatch:
  rng = np.random.default_rng(0)
  completion = rng.integers(0, CONFIG.vocab_size, (ROWS, COMPLETION)).astype(np.int32)

  def side(width):
    tokens = np.concatenate([rng.integers(0, CONFIG.vocab_size, (ROWS, width)), completion], 1).astype(np.int32)
    mask = np.ones(tokens.shape, np.int32)
    mask[::2, :3] = 0                       # left padding on half of the rows
    mask[1::3, -2:] = 0                     # right padding (short completions)
    return tokens, mask

  loss_mask = np.ones((ROWS, COMPLETION), np.float32)
  loss_mask[1::3, -2:] = 0
  confidence = np.zeros((ROWS, COMPLETION), np.float32)
  confidence[:, 2] = 1
  sampled = np.ones((ROWS, COMPLETION), bool)
  sampled[:, -3:] = False                 # a rewritten tail: the exact-KL term
  logq = -rng.uniform(0.5, 3.0, (ROWS, COMPLETION)).astype(np.float32)
  return LossBatch(*side(PROMPT), *side(PROMPT + 4), completion, loss_mask, confidence, sampled, logq,
                   rng.normal(0.0, 0.5, (ROWS, COMPLETION)).astype(np.float32))   # the sampler's support cut


SETTINGS = LossSettings(divergence="sampled_token", sampler_tail=True, is_cap=0.0, calibration_weight=0.5,
                        skip_first=1, token_stats="xla_chunked", vocab_chunk=64)


def _initial_state(layout, params, optimizer):
  """(step-0 state placed on the layout's mesh, its shardings)."""
  shardings = state_shardings(layout, CONFIG, jax.eval_shape(lambda p: init_state(p, optimizer), params))
  return place_initial_state(params, optimizer, jnp.float32, shardings), shardings


@functools.cache
def _run(mesh_text: str, settings=SETTINGS):
  """(loss, grads, metrics, updated state) of one step on `mesh_text`."""
  layout = Layout(make_mesh(mesh_text))
  params = models.init(CONFIG, jax.random.key(1))
  optimizer = make_optimizer(LR, 10, warmup_fraction=0.0)
  state, shardings = _initial_state(layout, params, optimizer)
  batch = place(_batch(), layout.sharding(("batch",), (ROWS,)))

  def loss_and_grad(student, teacher, batch):
    with activate(layout):
      return jax.value_and_grad(micro_batch_loss, has_aux=True)(student, teacher, batch,
                                                                normalizers(batch, settings), CONFIG, settings)
  (loss, _), grads = jax.jit(loss_and_grad)(state.student, state.teacher, batch)
  step = make_train_step(CONFIG, settings, optimizer, learning_rate_schedule(LR, 10, 0.0), 0.01, 2, layout,
                         shardings)
  new_state, metrics = step(state, batch)
  return loss, grads, metrics, new_state


@pytest.fixture(scope="module")
def single():
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  return _run("1")


def _close(a, b, tol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    np.testing.assert_allclose(x, y, rtol=tol, atol=tol * max(1.0, float(np.abs(y).max())))


@pytest.mark.parametrize("mesh_text", MESHES)
def test_step_loss_gradients_and_params_equal_one_device(single, mesh_text):
  _assert_step_equals(_run(mesh_text), single)


def _assert_step_equals(run, single):
  """A run's (loss, grads, metrics, updated state) equal the one-device run's. AdamW's first update is
  lr * g / (|g| + eps), about lr * sign(g): where g is at rounding-noise level (|g| < 1e-3 max |g| of its tensor)
  the sign is noise, so the student's updates are compared where g is not."""
  loss, grads, metrics, state = run
  np.testing.assert_allclose(float(loss), float(single[0]), rtol=1e-5)
  _close(grads, single[1])
  for key in ("loss", "grad_norm", "divergence", "calibration_ce", "entropy"):
    np.testing.assert_allclose(float(metrics[key]), float(single[2][key]), rtol=2e-5, err_msg=key)
  _close(state.opt_state, single[3].opt_state)
  _close(state.teacher, single[3].teacher, 1e-4)
  start = models.init(CONFIG, jax.random.key(1))
  for new, ref, old, g in zip(jax.tree.leaves(state.student), jax.tree.leaves(single[3].student),
                              jax.tree.leaves(start), jax.tree.leaves(single[1])):
    moved, moved_ref, g = np.asarray(new) - np.asarray(old), np.asarray(ref) - np.asarray(old), np.abs(np.asarray(g))
    signal = g > 1e-3 * g.max()
    assert signal.any() and np.abs(moved_ref[signal]).min() > 0.9 * LR
    assert np.abs(moved - moved_ref)[signal].max() <= 1e-3 * LR


@pytest.mark.parametrize("mesh_text", MESHES)
def test_params_and_optimizer_state_are_really_sharded(mesh_text):
  _, _, _, state = _run(mesh_text)
  mesh = make_mesh(mesh_text)
  gate = state.student["layers"]["mlp"]["gate_proj"]          # [layers, embed, mlp]
  expected = (None, "fsdp" if mesh.shape["fsdp"] > 1 else None, "tensor" if mesh.shape["tensor"] > 1 else None)
  assert tuple(gate.sharding.spec) + (None,) * (3 - len(gate.sharding.spec)) == expected
  shard = gate.addressable_shards[0].data.shape
  assert shard == (2, 64 // mesh.shape["fsdp"], 128 // mesh.shape["tensor"])
  mu = state.opt_state[1][0].mu["layers"]["mlp"]["gate_proj"]  # AdamW's first moment follows its param
  assert mu.sharding == gate.sharding
  assert state.teacher["layers"]["mlp"]["gate_proj"].sharding == gate.sharding
  if mesh.shape["tensor"] > 1:
    assert state.student["lm_head"].addressable_shards[0].data.shape == (64 // mesh.shape["fsdp"],
                                                                       256 // mesh.shape["tensor"])


@pytest.mark.parametrize("mesh_text", ["data:2,fsdp:4", "data:2,fsdp:2,tensor:2"])
def test_unrolled_layers_on_a_mesh_take_the_one_device_scanned_step(single, mesh_text, monkeypatch):
  """train.unroll_layers with the weights split over fsdp (and tensor): static slices of sharded stacked weights
  give the one-device layer scan's loss, gradients, metrics and updated state."""
  unrolled, traced = models.Transformer._unrolled_layers, []
  monkeypatch.setattr(models.Transformer, "_unrolled_layers", lambda *a: traced.append(1) or unrolled(*a))
  run = _run.__wrapped__(mesh_text, SETTINGS._replace(unroll_layers=True))
  assert len(traced) >= 4       # the unrolled driver ran for student and teacher, in the gradient and in the step
  _assert_step_equals(run, single)


def test_pallas_loss_head_under_shard_map_equals_one_device():
  settings = SETTINGS._replace(sampler_tail=False)   # the Pallas kernels have no tail term (config validation)
  one = _run("1", settings._replace(token_stats="pallas"))
  sharded = _run("data:2,fsdp:4", settings._replace(token_stats="pallas"))
  np.testing.assert_allclose(float(sharded[0]), float(one[0]), rtol=1e-5)
  np.testing.assert_allclose(float(one[0]), float(_run("1", settings)[0]), rtol=1e-5)   # and pallas == xla_chunked
  _close(sharded[1], one[1])


@pytest.mark.parametrize("mesh_text", MESHES)
def test_greedy_rollouts_equal_one_device(mesh_text):
  params = models.init(CONFIG, jax.random.key(2))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [1], [3, 4], [20, 21, 22, 23], [7, 7], [9], [30, 31, 32]]
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=0.0)
  one = rollout.sample(CONFIG, params, prompts, jax.random.key(0), **kwargs)
  layout = Layout(make_mesh(mesh_text))
  sharded_params = jax.device_put(params, layout.params(models.logical_axes(CONFIG), params))
  many = rollout.sample(CONFIG, sharded_params, prompts, jax.random.key(0), layout=layout, **kwargs)
  np.testing.assert_array_equal(many.tokens, one.tokens)
  np.testing.assert_allclose(many.logprobs, one.logprobs, atol=1e-5)


@pytest.mark.parametrize("mesh_text", ["data:8", "fsdp:4,tensor:2", "data:2,fsdp:2,tensor:2"])
def test_the_decode_kernel_under_shard_map_draws_the_xla_form_s_tokens(mesh_text, monkeypatch):
  """The Pallas decode-attention kernel (in its interpreter) on a sharded cache: each device attends for its own
  rows and KV heads; tokens (greedy and T=1) and log-probs equal the XLA form's on the same mesh."""
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/
  from decode_kernel_sampling import sample_with_the_kernel
  params = models.init(CONFIG, jax.random.key(7))
  layout = Layout(make_mesh(mesh_text))
  sharded = jax.device_put(params, layout.params(models.logical_axes(CONFIG), params))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [1], [3, 4]]
  for temperature in (0.0, 1.0):
    kwargs = dict(num_samples=4, max_new_tokens=6, temperature=temperature, layout=layout)
    xla = rollout.sample(CONFIG, sharded, prompts, jax.random.key(8), **kwargs)
    kernel = sample_with_the_kernel(monkeypatch, CONFIG, sharded, prompts, jax.random.key(8), **kwargs)
    np.testing.assert_array_equal(kernel.tokens, xla.tokens)
    np.testing.assert_allclose(kernel.logprobs, xla.logprobs, atol=1e-5)


@pytest.mark.parametrize("mesh_text", ["data:8", "data:2,fsdp:4"])
def test_a_shrinking_batch_of_sharded_rows_samples_the_same_tokens(mesh_text):
  """Rows split over 8 devices: as rows finish (budgets 1..12) the batch shrinks 64 -> 32 -> 16 rows, still split
  8 ways, and every row's tokens equal decoding the whole batch to the end."""
  params = models.init(CONFIG, jax.random.key(5))
  layout = Layout(make_mesh(mesh_text))
  sharded = jax.device_put(params, layout.params(models.logical_axes(CONFIG), params))
  budgets = np.random.default_rng(1).integers(1, 13, size=(4, 16))
  budgets[0, 0] = 12
  kwargs = dict(num_samples=16, max_new_tokens=12, temperature=1.0, chunk=2, row_budgets=budgets, layout=layout)
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [1], [3, 4]]
  shrunk = rollout.sample(CONFIG, sharded, prompts, jax.random.key(6), **kwargs)
  whole = rollout.sample(CONFIG, sharded, prompts, jax.random.key(6), compact=False, **kwargs)
  np.testing.assert_array_equal(shrunk.tokens, whole.tokens)
  np.testing.assert_array_equal(shrunk.lengths, budgets)
  np.testing.assert_allclose(shrunk.logprobs, whole.logprobs, atol=1e-5)


@pytest.mark.parametrize("mesh_text", ["data:2,fsdp:4", "fsdp:4,tensor:2"])
def test_rollouts_on_the_replicated_layout_equal_the_training_layout_s(mesh_text):
  """The trainer's rollout.layout: weights resharded from an FSDP / tensor training layout onto data:8 (whole on
  every device) give the tokens (greedy and sampled at T=1) and log-probs of decoding on the training layout."""
  from caopd_jax.sharding import rollout_layout
  params = models.init(CONFIG, jax.random.key(3))
  train = Layout(make_mesh(mesh_text))
  on_train = jax.device_put(params, train.params(models.logical_axes(CONFIG), params))
  param_bytes = sum(p.nbytes for p in jax.tree.leaves(params))
  decode, why = rollout_layout.choose("replicated", train, param_bytes, device_memory=8 * param_bytes)
  assert dict(decode.mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1} and "replicated" in why
  replicated = rollout_layout.place(on_train, decode, models.logical_axes(CONFIG))
  leaf = replicated["layers"]["mlp"]["gate_proj"]
  assert leaf.sharding.is_fully_replicated and rollout_layout.place(replicated, decode, models.logical_axes(CONFIG)) is replicated
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [1], [3, 4]]
  for temperature in (0.0, 1.0):
    kwargs = dict(num_samples=2, max_new_tokens=6, temperature=temperature)
    a = rollout.sample(CONFIG, on_train, prompts, jax.random.key(4), layout=train, **kwargs)
    b = rollout.sample(CONFIG, replicated, prompts, jax.random.key(4), layout=decode, **kwargs)
    np.testing.assert_array_equal(b.tokens, a.tokens)
    np.testing.assert_allclose(b.logprobs, a.logprobs, atol=1e-5)
  # auto on CPU devices (one host memory) keeps the training layout; the forced modes do what they say
  assert rollout_layout.choose("auto", train, param_bytes, 8 * param_bytes)[0] is train
  assert rollout_layout.choose("train", train, param_bytes, 0)[0] is train
  data_only = Layout(make_mesh("data:8"))
  assert rollout_layout.choose("replicated", data_only, param_bytes, 0)[0] is data_only


def test_auto_replicates_accelerator_weights_that_fit_a_quarter_of_a_device():
  from caopd_jax.sharding.rollout_layout import replicate
  assert replicate("auto", True, "gpu", 10, 40)[0] and replicate("auto", True, "tpu", 10, 0)[0]
  kept, why = replicate("auto", True, "gpu", 11, 40)
  assert not kept and "more than 25% of a device's" in why
  assert replicate("replicated", True, "gpu", 11, 40)[0] and replicate("replicated", True, "cpu", 11, 40)[0]
  assert not replicate("auto", True, "cpu", 1, 40)[0] and not replicate("auto", False, "gpu", 1, 40)[0]
  assert not replicate("train", True, "gpu", 1, 40)[0]
  with pytest.raises(ValueError, match="rollout layout must be one of"):
    replicate("fast", True, "gpu", 1, 40)


def test_checkpoint_restores_onto_another_mesh(tmp_path):
  """Saved from (2, 4, 1), restored onto (1, 4, 2) and onto one device, and loaded by models.load as a run."""
  _, _, _, state = _run("data:2,fsdp:4")
  saver = RunCheckpoints(str(tmp_path), keep=2, async_save=False)
  saver.save(state, {"step": 1})
  saver.wait()
  for target in ("fsdp:4,tensor:2", "1"):
    layout = Layout(make_mesh(target))
    optimizer = make_optimizer(1e-2, 10, warmup_fraction=0.0)
    like, _ = _initial_state(layout, models.init(CONFIG, jax.random.key(9)), optimizer)
    restored, loop = saver.restore(1, like)
    assert loop["step"] == 1 and int(restored.step) == 1   # and its bit fingerprints matched on this mesh
    assert set(loop["fingerprints"]) == {"params", "train_state"}
    _close(restored.student, state.student, 0)
    _close(restored.opt_state, state.opt_state, 0)
    gate = restored.student["layers"]["mlp"]["gate_proj"]
    assert gate.sharding == layout.params(models.logical_axes(CONFIG), restored.student)["layers"]["mlp"]["gate_proj"]
  saver.close()
