"""Trace-time flags: a switch that functions read while JAX traces them.

A `TraceFlag` is on, on this thread, within `with flag.set():`, or while a
function wrapped by `flag.around(fun)` runs. Code that builds a computation
reads `flag.is_set()` to choose a formulation; a jitted function keeps what it
was traced with.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Iterator


class TraceFlag:
  """A per-thread on/off switch, off unless a `set()` block or an `around` wrapper is running."""

  def __init__(self):
    self._local = threading.local()

  def is_set(self) -> bool:
    return getattr(self._local, "on", False)

  @contextlib.contextmanager
  def set(self) -> Iterator[None]:
    """Within: the flag is on (nested blocks restore what they found)."""
    previous = self.is_set()
    self._local.on = True
    try:
      yield
    finally:
      self._local.on = previous

  def around(self, fun: Callable) -> Callable:
    """`fun`, run with the flag on (for `jax.jit` to trace it so)."""

    @functools.wraps(fun)
    def flagged(*args, **kwargs):
      with self.set():
        return fun(*args, **kwargs)

    return flagged
