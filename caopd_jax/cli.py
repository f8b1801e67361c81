"""Shared helpers for the command-line entry points."""

import sys
import warnings
from typing import Callable, Sequence

from caopd_jax.errors import CaopdError


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
  """Runs `main(argv)` and exits; a `CaopdError` prints `error: ...` (no traceback) and exits 2.

  The error is the last line the command prints: warnings that the interpreter's shutdown would print after it
  are dropped (e.g. "coroutine ... was never awaited" for what an Orbax save that failed midway left behind).
  """
  try:
    code = main(argv)
  except CaopdError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    warnings.simplefilter("ignore")
    sys.exit(2)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
  except BrokenPipeError:          # output piped into `head` and the like, which stopped reading
    sys.stderr.close()
    sys.exit(0)
  sys.exit(code or 0)
