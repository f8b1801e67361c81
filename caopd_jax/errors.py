"""User-facing errors.

Every problem caused by the user's input (a missing file, a malformed row, an
unsupported model, a wrong config key) is raised as a `CaopdError` whose message
names what is wrong, where, and how to fix it. Command-line entry points catch
`CaopdError` and print the message without a traceback (see `cli.run_main`).
"""


class CaopdError(Exception):
  """Base class of errors caused by user input; the message is the whole story."""


class InputNotFoundError(CaopdError, FileNotFoundError):
  """A path the user gave does not exist or lacks a required file."""


class UnsupportedModelError(CaopdError, ValueError):
  """The checkpoint's architecture, quantization or feature is not supported."""


class CheckpointFormatError(CaopdError, ValueError):
  """A checkpoint file is corrupt, truncated, or its tensors do not fit the config."""
