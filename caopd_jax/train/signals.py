"""SIGTERM / SIGINT as a request to stop at the next safe point (the trainer saves, then exits).

    with StopSignals() as stop:
      while not stop.requested:
        ...

A second signal of the same kind restores the default behaviour (a second Ctrl-C kills at once).
Outside the main thread, where Python cannot install handlers, this does nothing.
"""

import signal
import threading


class StopSignals:
  """Context manager; `requested` is None, or the name of the signal that asked to stop."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self._previous = {}

  def _handle(self, signum, frame):
    self.requested = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
