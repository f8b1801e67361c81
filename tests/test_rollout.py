"""The KV-cache sampler: greedy parity with transformers, log-prob parity with the training forward,
sampling distributions, determinism, isolation between prompts, stop tokens and limits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
import transformers

from caopd_jax import models, rollout, weights
from caopd_jax.errors import CaopdError
from caopd_jax.rollout.sampling import sampling_logprobs

_log_softmax_logits = jax.jit(lambda c, p, ids: jax.nn.log_softmax(models.logits(c, p, ids), -1),
                              static_argnums=0)


def _prompts(vocab, lengths=(5, 9, 3), seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, size=n).tolist() for n in lengths]


def _teacher_forced(config, params, prompt, completion):
  """log p(completion[t] | prompt, completion[:t]) from one training-style forward, float32 [len]."""
  full = np.array([list(prompt) + list(completion)])
  logp = np.asarray(_log_softmax_logits(config, params, full))[0]
  at = np.arange(len(prompt) - 1, len(prompt) - 1 + len(completion))
  return logp[at, completion]


def test_greedy_matches_transformers_with_padding(family):
  _, model, config, params, _ = family
  prompts = _prompts(config.vocab_size)
  out = rollout.sample(config, params, prompts, jax.random.key(0), max_new_tokens=12, temperature=0.0)
  width = max(map(len, prompts))
  ids = torch.zeros((len(prompts), width), dtype=torch.long)
  mask = torch.zeros((len(prompts), width), dtype=torch.long)
  for i, p in enumerate(prompts):
    ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  with torch.no_grad():
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)[:, width:].numpy()
  np.testing.assert_array_equal(out.tokens[:, 0], ref)
  assert out.mask.all() and (out.lengths == 12).all() and out.truncated.all()
  assert (out.logprobs == 0).all()  # greedy: each token has probability 1 under its (deterministic) rule


def test_sampled_logprobs_equal_the_training_forward(family):
  """The property RL/OPD stacks keep losing: sampler log-probs == a fresh forward over prompt + completion."""
  _, _, config, params, _ = family
  prompts = _prompts(config.vocab_size, seed=1)
  out = rollout.sample(config, params, prompts, jax.random.key(1), num_samples=3, max_new_tokens=10,
                       temperature=1.0)
  assert out.tokens.shape == (3, 3, 10)
  for i, prompt in enumerate(prompts):
    for k in range(3):
      ref = _teacher_forced(config, params, prompt, out.tokens[i, k])
      np.testing.assert_allclose(out.model_logprobs[i, k], ref, atol=1e-5, rtol=0)
      # temperature 1, no filters: the sampling distribution is the model's
      np.testing.assert_allclose(out.logprobs[i, k], ref, atol=1e-5, rtol=0)


def test_filtered_sampling_logprobs_equal_the_training_forward(family):
  _, _, config, params, _ = family
  prompt = _prompts(config.vocab_size, lengths=(7,), seed=2)[0]
  settings = dict(temperature=0.7, top_k=20, top_p=0.9)
  out = rollout.sample(config, params, [prompt], jax.random.key(2), num_samples=2, max_new_tokens=8, **settings)
  for k in range(2):
    full = np.array([prompt + out.tokens[0, k].tolist()])
    logits = np.asarray(models.logits(config, params, full))[0, len(prompt) - 1:-1]
    filtered = np.asarray(sampling_logprobs(jnp.asarray(logits), **settings))
    expected = filtered[np.arange(8), out.tokens[0, k]]
    assert np.isfinite(expected).all()  # every sampled token is inside the filters
    np.testing.assert_allclose(out.logprobs[0, k], expected, atol=2e-5, rtol=0)


def test_bfloat16_sampling_runs_and_tracks_the_bf16_forward(family):
  _, _, config, _, path = family
  config16, params16 = weights.load(path, dtype=jnp.bfloat16)
  prompts = _prompts(config.vocab_size, seed=3)
  out = rollout.sample(config16, params16, prompts, jax.random.key(3), num_samples=2, max_new_tokens=8)
  for i, prompt in enumerate(prompts):
    ref = _teacher_forced(config16, params16, prompt, out.tokens[i, 0])
    # Same math, different bf16 rounding (one token at a time against the cache vs the whole
    # sequence at once). Measured <= 0.012 on these models.
    np.testing.assert_allclose(out.model_logprobs[i, 0], ref, atol=0.05, rtol=0)


# ---- distributions ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bigram_model():
  """A 1-layer model whose attention and MLP are zero: next-token logits = rmsnorm(embed[last]) @ lm_head."""
  config = models.ModelConfig(family="llama", vocab_size=12, hidden_size=16, intermediate_size=8, num_layers=1,
                              num_heads=2, num_kv_heads=2, head_dim=8, rms_norm_eps=1e-6,
                              max_position_embeddings=64)
  params = jax.tree.map(jnp.zeros_like, models.init(config, jax.random.key(0)))
  rng = np.random.default_rng(0)
  params["embed"] = jnp.asarray(rng.standard_normal((12, 16)), jnp.float32)
  params["lm_head"] = jnp.asarray(rng.standard_normal((16, 12)) * 0.5, jnp.float32)
  params["final_norm"]["scale"] = jnp.ones(16)
  x = np.asarray(params["embed"][3], np.float64)
  logits = (x / np.sqrt(np.mean(x ** 2) + 1e-6)) @ np.asarray(params["lm_head"], np.float64)
  return config, params, logits


def _expected(logits, temperature, top_k, top_p):
  x = logits / temperature
  if top_k:
    x = np.where(x < np.sort(x)[::-1][top_k - 1], -np.inf, x)
  p = np.exp(x - x.max())
  p /= p.sum()
  if top_p < 1:
    order = np.argsort(-p)
    before = np.cumsum(p[order]) - p[order]
    keep = np.zeros_like(p, bool)
    keep[order[before < top_p]] = True
    p = np.where(keep, p, 0)
    p /= p.sum()
  return p


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.6, 0, 1.0), (1.3, 4, 1.0), (1.0, 0, 0.7),
                                                     (0.8, 6, 0.8)])
def test_sample_frequencies_match_the_theoretical_distribution(bigram_model, temperature, top_k, top_p):
  config, params, logits = bigram_model
  out = rollout.sample(config, params, [[3]], jax.random.key(7), num_samples=4000, max_new_tokens=1,
                       temperature=temperature, top_k=top_k, top_p=top_p)
  counts = np.bincount(out.tokens[0, :, 0], minlength=12)
  p = _expected(logits, temperature, top_k, top_p)
  assert counts[p == 0].sum() == 0  # filtered tokens are never drawn
  kept = p > 0
  result = scipy.stats.chisquare(counts[kept], 4000 * p[kept])
  assert result.pvalue > 1e-3, (counts, 4000 * p)
  # and the reported log-prob of each draw is log p of the renormalised distribution
  np.testing.assert_allclose(out.logprobs[0, :, 0], np.log(p[out.tokens[0, :, 0]]), atol=1e-4)
  # and the reported threshold is the support's edge: the kept logits are those at or above it (1e-4: the hand
  # logits are float64, the sampler's float32; neighbouring logits here are > 1e-2 apart)
  threshold = out.thresholds[0, 0, 0]
  assert (out.thresholds[0, :, 0] == threshold).all()
  np.testing.assert_array_equal(logits >= threshold - 1e-4, kept)


def test_greedy_support_is_the_argmax(bigram_model):
  config, params, logits = bigram_model
  out = rollout.sample(config, params, [[3]], jax.random.key(0), max_new_tokens=1, temperature=0.0)
  assert out.tokens[0, 0, 0] == np.argmax(logits)
  np.testing.assert_allclose(out.thresholds[0, 0, 0], logits.max(), atol=1e-4)


# ---- determinism, isolation, stops, limits --------------------------------------------------------------


def test_same_rng_same_samples_and_prompts_do_not_leak(family):
  _, _, config, params, _ = family
  prompts = _prompts(config.vocab_size, seed=4)
  kwargs = dict(num_samples=2, max_new_tokens=10, temperature=1.0)
  a = rollout.sample(config, params, prompts, jax.random.key(5), **kwargs)
  b = rollout.sample(config, params, prompts, jax.random.key(5), **kwargs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  c = rollout.sample(config, params, prompts, jax.random.key(6), **kwargs)
  assert (a.tokens != c.tokens).any()
  changed = [prompts[0], _prompts(config.vocab_size, lengths=(9,), seed=99)[0], prompts[2]]
  d = rollout.sample(config, params, changed, jax.random.key(5), **kwargs)
  np.testing.assert_array_equal(d.tokens[[0, 2]], a.tokens[[0, 2]])
  assert (d.tokens[1] != a.tokens[1]).any()
  # Row (i, k) uses stream fold_in(fold_in(rng, i), k): prompt 0 alone (a 1-row batch) samples the same.
  alone = rollout.sample(config, params, [prompts[0]], jax.random.key(5), **kwargs)
  np.testing.assert_array_equal(alone.tokens[0], a.tokens[0])


def test_stop_tokens_end_completions(bigram_model):
  config, params, logits = bigram_model
  # A bigram chain: from token 3 the model moves on; stop on every token but the two likeliest.
  stops = [t for t in range(12) if t not in np.argsort(-logits)[:2]]
  out = rollout.sample(config, params, [[3], [3, 3]], jax.random.key(0), num_samples=50, max_new_tokens=6,
                       stop_token_ids=stops)
  assert out.stopped.any() and out.truncated.any()
  for i in range(2):
    for k in range(50):
      n = out.lengths[i, k]
      assert out.mask[i, k, :n].all() and not out.mask[i, k, n:].any()
      assert (out.tokens[i, k, n:] == 0).all() and (out.logprobs[i, k, n:] == 0).all()
      assert (out.model_logprobs[i, k, n:] == 0).all()
      assert out.stopped[i, k] == (out.tokens[i, k, n - 1] in stops)
      assert not np.isin(out.tokens[i, k, :n - 1], stops).any()


def test_limits(bigram_model):
  config, params, _ = bigram_model
  with pytest.raises(CaopdError, match="prompt 1 has 60 tokens; with max_new_tokens=8 it needs 68 cache slots"):
    rollout.sample(config, params, [[1], [2] * 60], jax.random.key(0), max_new_tokens=8)
  with pytest.raises(CaopdError, match="prompt 0 is empty"):
    rollout.sample(config, params, [[]], jax.random.key(0), max_new_tokens=8)
  with pytest.raises(CaopdError, match="token ids outside"):
    rollout.sample(config, params, [[12]], jax.random.key(0), max_new_tokens=8)
  with pytest.raises(CaopdError, match="top_p"):
    rollout.sample(config, params, [[1]], jax.random.key(0), max_new_tokens=8, top_p=0.0)
  empty = rollout.sample(config, params, [[1], [2, 3]], jax.random.key(0), num_samples=3, max_new_tokens=0)
  assert empty.tokens.shape == (2, 3, 0) and (empty.lengths == 0).all()
  one = rollout.sample(config, params, [[1]], jax.random.key(0), num_samples=1, max_new_tokens=4)
  assert one.tokens.shape == (1, 1, 4)
  full = rollout.sample(config, params, [[2] * 56], jax.random.key(0), max_new_tokens=8)  # exactly fills 64
  assert full.tokens.shape == (1, 1, 8)


def test_row_budgets_truncate_each_row_at_its_own_length(family):
  _, _, config, params, _ = family
  prompts = _prompts(config.vocab_size, seed=5)
  budgets = np.array([[1, 7], [10, 3], [5, 10]])
  kwargs = dict(num_samples=2, max_new_tokens=10, temperature=1.0)
  full = rollout.sample(config, params, prompts, jax.random.key(3), **kwargs)
  cut = rollout.sample(config, params, prompts, jax.random.key(3), row_budgets=budgets, **kwargs)
  np.testing.assert_array_equal(cut.lengths, budgets)
  assert cut.truncated.all()
  for i in range(3):
    for k in range(2):   # the same tokens as without budgets, up to the budget; nothing after it
      b = budgets[i, k]
      np.testing.assert_array_equal(cut.tokens[i, k, :b], full.tokens[i, k, :b])
      assert not cut.mask[i, k, b:].any() and (cut.tokens[i, k, b:] == 0).all()
  with pytest.raises(CaopdError, match="row_budgets must lie in 1..max_new_tokens=10; got 0..11"):
    rollout.sample(config, params, prompts, jax.random.key(3), row_budgets=budgets * 0 + [[0, 11]], **kwargs)
  with pytest.raises(CaopdError, match=r"shape \(prompts, num_samples\) = \(3, 2\)"):
    rollout.sample(config, params, prompts, jax.random.key(3), row_budgets=budgets[:2], **kwargs)


def test_compaction_plan_keeps_live_rows_and_fills_to_a_power_of_two():
  from caopd_jax.rollout.compaction import MIN_ROWS, plan
  assert MIN_ROWS == 16
  done = np.ones(64, bool)
  done[[3, 10, 40]] = False
  np.testing.assert_array_equal(plan(done), [3, 10, 40] + [r for r in range(64) if r not in (3, 10, 40)][:13])
  done[:20] = False          # 21 live rows -> 32 rows: half of 64, shrinks
  keep = plan(done)
  assert len(keep) == 32 and set(np.flatnonzero(~done)) <= set(keep) and len(set(keep)) == 32
  done[:40] = False          # 41 live rows would need 64: stays
  assert plan(done) is None
  assert plan(np.ones(64, bool)) is None             # nothing live: the loop is about to stop
  assert len(plan(np.r_[np.zeros(2, bool), np.ones(30, bool)])) == MIN_ROWS   # never fewer rows than MIN_ROWS
  assert plan(np.r_[np.zeros(2, bool), np.ones(14, bool)]) is None           # so 16 rows stay 16
  assert len(plan(np.r_[np.zeros(2, bool), np.ones(62, bool)], shards=32)) == 32   # a multiple of the row shards


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shrinking_the_batch_changes_no_token(family, temperature, monkeypatch):
  """64 rows with budgets of 1..24 tokens, decoded in chunks of 4: the batch shrinks as rows finish (64 -> 32 ->
  16), and every row's tokens, log-probs and thresholds equal decoding the whole batch to the end."""
  from caopd_jax.rollout import compaction
  _, _, config, params, _ = family
  prompts = _prompts(config.vocab_size, lengths=(5, 9, 3, 7), seed=6)
  budgets = np.random.default_rng(0).integers(1, 25, size=(4, 16))
  budgets[1, 3] = 24
  kwargs = dict(num_samples=16, max_new_tokens=24, temperature=temperature, chunk=4, row_budgets=budgets)
  sizes = []
  gather = compaction.gather
  monkeypatch.setattr(compaction, "gather", lambda state, index, layout: (sizes.append(len(index)),
                                                                           gather(state, index, layout))[1])
  with jax.default_matmul_precision("highest"):   # GPUs default to TF32, whose rounding depends on the batch size
    shrunk = rollout.sample(config, params, prompts, jax.random.key(8), **kwargs)
    assert sizes == [32, 16]
    whole = rollout.sample(config, params, prompts, jax.random.key(8), compact=False, **kwargs)
  assert sizes == [32, 16]
  np.testing.assert_array_equal(shrunk.tokens, whole.tokens)
  np.testing.assert_array_equal(shrunk.lengths, budgets)
  np.testing.assert_allclose(shrunk.logprobs, whole.logprobs, atol=1e-5)
  np.testing.assert_allclose(shrunk.model_logprobs, whole.model_logprobs, atol=1e-5)
  np.testing.assert_allclose(shrunk.thresholds, whole.thresholds, atol=1e-5)


def test_shrinking_the_batch_keeps_stop_tokens(bigram_model):
  config, params, logits = bigram_model
  stops = [t for t in range(12) if t not in np.argsort(-logits)[:2]]
  kwargs = dict(num_samples=40, max_new_tokens=12, stop_token_ids=stops, chunk=2)
  a = rollout.sample(config, params, [[3], [3, 3]], jax.random.key(1), **kwargs)
  b = rollout.sample(config, params, [[3], [3, 3]], jax.random.key(1), compact=False, **kwargs)
  assert a.stopped.any() and a.truncated.any()
  for field in ("tokens", "lengths", "stopped", "mask"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# ---- the real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_greedy_matches_transformers(smollm2_gguf, ours_smollm2):
  config, params = weights.load(smollm2_gguf)
  tokenizer = ours_smollm2
  questions = ["Describe how photosynthesis works.", "Write a short poem about the sea.",
               "Explain in two sentences why the sky is blue.", "List three prime numbers above 50."]
  prompts = [tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": q}])) for q in questions]
  out = rollout.sample(config, params, prompts, jax.random.key(0), max_new_tokens=48, temperature=0.0,
                       stop_token_ids=tokenizer.stop_ids)
  folder, name = os.path.split(smollm2_gguf)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
  for i, prompt in enumerate(prompts):
    with torch.no_grad():
      ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           max_new_tokens=48, do_sample=False, eos_token_id=list(tokenizer.stop_ids))
    ref = ref[0, len(prompt):].tolist()
    assert out.tokens[i, 0, :out.lengths[i, 0]].tolist() == ref, (questions[i], tokenizer.decode(ref))
  assert (out.lengths == 48).sum() >= 3  # at least three prompts compared over all 48 new tokens


def test_gpu_prefill_program_names_real_compiler_options_and_computes_the_same(family, monkeypatch):
  """The GPU prefill's compiler options (Triton GEMMs off) are real XLA options: XLA rejects unknown names at
  compile time, so compiling the "gpu" program here checks them; its result equals the default program's."""
  from caopd_jax.rollout import sampler
  _, _, config, params, _ = family
  prompts = _prompts(config.vocab_size, seed=3)
  kwargs = dict(num_samples=2, max_new_tokens=6, temperature=1.0)
  default = rollout.sample(config, params, prompts, jax.random.key(2), **kwargs)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  gpu = rollout.sample(config, params, prompts, jax.random.key(2), **kwargs)
  assert sampler._prefill.cache_info().currsize >= 2   # both programs were built
  np.testing.assert_array_equal(gpu.tokens, default.tokens)
  np.testing.assert_allclose(gpu.logprobs, default.logprobs, atol=1e-6)


@pytest.mark.parametrize("width", [1, 9])
def test_the_scanned_prefill_equals_the_unrolled_cached_forward(family, width):
  """The prefill scans the stacked layers (one compiled layer body); writing the prompt into an empty cache with
  the decode step's unrolled layers must give the same hidden states and the same cache, slot by slot. float32
  matmuls at full precision: on a GPU they default to TF32, whose rounding differs between the two programs by up
  to 3e-3 (seen on the H200)."""
  from caopd_jax.models import kv_cache
  _, _, config, params, _ = family
  lengths = [width, max(1, width - 4)]
  tokens, mask = np.zeros((2, width), np.int32), np.zeros((2, width), bool)
  for i, (n, prompt) in enumerate(zip(lengths, _prompts(config.vocab_size, lengths, seed=4))):
    tokens[i, width - n:], mask[i, width - n:] = prompt, True
  positions, cache_length = models.default_positions(jnp.asarray(mask)), width + 11
  with jax.default_matmul_precision("highest"):
    hidden, cache = models.prefill_with_cache(config, params, tokens, mask, positions, cache_length)
    empty = kv_cache.init(config, 2, cache_length, jnp.float32)
    ref_hidden, ref = models.forward_with_cache(config, params, tokens, mask, positions, empty,
                                                models.unstack_layers(params))
  assert int(cache.index) == int(ref.index) == width
  np.testing.assert_array_equal(cache.valid, ref.valid)
  real = mask[:, :, None]
  np.testing.assert_allclose(np.where(real, hidden, 0), np.where(real, ref_hidden, 0), atol=2e-5, rtol=1e-5)
  assert len(cache.k) == len(cache.v) == config.num_layers
  live = np.asarray(ref.valid)[:, None, :, None]   # padding slots hold keys no query ever attends to
  assert live.sum() == sum(lengths)
  for got, want in zip(cache.k + cache.v, ref.k + ref.v):
    assert got.shape == want.shape == (2, config.num_kv_heads, cache_length, config.head_dim)
    np.testing.assert_allclose(np.where(live, got, 0), np.where(live, want, 0), atol=2e-5, rtol=1e-5)
