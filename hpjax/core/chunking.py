"""Rows per chunk of a streamed loop, by backend and device memory: the one chunking rule.

Two loops in hpjax walk over rows a chunk at a time: the HPNet heads
(:func:`hpjax.hpnet.heads.streamed_heads`, a scan over chunks of feature-map
positions, so the ``[rows, K·C]`` masks never exist for the whole batch) and the image
score's blocks (:mod:`hpjax.image_score.scoring`, a map over blocks of images, each
holding a ``[rows, units]`` comparison). Each caller states what one row of its chunk
costs in bytes (what the loop body keeps live per row), and :func:`rows_per_chunk`
returns the rows per chunk:

* **CPU** (``jax.default_backend() == "cpu"``): what was measured fastest there
  (benchmarks/NOTES.md), a chunk whose intermediates stay in cache between the op that
  writes them and the ops that read them. The caller gives it, as a row count or as a
  byte budget: the heads 256 positions (``heads.STREAM_ROWS``: ``[256, K·C]``
  pre-activations are 5 MB at K·C = 40·128; scaling the rows with K·C instead was
  measured slower for pruned heads, so the CPU value is a row count), the image score
  ``1 << 19`` bytes of comparison per block (``scoring._BLOCK_BYTES``, L2-sized).
* **GPU / TPU** (any other backend): there is no cache to fit, and every loop
  iteration costs kernel launches (GPU) or a loop step with its own small kernels
  (TPU), so a chunk is as large as memory allows: :data:`ACCELERATOR_FRACTION` = 1/16
  of the device's memory per chunk (:func:`device_memory`: ``bytes_limit`` of the
  first local device's ``memory_stats()``, else :data:`DEFAULT_DEVICE_MEMORY`).
  1/16 leaves the rest of the step (the extractor's saved activations, parameters and
  optimizer state, XLA's own temporaries, a second iteration's buffers in flight)
  fifteen times the chunk's budget, so even a row cost underestimated several-fold
  still fits, while a chunk stays gigabytes large: on an 80 GB GPU a few chunks per
  step at 128×128, K·C = 40·128, batch 64 instead of thousands. When the whole loop
  fits in one chunk it runs as one iteration: the loop is materialised.

The device's whole limit, not its free memory at trace time, is the base: the chunk
size is compiled into the program, and what happens to be allocated when a function
is first traced (a previous step's buffers, a cached data set) would make the program
depend on history. An explicit size wins over the rule (``head_stream_rows`` in the
HPNet config, ``stream_rows`` of :class:`hpjax.hpnet.model.AttentionHeads`).
"""
from __future__ import annotations

import jax

# Fraction of one device's memory a chunk may use on GPU/TPU (see the module docstring).
ACCELERATOR_FRACTION = 16

# Device memory assumed where the backend reports none (``memory_stats()`` is None or
# lacks ``bytes_limit``): 16 GiB, the smallest accelerator memory this project is used
# with (a 16 GB V100 or T4, a TPU v5e chip).
DEFAULT_DEVICE_MEMORY = 16 << 30


def backend() -> str:
  """The backend the chunk sizes are chosen for: ``jax.default_backend()``."""
  return jax.default_backend()


def memory_stats() -> dict[str, int] | None:
  """``memory_stats()`` of the first local device (None where the backend has none)."""
  return jax.local_devices()[0].memory_stats()


def device_memory() -> int:
  """Bytes XLA may allocate on one device: ``bytes_limit`` of :func:`memory_stats`,
  else :data:`DEFAULT_DEVICE_MEMORY`."""
  limit = (memory_stats() or {}).get("bytes_limit")
  return int(limit) if limit else DEFAULT_DEVICE_MEMORY


def rows_per_chunk(row_bytes: int, *, cpu_rows: int | None = None,
                   cpu_bytes: int | None = None) -> int:
  """Rows per chunk of a loop whose chunk keeps ``row_bytes`` bytes live per row.

  Args:
    row_bytes: bytes one row of a chunk costs (what the loop body keeps live per row).
    cpu_rows: on CPU, this many rows (a measured row count), or
    cpu_bytes: on CPU, as many rows as fit in this many bytes (a cache-sized budget).
      Exactly one of the two.

  Returns:
    On CPU ``cpu_rows`` or ``cpu_bytes // row_bytes``; on GPU/TPU
    ``device_memory() // ACCELERATOR_FRACTION // row_bytes``; at least 1.
  """
  if (cpu_rows is None) == (cpu_bytes is None):
    raise ValueError("rows_per_chunk: expected exactly one of cpu_rows and cpu_bytes, got "
                     f"cpu_rows={cpu_rows}, cpu_bytes={cpu_bytes}")
  if row_bytes < 1:
    raise ValueError(f"rows_per_chunk: expected row_bytes >= 1, got {row_bytes}")
  if backend() == "cpu":
    return max(1, cpu_rows if cpu_rows is not None else cpu_bytes // row_bytes)
  return max(1, device_memory() // ACCELERATOR_FRACTION // row_bytes)
