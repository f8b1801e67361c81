"""Compiles for real TPUs on this CPU machine: the TPU compiler (libtpu, in .venv-tpu: launch/test.sh makes it)
behind JAX's AOT topology API, run the way a user checks a config (BUILD.md, "TPU without a TPU").

- the Pallas token-stats kernels, forward + backward, at a real loss head (Qwen3-0.6B: D 1,024, V 151,936) on v5e
  and v5p, within the VMEM limit hardware.py gives them;
- the AOT check of a shipped config (smollm2_arith.py, float32) on a v5e-4: remat / micro-batch auto settle by
  compiling candidates, and the training step, the sampler's prefill and decode fit;
- the paper's Qwen3-8B recipe on its v5p-64 (32 chips);
- a config that fits no memory setting: the check stops with the bytes needed and available.
Without .venv-tpu these skip, saying so; CI sets CAOPD_REQUIRE_TPU_COMPILE=1, which makes them fail instead.
"""

import dataclasses
import json
import os
import re
import subprocess

import pytest

from caopd_jax import models
from caopd_jax.weights import hf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_PYTHON = os.path.join(ROOT, ".venv-tpu", "bin", "python")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tpu_python():
  if not os.path.exists(TPU_PYTHON):
    message = f"{TPU_PYTHON} is missing: VENV=.venv-tpu bash launch/setup_env.sh tpu makes it (launch/test.sh does)"
    if os.environ.get("CAOPD_REQUIRE_TPU_COMPILE"):
      pytest.fail(message)
    pytest.skip(message)
  return TPU_PYTHON


def _run(python, *args, timeout=900) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_the_kernels_compile_for_v5e_and_v5p_at_a_real_loss_head(tpu_python):
  result = _run(tpu_python, "kernels/tpu_compile.py", "--chips", "v5e", "v5p", "--presets", "qwen3-0.6b",
                "--rows", "1024")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| v5")]
  assert [r[0].strip() for r in rows] == ["v5e", "v5p"]
  for chip, _, dim, vocab, tiles, limit, estimate, mosaic, seconds, temp in rows:
    assert (dim.strip(), vocab.strip()) == ("1024", "151936")
    assert tiles.strip() == "(512, 512, 1024)"      # the largest row block: VMEM has room for it on both
    assert float(mosaic) <= float(limit)            # what Mosaic needed to compile both kernels
    assert 0.5 < float(estimate) / float(mosaic) < 2.0   # tiles_for's estimate is of the right size


def test_a_shipped_config_fits_a_v5e_slice_with_remat_chosen_by_compiling(tpu_python):
  result = _run(tpu_python, "-m", "caopd_jax.train.aot", "--config=configs/smollm2_arith.py", "--model=smollm2-135m",
                "--topology=v5e:2x2", "--mesh=auto", "--config.model.path=unused")
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "checking v5e:2x2: 4 x TPU v5 lite" in out
  # micro-batches are multiples of the 4 chips: 32 is over a v5e's 14.17 usable GiB, 4 fits, bisection: 16 fits
  tried = re.findall(r"compiling the step with train\.remat=(\w+), micro_batch_size=(\d+) for v5e", out)
  assert tried == [("none", "32"), ("none", "4"), ("none", "16")]
  assert re.search(r"train\.remat=none, train\.micro_batch_size=16 \(auto\): [0-9.]+ GiB per device of 14\.17 GiB "
                   r"usable on v5e \(3 compile\(s\); over: none/32\)", out)
  for program in ("training step", "sampler prefill", "sampler decode"):
    line = next(line for line in out.splitlines() if line.startswith(program))
    assert line.endswith("fits"), line


def test_the_paper_recipe_fits_its_v5p_64_without_hand_set_flags(tpu_python):
  """configs/paper.py (Qwen3-8B, 1,024 + 1,024 tokens, 32 sequences per step) on its target, v5p:4x4x2 (32 chips):
  remat / micro-batch auto need one compile, and step and sampler fit with the 10% headroom."""
  result = _run(tpu_python, "-m", "caopd_jax.train.aot", "--config=configs/paper.py:qwen3-8b,science",
                "--model=qwen3-8b", timeout=1500)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "checking v5p:4x4x2: 32 x TPU v5" in result.stdout
  assert re.search(r"train\.remat=none, train\.micro_batch_size=32 \(auto\): [0-9.]+ GiB per device of 86\.17 GiB "
                   r"usable on v5p \(1 compile\(s\)\)", result.stdout)
  assert sum(line.endswith("fits") for line in result.stdout.splitlines()) == 3


def test_a_config_that_fits_no_setting_stops_with_the_bytes(tpu_python, tmp_path):
  """A 3B-parameter model (wide, two layers: quick to compile) on one chip of a v5e-4 (mesh 1; 15.75 GiB): its state
  (bf16 student, float32 teacher and Adam moments) is over 40 GiB, so every remat is refused."""
  config = tmp_path / "too_big.py"
  config.write_text(
      "from caopd_jax.train.config import default_config\n"
      "def get_config():\n"
      "  c = default_config()\n"
      "  c.model.dtype, c.mesh, c.target = 'bfloat16', '1', 'v5e:2x2'\n"
      "  c.train.batch_size, c.train.micro_batch_size = 32, 1\n"
      "  c.distill.max_prompt_tokens = c.distill.max_completion_tokens = 256\n"
      "  return c\n")
  model = tmp_path / "model"              # a Hugging Face folder's config.json: what the check reads of a model
  model.mkdir()
  wide = dataclasses.replace(models.preset("qwen3-8b"), num_layers=2, hidden_size=8192, intermediate_size=28672,
                             num_heads=64, num_kv_heads=8)
  assert wide.num_params() > 2.5e9
  (model / "config.json").write_text(json.dumps(hf_config.to_hf(wide, "bfloat16")))
  result = _run(tpu_python, "-m", "caopd_jax.train.aot", f"--config={config}", f"--config.model.path={model}")
  assert result.returncode == 2                # an error, in one line (cli.run_main)
  assert "the training step does not fit the devices (3 setting(s) tried)" in result.stderr
  assert re.search(r"train\.remat=layers with train\.micro_batch_size=1, is (refused by the compiler: needs more than "
                   r")?[0-9.]+ GiB per device", result.stderr)
  assert "v5e has 15.75 GiB, 14.17 GiB usable" in result.stderr and "--mesh" in result.stderr
