"""Device mesh and multi-host setup: one ``data`` axis over every device of every process.

The same code runs on one CPU, forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), a GPU, a TPU slice, or
several hosts: batches are sharded over the ``data`` axis, parameters replicated,
and XLA inserts the gradient all-reduce (``jax.jit`` with shardings, not ``pmap``).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hpjax.data import pipeline

# The one mesh axis: the batch is split over it, everything else is replicated.
DATA_AXIS = "data"

_initialized = False


def initialize(enable: bool | None = None) -> None:
  """Calls ``jax.distributed.initialize()`` when asked by flag or environment.

  ``enable=None`` reads ``HPJAX_DISTRIBUTED=1``. Coordinator address, process count
  and id come from the usual ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID`` variables or the cluster's auto-detection (SLURM, TPU pods).
  On CPU-only hosts the gloo collectives are selected, so several processes on
  localhost form one mesh.
  """
  global _initialized
  if enable is None:
    enable = os.environ.get("HPJAX_DISTRIBUTED", "") not in ("", "0")
  if not enable or _initialized:
    return
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  _initialized = True


def make_mesh() -> Mesh:
  """A 1-D mesh named ``data`` over all devices of all processes."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over devices (fixed shapes, no ragged shards)."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"batch_size={global_batch_size} must be divisible by the {n} devices "
                     f"of the mesh (and by the {jax.process_count()} processes)")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice of the batch into global arrays sharded over ``data``."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def pass_batch_size(batch_size: int, mesh: Mesh) -> int:
  """``batch_size`` rounded up to a multiple of the mesh's devices.

  An evaluation pass pads its last batch anyway and weighs every row by ``valid``, so
  the extra rows are padding that changes no result; the batch then splits evenly
  over the devices (and the processes) whatever batch size was asked for.
  """
  n = mesh.devices.size
  return -(-batch_size // n) * n


def eval_batches(source: Any, *, batch_size: int, mesh: Mesh, limit: int | None = None,
                 fields: Sequence[str] | Callable[[dict[str, np.ndarray]], dict[str, Any]]
                 | None = None) -> Iterator[dict[str, jax.Array]]:
  """One ordered pass over ``source`` as global batches sharded over the ``data`` axis.

  Each process loads only its slice of each padded batch
  (:func:`hpjax.data.pipeline.eval_batches`), assembled into global arrays
  (:func:`global_batch`); ``batch_size`` is rounded up by :func:`pass_batch_size`.
  ``fields`` chooses what goes on the devices: None every field, a sequence those
  keys, a function the fields it makes from the host slice (e.g. masks drawn from
  boxes).
  """
  keys = None if fields is None or callable(fields) else tuple(fields)
  for batch in pipeline.eval_batches(source, global_batch_size=pass_batch_size(batch_size, mesh),
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(), limit=limit):
    if keys is not None:
      batch = {k: batch[k] for k in keys}
    elif fields is not None:
      batch = fields(batch)
    yield global_batch(batch, mesh)


def data_axis(batch: int) -> str | None:
  """The mesh axis a traced function should split a ``batch``-row array over, or None.

  Under a mesh context (``jax.set_mesh``, as :func:`hpjax.core.training.fit` and the
  evaluation passes use) with a ``data`` axis of size > 1 that divides ``batch`` and
  is not already split by an enclosing ``shard_map``: a loop over the rows then runs
  per device under ``shard_map`` (the HPNet heads, the image score's blocks) instead
  of scanning a sharded axis, which XLA would all-gather. None otherwise (one device,
  or a batch that does not split: the function runs as one program).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names or DATA_AXIS in mesh.manual_axes:
    return None
  n = mesh.shape[DATA_AXIS]
  return DATA_AXIS if n > 1 and batch % n == 0 else None


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier NAME (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
