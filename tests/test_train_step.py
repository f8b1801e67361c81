"""The jitted training step against an independent PyTorch computation with the transformers models.

Checked against what:
  - `micro_batch_loss` (+ `normalizers`) value and student gradient, per divergence and calibration weight, on tiny
    random llama / qwen3 models (float32) with left-padded prompts and right-padded completions, against the loss
    of CAOPD.md sections 1, 2 and 4 written out in PyTorch on the transformers models (gradient by autograd,
    compared tensor by tensor under the Hugging Face names);
  - `make_train_step` with 1, 2 and 4 micro-batches against each other (one micro-batch without loss tokens);
  - one full step against a NumPy AdamW (after global-norm clipping) of the PyTorch gradient, the EMA teacher
    rule, and the PyTorch values of the metrics;
  - a non-finite step against a copy of its input state (the state must be left unchanged);
  - the `naive` and `xla_chunked` token statistics against each other.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_reference
from caopd_jax import models, weights
from caopd_jax.distill.loss import LossBatch, micro_batch_loss, normalizers
from caopd_jax.distill.settings import LossSettings
from caopd_jax.distill.step import TrainState, init_state, make_train_step
from caopd_jax.train.optim import learning_rate_schedule, make_optimizer
from caopd_jax.weights.hf_layout import hf_from_params

STUDENT_PROMPT, TEACHER_PROMPT, COMPLETION = 5, 8, 7
TEMPERATURE = 0.8   # not 1, so that a missing or one-sided temperature shows up
ALPHA = 0.3
VOCAB_CHUNK = 48    # < vocab 128 and not a divisor of it: three chunks, the last one padded
# Values are compared with rtol 1e-5 plus this absolute slack: the sampled-token surrogate r * log p_s(y) and the
# estimate r = log p_s(y) - log p_t(y) are differences of log-probs of size ~5 (vocab 128), so float32 leaves an
# absolute error of ~|log p|^2 * 2^-24 per token, not relative to the (partly cancelling) result. Measured: 3.5e-6 on
# a surrogate of 0.84, 6e-7 on one of 0.08, 2.7e-7 on a kl_estimate of -0.0016.
LOSS_ATOL = 5e-6
# Gradient parity: max |ours - torch| / max |torch| per tensor. Both sides run float32 models on the same weights.
GRAD_TOLERANCE = 1e-4
# Optimizer of the full-step tests: the clipped gradient's elements are of the order of eps, so Adam's first update
# g / (|g| + eps) depends on each element's size, not only on its sign (with eps << |g| it is lr * sign(g)).
PEAK_LR, WEIGHT_DECAY, CLIP_NORM, ADAM_EPS, EMA_RATE = 1e-2, 0.1, 1e-3, 1e-6, 0.01


IS_CAP = 1.5   # below some of make_batch's importance weights, so that the truncation shows


@pytest.fixture(autouse=True)
def float32_matmuls():
  """The tolerances here are float32's: on GPUs float32 matmuls default to TF32 (an H200 put two micro-batches'
  calibration_ce 2.4e-5 apart, relative); on CPUs this changes nothing."""
  with jax.default_matmul_precision("highest"):
    yield


def loss_settings(divergence="sampled_token", calibration_weight=0.0, token_stats="xla_chunked", tail=True):
  """tail: the rollouts' sampler cut the support (make_batch's finite thresholds); the Pallas kernels have no tail."""
  return LossSettings(divergence=divergence, alpha=ALPHA, skip_first=3, calibration_weight=calibration_weight,
                      temperature=TEMPERATURE, token_stats=token_stats, vocab_chunk=VOCAB_CHUNK, is_cap=IS_CAP,
                      sampler_tail=tail)


# ------------------------------------------------------------------------------------------------ models and batches


class Pair(NamedTuple):
  """Two different random transformers models of one config (student seed 0, teacher seed 1) and our params of them."""
  student_model: torch.nn.Module
  teacher_model: torch.nn.Module
  config: models.ModelConfig
  student: dict
  teacher: dict


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  """name -> Pair, built once per module: each model saved as a transformers folder and loaded by our code."""
  cache = {}

  def get(name: str) -> Pair:
    if name not in cache:
      loaded = []
      for seed in (0, 1):
        model = hf_reference.build(name, seed=seed)
        path = tmp_path_factory.mktemp(f"{name}_seed{seed}")
        model.save_pretrained(path)
        loaded.append((model, *weights.load(str(path))))
      (student_model, config, student), (teacher_model, teacher_config, teacher) = loaded
      assert config == teacher_config
      cache[name] = Pair(student_model, teacher_model, config, student, teacher)
    return cache[name]

  return get


def make_batch(vocab: int, lengths, student_pads, teacher_pads, no_loss=(), no_confidence=(), seed=0) -> LossBatch:
  """A NumPy LossBatch: prompts left-padded by `*_pads` (pad id 0, mask False), completions of `lengths` real tokens
  then padding; loss_mask = the real completion tokens except rows `no_loss`; confidence_mask = the 2 tokens before
  each row's last real token except rows `no_confidence`; sampled = the real tokens but the last 3 (a rewritten
  confidence line) except in row 1 (kept as sampled); sample_logprob random in [-4, -0.2]; sample_threshold a raw
  logit near the models' logits on even rows (a cut support) and -inf on odd ones."""
  rows = len(lengths)
  rng = np.random.default_rng(seed)
  real = np.arange(COMPLETION)[None, :] < np.asarray(lengths)[:, None]
  completion = np.where(real, rng.integers(3, vocab, (rows, COMPLETION)), 0).astype(np.int32)

  def side(width, pads):
    prompt_mask = np.arange(width)[None, :] >= np.asarray(pads)[:, None]
    prompt = np.where(prompt_mask, rng.integers(3, vocab, (rows, width)), 0)
    return np.concatenate([prompt, completion], axis=1).astype(np.int32), np.concatenate([prompt_mask, real], axis=1)

  loss_mask = real.astype(np.float32)
  loss_mask[list(no_loss)] = 0.0
  confidence_mask = np.zeros((rows, COMPLETION), np.float32)
  for row, n in enumerate(lengths):
    if row not in no_confidence:
      confidence_mask[row, n - 3:n - 1] = 1.0
  sampled = real & (np.arange(COMPLETION)[None, :] < np.asarray(lengths)[:, None] - 3)
  sampled[1] = real[1]
  sample_logprob = rng.uniform(-4.0, -0.2, (rows, COMPLETION)).astype(np.float32)
  threshold = np.where(np.arange(rows)[:, None] % 2 == 0, rng.normal(0.0, 0.3, (rows, COMPLETION)), -np.inf)
  return LossBatch(*side(STUDENT_PROMPT, student_pads), *side(TEACHER_PROMPT, teacher_pads), completion, loss_mask,
                   confidence_mask, sampled, sample_logprob, threshold.astype(np.float32))


# 4 rows: row 2 has no loss token but has confidence tokens, so the two normalizers differ (3 and 4 sequences).
SMALL_BATCH = dict(lengths=(7, 5, 6, 4), student_pads=(0, 2, 1, 3), teacher_pads=(3, 0, 2, 1), no_loss=(2,))
# 8 rows: rows 4-7 have no loss token (row 5 has confidence tokens), so with 2 micro-batches the second has no loss
# token and with 4 the last has no token of either kind.
LARGE_BATCH = dict(lengths=(7, 5, 6, 4, 7, 3, 6, 5), student_pads=(0, 2, 1, 3, 4, 0, 2, 1),
                   teacher_pads=(3, 0, 2, 1, 0, 5, 7, 2), no_loss=(4, 5, 6, 7), no_confidence=(4, 6, 7), seed=1)


def to_device(tree):
  """Fresh device copies (the train step donates its state, so no test may pass shared buffers to it)."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def to_numpy(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


# ------------------------------------------------------------------------------------------------ the PyTorch reference


def torch_reference(pair: Pair, batch: LossBatch, settings: LossSettings) -> dict:
  """CAOPD.md's loss written out on the transformers models: loss, metrics and the student gradient by HF name."""
  def completion_logp(model, tokens, mask):
    prompt = tokens.shape[1] - COMPLETION
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(hf_reference.positions(mask), dtype=torch.long))
    # the logits at column P - 1 + t predict completion token t
    logits = out.logits[:, prompt - 1:prompt - 1 + COMPLETION].double()
    return torch.log_softmax(logits / settings.temperature, dim=-1), logits

  def batch_mean(values, mask):
    """Each sequence's mean over its masked tokens, then the mean over the sequences that have any."""
    mask = torch.tensor(mask, dtype=torch.bool)
    means = [values[row][mask[row]].mean() for row in range(mask.shape[0]) if mask[row].any()]
    return torch.stack(means).mean()

  model = pair.student_model
  model.zero_grad(set_to_none=True)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)   # tiny models; on a shared 2-core machine, more threads only spin
  logp_s, raw_s = completion_logp(model, batch.student_tokens, batch.student_mask)
  with torch.no_grad():
    logp_t, _ = completion_logp(pair.teacher_model, batch.teacher_tokens, batch.teacher_mask)
  y = torch.tensor(batch.completion, dtype=torch.long)[..., None]
  logp_s_y, logp_t_y = logp_s.gather(-1, y)[..., 0], logp_t.gather(-1, y)[..., 0]
  p_s, p_t = logp_s.exp(), logp_t.exp()
  if settings.divergence == "sampled_token":
    # REINFORCE with importance weights on sampled tokens, the exact tail term, the exact KL on rewritten tokens
    weight = torch.exp(logp_s_y.detach() - torch.tensor(batch.sample_logprob, dtype=torch.float64))
    weight = weight.clamp(max=settings.is_cap) if settings.is_cap else weight
    estimate = (weight * (logp_s_y - logp_t_y)).detach() * logp_s_y
    if settings.sampler_tail:
      tail = raw_s.detach() < torch.tensor(batch.sample_threshold, dtype=torch.float64)[..., None]
      estimate = estimate + (p_s * (logp_s - logp_t) * tail).sum(-1) - (p_s * tail).sum(-1)
    per_token = torch.where(torch.tensor(batch.sampled), estimate, (p_s * (logp_s - logp_t)).sum(-1))
  elif settings.divergence == "forward_kl":
    per_token = (p_t * (logp_t - logp_s)).sum(-1)
  elif settings.divergence == "reverse_kl":
    per_token = (p_s * (logp_s - logp_t)).sum(-1)
  else:
    a = settings.alpha
    logp_m = torch.log(a * p_t + (1 - a) * p_s)
    per_token = a * (p_t * (logp_t - logp_m)).sum(-1) + (1 - a) * (p_s * (logp_s - logp_m)).sum(-1)
  loss_tokens = batch.loss_mask.astype(bool)
  divergence = batch_mean(per_token, loss_tokens & (np.arange(COMPLETION) >= settings.skip_first)[None, :])
  calibration = batch_mean(-logp_s_y, batch.confidence_mask.astype(bool))
  loss = divergence + settings.calibration_weight * calibration
  loss.backward()
  torch.set_num_threads(threads)
  tokens = torch.tensor(loss_tokens)
  entropy = -(p_s * logp_s).sum(-1)
  return {"loss": loss.item(), "divergence": divergence.item(), "calibration_ce": calibration.item(),
          "entropy": entropy[tokens].mean().item(), "kl_estimate": (logp_s_y - logp_t_y)[tokens].mean().item(),
          "loss_tokens": float(tokens.sum()),
          "grads": {name: p.grad.double().numpy() for name, p in model.named_parameters()}}


def assert_trees_close(actual, expected, rtol: float) -> None:
  """Same tree structure, and leaf by leaf max |actual - expected| <= rtol * max |expected|."""
  actual_leaves, actual_tree = jax.tree_util.tree_flatten_with_path(actual)
  expected_leaves, expected_tree = jax.tree_util.tree_flatten_with_path(expected)
  assert actual_tree == expected_tree
  for (path, a), (_, e) in zip(actual_leaves, expected_leaves):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape, jax.tree_util.keystr(path)
    error, scale = np.abs(a - e).max(initial=0.0), np.abs(e).max(initial=0.0)
    assert error <= rtol * scale, f"{jax.tree_util.keystr(path)}: max error {error:.3g}, max value {scale:.3g}"


def relative_grad_errors(config, ours, reference: dict) -> dict[str, float]:
  """HF name -> max |ours - reference| / max |reference| of each tensor; ours: our param tree of gradients."""
  ours = hf_from_params(config, to_numpy(ours))
  assert sorted(ours) == sorted(reference)
  errors = {}
  for name, ref in reference.items():
    assert np.abs(ref).max() > 0, name
    errors[name] = float(np.abs(ours[name] - ref).max() / np.abs(ref).max())
  return errors


DIVERGENCES = ("sampled_token", "forward_kl", "reverse_kl", "jsd")
CALIBRATION_WEIGHTS = (0.0, 0.7)
STATS_DIVERGENCES = ("sampled_token", "forward_kl", "reverse_kl")   # the ones whose values come from token_stats
STATS_VARIANTS = (("naive", True), ("naive", False), ("pallas", False))   # (token_stats, tail)
LOSS_SETTINGS = tuple(loss_settings(d, w) for d in DIVERGENCES for w in CALIBRATION_WEIGHTS) + tuple(
    loss_settings(d, 0.7, impl, tail) for d in STATS_DIVERGENCES for impl, tail in STATS_VARIANTS)


@pytest.fixture(scope="module")
def our_losses(pairs):
  """name -> {LossSettings: (loss, metric sums, student gradient)} of `micro_batch_loss` on SMALL_BATCH as one
  micro-batch (with the batch's `normalizers`), NumPy.

  Every settings' loss and gradient is a separate `micro_batch_loss` call, but they share one jitted program per
  model family: one XLA compile instead of 11 (compiling dominates this file's run time).
  """
  cache = {}

  def get(name: str) -> dict:
    if name not in cache:
      pair = pairs(name)

      def run(student, teacher, batch):
        out = []
        for settings in LOSS_SETTINGS:
          grad_fn = jax.value_and_grad(micro_batch_loss, has_aux=True)
          (loss, sums), grads = grad_fn(student, teacher, batch, normalizers(batch, settings), pair.config, settings)
          out.append((loss, sums, grads))
        return out

      batch = make_batch(pair.config.vocab_size, **SMALL_BATCH)
      results = to_numpy(jax.jit(run)(pair.student, pair.teacher, to_device(batch)))
      cache[name] = dict(zip(LOSS_SETTINGS, results))
    return cache[name]

  return get


# ------------------------------------------------------------------------------------------------ 1. one-step parity


@pytest.mark.parametrize("calibration_weight", CALIBRATION_WEIGHTS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_loss_and_gradient_match_pytorch(pairs, our_losses, name, divergence, calibration_weight):
  pair = pairs(name)
  batch = make_batch(pair.config.vocab_size, **SMALL_BATCH)
  settings = loss_settings(divergence, calibration_weight)
  np.testing.assert_array_equal(np.asarray(normalizers(batch, settings)), [3.0, 4.0])
  ref = torch_reference(pair, batch, settings)
  loss, sums, grads = our_losses(name)[settings]
  assert abs(ref["divergence"]) > 1e-3 and ref["calibration_ce"] > 1.0   # the teacher differs from the student
  np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5, atol=LOSS_ATOL)
  for key in ("divergence", "calibration_ce"):
    np.testing.assert_allclose(sums[key], ref[key], rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
  assert sums["loss_tokens"] == ref["loss_tokens"]
  for key in ("entropy", "kl_estimate"):   # the metric sums run over all loss tokens (skip_first does not apply)
    np.testing.assert_allclose(sums[key] / ref["loss_tokens"], ref[key], rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
  errors = relative_grad_errors(pair.config, grads, ref["grads"])
  worst = max(errors, key=errors.get)
  assert errors[worst] <= GRAD_TOLERANCE, (worst, errors[worst])


# ------------------------------------------------------------------------------------------------ 2-4. the train step

STEP_SETTINGS = loss_settings("sampled_token", 0.7)
TOTAL_STEPS = 10


@functools.cache
def optimizer():
  return make_optimizer(PEAK_LR, TOTAL_STEPS, warmup_fraction=0.0, weight_decay=WEIGHT_DECAY, clip_norm=CLIP_NORM,
                        eps=ADAM_EPS)


@functools.cache
def train_step(config, micro_batches: int):
  """The jitted step, built (and so compiled) once per (config, micro_batches)."""
  schedule = learning_rate_schedule(PEAK_LR, TOTAL_STEPS, warmup_fraction=0.0)
  return make_train_step(config, STEP_SETTINGS, optimizer(), schedule, EMA_RATE, micro_batches)


def initial_state(pair: Pair) -> TrainState:
  """Step 0 with the pair's student and its different teacher, as fresh device arrays (the step donates them)."""
  student = to_device(pair.student)
  return TrainState(jnp.zeros((), jnp.int32), student, to_device(pair.teacher), optimizer().init(student))


def test_gradient_accumulation_is_exact(pairs):
  pair = pairs("llama")
  batch = make_batch(pair.config.vocab_size, **LARGE_BATCH)
  # with 2 micro-batches the second has no loss token; with 4 the last has no token at all
  assert batch.loss_mask[4:].sum() == 0 and batch.confidence_mask[6:].sum() == 0 and batch.loss_mask[:4].sum() > 0
  results = {}
  for micro_batches in (1, 2, 4):
    results[micro_batches] = to_numpy(train_step(pair.config, micro_batches)(initial_state(pair), to_device(batch)))
  state, metrics = results[1]
  assert metrics["finite"] == 1 and state.step == 1
  for micro_batches in (2, 4):
    other_state, other_metrics = results[micro_batches]
    assert sorted(other_metrics) == sorted(metrics)
    for key, value in metrics.items():
      np.testing.assert_allclose(other_metrics[key], value, rtol=1e-5, atol=LOSS_ATOL,
                                 err_msg=f"{micro_batches} micro-batches: {key}")
    assert_trees_close(other_state, state, 1e-5)


def test_one_step_is_clipped_adamw_of_the_pytorch_gradient_then_ema(pairs):
  pair = pairs("llama")
  batch = make_batch(pair.config.vocab_size, **LARGE_BATCH)
  ref = torch_reference(pair, batch, STEP_SETTINGS)
  state, metrics = to_numpy(train_step(pair.config, 1)(initial_state(pair), to_device(batch)))
  schedule = learning_rate_schedule(PEAK_LR, TOTAL_STEPS, warmup_fraction=0.0)
  assert float(schedule(0)) == pytest.approx(PEAK_LR, rel=1e-6)   # no warmup: the first step runs at the peak rate
  lr = PEAK_LR
  grad_norm = np.sqrt(sum(np.sum(g ** 2) for g in ref["grads"].values()))
  assert grad_norm > 100 * CLIP_NORM   # clipping is active
  old = hf_from_params(pair.config, to_numpy(pair.student))
  new = hf_from_params(pair.config, state.student)
  assert sorted(new) == sorted(ref["grads"])
  errors, near_eps = {}, []
  for name, grad in ref["grads"].items():
    clipped = grad * (CLIP_NORM / grad_norm)
    near_eps.append((np.abs(clipped) > 0.1 * ADAM_EPS) & (np.abs(clipped) < 10 * ADAM_EPS))
    # AdamW's first step: the bias-corrected moments are g and g^2, so Adam's direction is g / (|g| + eps)
    expected = old[name] - lr * (clipped / (np.abs(clipped) + ADAM_EPS) + WEIGHT_DECAY * old[name])
    errors[name] = float(np.abs(new[name] - expected).max() / lr)
  # most clipped elements are within a factor 10 of eps, where the update depends on their size, not only their sign
  assert np.mean(np.concatenate([x.ravel() for x in near_eps])) > 0.5
  # A relative gradient error d moves an element's update by at most lr * d / 4 (a sign-only update would be off by
  # ~0.9 lr); the floor is a float32 ulp or two of the updated weights (norm scales ~1.5: ulp 1.2e-5 lr; measured
  # 2e-5 lr).
  worst = max(errors, key=errors.get)
  assert errors[worst] <= 1e-4, (worst, errors[worst])
  assert state.step == 1 and metrics["finite"] == 1
  expected_teacher = jax.tree.map(lambda s, t: EMA_RATE * s + (1 - EMA_RATE) * t, state.student,
                                  to_numpy(pair.teacher))
  assert_trees_close(state.teacher, expected_teacher, 1e-6)
  np.testing.assert_allclose(metrics["lr"], lr, rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], ref["loss"], rtol=1e-5, atol=LOSS_ATOL)
  for key in ("divergence", "calibration_ce", "entropy", "kl_estimate"):
    np.testing.assert_allclose(metrics[key], ref[key], rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
  assert metrics["loss_tokens"] == ref["loss_tokens"]


def tiny_smollm2():
  """A 2-layer, 64-wide model of SmolLM2's family with a 64-token vocabulary."""
  return dataclasses.replace(models.preset("smollm2-135m"), vocab_size=64, hidden_size=64, intermediate_size=128,
                             num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)


def test_the_step_lands_small_adamw_steps_on_bf16_weights():
  """One AdamW step at lr 2e-5 on a bf16 model: with nearest rounding the weights of magnitude >= 0.016 (spacing
  >= 6e-5: half a spacing is more than the step) stay put; with stochastic rounding (the default) a fair share of
  them move, and the teacher's float32 -> bf16 EMA moves too (distill/rounding.py)."""
  config = tiny_smollm2()
  params = models.init(config, jax.random.key(0), jnp.bfloat16)
  batch = to_device(make_batch(config.vocab_size, **SMALL_BATCH))
  moved = {}
  small = make_optimizer(2e-5, TOTAL_STEPS, warmup_fraction=0.0)
  for mode in ("nearest", "stochastic"):
    step = make_train_step(config, STEP_SETTINGS, small, learning_rate_schedule(2e-5, TOTAL_STEPS, 0.0), EMA_RATE, 1,
                           rounding=mode, seed=0)
    state, metrics = step(init_state(jax.tree.map(jnp.copy, params), small, jnp.bfloat16), batch)   # donated
    assert float(metrics["finite"]) == 1.0
    before, after, teacher = (np.concatenate([np.asarray(x, np.float32).ravel() for x in jax.tree.leaves(tree)])
                              for tree in (params, state.student, state.teacher))
    large = np.abs(before) >= 0.016
    moved[mode] = ((after[large] != before[large]).mean(), (teacher[large] != before[large]).mean())
  assert moved["nearest"] == (0.0, 0.0)
  assert moved["stochastic"][0] > 0.05 and moved["stochastic"][1] > 0.0


def test_a_frozen_teacher_stays_as_it_started():
  """distill.teacher_ema = 0: two steps move the student and leave the teacher bit for bit as it started."""
  config = tiny_smollm2()
  params = models.init(config, jax.random.key(0), jnp.float32)
  batch = to_device(make_batch(config.vocab_size, **SMALL_BATCH))
  step = make_train_step(config, STEP_SETTINGS, optimizer(), learning_rate_schedule(PEAK_LR, TOTAL_STEPS, 0.0), 0.0, 1)
  state = init_state(jax.tree.map(jnp.copy, params), optimizer())
  for _ in range(2):
    state, metrics = step(state, batch)
    assert float(metrics["finite"]) == 1.0
  state = to_numpy(state)
  jax.tree.map(np.testing.assert_array_equal, state.teacher, to_numpy(params))
  assert any(not np.array_equal(new, old) for new, old in zip(jax.tree.leaves(state.student),
                                                             jax.tree.leaves(to_numpy(params))))


@pytest.mark.parametrize("name, remat", [("qwen3", "none"), ("olmo3", "dots")])
def test_unrolled_layers_take_the_scanned_step(pairs, name, remat, monkeypatch):
  """train.unroll_layers drives the same layers one after another on static weight slices instead of a lax.scan:
  two micro-batches' step (student with and teacher without gradient) gives the scanned step's metrics and state.
  olmo3 alternates sliding-window and full layers (the mask path); qwen3 takes the right-padded fused path."""
  pair = pairs(name)
  batch = make_batch(pair.config.vocab_size, **LARGE_BATCH)
  schedule = learning_rate_schedule(PEAK_LR, TOTAL_STEPS, warmup_fraction=0.0)
  unrolled = models.Transformer._unrolled_layers
  traced = []                                  # the unroll flag of each traced call of the unrolled driver
  monkeypatch.setattr(models.Transformer, "_unrolled_layers", lambda *a: traced.append(unroll) or unrolled(*a))
  results = []
  for unroll in (False, True):
    settings = STEP_SETTINGS._replace(remat=remat, unroll_layers=unroll)
    step = make_train_step(pair.config, settings, optimizer(), schedule, EMA_RATE, 2)
    results.append(to_numpy(step(initial_state(pair), to_device(batch))))
  assert traced and set(traced) == {True}      # only the unrolled run took it (student and teacher forwards)
  (state, metrics), (unrolled_state, unrolled_metrics) = results
  assert metrics["finite"] == 1 and metrics["loss"] != 0
  for key, value in metrics.items():
    np.testing.assert_allclose(unrolled_metrics[key], value, rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
  assert_trees_close(unrolled_state, state, 1e-5)


def test_non_finite_step_leaves_the_state_unchanged(pairs):
  pair = pairs("llama")
  batch = make_batch(pair.config.vocab_size, **LARGE_BATCH)
  teacher = to_numpy(pair.teacher)
  teacher["final_norm"]["scale"][0] = np.nan   # every teacher log-prob, so the loss, becomes NaN
  state = initial_state(pair)._replace(teacher=to_device(teacher))
  before = to_numpy(state)
  after, metrics = train_step(pair.config, 1)(state, to_device(batch))
  assert np.isnan(float(metrics["loss"])) and float(metrics["finite"]) == 0.0
  after = to_numpy(after)
  assert after.step == 0
  jax.tree.map(np.testing.assert_array_equal, after, before)   # NaN equals NaN here: the teacher is kept as it was


# ------------------------------------------------------------------------------ 5. naive vs chunked vs Pallas kernels


@pytest.mark.parametrize("divergence", STATS_DIVERGENCES)
@pytest.mark.parametrize("name", ["llama", "qwen3"])
@pytest.mark.parametrize("impl", ["xla_chunked", "pallas"])
def test_streamed_token_stats_give_the_naive_loss_and_gradient(our_losses, name, divergence, impl):
  """xla_chunked and the Pallas kernels (interpret mode here) through the whole loss and its gradient."""
  tail = impl != "pallas"
  chunked = our_losses(name)[loss_settings(divergence, 0.7, impl, tail)]
  naive = our_losses(name)[loss_settings(divergence, 0.7, "naive", tail)]
  np.testing.assert_allclose(chunked[0], naive[0], rtol=1e-5, atol=LOSS_ATOL)
  for key in naive[1]:   # divergence, calibration_ce, entropy, kl_estimate, loss_tokens
    np.testing.assert_allclose(chunked[1][key], naive[1][key], rtol=1e-5, atol=LOSS_ATOL, err_msg=key)
  assert_trees_close(chunked[2], naive[2], 1e-5)


@pytest.mark.parametrize("remat", ["layers", "dots"])
def test_rematerialised_layers_give_the_same_loss_and_gradient(pairs, remat):
  """train.remat recomputes layer activations in the backward: same numbers, less memory."""
  pair = pairs("qwen3")
  batch = to_device(make_batch(pair.config.vocab_size, **SMALL_BATCH))

  def run(settings):
    grad_fn = jax.jit(jax.value_and_grad(lambda s: micro_batch_loss(s, pair.teacher, batch, normalizers(batch, settings),
                                                                    pair.config, settings)[0]))
    return grad_fn(pair.student)

  base = loss_settings("forward_kl", 0.7)
  (loss, grads), (loss_remat, grads_remat) = run(base), run(base._replace(remat=remat))
  np.testing.assert_allclose(float(loss_remat), float(loss), rtol=1e-6)
  assert_trees_close(to_numpy(grads_remat), to_numpy(grads), 1e-5)


def test_a_non_finite_weight_the_forward_does_not_read_is_reported(pairs):
  """A NaN in the embedding row of a token no row holds (ids 1, 2: make_batch draws from 3 up, pads with 0) leaves the
  loss and gradient finite, so the update is applied; the updated student is not finite, so metrics["finite"] is 0
  and the trainer stops without saving."""
  pair = pairs("llama")   # untied: the unembedding does not read the embedding rows
  batch = make_batch(pair.config.vocab_size, **LARGE_BATCH)
  student = to_numpy(pair.student)
  student["embed"][1] = np.nan
  state = initial_state(pair)._replace(student=to_device(student))
  state = state._replace(opt_state=optimizer().init(state.student))
  after, metrics = train_step(pair.config, 1)(state, to_device(batch))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["finite"]) == 0.0 and int(after.step) == 1
