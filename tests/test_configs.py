"""Every config file in configs/ loads, validates and documents its fields; overrides parse by type."""

import glob
import os

import pytest

from caopd_jax.config_files import override, parse_args
from caopd_jax.errors import CaopdError
from caopd_jax.train.config import default_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


PAPER = [f"paper.py:{model},{dataset}" for model in ("qwen3-8b", "qwen2.5-7b-instruct", "olmo3-7b-instruct")
         for dataset in ("science", "tooluse")]


def test_there_are_presets():
  names = {os.path.basename(f) for f in CONFIG_FILES}
  assert {"demo.py", "smollm2_arith.py", "paper.py"} <= names


@pytest.mark.parametrize("name", [os.path.basename(f) for f in CONFIG_FILES] + PAPER)
def test_config_file_validates(name):
  config, rest = parse_args([f"--config={os.path.join(ROOT, 'configs', name)}", "--mesh=1"])
  assert rest == []
  if name == "demo.py" or name.startswith("paper.py"):
    assert config.model.path == ""          # the user's weights (the demo: the base model it builds)
    config.model.path = "base"
  validate(config)
  assert config.rollout.prompts_per_step * config.rollout.num_samples % config.train.batch_size == 0
  if name.startswith("paper.py:"):
    model, dataset = name.split(":")[1].split(",")
    assert (config.data.name, config.train.output_dir) == (dataset, f"runs/{dataset}-{model}")


def test_paper_config_argument_errors():
  with pytest.raises(CaopdError, match="expected MODEL,DATASET with MODEL one of qwen3-8b"):
    parse_args([f"--config={os.path.join(ROOT, 'configs', 'paper.py')}:qwen3-8b,math"])


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
