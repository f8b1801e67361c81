"""Every config file in configs/ loads, validates and documents its fields; overrides parse by type."""

import glob
import os

import pytest

from caopd_jax.config_files import override, parse_args
from caopd_jax.errors import CaopdError
from caopd_jax.train.config import default_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def test_there_are_presets():
  names = {os.path.basename(f) for f in CONFIG_FILES}
  assert {"demo.py", "smollm2_arith.py", "qwen3_8b_science.py", "qwen25_7b_science.py",
          "olmo3_7b_science.py"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_file_validates(path):
  config, rest = parse_args([f"--config={path}", "--mesh=1"])
  assert rest == []
  if os.path.basename(path) == "demo.py":
    assert config.model.path == ""          # the demo points it at the base model it builds
    config.model.path = "base"
  validate(config)
  assert config.rollout.prompts_per_step * config.rollout.num_samples % config.train.batch_size == 0


def test_every_default_field_is_documented():
  """Each field of default_config() is assigned on a line with a comment (b2 shares b1's line comment)."""
  lines = open(os.path.join(ROOT, "caopd_jax", "train", "config.py")).read().split("def validate")[0].splitlines()
  config = default_config()
  for group, fields in config.items():
    if group == "prompts":
      continue   # the PromptConfig dataclass documents its fields
    for name in (fields.keys() if hasattr(fields, "keys") else [None]):
      prefix = f"  c.{group}.{name} = " if name else f"  c.{group} = "
      line = next(line for line in lines if line.startswith(prefix))
      assert "#" in line or name == "b2", line


def test_overrides_parse_by_the_fields_type():
  config = default_config()
  override(config, "data.difficulty", "1,3")
  override(config, "distill.calibrate", "False")
  override(config, "optim.lr", "3e-4")
  override(config, "train.steps", "7")
  assert (config.data.difficulty, config.distill.calibrate, config.optim.lr, config.train.steps) == ((1, 3), False,
                                                                                                       3e-4, 7)
  with pytest.raises(CaopdError, match="not a valid bool"):
    override(config, "distill.calibrate", "maybe")
  with pytest.raises(CaopdError, match="did you mean distill.calibrate"):
    override(config, "distill.calibrat", "true")
  with pytest.raises(CaopdError, match="write it as --config.optim.lr=VALUE"):
    parse_args(["--config.optim.lr"])
