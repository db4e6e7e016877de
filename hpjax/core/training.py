"""Training state, the pure train step, and the sharded, checkpointed training loop.

``train_step(state, batch) -> (state, metrics)`` is a top-level pure function; the
loop jits it once with a device mesh (batch sharded over ``data``, state
replicated), feeds it from a grain iterator, and checkpoints state, step, data
iterator and config with orbax in ``WORKDIR/checkpoints``. A run started on a
workdir with checkpoints resumes from the latest and ends with the same parameters
as an uninterrupted run (data order and dropout keys are functions of the step).
SIGINT or SIGTERM stops the loop after the step it is in, with a checkpoint
(:mod:`hpjax.core.interrupt`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from flax import struct
from tqdm import tqdm

from hpjax.core import configs, distributed, interrupt, io
from hpjax.core import workdir as workdir_lib
from hpjax.core import jit as jit_lib
from hpjax.core.errors import CheckpointError, Error, NonFiniteLossError, WorkdirError
from hpjax.data import pipeline
from hpjax.core.metrics_writer import MetricsWriter, read_metrics

LossFn = Callable[[jax.Array, dict[str, Any], dict[str, jax.Array]],
                  tuple[jax.Array, dict[str, jax.Array]]]


class TrainState(struct.PyTreeNode):
  """Explicit training state: a pytree of arrays plus the static apply fn and optimizer."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}

  def arrays(self) -> dict[str, Any]:
    """What the checkpoint stores."""
    return {"step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...], seed: int) -> TrainState:
  """Initialises parameters for inputs ``[batch, *input_shape]``."""
  variables = model.init(jax.random.key(seed), jnp.zeros((1, *input_shape), jnp.float32),
                         train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    apply_fn=jit_lib.ModuleApply(model), tx=tx)


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 ``[..., H, W, C]`` in 0..255 → float32 in [0, 1] (float inputs pass through)."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: LossFn,
               seed: jax.typing.ArrayLike = 0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a (global) batch. Pure; jit it with shardings.

  Args:
    state: current state.
    batch: ``{"image": [batch, H, W, C], "label": ...}``.
    loss_fn: ``(logits, aux, batch) -> (loss, metrics)``.
    seed: dropout keys are ``fold_in(key(seed), step)``, so a resumed run repeats them.
      An array argument (traced), so runs that differ only in their seed share one
      compilation.
  """
  key = jax.random.fold_in(jax.random.key(seed), state.step)

  def objective(params):
    (logits, aux), updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, images_to_float(batch["image"]),
        train=True, mutable=["batch_stats"], rngs={"dropout": key})
    loss, metrics = loss_fn(logits, aux, batch)
    return loss, (metrics, updates.get("batch_stats", state.batch_stats))

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                       opt_state=opt_state), metrics


@functools.lru_cache(maxsize=None)
def make_optimizer(learning_rate: float, warmup_steps: int, num_steps: int
                   ) -> optax.GradientTransformation:
  """Adam with linear warmup and cosine decay.

  Cached: the same arguments give the same object, so states built for two ``fit``
  calls of one run (a resume in the same process, a second seed) are the same static
  structure and share :func:`compiled_step`'s compilation.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, min(warmup_steps, num_steps - 1)), max(num_steps, 2))
  return optax.adam(schedule)


def checkpoint_manager(workdir: str, max_to_keep: int, *, create: bool = True
                       ) -> ocp.CheckpointManager:
  """The orbax manager of ``WORKDIR/checkpoints`` (``create=False``: a reader, which
  creates nothing)."""
  # Synchronous saves: a failed save raises here instead of becoming a logged warning
  # in a background thread.
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "data", "config"))


def checkpoint_dir(workdir: str | os.PathLike) -> str:
  """``WORKDIR/checkpoints`` as orbax gets it: a remote path (``gs://bucket/run``, any
  ``etils.epath`` URL) untouched, a local one made absolute (orbax requires that)."""
  if workdir_lib.is_remote(workdir):
    return os.fspath(workdir).rstrip("/") + "/checkpoints"
  return os.path.abspath(os.path.join(os.fspath(workdir), "checkpoints"))


def abstract_arrays(state: TrainState, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state.arrays())


# ----------------------------------------------------------------------------
# Restoring checkpoints. Whatever orbax, tensorstore or grain raise while reading one
# checkpoint (truncated or missing files, bad metadata, a wrong dtype or shape) is
# turned into one CheckpointError line naming the step and what failed, at this one
# boundary (_restoring); readers then fall back to the newest checkpoint that restores
# (restore_newest). Nothing is deleted: training sets damaged checkpoints aside.

COMMIT_MARKER = "commit_success.txt"  # orbax writes it last into a finished checkpoint


def _cause(e: BaseException, folder: str) -> str:
  """The innermost cause of E on one line; tensorstore's nested reports shortened (its
  spec and driver chain left out, paths made relative to FOLDER)."""
  while e.__cause__ is not None:
    e = e.__cause__
  lines = str(e).strip().splitlines()
  text = lines[0].split(" [tensorstore_spec")[0] if lines else ""
  text = re.sub(r'Error opening "\w+" driver: ', "", text)
  text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text)
  text = text.replace(os.path.join(folder, ""), "")
  text = text if len(text) <= 300 else text[:297] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _unrestorable(mngr: ocp.CheckpointManager, step: int, what: str) -> CheckpointError:
  return CheckpointError(f"checkpoint {step} in {mngr.directory} cannot be restored: {what}")


class _OrbaxLeftovers(logging.Filter):
  """Drops orbax's reports of its own threads and tasks failing along with the failure
  this module reports in one line (``_SignalingThread.run() raised an exception``: the
  failed write itself, then the writes still in flight when the command exits; asyncio's
  ``... exception was never retrieved`` for orbax's tasks and tensorstore's writes)."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not ("_SignalingThread.run() raised an exception" in text or (
        "exception was never retrieved" in text
        and any(k in text for k in ("orbax", "os_error_code", "OCDBT"))))


def _quiet_orbax_leftovers() -> None:
  """A failed restore or save is reported by the boundary in one line, but orbax logs
  the failing thread's traceback too (``absl`` logger), and its and tensorstore's
  operations still in flight fail later, on orbax's closed event loop or at exit, each
  printing a traceback (``sys.unraisablehook``: ``RuntimeError: Event loop is
  closed``). Harmless leftovers that would bury the one-line report: this filters
  exactly those (installed once, at the first boundary; everything else reaches the
  previous hook and the log)."""
  if getattr(sys.unraisablehook, "hpjax_quiet", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable: Any) -> None:
    e = unraisable.exc_value
    if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
      previous(unraisable)

  hook.hpjax_quiet = True
  sys.unraisablehook = hook
  for logger in ("absl", "asyncio"):
    logging.getLogger(logger).addFilter(_OrbaxLeftovers())


def _after_orbax_failure() -> None:
  """After a failed restore or save, orbax's coroutines still pending are collected at
  exit and each warns ``coroutine ... was never awaited``: dropped too."""
  warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited",
                          category=RuntimeWarning)


@contextlib.contextmanager
def _restoring(mngr: ocp.CheckpointManager, step: int, item: str) -> Iterator[None]:
  """The restore boundary: an exception reading ITEM of checkpoint STEP becomes one
  :class:`CheckpointError` line (the project's own errors pass through)."""
  _quiet_orbax_leftovers()
  try:
    yield
  except Error:
    raise
  except Exception as e:  # orbax/tensorstore/grain raise many types, some bare Exception
    _after_orbax_failure()
    raise _unrestorable(mngr, step, f"{item}: {_cause(e, str(mngr.directory))}") from e


def _reader(workdir: str) -> ocp.CheckpointManager:
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    raise CheckpointError(f"no checkpoint in {os.path.abspath(path)}: train first")
  return checkpoint_manager(workdir, 1, create=False)


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of ``WORKDIR/checkpoints``, newest first (none if there is no such folder).

  Read from the folder names as orbax writes them (``6``; an unfinished save is
  ``6.orbax-checkpoint-tmp-…``), not through an orbax manager, whose creation waits for
  every process: processes of a multi-host run may list at different moments.
  """
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return []
  return sorted((int(n) for n in os.listdir(path)
                 if n.isdigit() and os.path.isdir(os.path.join(path, n))), reverse=True)


def _check_committed(mngr: ocp.CheckpointManager, step: int) -> None:
  path = os.path.join(mngr.directory, str(step))
  if not os.path.isdir(path):
    raise _unrestorable(mngr, step, "no such checkpoint")
  if not os.path.exists(os.path.join(path, COMMIT_MARKER)):
    raise _unrestorable(mngr, step, f"no {COMMIT_MARKER} (its save did not finish)")


def _read_config(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  _check_committed(mngr, step)
  with _restoring(mngr, step, "config"):
    config = mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
  if not isinstance(config, dict):
    raise _unrestorable(mngr, step, f"config: expected a JSON object, got "
                                    f"{type(config).__name__}")
  return config


def _check_arrays(mngr: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Compares the stored arrays' names, shapes and dtypes with TARGET's (orbax casts a
  wrong dtype silently)."""
  with _restoring(mngr, step, "state"):
    stored = ocp.StandardCheckpointHandler().metadata(
        epath.Path(mngr.directory) / str(step) / "state")
    have = {jax.tree_util.keystr(p, simple=True, separator="."): m
            for p, m in jax.tree_util.tree_leaves_with_path(stored)}
  problems = []
  for p, want in jax.tree_util.tree_leaves_with_path(target):
    name = jax.tree_util.keystr(p, simple=True, separator=".")
    got = have.pop(name, None)
    if got is None:
      problems.append(f"{name} missing")
    elif tuple(got.shape) != tuple(want.shape) or (
        got.dtype is not None and np.dtype(got.dtype) != np.dtype(want.dtype)):
      problems.append(f"{name} is {np.dtype(got.dtype).name if got.dtype is not None else '?'}"
                      f"{list(got.shape)}, expected {np.dtype(want.dtype).name}"
                      f"{list(want.shape)}")
  problems += [f"{name} unexpected" for name in sorted(have)]
  if problems:
    more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
    raise _unrestorable(mngr, step, f"state: {'; '.join(problems[:2])}{more}")


def _restore_arrays(mngr: ocp.CheckpointManager, step: int, target: Any, **extra: Any
                    ) -> dict[str, Any]:
  """The state's arrays of checkpoint STEP, plus the EXTRA items (restore args)."""
  _check_committed(mngr, step)
  # Without it orbax reports only "pytree structure error: different types at key path".
  if not os.path.exists(os.path.join(mngr.directory, str(step), "state", "_METADATA")):
    raise _unrestorable(mngr, step, "state: its _METADATA file is missing")
  with _restoring(mngr, step, "state" if not extra else f"state or {', '.join(extra)}"):
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), **extra))
  # After the restore: reading the metadata of damaged files leaves orbax's event loop
  # printing tracebacks from its threads.
  _check_arrays(mngr, step, target)
  return restored


def read_config(workdir: str, step: int | None = None) -> dict[str, Any]:
  """The config dict saved with checkpoint ``step`` (default: the newest).

  Raises:
    CheckpointError: no checkpoint, or that one's config does not read.
  """
  if step is None:
    step = next(iter(checkpoint_steps(workdir)), None)
    if step is None:
      raise CheckpointError(f"no checkpoint in {os.path.abspath(workdir)}/checkpoints: "
                            "train first")
  return _read_config(_reader(workdir), step)


def config_from_checkpoint(cls: type, workdir: str, step: int) -> Any:
  """The config of class CLS saved with checkpoint STEP.

  Raises:
    CheckpointError: the config does not read, or is not a valid CLS.
  """
  mngr = _reader(workdir)
  stored = _read_config(mngr, step)
  try:
    return configs.from_dict(cls, stored)
  except (Error, TypeError, ValueError) as e:
    raise _unrestorable(mngr, step, f"config: {e}") from None


def restore_state(workdir: str, state: TrainState, sharding: jax.sharding.Sharding,
                  step: int | None = None) -> TrainState:
  """Loads the arrays of checkpoint ``step`` (default: the newest that restores, see
  :func:`restore_newest`) into ``state``'s structure."""
  mngr = _reader(workdir)
  target = abstract_arrays(state, sharding)
  _, arrays = restore_newest(workdir, lambda s: _restore_arrays(mngr, s, target)["state"],
                             step=step)
  return state.replace(**arrays)


def restore_newest(workdir: str, restore: Callable[[int], Any], *, step: int | None = None,
                   set_aside: bool = False) -> tuple[int, Any]:
  """``(step, restore(step))`` for the newest checkpoint of WORKDIR that restores.

  A checkpoint whose ``restore`` raises :class:`CheckpointError` is skipped with one
  warning line naming its step and what failed. With ``step`` given, only that one is
  tried.

  Args:
    set_aside: move the skipped checkpoints to ``WORKDIR/damaged/`` (a run that goes on
      training must not save over them; :func:`hpjax.core.workdir.set_aside`).

  Raises:
    CheckpointError: no checkpoint, or none restores (one line naming each).
  """
  steps = checkpoint_steps(workdir) if step is None else [step]
  failed: list[tuple[int, CheckpointError]] = []
  for s in steps:
    try:
      result = restore(s)
    except CheckpointError as e:
      failed.append((s, e))
      continue
    moved = {}
    if set_aside and failed:
      directory = os.path.join(workdir, "checkpoints")
      distributed.barrier("hpjax_set_aside_before")  # every process has read
      if jax.process_index() == 0:
        moved = {f: workdir_lib.set_aside(os.path.join(directory, str(f)), workdir)
                 for f, _ in failed}
      distributed.barrier("hpjax_set_aside_after")
    for f, e in failed:
      aside = f"; set it aside in {moved[f]}" if f in moved else ""
      workdir_lib.warn(f"{e}{aside}; using checkpoint {s} instead")
    return s, result
  where = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not failed:
    raise CheckpointError(f"no checkpoint in {where}: train first")
  if len(failed) == 1:
    raise failed[0][1]
  raise CheckpointError(f"none of the {len(failed)} checkpoints in {where} can be restored: "
                        + "; ".join(str(e).replace(f" in {where} cannot be restored", "")
                                    for _, e in failed))


@functools.lru_cache(maxsize=8)
def compiled_step(loss_fn: LossFn, mesh: jax.sharding.Mesh
                  ) -> Callable[[TrainState, dict[str, jax.Array], jax.Array],
                                tuple[TrainState, dict[str, jax.Array]]]:
  """``(state, batch, seed) -> (state, metrics)``: :func:`train_step` jitted for ``mesh``.

  One jitted function per ``(loss_fn, mesh)``, shared by every :func:`fit` call, so a
  loop that calls :func:`fit` again and again with the same shapes (the semi-supervised
  epochs) compiles its step once. It runs under ``jax.set_mesh(mesh)``: the model's
  per-device parts (the HPNet heads' ``shard_map``) see the mesh they split the batch over.
  """
  repl = distributed.replicated(mesh)
  jitted = jax.jit(functools.partial(train_step, loss_fn=loss_fn), out_shardings=(repl, repl))

  def step(state: TrainState, batch: dict[str, jax.Array], seed: jax.Array):
    with jax.set_mesh(mesh):
      return jitted(state, batch, seed=seed)

  step.jitted = jitted
  return step


def _resume(workdir: str, config: Any, target: Any, data_iter: Any
            ) -> tuple[int, dict[str, Any] | None, dict[str, Any]]:
  """``(step, restored items or None, allowed config changes)`` of the checkpoint a run
  resumes from: the newest that restores, once its config is compared with CONFIG
  (:func:`hpjax.core.workdir.compare_configs`); newer damaged ones are set aside."""
  if not checkpoint_steps(workdir):
    return 0, None, {}
  mngr = _reader(workdir)
  requested = dataclasses.asdict(config)

  def restore(step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    changed = workdir_lib.compare_configs(_read_config(mngr, step), requested,
                                          where=f"workdir {workdir}")
    return changed, _restore_arrays(mngr, step, target,
                                    data=grain.checkpoint.CheckpointRestore(data_iter))

  start, (changed, restored) = restore_newest(workdir, restore, set_aside=True)
  mngr.close()
  return start, restored, changed


# How tensorstore reports a failed write (a ValueError, not an OSError): RESOURCE_EXHAUSTED:
# Error writing local file "DIR": Failed writing: "PATH": ... No space left on device
# [os_error_code='28'].
_TENSORSTORE_ERRNO = re.compile(r"\[os_error_code='(\d+)'\]")
_TENSORSTORE_PATH = re.compile(r'(?:Failed writing|local file):? "([^"]+)"')


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind a failed save, from E's causes or from tensorstore's message."""
  chain = [e]
  while chain[-1].__cause__ is not None:
    chain.append(chain[-1].__cause__)
  for c in chain:
    if isinstance(c, OSError):
      return c
  for c in chain:
    m = _TENSORSTORE_ERRNO.search(str(c))
    if m:
      n = int(m[1])
      paths = _TENSORSTORE_PATH.findall(str(c))
      return OSError(n, os.strerror(n), paths[-1] if paths else None)
  return None


@contextlib.contextmanager
def _saving(mngr: ocp.CheckpointManager, step: int) -> Iterator[None]:
  """The save boundary: a full or read-only disk becomes one :class:`WorkdirError` line
  naming the file (or the checkpoint folder) that could not be written."""
  _quiet_orbax_leftovers()
  try:
    yield
  except Error:
    raise
  except Exception as e:
    cause = _os_error(e)
    if cause is None or cause.errno not in io.DISK_ERRNOS:
      raise
    _after_orbax_failure()
    prev = mngr.latest_step()
    then = (f"checkpoint {prev} is intact: re-run to resume from it" if prev is not None
            else "re-run to start again")
    failed = io.write_error(cause.filename or os.path.join(mngr.directory, str(step)), cause)
    raise WorkdirError(f"checkpoint {step} not saved: {failed}; {then}") from e


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """The loop-related fields every training config carries (read by duck typing)."""
  batch_size: int
  num_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  max_checkpoints: int
  worker_count: int
  seed: int

  @classmethod
  def of(cls, config: Any) -> "LoopSettings":
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def fit(workdir: str, *, config: Any, state: TrainState, loss_fn: LossFn, train_source: Any,
        evaluate: Callable[[TrainState], dict[str, Any]] | None = None,
        mesh: jax.sharding.Mesh | None = None, progress: bool = True) -> TrainState:
  """Trains ``state`` for ``config.num_steps`` steps, resuming from ``workdir`` if possible.

  The workdir is checked and locked for the run (:func:`hpjax.core.workdir.lock`). A
  resumed run first compares the stored config with ``config``
  (:func:`hpjax.core.workdir.compare_configs`; allowed changes are recorded in
  ``metrics.jsonl`` as a ``"resume"`` record) and resumes from the newest checkpoint
  that restores (:func:`restore_newest`; damaged newer ones are set aside).

  Args:
    workdir: run directory: ``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``.
    config: a frozen dataclass with the :class:`LoopSettings` fields; saved as JSON
      with every checkpoint.
    state: freshly initialised state (the restore target when resuming).
    loss_fn: ``(logits, aux, batch) -> (loss, metrics)``.
    train_source: random-access source (see :mod:`hpjax.data.base`).
    evaluate: optional ``state -> metrics``, run every ``eval_every`` steps and at the end.
    mesh: device mesh (default: all devices on a ``data`` axis).
    progress: show a tqdm bar (process 0 only).

  Returns:
    The final state (replicated over the mesh).

  Raises:
    WorkdirError: the workdir is unusable, in use, or a write failed (a full disk).
    CheckpointError: no checkpoint of the workdir restores.
    ConfigError: ``config`` differs from the stored one in a field that must match.
    hpjax.core.interrupt.Interrupted: SIGINT or SIGTERM stopped the loop after a step,
      whose checkpoint it wrote (a BaseException, like ``KeyboardInterrupt``).
  """
  with workdir_lib.lock(workdir):
    return _fit(workdir, config=config, state=state, loss_fn=loss_fn,
                train_source=train_source, evaluate=evaluate, mesh=mesh, progress=progress)


def _fit(workdir: str, *, config: Any, state: TrainState, loss_fn: LossFn, train_source: Any,
         evaluate: Callable[[TrainState], dict[str, Any]] | None,
         mesh: jax.sharding.Mesh | None, progress: bool) -> TrainState:
  """:func:`fit` under the workdir's lock."""
  s = LoopSettings.of(config)
  mesh = mesh or distributed.make_mesh()
  distributed.check_batch_size(s.batch_size, mesh)
  repl = distributed.replicated(mesh)
  state = jax.device_put(state, repl)

  dataset = pipeline.train_dataset(train_source, global_batch_size=s.batch_size, seed=s.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  data_iter = pipeline.train_iterator(dataset, worker_count=s.worker_count)

  start, restored, changed = _resume(workdir, config, abstract_arrays(state, repl), data_iter)
  if restored is not None:
    state = state.replace(**restored["state"])
    data_iter = restored["data"]
  mngr = checkpoint_manager(workdir, s.max_checkpoints)
  if not start and (earlier := [r["step"] for r in read_metrics(workdir)
                                if isinstance(r.get("step"), int) and r["step"] > 0]):
    # No checkpoint (a run killed before its first, or checkpoints/ emptied): start over,
    # replacing the earlier attempt's records rather than repeating them.
    workdir_lib.warn(f"workdir {workdir}: no checkpoint to resume from; starting over at step "
                     f"0 (metrics.jsonl's records of steps {min(earlier)}..{max(earlier)} "
                     "are replaced)")
  writer = MetricsWriter(workdir, resume_step=start)
  if changed:
    workdir_lib.warn(f"workdir {workdir}: resuming at step {start} with "
                     f"{workdir_lib.describe_changes(changed)} (recorded in metrics.jsonl)")
    writer.write(start, "resume", {"changed": changed})

  def save(step: int) -> None:
    # A failed save (a full disk) leaves only orbax's temporary folder; the previous
    # checkpoint stays the newest, and a re-run resumes from it.
    with _saving(mngr, step):
      ok = mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state.arrays()),
          data=grain.checkpoint.CheckpointSave(data_iter),
          config=ocp.args.JsonSave(dataclasses.asdict(config))), force=True)
      mngr.wait_until_finished()
    if not ok or mngr.latest_step() != step:
      raise RuntimeError(f"checkpoint save at step {step} in {mngr.directory} did not complete")

  # No buffer donation: measured here, donating the state while orbax had just
  # serialised it made resumed runs differ from uninterrupted ones (the state is a
  # few MB; the masks, not the parameters, are what fill memory).
  step_fn = compiled_step(loss_fn, mesh)
  seed = jnp.asarray(s.seed, jnp.int32)

  bar = tqdm(total=s.num_steps, initial=start, unit="step", dynamic_ncols=True,
             disable=not progress or jax.process_index() != 0)
  pending: tuple[int, dict[str, jax.Array]] | None = None
  window: list[dict[str, jax.Array]] = []
  t0 = time.perf_counter()

  def check(step: int, metrics: dict[str, jax.Array]) -> None:
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      raise NonFiniteLossError(f"loss is {loss} at step {step} (workdir {workdir}); "
                               "lower learning_rate or check the data")

  # SIGINT / SIGTERM stop the loop after a step, with a checkpoint (hpjax.core.interrupt).
  stopped = 0
  with interrupt.StopRequest() as stop:
    for step in range(start + 1, s.num_steps + 1):
      batch = distributed.global_batch(next(data_iter), mesh)
      state, metrics = step_fn(state, batch, seed)
      # Check the previous step's loss only now, so the host never waits for the
      # device in the steady state; a NaN still stops the run naming its step.
      if pending is not None:
        check(*pending)
      pending = (step, metrics)
      window.append(metrics)
      bar.update(1)
      boundary = step % s.log_every == 0 or step == s.num_steps
      stopped = stop.agreed(sync=boundary)
      if boundary or stopped:  # a stop logs its partial window: no metrics are lost
        check(*pending)
        mean = jax.tree.map(lambda *xs: np.mean([np.asarray(x) for x in xs]), *window)
        mean["steps_per_sec"] = len(window) / (time.perf_counter() - t0)
        writer.write(step, "train", mean)
        bar.set_postfix(loss=f"{mean['loss']:.4f}")
        window, t0 = [], time.perf_counter()
      if evaluate is not None and ((s.eval_every and step % s.eval_every == 0)
                                   or step == s.num_steps):
        writer.write(step, "eval", evaluate(state))
        t0 = time.perf_counter()
      if step % s.checkpoint_every == 0 or step == s.num_steps or stopped:
        save(step)
      if stopped:
        break
    if pending is not None:
      check(*pending)
  bar.close()
  writer.close()
  mngr.close()
  if stopped:
    raise interrupt.Interrupted(stopped, step, str(mngr.directory))
  return state
