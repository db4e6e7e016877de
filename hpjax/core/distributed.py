"""Device mesh and multi-host setup: one ``data`` axis over every device of every process.

The same code runs on one CPU, forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), a GPU, a TPU slice, or
several hosts: batches are sharded over the ``data`` axis, parameters replicated,
and XLA inserts the gradient all-reduce (``jax.jit`` with shardings, not ``pmap``).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


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
