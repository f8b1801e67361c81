"""Config files and command-line overrides: `--config=configs/x.py --config.optim.lr=1e-5 --mesh=1`.

A config file is a Python file with `get_config()` returning a locked ml_collections ConfigDict
(`--config=FILE.py:ARG` passes ARG to `get_config(ARG)`).
Overrides name a field by its dotted path; the value is parsed as the field's current type
(bool: true/false/1/0; tuple: comma-separated, elements typed like the default's). Every
mistake (missing file, no get_config, unknown field, bad value) is a CaopdError naming it,
with a close-match suggestion for misspelt fields. As with absl flags, `--config FILE` equals `--config=FILE`,
`--flagfile=FILE` reads more arguments from FILE (one per line; `#` comments), and `--help` prints the entry point's
usage and every field of the config with its value and meaning (`help_text`).
"""

import ast
import difflib
import importlib.util
import os
import re
import shlex
from typing import Sequence

import ml_collections

from caopd_jax.errors import CaopdError, InputNotFoundError

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _split(path: str) -> tuple[str, str | None]:
  """(the Python file, the get_config argument or None) of a `FILE.py[:ARG]` config argument."""
  path, colon, arg = path.partition(".py:")
  return (path + ".py", arg) if colon else (path, None)


def load_file(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict that `get_config()` in the Python file `path` returns; `FILE.py:ARG` calls get_config(ARG)
  (ml-collections' convention: one file for a family of configs, e.g. configs/paper.py:qwen3-8b,science)."""
  path, arg = _split(path)
  if not os.path.isfile(path):
    raise InputNotFoundError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_caopd_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise CaopdError(f"config file {path} has no get_config() function")
    config = module.get_config() if arg is None else module.get_config(arg)
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


HELP_FLAGS = ("--help", "-h", "--helpfull")
_VALUED = ("--config", "--mesh", "--flagfile")      # flags that take a value, also as the next argument


def expand(argv: Sequence[str]) -> list[str]:
  """`argv` with `--flag VALUE` joined to `--flag=VALUE` (for _VALUED and --config.FIELD) and every
  `--flagfile=FILE` replaced by FILE's arguments (split as a shell would, per line; `#` starts a comment)."""
  out, args = [], list(argv)
  while args:
    arg = args.pop(0)
    if (arg in _VALUED or arg.startswith("--config.")) and "=" not in arg and args and not args[0].startswith("-"):
      arg = f"{arg}={args.pop(0)}"
    if arg.startswith("--flagfile="):
      path = arg.partition("=")[2]
      if not os.path.isfile(path):
        raise InputNotFoundError(f"--flagfile={path}: no such file")
      with open(path) as f:
        args[:0] = [token for line in f for token in shlex.split(line, comments=True)]
      continue
    out.append(arg)
  return out


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, object]]:
  """[(dotted field, value)] of every leaf field, in the config's order."""
  items = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      items += _flat(value, f"{prefix}{key}.")
    else:
      items.append((prefix + key, value))
  return items


def _as_flag(value) -> str:
  """A value as --config.FIELD=... spells it (the inverse of _parse)."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, tuple):
    return ",".join(map(str, value))
  return repr(value) if isinstance(value, str) and "\n" in value else str(value)


def field_notes(source: str) -> dict:
  """{dotted field: its note} from a config's Python source, written as this project's configs are: `c.a.b = value
  # note` (a "(see above)" note continued by the comment lines just above the field)."""
  notes, above = {}, []
  for line in source.splitlines():
    text = line.strip()
    field = re.match(r"c\.([\w.]+) = [^#]*?(?:#\s*(.*))?$", text)
    if text.startswith("#"):
      above.append(text.lstrip("# "))
    elif field:
      trailing = (field.group(2) or "").replace("(see above)", "").strip()
      note = ": ".join(part for part in (trailing, " ".join(above)) if part)
      if note:
        notes[field.group(1)] = note
      above = []
    else:
      above = []
  return notes


def help_text(usage: str, config: ml_collections.ConfigDict | None = None, source: str = "",
              notes: dict | None = None) -> str:
  """`usage` (an entry point's own text), the flags every config-driven entry point takes, and, given a config,
  each field as `--config.FIELD=VALUE` with its note (notes: {dotted field: text})."""
  lines = [usage.strip(), "", "config flags:",
           "  --config=FILE.py[:ARG]   the config file (get_config(ARG)); configs/README.md lists the shipped ones",
           "  --config.FIELD=VALUE     set a field (dotted path; typed like its value)",
           "  --mesh=SPEC              shorthand for --config.mesh=SPEC (1, auto, data:2,fsdp:4, ...)",
           "  --flagfile=FILE          more arguments from FILE, one per line",
           "  --help                   this text (with --config: every field of that config)"]
  if config is None:
    return "\n".join(lines + ["", "pass --config=FILE --help to list that config's fields"])
  lines += ["", f"fields of {source} (the values it sets):"]
  for dotted, value in _flat(config):
    note = (notes or {}).get(dotted, "")
    lines.append(f"  --config.{dotted}={_as_flag(value)}" + (f"    # {note}" if note else ""))
  return "\n".join(lines)


def parse_args(argv: Sequence[str], default_file: str | None = None, usage: str = "",
               notes: dict | None = None) -> tuple[ml_collections.ConfigDict, list[str]]:
  """(config, the arguments that are not --config / --config.* / --mesh / --flagfile).

  `--mesh=X` is shorthand for `--config.mesh=X`. Overrides apply in order after the file loads. `--help` prints
  help_text(usage, the config, notes) and exits 0.
  """
  argv = expand(argv)
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
  wants_help = any(arg in HELP_FLAGS for arg in rest)
  if path is None:
    if wants_help:
      print(help_text(usage))
      raise SystemExit(0)
    raise CaopdError("no config: pass --config=configs/NAME.py (see configs/README.md; --help for usage)")
  config = load_file(path)
  for dotted, value in overrides:
    override(config, dotted, value)
  if wants_help:
    with open(_split(path)[0]) as f:
      own = field_notes(f.read())           # the file's own comments (e.g. configs/demo.py's demo.* fields)
    print(help_text(usage, config, path, {**(notes or {}), **own}))
    raise SystemExit(0)
  return config, rest
