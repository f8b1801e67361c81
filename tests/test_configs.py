"""Every config file in configs/ loads, validates and documents its fields; overrides parse by type."""

import glob
import os
import subprocess
import sys

import pytest

from caopd_jax import config_files
from caopd_jax.config_files import override, parse_args
from caopd_jax.errors import CaopdError
from caopd_jax.train.config import default_config, field_notes, validate

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
  """Each field of default_config() is assigned on a line with a comment."""
  lines = open(os.path.join(ROOT, "caopd_jax", "train", "config.py")).read().split("def validate")[0].splitlines()
  config = default_config()
  for group, fields in config.items():
    if group == "prompts":
      continue   # the PromptConfig dataclass documents its fields
    for name in (fields.keys() if hasattr(fields, "keys") else [None]):
      prefix = f"  c.{group}.{name} = " if name else f"  c.{group} = "
      line = next(line for line in lines if line.startswith(prefix))
      assert "#" in line, line


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


def test_teacher_ema_range():
  """0 (a frozen teacher) and 1 validate; outside [0, 1] is refused with the field's name."""
  for rate in (0.0, 1.0):
    config = default_config()
    config.model.path, config.distill.teacher_ema = "model.gguf", rate
    validate(config)
  for rate in (-0.01, 1.5):
    config = default_config()
    config.model.path, config.distill.teacher_ema = "model.gguf", rate
    with pytest.raises(CaopdError, match=r"distill.teacher_ema must be in \[0, 1\] \(0: a frozen teacher\)"):
      validate(config)


def test_help_lists_every_field_with_its_value_and_meaning(capsys):
  """--help without a config: the usage and the config flags; with one: each field as a flag, value and note."""
  with pytest.raises(SystemExit) as done:
    parse_args(["--help"], usage="USAGE LINE", notes=field_notes())
  assert done.value.code == 0
  text = capsys.readouterr().out
  assert text.startswith("USAGE LINE") and "--flagfile=FILE" in text and "pass --config=FILE --help" in text
  with pytest.raises(SystemExit):
    parse_args(["--config", os.path.join(ROOT, "configs", "demo.py"), "--config.optim.lr", "3e-4", "-h"],
               usage="USAGE LINE", notes=field_notes())
  lines = capsys.readouterr().out.splitlines()
  assert "  --config.optim.lr=0.0003    # peak learning rate" in lines           # the override shows
  assert "  --config.demo.base_steps=900    # SFT steps of the base model" in lines   # the file's own comments
  assert "  --config.data.difficulty=1    # arithmetic only: levels to mix (caopd_jax/data/arithmetic.py)" in lines
  mesh = next(line for line in lines if line.startswith("  --config.mesh="))
  assert "# device mesh: \"1\" (one device), \"auto\"" in mesh                 # the comment lines above it
  notes = field_notes()
  assert set(notes) >= {dotted for dotted, _ in config_files._flat(default_config()) if not dotted.startswith("prompts")}


def test_space_separated_values_and_flagfiles(tmp_path):
  flags = tmp_path / "run.flags"
  flags.write_text(f"# a run's flags\n--config={os.path.join(ROOT, 'configs', 'demo.py')}\n"
                   "--config.train.steps 3   # the value after a space\n--mesh 1\n")
  config, rest = parse_args([f"--flagfile={flags}", "--config.optim.lr=1e-3", "--print_config"])
  assert (config.train.steps, config.optim.lr, config.mesh, rest) == (3, 1e-3, "1", ["--print_config"])
  with pytest.raises(CaopdError, match="--flagfile=missing.flags: no such file"):
    parse_args(["--flagfile=missing.flags"])


@pytest.mark.parametrize("module", ["caopd_jax.train", "caopd_jax.demo", "caopd_jax.train.aot", "caopd_jax.eval",
                                    "caopd_jax.eval.compare", "caopd_jax.eval.curves", "caopd_jax.convert",
                                    "caopd_jax.generate"])
def test_every_command_line_has_help(module):
  out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"python -m {module}" in out.stdout or "usage:" in out.stdout, out.stdout[:500]
