"""Weight import/export: HF export round trip through transformers, sharded folders, Orbax, bad input."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hf_reference
from caopd_jax import weights
from caopd_jax.errors import CaopdError, CheckpointFormatError, InputNotFoundError, UnsupportedModelError
from caopd_jax.weights import hf_checkpoint, safetensors_file


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
  model = hf_reference.build("qwen2")
  path = tmp_path_factory.mktemp("qwen2")
  model.save_pretrained(path)
  return model, str(path)


def _assert_same_params(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.mark.parametrize("family", ["llama_tied", "qwen3", "olmo3"])
def test_hf_export_loads_in_transformers_with_same_logits(family, tmp_path):
  model = hf_reference.build(family)
  model.save_pretrained(tmp_path / "src")
  config, params = weights.load(str(tmp_path / "src"))
  weights.save(str(tmp_path / "out"), config, params, format="hf")
  again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
  ids, mask = hf_reference.padded_batch(config.vocab_size)
  np.testing.assert_allclose(hf_reference.reference_logits(again, ids, mask),
                             hf_reference.reference_logits(model, ids, mask), atol=1e-5)
  for (name, p), (name2, q) in zip(model.state_dict().items(), again.state_dict().items()):
    assert name == name2
    torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_sharded_export_and_import(qwen2_folder, tmp_path, monkeypatch):
  _, src = qwen2_folder
  config, params = weights.load(src)
  monkeypatch.setattr(hf_checkpoint, "SHARD_BYTES", 20_000)
  weights.save(str(tmp_path / "sharded"), config, params, format="hf")
  files = sorted(os.listdir(tmp_path / "sharded"))
  assert "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 3
  config2, params2 = weights.load(str(tmp_path / "sharded"))
  assert config2 == config
  _assert_same_params(params, params2)


def test_bfloat16_export_round_trip(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  config, params = weights.load(src, dtype=jnp.bfloat16)
  weights.save(str(tmp_path / "bf16"), config, params, format="hf")
  header = safetensors_file.SafetensorsFile(str(tmp_path / "bf16" / "model.safetensors"))
  assert header._entries["model.embed_tokens.weight"]["dtype"] == "BF16"
  _, params2 = weights.load(str(tmp_path / "bf16"), dtype=jnp.bfloat16)
  _assert_same_params(params, params2)


def test_orbax_round_trip_and_steps(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  config, params = weights.load(src)
  run = tmp_path / "run"
  weights.save(str(run / "10"), config, params)
  doubled = jax.tree.map(lambda x: 2 * x, params)
  weights.save(str(run / "20"), config, doubled)
  assert weights.source_kind(str(run)) == "orbax"
  config2, latest = weights.load(str(run))
  assert config2 == config
  _assert_same_params(latest, doubled)
  _, first = weights.load(str(run), step=10)
  _assert_same_params(first, params)
  _, as_bf16 = weights.load(str(run / "10"), dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(as_bf16))
  with pytest.raises(InputNotFoundError, match=r"no step 15; available steps: \[10, 20\]"):
    weights.load(str(run), step=15)


def test_orbax_paths_relative_to_the_working_directory(qwen2_folder, tmp_path, monkeypatch):
  _, src = qwen2_folder
  config, params = weights.load(src)
  monkeypatch.chdir(tmp_path)
  weights.save("relative/model", config, params)
  _assert_same_params(weights.load("relative/model")[1], params)


def test_existing_output_is_refused_and_kept(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  config, params = weights.load(src)
  out = tmp_path / "out"
  out.mkdir()
  (out / "precious.txt").write_text("keep me")
  with pytest.raises(CaopdError, match="already exists"):
    weights.save(str(out), config, params, format="hf")
  assert (out / "precious.txt").read_text() == "keep me"


def test_failed_save_leaves_nothing(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  config, params = weights.load(src)
  del params["layers"]["mlp"]["up_proj"]
  with pytest.raises(KeyError):
    weights.save(str(tmp_path / "out"), config, params, format="hf")
  assert os.listdir(tmp_path) == []


# ---- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["hf", "orbax", "gguf"])
def test_saved_models_get_the_modes_the_umask_gives(qwen2_folder, tmp_path, format):
  """Before: every saved folder was 0700 and a GGUF file 0600 (the temporary names' modes), whatever the umask."""
  _, src = qwen2_folder
  config, params = weights.load(src)
  previous = os.umask(0o022)
  try:
    path = str(tmp_path / ("model.gguf" if format == "gguf" else "model"))
    weights.save(path, config, params, format=format)
  finally:
    os.umask(previous)
  modes = {os.path.relpath(os.path.join(d, name), path): os.stat(os.path.join(d, name)).st_mode & 0o777
           for d, folders, files in os.walk(path) for name in folders + files}
  modes["."] = os.stat(path).st_mode & 0o777
  expected = {name: 0o755 if os.path.isdir(os.path.join(path, name)) else 0o644 for name in modes}
  assert modes == expected


def test_missing_path():
  with pytest.raises(InputNotFoundError, match="does not exist"):
    weights.load("/no/such/model")


def test_folder_without_model(tmp_path):
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(InputNotFoundError, match="not a model folder.*notes.txt"):
    weights.load(str(tmp_path))


def test_unsupported_architecture_names_supported_ones(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  shutil.copytree(src, tmp_path / "m")
  cfg = json.loads((tmp_path / "m" / "config.json").read_text())
  cfg["model_type"] = "gpt2"
  (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported; supported families: llama, qwen2, "
                     "qwen3, olmo3"):
    weights.load(str(tmp_path / "m"))


def _rewrite_tensors(folder, edit):
  path = os.path.join(folder, "model.safetensors")
  f = safetensors_file.SafetensorsFile(path)
  tensors = {n: np.array(f.read(n)) for n in f.names()}
  del f
  edit(tensors)
  safetensors_file.write(path, tensors)


def test_tensor_shape_mismatch_names_the_tensor(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  shutil.copytree(src, tmp_path / "m")
  name = "model.layers.1.mlp.up_proj.weight"
  _rewrite_tensors(str(tmp_path / "m"), lambda t: t.__setitem__(name, t[name][:-1]))
  with pytest.raises(CheckpointFormatError, match=rf"tensor '{name}' has shape \(95, 64\), the config needs "
                     r"\(96, 64\)"):
    weights.load(str(tmp_path / "m"))


def test_missing_tensor_names_the_tensor(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  shutil.copytree(src, tmp_path / "m")
  _rewrite_tensors(str(tmp_path / "m"), lambda t: t.pop("model.layers.0.self_attn.k_proj.bias"))
  with pytest.raises(CheckpointFormatError, match="'model.layers.0.self_attn.k_proj.bias' is missing"):
    weights.load(str(tmp_path / "m"))


def test_truncated_safetensors(qwen2_folder, tmp_path):
  _, src = qwen2_folder
  shutil.copytree(src, tmp_path / "m")
  path = tmp_path / "m" / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointFormatError, match="truncated"):
    weights.load(str(tmp_path / "m"))
  path.write_bytes(data[:5])
  with pytest.raises(CheckpointFormatError, match="not a safetensors file"):
    weights.load(str(tmp_path / "m"))


def test_pickle_checkpoints_are_not_read(tmp_path, qwen2_folder):
  _, src = qwen2_folder
  (tmp_path / "m").mkdir()
  shutil.copy(os.path.join(src, "config.json"), tmp_path / "m")
  (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
  with pytest.raises(InputNotFoundError, match="pickled.*not read"):
    weights.load(str(tmp_path / "m"))


def test_orbax_folder_without_steps(tmp_path):
  (tmp_path / "run" / "3").mkdir(parents=True)  # an incomplete step (no model_config.json)
  with pytest.raises(InputNotFoundError):
    weights.load(str(tmp_path / "run"))
