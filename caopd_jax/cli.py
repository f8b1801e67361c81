"""Shared helpers for the command-line entry points."""

import sys
import warnings
from typing import Callable, Sequence

from caopd_jax.errors import CaopdError


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
  """Runs `main(argv)` and exits; a `CaopdError` prints `error: ...` (no traceback) and exits 2.

  The error is the last line the command prints: "coroutine ... was never awaited" warnings that the interpreter's
  shutdown would print after it (what an Orbax save that failed or was interrupted midway leaves) are dropped.
  """
  try:
    code = main(argv)
  except CaopdError as e:
    _last_line(f"error: {e}", 2)
  except KeyboardInterrupt:
    _last_line("interrupted", 130)
  except BrokenPipeError:          # output piped into `head` and the like, which stopped reading
    sys.stderr.close()
    sys.exit(0)
  sys.exit(code or 0)


def _last_line(message: str, code: int) -> None:
  """Prints `message` to stderr and exits with `code`, without the shutdown's unawaited-coroutine warnings after it
  (see run_main)."""
  print(message, file=sys.stderr, flush=True)
  warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
  sys.exit(code)
