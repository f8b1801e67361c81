"""Config files and command-line overrides: `--config=configs/x.py --config.optim.lr=1e-5 --mesh=1`.

A config file is a Python file with `get_config()` returning a locked ml_collections ConfigDict
(`--config=FILE.py:ARG` passes ARG to `get_config(ARG)`).
Overrides name a field by its dotted path; the value is parsed as the field's current type
(bool: true/false/1/0; tuple: comma-separated, elements typed like the default's). Every
mistake (missing file, no get_config, unknown field, bad value) is a CaopdError naming it,
with a close-match suggestion for misspelt fields.
"""

import ast
import difflib
import importlib.util
import os
from typing import Sequence

import ml_collections

from caopd_jax.errors import CaopdError, InputNotFoundError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def load_file(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict that `get_config()` in the Python file `path` returns; `FILE.py:ARG` calls get_config(ARG)
  (ml-collections' convention: one file for a family of configs, e.g. configs/paper.py:qwen3-8b,science)."""
  path, colon, arg = path.partition(".py:")
  path += ".py" if colon else ""
  if not os.path.isfile(path):
    raise InputNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_caopd_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise CaopdError(f"config file {path} has no get_config() function")
    config = module.get_config(arg) if colon else module.get_config()
  except (AttributeError, TypeError, KeyError) as e:
    raise CaopdError(f"config file {path}: {_message(e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise CaopdError(f"config file {path}: get_config() returned {type(config).__name__}, not a ConfigDict")
  return config


def _message(error: Exception) -> str:
  """ml_collections' error text without its quoting and repr noise."""
  text = str(error.args[0]) if error.args else str(error)
  return text.strip("'\"").replace("\\n", " ").replace('\\"', '"').replace("\\'", "'")


def _parse(text: str, default, where: str):
  """`text` as a value of `default`'s type."""
  try:
    if isinstance(default, bool):
      if text.lower() not in _TRUE + _FALSE:
        raise ValueError("expected true or false")
      return text.lower() in _TRUE
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, tuple):
      items = [item.strip() for item in text.strip("()[] ").split(",") if item.strip()]
      kind = type(default[0]) if default else str
      return tuple(_parse(item, kind(), where) if kind is not str else item for item in items)
    if isinstance(default, str):
      return text
    return ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise CaopdError(f"{where}={text!r}: not a valid {type(default).__name__} ({e})") from None


def _field(config: ml_collections.ConfigDict, dotted: str) -> tuple[ml_collections.ConfigDict, str]:
  """(the ConfigDict holding the field, its key) for a dotted path; unknown keys get a suggestion."""
  node, keys = config, dotted.split(".")
  for depth, key in enumerate(keys):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(key, known, n=1)
      hint = f"; did you mean {'.'.join(keys[:depth] + close)}?" if close else f"; fields here: {', '.join(known)}"
      raise CaopdError(f"--config.{dotted}: the config has no field {'.'.join(keys[:depth + 1])}{hint}")
    if depth < len(keys) - 1:
      node = node[key]
  return node, keys[-1]


def override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets the field at `dotted` (e.g. "optim.lr") from its command-line text."""
  node, key = _field(config, dotted)
  if isinstance(node[key], ml_collections.ConfigDict):
    raise CaopdError(f"--config.{dotted} is a group of fields; set its fields, e.g. --config.{dotted}."
                     f"{next(iter(node[key].keys()))}=...")
  node[key] = _parse(text, node[key], f"--config.{dotted}")


def parse_args(argv: Sequence[str], default_file: str | None = None) -> tuple[ml_collections.ConfigDict, list[str]]:
  """(config, the arguments that are not --config / --config.* / --mesh).

  `--mesh=X` is shorthand for `--config.mesh=X`. Overrides apply in order after the file loads.
  """
  path, overrides, rest = default_file, [], []
  for arg in argv:
    name, eq, value = arg.partition("=")
    if name == "--config" and eq:
      path = value
    elif name.startswith("--config.") and eq:
      overrides.append((name[len("--config."):], value))
    elif name == "--mesh" and eq:
      overrides.append(("mesh", value))
    elif name in ("--config", "--mesh") or name.startswith("--config."):
      raise CaopdError(f"{arg}: write it as {name}=VALUE")
    else:
      rest.append(arg)
  if path is None:
    raise CaopdError("no config: pass --config=configs/NAME.py (see configs/README.md)")
  config = load_file(path)
  for dotted, value in overrides:
    override(config, dotted, value)
  return config, rest
