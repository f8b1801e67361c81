"""The expected confidence readout (eval/expected_confidence.py) against a brute-force reference: every candidate
completion scored by the plain training forward over the whole sequence (no cache, no shared prefix), with the
character tokenizer and a Qwen3-style byte-level BPE (its real tokenizer.json pipeline), sliding-window layers
included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from caopd_jax import models
from caopd_jax.calibration.confidence import stated_value_span
from caopd_jax.eval import core
from caopd_jax.eval.expected_confidence import VALUES, expected_confidences
from caopd_jax.eval.protocols import get_protocol
from caopd_jax.eval.scoring import score
from caopd_jax.tokenizers import load_tokenizer
from caopd_jax.tokenizers.characters import character_tokenizer
from tokenizer_families import build_family_tokenizer

PROMPT = "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
RESPONSES = ("The answer is 7.\nConfidence: 0.63", "7\nConfidence: 1.0\nDone.", "<confidence>70%</confidence> 7",
             "no confidence here")


def _model(vocab_size: int, sliding: bool):
  config = models.ModelConfig(
      family="qwen3", vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
      num_kv_heads=2, head_dim=8, tie_embeddings=False, qk_norm="head", max_position_embeddings=512,
      eos_token_ids=(0,), **({"sliding_window": 6, "layer_types": ("sliding", "full")} if sliding else {}))
  # a sharper random model than std 0.02 weights, so the values get clearly different probabilities
  params = jax.tree.map(lambda w: w * 8 if w.ndim >= 2 else w, models.init(config, jax.random.key(3)))
  return config, params


def _brute_force(config, params, tokenizer, prompt, response, stop):
  """(expected, mass): each value's whole completion scored from scratch by one right-padded training forward."""
  start, end = stated_value_span(response)
  full = [tokenizer.encode(prompt + response[:start] + v + response[end:]) + [stop] for v in VALUES]
  shared = next(i for i in range(len(full[0])) if len({tuple(ids[:i + 1]) for ids in full}) > 1)
  width = max(map(len, full))
  tokens = np.array([ids + [0] * (width - len(ids)) for ids in full])
  mask = np.arange(width)[None] < np.array([len(ids) for ids in full])[:, None]
  log_p = jax.nn.log_softmax(models.logits(config, params, jnp.asarray(tokens), jnp.asarray(mask)))
  picked = np.take_along_axis(np.asarray(log_p)[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
  scored = mask[:, 1:] & (np.arange(1, width) >= shared)[None]
  p = np.exp(np.where(scored, picked, 0.0).sum(1))
  return float(p @ np.array([float(v) for v in VALUES]) / p.sum()), float(p.sum())


@pytest.mark.parametrize("tokenizer_name,sliding", [("characters", False), ("qwen3", True)])
def test_the_readout_equals_scoring_every_candidate_from_scratch(tokenizer_name, sliding, tmp_path):
  tokenizer = (character_tokenizer() if tokenizer_name == "characters"
               else load_tokenizer(build_family_tokenizer("qwen3", tmp_path / "tok")))
  prompt = PROMPT if tokenizer_name == "qwen3" else "Q: 3 + 4?\nA: "
  config, params = _model(tokenizer.vocab_size, sliding)
  stop = tokenizer.stop_ids[0]
  readouts = expected_confidences(config, params, tokenizer, [(prompt, r, stop) for r in RESPONSES], progress=False)
  assert readouts[3] is None   # nothing to re-read
  for response, readout in zip(RESPONSES[:3], readouts):
    expected, mass = _brute_force(config, params, tokenizer, prompt, response, stop)
    np.testing.assert_allclose([readout.expected, readout.mass], [expected, mass], rtol=2e-4, err_msg=response)
    assert 0 <= readout.expected <= 1 and 0 < readout.mass <= 1


def test_a_model_sure_of_one_value_reads_as_that_value():
  """Hand-built: layers off, and the output weights make ' ' -> '0' -> '.' -> '2' -> '5' -> stop near-certain, so
  the only value with any probability is 0.25: the readout is 0.25 with all the mass."""
  tokenizer = character_tokenizer()
  config, params = _model(tokenizer.vocab_size, False)
  chain = tokenizer.encode(" 0.25") + [tokenizer.stop_ids[0]]
  embed, head = np.zeros(params["embed"].shape, np.float32), np.zeros(params["lm_head"].shape, np.float32)
  for i, (now, following) in enumerate(zip(chain[:-1], chain[1:])):
    embed[now, i] = 1.0          # the final norm turns this into sqrt(32) e_i
    head[i, following] = 100.0
  params = jax.tree.map(jnp.zeros_like, params) | {"embed": jnp.asarray(embed), "lm_head": jnp.asarray(head),
                                                  "final_norm": params["final_norm"]}
  readout, = expected_confidences(config, params, tokenizer, [("Q?", "Confidence: 0.7", tokenizer.stop_ids[0])],
                                  progress=False)
  assert readout.expected == pytest.approx(0.25, abs=1e-6) and readout.mass == pytest.approx(1.0, abs=1e-6)


def test_evaluate_s_readout_keeps_the_stated_value_and_format_failures():
  tokenizer = character_tokenizer()
  config, params = _model(tokenizer.vocab_size, False)
  records = [{"prompt": "Q: 3 + 4?\nA: ", "response": r, "golden_answer": "7", "id": str(i)}
             for i, r in enumerate(["7\nConfidence: 0.63", "7"])]
  records = score(records, ["arithmetic"] * 2, get_protocol("strict"), "test")
  out, readout = core._read_expected(config, params, tokenizer, records, [tokenizer.stop_ids[0], None], False)
  assert out[0]["stated_confidence"] == 0.63 and out[0]["confidence"] != 0.63 and 0 <= out[0]["confidence"] <= 1
  assert out[1]["confidence"] is None and "stated_confidence" not in out[1]
  assert readout["read"] == 1 and readout["kept_stated"] == 0 and 0 < readout["mean_mass"] <= 1


def test_an_unknown_readout_is_named():
  tokenizer = character_tokenizer()
  config, params = _model(tokenizer.vocab_size, False)
  with pytest.raises(Exception, match="confidence='mean'"):
    core.evaluate(config, params, tokenizer, [], core.PromptConfig(), max_new_tokens=4,
                  confidence="mean")
