"""The command-line tools as a user runs them: convert between formats, generate text, bad arguments."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

import hf_reference
from caopd_jax import models, weights
from caopd_jax.tokenizers import load_tokenizer


def _run(*args, check=True):
  result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  if check and result.returncode != 0:
    raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
  return result


@pytest.mark.slow
def test_convert_gguf_to_orbax_to_hf(smollm2_gguf, tmp_path):
  """GGUF -> Orbax (bf16) -> HF folder that transformers loads, with the tokenizer carried along."""
  _run("caopd_jax.convert", smollm2_gguf, str(tmp_path / "ckpt"), "--to", "orbax", "--dtype", "bfloat16")
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["model_config.json", "params", "tokenizer"]
  out = _run("caopd_jax.convert", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--to", "hf")
  assert "converted llama (134.5M params)" in out.stdout

  config, params = weights.load(smollm2_gguf)
  config_hf, params_hf = weights.load(str(tmp_path / "hf"))
  assert config_hf == config
  # Only bf16 rounding separates them.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_hf)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2 ** -8, atol=1e-30)

  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  ours = load_tokenizer(smollm2_gguf)
  text = ours.apply_chat_template([{"role": "user", "content": "Add 1234 and 5678."}])
  assert hf_tokenizer.apply_chat_template([{"role": "user", "content": "Add 1234 and 5678."}], tokenize=False,
                                          add_generation_prompt=True) == text
  assert hf_tokenizer(text)["input_ids"] == ours.encode(text)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
  ids = np.array([ours.encode(text)])
  with torch.no_grad():
    ref = model(torch.tensor(ids)).logits.numpy()
  got = np.asarray(models.logits(config_hf, params_hf, ids))
  assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.slow
def test_generate_cli_batches_prompts_and_samples(smollm2_gguf):
  out = _run("caopd_jax.generate", "--model", smollm2_gguf, "--chat", "--prompt", "Say hi.", "--prompt",
             "Count to three.", "--num_samples", "2", "--temperature", "0.8", "--max_new_tokens", "6")
  assert out.stdout.startswith("=== prompt 1/2 ===\n<|im_start|>system")
  assert out.stdout.count("--- sample ") == 4 and "=== prompt 2/2 ===" in out.stdout
  assert "<|im_start|>assistant\n" in out.stdout
  assert "tokens in" in out.stderr


def test_cli_errors_are_one_line_without_traceback(tmp_path):
  result = _run("caopd_jax.convert", "/no/such/model.gguf", str(tmp_path / "x"), "--to", "hf", check=False)
  assert result.returncode == 2
  assert result.stderr.strip() == (
      "error: model path /no/such/model.gguf does not exist (a Hugging Face Hub id reads owner/name)")
  assert not (tmp_path / "x").exists()

  result = _run("caopd_jax.generate", "--model", str(tmp_path), "--prompt", "hi", check=False)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "not a model folder" in result.stderr

  result = _run("caopd_jax.generate", "--model", "m", "--prompt", "hi", "--max_new_tokens", "0", check=False)
  assert result.returncode == 2 and "--max_new_tokens must be at least 1" in result.stderr
  result = _run("caopd_jax.generate", "--model", "m", "--prompt", "hi", "--top_p", "1.5", check=False)
  assert result.returncode == 2 and "--top_p must be in (0, 1]" in result.stderr


def test_the_error_stays_the_last_line_when_shutdown_would_warn(tmp_path):
  """An Orbax save that fails midway can leave coroutines never awaited; their RuntimeWarning, printed while the
  interpreter shuts down, once came after the error line (a CI run of test_run_faults). A command that leaves one
  behind ends on its error all the same."""
  script = tmp_path / "command.py"
  script.write_text(
      "from caopd_jax.cli import run_main\n"
      "from caopd_jax.errors import CaopdError\n"
      "async def save(): pass\n"
      "def main(argv):\n"
      "  global LEFT\n"
      "  LEFT = save()   # never awaited, freed at shutdown\n"
      "  raise CaopdError('could not write the checkpoint')\n"
      "run_main(main)\n")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == "error: could not write the checkpoint", result.stderr


def test_convert_to_gguf_without_tokenizer_warns(tmp_path):
  model = hf_reference.build("qwen2")
  model.save_pretrained(tmp_path / "hf")
  result = _run("caopd_jax.convert", str(tmp_path / "hf"), str(tmp_path / "m.gguf"), "--to", "gguf", "--gguf_type",
                "f16")
  assert "has no tokenizer; writing weights only" in result.stderr
  config, params = weights.load(str(tmp_path / "hf"))
  config2, params2 = weights.load(str(tmp_path / "m.gguf"))
  assert config2.num_layers == config.num_layers and config2.qkv_bias
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-3)  # float16 rounding of 0.1-scale weights


def test_the_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
  from caopd_jax import compilation_cache
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  try:
    assert compilation_cache.enable() == str(tmp_path / "caopd_jax" / "xla")
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "caopd_jax" / "xla")  # for subprocesses
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "caopd_jax" / "xla")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared"))
    assert compilation_cache.enable() == str(tmp_path / "shared")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "")
    assert compilation_cache.enable() is None and jax.config.jax_compilation_cache_dir is None
  finally:
    monkeypatch.undo()
    compilation_cache.enable()    # back to the session's folder (conftest.py)


def test_a_second_generate_loads_the_sampler_from_the_persistent_cache(tmp_path):
  """Two `caopd_jax.generate` processes with the default folder: the first compiles the prefill and the decode
  and writes them there, the second loads both from it. With JAX_COMPILATION_CACHE_DIR="" nothing is kept."""
  import tiny_run
  tiny_run.make_setup(tmp_path)
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAX_PLATFORMS="cpu", XDG_CACHE_HOME=str(tmp_path / "home_cache"), JAX_LOG_COMPILES="1",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")   # this tiny model's programs compile in under 1 s
  command = [sys.executable, "-m", "caopd_jax.generate", "--model", str(tmp_path / "base"), "--prompt", "1+1=",
             "--max_new_tokens", "4"]
  runs = [subprocess.run(command, capture_output=True, text=True, timeout=300, env=env) for _ in range(2)]
  for run in runs:
    assert run.returncode == 0, run.stderr
  assert runs[0].stdout == runs[1].stdout
  hits = [[name for name in ("_prefill_in_layout", "_decode") if f"Persistent compilation cache hit for 'jit_{name}'"
           in run.stderr] for run in runs]
  assert hits == [[], ["_prefill_in_layout", "_decode"]]
  folder = tmp_path / "home_cache" / "caopd_jax" / "xla"
  assert any(name.startswith("jit__decode") for name in os.listdir(folder))
  off = subprocess.run(command, capture_output=True, text=True, timeout=300,
                       env={**env, "JAX_COMPILATION_CACHE_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "other")})
  assert off.returncode == 0 and "Persistent compilation cache hit" not in off.stderr
  assert not (tmp_path / "other").exists()
