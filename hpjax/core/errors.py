"""The errors a user can fix: entry points print them as one line and exit with status 2.

Each message is one line naming the file (and line or record), argument or config
field, what was expected and what was found, e.g. ``list_attr_celeba.txt line 7:
expected 40 values of -1/1, got 39``. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class Error(Exception):
  """Base of the expected failures (see the module docstring)."""


class ConfigError(Error, ValueError):
  """A config field, preset, override or argument is invalid."""


class DataError(Error, ValueError):
  """A data file or data argument is not what was expected."""


class NonFiniteLossError(Error, RuntimeError):
  """The loss became NaN or Inf; the message names the step."""


class WorkdirError(Error, RuntimeError):
  """A workdir cannot be used: not a directory, not writable, out of space, or in use by
  another run (:mod:`hpjax.core.workdir`)."""


class CheckpointError(WorkdirError):
  """A checkpoint cannot be restored; the message names its step and what failed."""
