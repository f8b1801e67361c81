"""The real SmolLM2-135M-Instruct GGUF against transformers' GGUF loader; GGUF bad input."""

import dataclasses
import os

import gguf
import jax
import numpy as np
import pytest
import torch
import transformers

import hf_reference
from caopd_jax import models, weights
from caopd_jax.errors import CheckpointFormatError, InputNotFoundError, UnsupportedModelError
from caopd_jax.tokenizers import load_tokenizer

# Same dequantized weights on both sides; float32 differences come from summation order only.
# Measured: max |diff| / max |logit| = 3e-6 on these prompts.
TOLERANCE = 1e-4

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 + 35? Answer with the number and then 'Confidence: X'."}],
    [{"role": "system", "content": "You are a careful chemistry tutor."},
     {"role": "user", "content": "Which of these is a noble gas? A) N2 B) Ar C) O2 D) H2"}],
    [{"role": "user", "content": "Write a haiku about gradient descent."},
     {"role": "assistant", "content": "Down the loss we roll,\nsteps shrinking toward the valley,\nminima at last."},
     {"role": "user", "content": "Now one about JAX, with the word jit."}],
]


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
  folder, name = os.path.split(smollm2_gguf)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  return model, tokenizer


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
  return weights.load(smollm2_gguf)


def test_config_read_from_metadata(ours):
  config, params = ours
  # The GGUF stores eps as float32 (9.9999997e-06); everything else equals the published config.
  assert abs(config.rms_norm_eps - 1e-5) < 1e-9
  assert config == dataclasses.replace(models.preset("smollm2-135m"), rms_norm_eps=config.rms_norm_eps)
  assert "lm_head" not in params  # tied embeddings


@pytest.mark.slow
def test_logits_match_transformers_gguf_loader(ours, reference):
  config, params = ours
  model, tokenizer = reference
  texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CONVERSATIONS]
  encoded = [tokenizer(t)["input_ids"] for t in texts]
  length = max(len(e) for e in encoded)
  ids = np.zeros((len(encoded), length), np.int32)
  mask = np.zeros((len(encoded), length), bool)
  for row, e in enumerate(encoded):  # left padding, as batched generation uses
    ids[row, length - len(e):] = e
    mask[row, length - len(e):] = True
  ours_logits = np.asarray(jax.jit(models.logits, static_argnums=0)(config, params, ids, mask))
  for row, e in enumerate(encoded):
    with torch.no_grad():
      ref = model(torch.tensor([e])).logits[0].numpy()
    got = ours_logits[row, length - len(e):]
    assert np.abs(got - ref).max() / np.abs(ref).max() <= TOLERANCE
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


# ---- bad input -------------------------------------------------------------------------------------------


def test_gguf_path_typo(smollm2_gguf):
  with pytest.raises(InputNotFoundError, match="does not exist"):
    weights.load(smollm2_gguf.replace("Q4_1", "Q4_2"))


def test_truncated_gguf(smollm2_gguf, tmp_path):
  truncated = tmp_path / "cut.gguf"
  with open(smollm2_gguf, "rb") as f:
    truncated.write_bytes(f.read(50_000_000))
  with pytest.raises(CheckpointFormatError, match="cut.gguf"):
    weights.load(str(truncated))


def _tiny_gguf(path, arch="llama", qtype=gguf.GGMLQuantizationType.F32):
  """A 1-layer GGUF with the metadata we read; the q projection stored as `qtype`."""
  d, f, v = 64, 96, 32
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(1)
  writer.add_embedding_length(d)
  writer.add_feed_forward_length(f)
  writer.add_head_count(2)
  writer.add_head_count_kv(2)
  writer.add_vocab_size(v)
  writer.add_layer_norm_rms_eps(1e-5)
  writer.add_context_length(64)
  rng = np.random.default_rng(0)
  shapes = {"token_embd.weight": (v, d), "output_norm.weight": (d,), "blk.0.attn_norm.weight": (d,),
            "blk.0.ffn_norm.weight": (d,), "blk.0.attn_k.weight": (d, d), "blk.0.attn_v.weight": (d, d),
            "blk.0.attn_output.weight": (d, d), "blk.0.ffn_gate.weight": (f, d), "blk.0.ffn_up.weight": (f, d),
            "blk.0.ffn_down.weight": (d, f)}
  for name, shape in shapes.items():
    writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
  q = rng.standard_normal((d, d)).astype(np.float32)
  if qtype == gguf.GGMLQuantizationType.F32:
    writer.add_tensor("blk.0.attn_q.weight", q)
  else:  # raw bytes of the right size for `qtype`
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((d, d // block * nbytes), np.uint8), raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_tiny_gguf_loads(tmp_path):
  _tiny_gguf(tmp_path / "tiny.gguf")
  config, params = weights.load(str(tmp_path / "tiny.gguf"))
  assert (config.family, config.num_layers, config.hidden_size, config.tie_embeddings) == ("llama", 1, 64, True)
  assert params["layers"]["attn"]["q_proj"].shape == (1, 64, 2, 32)


def test_unsupported_quantization_names_tensor_and_type(tmp_path):
  _tiny_gguf(tmp_path / "tq.gguf", qtype=gguf.GGMLQuantizationType.TQ2_0)
  with pytest.raises(UnsupportedModelError, match=r"'blk.0.attn_q.weight' uses quantization TQ2_0.*supported:"):
    weights.load(str(tmp_path / "tq.gguf"))


def test_unsupported_gguf_architecture(tmp_path):
  _tiny_gguf(tmp_path / "phi.gguf", arch="phi3")
  with pytest.raises(UnsupportedModelError, match="'phi3' is not supported; supported: llama, qwen2, qwen3"):
    weights.load(str(tmp_path / "phi.gguf"))


# ---- export ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gguf_export_round_trip(ours, smollm2_gguf, tmp_path):
  """SmolLM2 -> our Q8_0 GGUF: transformers' GGUF loader and ours agree, the tokenizer survives."""
  config, params = ours
  tokenizer = load_tokenizer(smollm2_gguf)
  weights.save(str(tmp_path / "out.gguf"), config, params, format="gguf", tokenizer=tokenizer, gguf_type="q8_0")
  config2, params2 = weights.load(str(tmp_path / "out.gguf"))
  assert config2 == config
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(a - b).max() <= np.abs(a).max() / 127  # Q8_0: 8-bit codes per 32-value block

  tokenizer2 = load_tokenizer(str(tmp_path / "out.gguf"))
  text = tokenizer.apply_chat_template([{"role": "user", "content": "Indent:  12 and\t\t7, café ²"}])
  assert tokenizer2.chat_template == tokenizer.chat_template
  assert tokenizer2.encode(text) == tokenizer.encode(text)

  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="out.gguf", dtype=torch.float32)
  ids = np.array([tokenizer.encode(text)])
  with torch.no_grad():
    ref = model.eval()(torch.tensor(ids)).logits.numpy()
  got = np.asarray(models.logits(config2, params2, ids))
  assert np.abs(got - ref).max() / np.abs(ref).max() <= TOLERANCE


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_gguf_export_of_other_families_loads_in_transformers(family, tmp_path):
  # transformers' qwen3 GGUF mapping ignores attention.key_length and assumes head_dim 128 (true of every
  # published Qwen3), so the tiny qwen3 gets head_dim 128 here; our reader uses key_length.
  model = hf_reference.build(family, **({"head_dim": 128} if family == "qwen3" else {}))
  model.save_pretrained(tmp_path / "hf")
  config, params = weights.load(str(tmp_path / "hf"))
  weights.save(str(tmp_path / "m.gguf"), config, params, format="gguf")
  again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
  ids, mask = hf_reference.padded_batch(config.vocab_size)
  ref = hf_reference.reference_logits(model, ids, mask)
  np.testing.assert_allclose(hf_reference.reference_logits(again.eval(), ids, mask)[mask], ref[mask], atol=1e-5)
  config2, params2 = weights.load(str(tmp_path / "m.gguf"))
  np.testing.assert_allclose(np.asarray(models.logits(config2, params2, ids, mask))[mask], ref[mask], atol=1e-4)


def test_gguf_export_refuses_olmo3(tmp_path):
  model = hf_reference.build("olmo3")
  model.save_pretrained(tmp_path / "hf")
  config, params = weights.load(str(tmp_path / "hf"))
  with pytest.raises(UnsupportedModelError, match="GGUF export supports llama, qwen2, qwen3, not olmo3"):
    weights.save(str(tmp_path / "m.gguf"), config, params, format="gguf")
  assert not (tmp_path / "m.gguf").exists()
