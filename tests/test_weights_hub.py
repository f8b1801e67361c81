"""Hugging Face Hub ids as model paths (weights/hub.py), offline against a prepared Hub cache: a tiny random Qwen3
model with the Qwen3-style tokenizer laid out as huggingface_hub caches a snapshot
(models--ORG--NAME/{refs/main, snapshots/COMMIT/...}), then loaded by id and evaluated through the CLI with
HF_HUB_OFFLINE=1; an id that is not cached is a clear error. Subprocesses: huggingface_hub reads its environment
when imported."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hf_reference
from caopd_jax import weights
from tokenizer_families import build_family_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD = ("import sys, numpy as np, jax; from caopd_jax import weights; from caopd_jax.tokenizers import load_tokenizer;"
        "c, p = weights.load(sys.argv[1]); t = load_tokenizer(weights.tokenizer_path(sys.argv[1]));"
        "np.save(sys.argv[2], np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])); print(c.family, t.vocab_size)")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
  """(the Hub cache folder holding tiny-org/tiny-qwen3, the same model's plain folder)."""
  cache = tmp_path_factory.mktemp("hub")
  snapshot = cache / "models--tiny-org--tiny-qwen3" / "snapshots" / "0123abcd"
  snapshot.mkdir(parents=True)
  (cache / "models--tiny-org--tiny-qwen3" / "refs").mkdir()
  (cache / "models--tiny-org--tiny-qwen3" / "refs" / "main").write_text("0123abcd")
  build_family_tokenizer("qwen3", snapshot)
  from caopd_jax.tokenizers import load_tokenizer
  tokenizer = load_tokenizer(str(snapshot))
  hf_reference.build("qwen3", vocab_size=tokenizer.vocab_size, max_position_embeddings=2048,
                     eos_token_id=tokenizer.eos_id).save_pretrained(snapshot)
  return cache, snapshot


def _run(cache, *args, offline=True):
  env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1" if offline else "0", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_cached_hub_id_loads_as_its_folder_and_evaluates(hub_cache, tmp_path):
  cache, snapshot = hub_cache
  out = _run(cache, "-c", LOAD, "tiny-org/tiny-qwen3", str(tmp_path / "by_id.npy"))
  assert out.returncode == 0, out.stderr[-2000:]
  config, params = weights.load(str(snapshot))
  assert out.stdout.split() == ["qwen3", str(config.vocab_size)]
  import jax
  np.testing.assert_array_equal(np.load(tmp_path / "by_id.npy"),
                                np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)]))
  result = _run(cache, "-m", "caopd_jax.eval", "--model", "tiny-org/tiny-qwen3", "--dataset", "arithmetic",
                "--limit", "2", "--max_new_tokens", "4", "--output", str(tmp_path / "eval"), "--no_progress")
  assert result.returncode == 0, result.stderr[-2000:]
  metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert metrics["n_samples"] == 2


@pytest.mark.parametrize("offline", [True, False])
def test_an_id_not_in_the_cache_is_a_clear_error(hub_cache, tmp_path, offline):
  """Not cached: offline, or online without a network (the lookup fails), or online where the Hub has no such
  model (a machine with a network)."""
  result = _run(hub_cache[0], "-m", "caopd_jax.eval", "--model", "tiny-org/not-cached", "--dataset", "arithmetic",
                "--limit", "1", "--output", str(tmp_path / "eval"), offline=offline)
  assert result.returncode == 2
  not_cached = ("error: model tiny-org/not-cached: no such local path, and as a Hugging Face Hub id it is not in the "
                f"cache ({hub_cache[0]}) while ")
  if offline:
    assert not_cached + "HF_HUB_OFFLINE is set" in result.stderr, result.stderr[-2000:]
  else:
    assert (not_cached + "the Hub cannot be reached" in result.stderr
            or "the Hugging Face Hub has no model by that id" in result.stderr), result.stderr[-2000:]
