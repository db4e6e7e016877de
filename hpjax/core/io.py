"""One atomic writer: text, JSON, ``.npz`` and figures reach their path whole or not at all.

Every file this project writes into a workdir goes through :func:`atomic`: the bytes
go to a temporary file in the same folder, which is renamed over the target only
once it is complete, so an interrupted run, a full disk or a crash never leaves a
half-written file and never destroys the previous version. A write that fails because
the disk is full, read-only or not ours (:data:`DISK_ERRNOS`) raises
:class:`~hpjax.core.errors.WorkdirError` naming the file (one line, exit 2).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import Any, Iterator

import numpy as np

from hpjax.core.errors import WorkdirError

# What a full disk, a quota, a read-only or someone else's folder, or a file where a
# folder should be raise: the user's to fix, not a bug.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                         errno.ENOTDIR})


def write_error(path: str | os.PathLike, e: OSError) -> WorkdirError:
  """The one-line error of a failed write of PATH (``e.errno`` in :data:`DISK_ERRNOS`)."""
  return WorkdirError(f"cannot write {os.fspath(path)}: {e.strerror or e} "
                      f"[{errno.errorcode.get(e.errno, e.errno)}]")


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
  """Within: an ``OSError`` of :data:`DISK_ERRNOS` is raised as :func:`write_error` of PATH."""
  try:
    yield
  except OSError as e:
    if e.errno in DISK_ERRNOS:
      raise write_error(path, e) from e
    raise


@contextlib.contextmanager
def atomic(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path beside ``path``; renames it over ``path`` if the block succeeds.

  Creates ``path``'s folder if needed.
  ``suffix`` keeps an extension that writers key their format on (``".png"``,
  ``".npz"``). On an exception the temporary file is removed and ``path`` is untouched.
  """
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}{suffix}"
  try:
    with write_errors(path):
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      yield tmp
      os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  with atomic(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_all(fd: int, data: bytes) -> None:
  """Writes all of DATA to the file descriptor FD (``os.write`` may write part)."""
  while data:
    data = data[os.write(fd, data):]


def append_text(path: str | os.PathLike, text: str) -> None:
  """Appends TEXT to PATH whole or not at all (for logs such as ``metrics.jsonl``).

  A failed append (a full disk, an interrupt) is cut back to the file's previous end,
  so the file never ends in a torn line; the error is raised as in :func:`atomic`.
  """
  path = os.fspath(path)
  with write_errors(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      end = os.fstat(fd).st_size
      try:
        write_all(fd, text.encode())
      except BaseException:
        os.ftruncate(fd, end)
        raise
    finally:
      os.close(fd)


def to_json(x: Any) -> Any:
  """Arrays and NumPy scalars to lists and Python numbers; NaN to ``None``."""
  if isinstance(x, dict):
    return {str(k): to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v) for v in x]
  if hasattr(x, "__array__") and not isinstance(x, (str, bytes)):
    a = np.asarray(x)
    if a.ndim:
      return to_json(a.tolist())
    x = a.item()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
  """``obj`` through :func:`to_json`, written atomically."""
  write_text(path, json.dumps(to_json(obj), indent=indent) + "\n")


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
  with atomic(path, ".npz") as tmp:
    np.savez(tmp, **arrays)


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> str:
  """Saves a matplotlib figure atomically (format from ``path``'s extension) and closes it."""
  import matplotlib.pyplot as plt  # late: only callers that draw pay for matplotlib
  path = os.fspath(path)
  try:
    with atomic(path, os.path.splitext(path)[1]) as tmp:
      fig.savefig(tmp, **savefig_kwargs)
  finally:
    plt.close(fig)
  return path
