"""Shared plumbing for the ``python -m train.*`` / ``python -m evaluate.*`` entry points."""
from __future__ import annotations

import functools
import sys
from typing import Callable

from hpjax.data.errors import DataError


class UsageError(ValueError):
  """A command-line argument or config override is invalid (one-line message)."""


def guarded(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
  """Wraps an entry point so project errors print one line and exit with status 2.

  Expected failures (bad data files, bad arguments, a diverged loss) are the user's to fix, so they
  get a single line naming the file/argument and the problem, never a traceback.
  Anything else is a bug and keeps its traceback.
  """

  @functools.wraps(main)
  def wrapper(argv: list[str] | None = None) -> int:
    from hpjax.training import NonFiniteLossError  # late: keeps this module light
    try:
      return int(main(argv) or 0)
    except (DataError, UsageError, NonFiniteLossError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2

  return wrapper
