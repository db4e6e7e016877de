"""The one error type for bad data on disk or bad data arguments."""
from __future__ import annotations


class DataError(ValueError):
  """A data file or data argument is not what was expected.

  The message is one line naming the file (and line or record number where it
  applies), what was expected and what was found, e.g.
  ``list_attr_celeba.txt line 7: expected 40 values of -1/1, got 39``.
  Entry points print it without a traceback and exit with status 2.
  """
