"""A run's workdir: checked before a run writes it, locked while it does, and its stored
config compared with the one a re-run asks for.

Every command that writes a workdir goes through here (:func:`hpjax.core.training.fit`,
:func:`hpjax.image_score.semisupervised.train`, :func:`hpjax.data.prepare.prepare`); the
checkpoints in it are restored by :func:`hpjax.core.training.restore_newest`.

- :func:`check`: the workdir is a folder (created if missing), writable, and its disk
  not full; else one :class:`~hpjax.core.errors.WorkdirError` line.
- :func:`lock`: ``WORKDIR/.lock`` (pid, host, start time and command of the run),
  created atomically with ``O_EXCL`` and removed when the run ends. A second run on
  the workdir is refused with one line naming the first. A lock whose process is
  gone (same host: the pid is dead, or now belongs to a later process) is taken over
  with a one-line warning; a lock from another host is always respected (its process
  cannot be checked from here). Nested locks are free: a run that holds ``W`` may
  train in ``W/epoch_001`` without a second lock file. Multi-host runs: only process
  0 checks and locks (the workdir is one shared folder, and one lock file says
  everything); the others learn the outcome from it, so all go on or all stop.
- :func:`compare_configs`: the fields of :data:`MAY_CHANGE_ON_RESUME` may differ
  between the stored config and a re-run's (they are reported and recorded);
  every other field must match (:data:`MUST_MATCH` says why, field by field, for
  :class:`~hpjax.hpnet.config.AttributesConfig`,
  :class:`~hpjax.image_score.config.SemiConfig` and the semi-supervised loop's
  per-phase config; a field in neither list must match too).
- :func:`set_aside`: a damaged checkpoint that training skips is moved, whole, to
  ``WORKDIR/damaged/`` (it would otherwise be saved over); nothing is deleted.

Commands that only read a workdir (``evaluate.*``) take no lock and ignore one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from typing import Any, Iterator, Mapping

from hpjax.core import io
from hpjax.core.errors import ConfigError, WorkdirError

LOCK_NAME = ".lock"
# Below this much free space a run would fail at its first checkpoint: refuse up front.
MIN_FREE_BYTES = 1 << 20
# A lock file this young whose content is not readable yet is being written by its owner.
_YOUNG_SECONDS = 10.0

# Fields a re-run may change on an existing workdir: they change neither the model's
# shapes nor what the run means. A change is printed and recorded in metrics.jsonl.
MAY_CHANGE_ON_RESUME: dict[str, str] = {
    "name": "a label (the preset the run was started from)",
    "num_steps": "train longer or stop earlier (the cosine decay follows the new length "
                 "from the resumed step on)",
    "log_every": "bookkeeping", "eval_every": "bookkeeping",
    "checkpoint_every": "bookkeeping", "max_checkpoints": "bookkeeping",
    "worker_count": "how the data are loaded, not which",
    "num_eval": "how many validation/test images an evaluation reads",
    "eval_batch_size": "the batch of the analysis passes, not their result",
    "data_path": "the same data set at another path (a moved disk)",
    "stream_heads": "how the heads are computed (same numbers up to rounding)",
    "head_stream_rows": "how the heads are computed (same numbers up to rounding)",
}

# Fields that must match the stored config, and why (a re-run that changes one needs a
# new workdir).
MUST_MATCH: dict[str, str] = {
    "dataset": "the data (and the number of attributes or classes)",
    "num_train": "the training set", "data_seed": "which generated data set",
    "image_size": "the input shape", "model": "the model",
    "features": "the parameter shapes", "dilations": "the model",
    "width": "the parameter shapes", "dropout_rate": "the model",
    "head_matmul_dtype": "the heads' arithmetic", "mask_bias_init": "the initialisation",
    "batch_size": "the data order and what a step is",
    "learning_rate": "the optimisation", "warmup_steps": "the optimisation",
    "l1_lambda": "the loss", "l1_reduction": "the loss",
    "seed": "initialisation, data order and dropout, which a resumed run repeats",
    "labelled_fraction": "the labelled/additional split",
    "num_classes": "the number of classes (the output shape)",
    "test_fraction": "the held-out test split of an image folder",
    "split_seed": "the held-out test split of an image folder",
    "method": "which images are selected", "mode": "which images are selected",
    "target_class": "which images are selected", "fractions": "how many images are selected",
    "similarity": "which images are selected", "taps": "which images are selected",
    "pretrain_epochs": "the schedule", "retrain_epochs": "the schedule (the final epoch's "
                                                         "analysis and scores.npz)",
    "num_train_scored": "the images scored for Figs. 2-4",
    "pretrain_cache": "where the pre-training lives",
    "phase": "which phase of the semi-supervised loop",
    "num_examples": "the phase's training set",
}


def warn(text: str) -> None:
  """Prints one ``warning:`` line on stderr (process 0 of a multi-host run)."""
  if _process_index() == 0:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _process_index() -> int:
  if "jax" not in sys.modules:  # hpjax.data.prepare runs without JAX
    return 0
  import jax
  return jax.process_index()


# ----------------------------------------------------------------------------
# Config comparison


def _show(v: Any) -> str:
  """A config value as ``--set`` takes it (``16,32,32,32``, ``None``, ``0.001``)."""
  if isinstance(v, (list, tuple)):
    return ",".join(map(_show, v))
  return str(v)


def compare_configs(stored: Mapping[str, Any], requested: Mapping[str, Any], *,
                    where: str) -> dict[str, dict[str, Any]]:
  """The changes a re-run makes to a stored config, refused unless all may change.

  Args:
    stored: the config saved with the run (a JSON object).
    requested: the re-run's config (``dataclasses.asdict``).
    where: what holds the run, for the message (``workdir runs/demo``).

  Returns:
    ``{field: {"stored": value, "requested": value}}`` for every field of
    :data:`MAY_CHANGE_ON_RESUME` that differs. Fields only one side has (a config
    written by another version of the code) are not compared.

  Raises:
    ConfigError: one line listing each other field that differs (stored → requested).
  """
  stored, requested = io.to_json(dict(stored)), io.to_json(dict(requested))
  changed = {k: {"stored": stored[k], "requested": requested[k]}
             for k in requested if k in stored and stored[k] != requested[k]}
  fixed = [k for k in changed if k not in MAY_CHANGE_ON_RESUME]
  if fixed:
    diffs = ", ".join(f"{k} {_show(changed[k]['stored'])} → {_show(changed[k]['requested'])}"
                      for k in fixed)
    raise ConfigError(f"{where} holds a run with another config: {diffs}; these fix the model, "
                      "its data or its training, so it cannot resume with them: use a new "
                      "--workdir (or --set the stored values)")
  return changed


def describe_changes(changed: Mapping[str, Mapping[str, Any]]) -> str:
  """``num_steps 6 → 12, log_every 2 → 3``: the allowed changes of a resumed run."""
  return ", ".join(f"{k} {_show(v['stored'])} → {_show(v['requested'])}"
                   for k, v in changed.items())


# ----------------------------------------------------------------------------
# Checks


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URL-like path (``gs://bucket/run``, ``s3://…``): an object store that
  orbax reaches through ``etils.epath``, where local checks and locks do not apply."""
  return "://" in os.fspath(path)


def check(directory: str, *, label: str = "workdir", flag: str = "--workdir") -> None:
  """Raises :class:`WorkdirError` unless DIRECTORY is (or can be made) a writable
  folder on a disk with at least :data:`MIN_FREE_BYTES` free.

  A remote DIRECTORY (:func:`is_remote`) is not checked: its store reports its own errors.

  Args:
    label, flag: how messages name DIRECTORY and the argument that chooses it.
  """
  if is_remote(directory):
    return
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise WorkdirError(f"{label} {directory} is a file, not a folder; choose another {flag}")
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create {label} {directory}: {e.strerror or e}; choose "
                       f"another {flag}") from None
  if not os.access(directory, os.W_OK | os.X_OK):
    raise WorkdirError(f"{label} {directory} is not writable by this user; fix its "
                       f"permissions or choose another {flag}")
  free = shutil.disk_usage(directory).free
  if free < MIN_FREE_BYTES:
    raise WorkdirError(f"{label} {directory}: its disk is full ({free} bytes free); free "
                       f"some space or choose another {flag}")


def set_aside(path: str, workdir: str) -> str:
  """Moves PATH (a damaged checkpoint folder) into ``WORKDIR/damaged/``, every byte kept,
  so that training can save that step again; returns where it went."""
  folder = os.path.join(os.path.abspath(workdir), "damaged")
  base = os.path.join(folder, f"checkpoint_{os.path.basename(path)}")
  dest, i = base, 1
  while os.path.lexists(dest):
    i += 1
    dest = f"{base}_{i}"
  with io.write_errors(dest):
    os.makedirs(folder, exist_ok=True)
    os.rename(path, dest)  # one folder moved whole, within the workdir's file system
  return dest


# ----------------------------------------------------------------------------
# The lock

# Lock files this process holds → the folder each guards.
_held: dict[str, str] = {}


def _start_ticks(pid: int) -> int | None:
  """When process PID started (clock ticks since boot; Linux), to tell a reused pid."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rpartition(")")[2].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def _command() -> str:
  """This process's command line, as run (``python -m train.attributes --workdir W``)."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  argv0 = sys.argv[0] if sys.argv else ""
  head = (f"python -m {spec.name}" if spec is not None and spec.name
          else "python -c" if argv0 == "-c" else os.path.basename(argv0) or "python")
  line = " ".join([head, shlex.join(sys.argv[1:])]).strip()
  return line if len(line) <= 200 else line[:197] + "..."


def _this_process() -> dict[str, Any]:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "start_ticks": _start_ticks(os.getpid()),
          "command": _command()}


def _read_holder(path: str) -> dict[str, Any] | None:
  """The lock file's record; None when it is not (yet) a record."""
  with open(path, "rb") as f:
    text = f.read()
  try:
    holder = json.loads(text)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None
  return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _gone(holder: dict[str, Any]) -> str | None:
  """Why HOLDER's process no longer runs (same host only), or None while it may."""
  if holder.get("host") != socket.gethostname():
    return None
  pid = holder["pid"]
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return f"pid {pid} is not running"
  except PermissionError:
    pass  # alive, another user's
  ticks = holder.get("start_ticks")
  if ticks is not None and _start_ticks(pid) not in (None, ticks):
    return f"pid {pid} now belongs to a later process"
  return None


def _describe(holder: dict[str, Any]) -> str:
  return (f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('started', '?')} "
          f"({holder.get('command', '?')})")


def _in_use(where: str, path: str, holder: dict[str, Any]) -> WorkdirError:
  hint = ("wait for it to end or stop it" if holder.get("host") == socket.gethostname()
          else f"another host: if that run has ended, delete {path}")
  return WorkdirError(f"{where} is in use by {_describe(holder)}; {hint}")


def _create(path: str, me: dict[str, Any]) -> bool:
  """Creates the lock file with ME inside (O_EXCL); False if it exists."""
  with io.write_errors(path):
    try:
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    try:
      try:
        io.write_all(fd, json.dumps(me).encode())
      finally:
        os.close(fd)
    except BaseException:
      os.unlink(path)
      raise
  return True


@contextlib.contextmanager
def _directory_flock(directory: str) -> Iterator[None]:
  """Within: no other process of this host is taking over a lock in DIRECTORY."""
  fd = os.open(directory, os.O_RDONLY)
  try:
    with contextlib.suppress(OSError):  # a file system without flock: best effort
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # releases the flock


def _acquire(where: str, path: str, me: dict[str, Any]) -> None:
  """Creates the lock file PATH holding ME, taking over a stale one."""
  for _ in range(3):
    if _create(path, me):
      return
    try:
      holder = _read_holder(path)
      age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
      continue  # released meanwhile: try again
    except OSError as e:
      raise WorkdirError(f"{where}: cannot read its lock {path}: "
                         f"{e.strerror or e}") from None
    if holder is None and age < _YOUNG_SECONDS:
      raise WorkdirError(f"{where} is being locked by another process right now "
                         f"({path}); wait for that run to end")
    why = "it is not a lock record" if holder is None else _gone(holder)
    if why is None:
      raise _in_use(where, path, holder)
    with _directory_flock(os.path.dirname(path)):
      # Only the lock just judged stale is removed: another process taking it over
      # first has replaced it, and this one then tries again.
      try:
        same = _read_holder(path) == holder
      except FileNotFoundError:
        same = False
      if same:
        os.unlink(path)
        warn(f"{where}: taking over the stale lock "
             f"{path if holder is None else 'of ' + _describe(holder)}: {why}")
  raise WorkdirError(f"could not lock {where}: {path} kept changing hands; retry")


def _release(path: str, me: dict[str, Any]) -> None:
  with contextlib.suppress(OSError):
    if _read_holder(path) == me:
      os.unlink(path)


def _nested(directory: str, path: str) -> bool:
  """Whether this process already holds PATH, or a workdir lock on a folder above."""
  if path in _held:
    return True
  return any(os.path.basename(p) == LOCK_NAME and (directory + os.sep).startswith(d + os.sep)
             for p, d in _held.items())


def _agree(ok: bool) -> bool:
  """Process 0's OK, on every process of a multi-host run."""
  if "jax" not in sys.modules:
    return ok
  import jax
  if jax.process_count() == 1:
    return ok
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


@contextlib.contextmanager
def lock(directory: str, *, name: str = LOCK_NAME, label: str = "workdir",
         flag: str = "--workdir") -> Iterator[None]:
  """Within: DIRECTORY is checked (:func:`check`) and this run's alone.

  Args:
    directory: the workdir (created if missing).
    name: the lock file's name in DIRECTORY (a folder that does not exist yet, such as
      a cache being prepared, is guarded by ``.NAME.lock`` in its parent).
    label, flag: how messages name DIRECTORY and the argument that chooses it.

  Raises:
    WorkdirError: the workdir is unusable or in use (one line naming the other run).

  A remote DIRECTORY (:func:`is_remote`) is not locked: object stores have no atomic
  create-if-absent that every backend honours, so two runs there are the user's to avoid.
  """
  if is_remote(directory):
    yield
    return
  directory = os.path.abspath(directory)
  real = os.path.realpath(directory)
  path = os.path.join(real, name)
  if _nested(real, path):
    yield
    return
  me, error = _this_process(), None
  _held[path] = real
  try:
    if _process_index() == 0:
      try:
        check(directory, label=label, flag=flag)
        _acquire(f"{label} {directory}", path, me)
      except WorkdirError as e:
        error = e
    if not _agree(error is None):
      raise error or WorkdirError(f"{label} {directory}: process 0 could not lock it (see its "
                                  "error)")
    yield
  finally:
    del _held[path]
    _release(path, me)  # only if the file is this run's lock
