"""Training state, the pure train step, and the sharded, checkpointed training loop.

``train_step(state, batch) -> (state, metrics)`` is a top-level pure function; the
loop jits it once with a device mesh (batch sharded over ``data``, state
replicated), feeds it from a grain iterator, and checkpoints state, step, data
iterator and config with orbax in ``WORKDIR/checkpoints``. A run started on a
workdir with checkpoints resumes from the latest and ends with the same parameters
as an uninterrupted run (data order and dropout keys are functions of the step).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from tqdm import tqdm

from hpjax.core import distributed
from hpjax.core.errors import NonFiniteLossError
from hpjax.data import pipeline
from hpjax.core.metrics_writer import MetricsWriter

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
                    apply_fn=model.apply, tx=tx)


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 ``[..., H, W, C]`` in 0..255 → float32 in [0, 1] (float inputs pass through)."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, loss_fn: LossFn,
               seed: int = 0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on a (global) batch. Pure; jit it with shardings.

  Args:
    state: current state.
    batch: ``{"image": [batch, H, W, C], "label": ...}``.
    loss_fn: ``(logits, aux, batch) -> (loss, metrics)``.
    seed: dropout keys are ``fold_in(key(seed), step)``, so a resumed run repeats them.
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


def make_optimizer(learning_rate: float, warmup_steps: int, num_steps: int
                   ) -> optax.GradientTransformation:
  """Adam with linear warmup and cosine decay."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(1, min(warmup_steps, num_steps - 1)), max(num_steps, 2))
  return optax.adam(schedule)


def checkpoint_manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  # Synchronous saves: a failed save raises here instead of becoming a logged warning
  # in a background thread.
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options, item_names=("state", "data", "config"))


def abstract_arrays(state: TrainState, sharding: jax.sharding.Sharding) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      state.arrays())


def _checkpoint_step(workdir: str, step: int | None) -> tuple[ocp.CheckpointManager, int]:
  mngr = checkpoint_manager(workdir, 1)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: "
                            "train first")
  return mngr, step


def read_config(workdir: str, step: int | None = None) -> dict[str, Any]:
  """The config dict saved with checkpoint ``step`` (default: latest)."""
  mngr, step = _checkpoint_step(workdir, step)
  return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def restore_state(workdir: str, state: TrainState, sharding: jax.sharding.Sharding,
                  step: int | None = None) -> TrainState:
  """Loads the arrays of checkpoint ``step`` (default: latest) into ``state``'s structure."""
  mngr, step = _checkpoint_step(workdir, step)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_arrays(state, sharding))))
  return state.replace(**restored["state"])


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
  """
  s = LoopSettings.of(config)
  mesh = mesh or distributed.make_mesh()
  distributed.check_batch_size(s.batch_size, mesh)
  repl = distributed.replicated(mesh)
  state = jax.device_put(state, repl)

  dataset = pipeline.train_dataset(train_source, global_batch_size=s.batch_size, seed=s.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  data_iter = pipeline.train_iterator(dataset, worker_count=s.worker_count)

  mngr = checkpoint_manager(workdir, s.max_checkpoints)
  start = mngr.latest_step()
  if start is not None:
    restored = mngr.restore(start, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_arrays(state, repl)),
        data=grain.checkpoint.CheckpointRestore(data_iter)))
    state = state.replace(**restored["state"])
    data_iter = restored["data"]
  start = int(start or 0)
  writer = MetricsWriter(workdir, resume_step=start if start else None)

  def save(step: int) -> None:
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
  step_fn = jax.jit(functools.partial(train_step, loss_fn=loss_fn, seed=s.seed),
                    out_shardings=(repl, repl))

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

  for step in range(start + 1, s.num_steps + 1):
    batch = distributed.global_batch(next(data_iter), mesh)
    state, metrics = step_fn(state, batch)
    # Check the previous step's loss only now, so the host never waits for the
    # device in the steady state; a NaN still stops the run naming its step.
    if pending is not None:
      check(*pending)
    pending = (step, metrics)
    window.append(metrics)
    bar.update(1)
    if step % s.log_every == 0 or step == s.num_steps:
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
    if step % s.checkpoint_every == 0 or step == s.num_steps:
      save(step)
  if pending is not None:
    check(*pending)
  bar.close()
  writer.close()
  mngr.close()
  return state
