"""Write-then-rename for output folders and files, so no failure leaves a half-written checkpoint. What is
written gets the ordinary modes the process's umask gives (the temporary names are owner-only until then)."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

from caopd_jax.errors import CaopdError


def _ordinary_mode(path: str, mode: int) -> None:
  """Gives `path` the mode `mode` masked by the process's umask (what open() / mkdir() would have given it)."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary folder beside `path`; on success it becomes `path`, on error it is removed.

  An existing non-empty `path` is refused unless `overwrite`, and is replaced
  only after the new folder is complete.
  """
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite and (not os.path.isdir(path) or os.listdir(path)):
    raise CaopdError(f"output {path} already exists and is not empty; choose another path or remove it")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  _ordinary_mode(tmp, 0o777)  # mkdtemp makes it owner-only
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(path):
    shutil.rmtree(path)
  os.rename(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
  """Yields a temporary file path beside `path`; on success it replaces `path`, on error it is removed."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path))
  os.close(fd)
  _ordinary_mode(tmp, 0o666)  # mkstemp makes it owner-only
  try:
    yield tmp
  except BaseException:
    os.remove(tmp)
    raise
  os.replace(tmp, path)


def write_json(path: str, value, indent: int = 2) -> None:
  """Writes `value` as JSON to `path` atomically (with a trailing newline)."""
  with atomic_file(path) as tmp, open(tmp, "w") as f:
    json.dump(value, f, indent=indent)
    f.write("\n")


def write_lines(path: str, lines: list[str]) -> None:
  """Writes `lines` (one per line, with a trailing newline) to `path` atomically."""
  with atomic_file(path) as tmp, open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
