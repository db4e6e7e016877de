"""Ctrl-C and SIGTERM: training stops at a step boundary with a checkpoint; exit 130 / 143.

Two ways a signal is taken:

- **Raising** (:func:`raising`, what every command runs under through
  :func:`hpjax.core.cli.guarded`): SIGINT and SIGTERM raise :class:`Interrupted`
  wherever the program is. Everything the project writes goes through
  :mod:`hpjax.core.io` (temp file + rename), so nothing is left half-written; work
  since the last checkpoint is redone by the next run.
- **Deferred** (:class:`StopRequest`, what :func:`hpjax.core.training.fit`'s step loop
  runs under): a signal only records itself; the loop ends the step it is in, writes
  a checkpoint and raises :class:`Interrupted`. Further signals while it stops (a
  second Ctrl-C during the save) are noted with one line and otherwise ignored, so
  the checkpoint being written completes. SIGKILL still works, and loses nothing but
  the steps since the previous checkpoint (orbax commits a checkpoint by renaming a
  finished folder).

The command then prints one line naming the step, the checkpoint and the command
to re-run, and exits with ``128 + signal`` as shells do: 130 for SIGINT, 143 for
SIGTERM (schedulers send it before preemption; the re-run resumes).

Several processes (a multi-host run): a signal usually reaches one process (Ctrl-C
in one terminal) or all at different moments (a scheduler's SIGTERM). They agree
where to stop with one all-gather of the signals received, at the steps where the
loop already waits for the device (every ``log_every`` steps and the last step), so
every process stops after the same step, writes the same checkpoint and exits with
the same status; the single-process loop checks after every step.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
  """SIGINT or SIGTERM stopped a command (a BaseException, as ``KeyboardInterrupt``, so
  that ``except Exception`` does not swallow it).

  Attributes:
    signum: the signal.
    step: the step training stopped after (None: stopped outside a step loop).
    checkpoints: the folder holding that step's checkpoint (None: nothing saved).
  """

  def __init__(self, signum: int, step: int | None = None, checkpoints: str | None = None):
    super().__init__(signum, step, checkpoints)
    self.signum, self.step, self.checkpoints = signum, step, checkpoints

  @property
  def exit_code(self) -> int:
    """``128 + signum``, the shells' status of a command a signal ended."""
    return 128 + self.signum

  def __str__(self) -> str:
    name = signal.Signals(self.signum).name
    if self.step is None:
      return f"stopped by {name} (nothing is half-written; unsaved work is redone)"
    return f"stopped by {name} after step {self.step}, checkpoint saved in {self.checkpoints}"


def _in_main_thread() -> bool:
  # signal.signal works only there (a command run from a worker thread keeps the defaults).
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
  """Within: HANDLER takes SIGINT and SIGTERM; the previous handlers come back after."""
  if not _in_main_thread():
    yield
    return
  previous = {s: signal.signal(s, handler) for s in SIGNALS}
  try:
    yield
  finally:
    for s, h in previous.items():
      # None: installed outside Python (e.g. by jax.distributed's preemption notifier),
      # which Python cannot put back; the default is the nearest.
      signal.signal(s, signal.SIG_DFL if h is None else h)


def _raise(signum: int, frame: Any) -> None:
  del frame
  raise Interrupted(signum)


@contextlib.contextmanager
def raising() -> Iterator[None]:
  """Within: SIGINT and SIGTERM raise :class:`Interrupted` where the program is."""
  with _handlers(_raise):
    yield


class StopRequest:
  """Within ``with StopRequest() as stop:``, SIGINT and SIGTERM only record themselves;
  the step loop asks :meth:`agreed` at each step boundary whether to stop."""

  def __init__(self):
    self.signum = 0
    self._noted = False

  def _record(self, signum: int, frame: Any) -> None:
    del frame
    if not self.signum:
      self.signum = signum
    elif not self._noted:
      self._noted = True
      print(f"{signal.Signals(signum).name}: already stopping; the checkpoint is being "
            "written, wait for it (SIGKILL loses the steps since the previous one)",
            file=sys.stderr, flush=True)

  def __enter__(self) -> "StopRequest":
    self._scope = _handlers(self._record)
    self._scope.__enter__()
    return self

  def __exit__(self, *exc: Any) -> None:
    self._scope.__exit__(*exc)

  def agreed(self, sync: bool) -> int:
    """The signal to stop on after this step, 0 to go on.

    Args:
      sync: whether this step is one where every process checks (see the module
        docstring); with one process every step is.

    Returns:
      One process: the signal it received. Several: at a ``sync`` step, the largest
      signal any process received (the same value on all), else 0.
    """
    if jax.process_count() == 1:
      return self.signum
    if not sync:
      return 0
    from jax.experimental import multihost_utils
    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))


def ignore_in_worker(worker_index: int, worker_count: int) -> None:
  """A data-loader worker's start: SIGINT and SIGTERM are left to the main process.

  Ctrl-C reaches the whole foreground process group; the workers must not die (with
  a traceback each) while the main process finishes its step and saves. They end
  when the main process closes its iterator or exits.
  """
  del worker_index, worker_count
  for s in SIGNALS:
    signal.signal(s, signal.SIG_IGN)
