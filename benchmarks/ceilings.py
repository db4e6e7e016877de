"""The machine's ceilings, measured in the same run as the model benchmarks.

* float32 matmul GFLOP/s of a large square ``n × n`` product, through JAX (XLA) and
  NumPy (its BLAS), with all threads; the better one is "the matmul ceiling" that
  model throughputs are quoted against. The same JAX product on bfloat16 operands
  (float32 accumulation) is the ceiling of the bfloat16-GEMM model variant.
* memory copy bandwidth in GB/s: ``np.copyto`` between two large arrays, one thread
  and one per core (counting the bytes read: bytes read + bytes written would be
  twice these numbers), and a JAX elementwise ``x + 1`` with the input donated to the
  output (no fresh pages to fault in).

Each figure is the best of ``repeats`` timed calls after a warm-up call; a busy
machine lowers them, so they are quoted with the load average beside them.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


from benchmarks.timing import best_seconds  # noqa: E402  (re-exported)


def jax_matmul_gflops(n: int, repeats: int, dtype: Any = jnp.float32) -> float:
  """GFLOP/s of a jitted ``n × n`` matmul with ``dtype`` operands (float32 accumulation)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  return 2 * n ** 3 / best_seconds(lambda: mm(a, b).block_until_ready(), repeats) / 1e9


def numpy_matmul_gflops(n: int, repeats: int) -> float:
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), np.float32)
  b = rng.standard_normal((n, n), np.float32)
  out = np.empty_like(a)
  return 2 * n ** 3 / best_seconds(lambda: np.matmul(a, b, out=out), repeats) / 1e9


def numpy_copy_gbps(num_bytes: int, threads: int, repeats: int) -> float:
  """GB/s read by ``np.copyto`` split over ``threads`` Python threads (it drops the GIL)."""
  n = num_bytes // 4
  src = np.random.default_rng(0).random(n, dtype=np.float32)
  dst = np.empty_like(src)
  dst.fill(0)  # fault the pages in before timing
  bounds = np.linspace(0, n, threads + 1).astype(int)

  def copy():
    if threads == 1:
      np.copyto(dst, src)
      return
    workers = [threading.Thread(target=np.copyto, args=(dst[lo:hi], src[lo:hi]))
               for lo, hi in zip(bounds[:-1], bounds[1:])]
    for w in workers:
      w.start()
    for w in workers:
      w.join()

  return num_bytes / best_seconds(copy, repeats) / 1e9


def jax_copy_gbps(num_bytes: int, repeats: int) -> float:
  """GB/s read by a jitted ``x + 1`` whose output reuses the donated input buffer.

  (``x + 0`` would be simplified away and measure nothing.)
  """
  step = jax.jit(lambda x: x + 1.0, donate_argnums=0)
  state = {"x": jnp.zeros((num_bytes // 4,), jnp.float32)}

  def run():
    state["x"] = step(state["x"])
    state["x"].block_until_ready()

  return num_bytes / best_seconds(run, repeats) / 1e9


def run(quick: bool = False) -> dict[str, Any]:
  """Measures the ceilings; returns ``{"config", "matmul_gflops", "copy_gbps", ...}``."""
  n = 512 if quick else 4096
  copy_bytes = (64 if quick else 512) * 2 ** 20
  repeats = 2 if quick else 5
  threads = len(os.sched_getaffinity(0))
  matmul = {"jax": jax_matmul_gflops(n, repeats), "numpy": numpy_matmul_gflops(n, repeats)}
  bf16 = jax_matmul_gflops(n, repeats, jnp.bfloat16)
  copy = {"numpy_1_thread": numpy_copy_gbps(copy_bytes, 1, repeats),
          f"numpy_{threads}_threads": numpy_copy_gbps(copy_bytes, threads, repeats),
          "jax_donated": jax_copy_gbps(copy_bytes, repeats)}
  return {
      "config": {"matmul_n": n, "dtype": "float32", "copy_bytes": copy_bytes, "threads": threads,
                 "repeats": repeats, "timing": "best of repeats after one warm-up call",
                 "copy_convention": "bytes read per second (bytes moved = 2x)"},
      "matmul_gflops": {k: round(v, 1) for k, v in matmul.items()},
      "matmul_ceiling_gflops": round(max(matmul.values()), 1),
      # bfloat16 operands, float32 accumulation: the ceiling of the opt-in bf16 heads.
      "matmul_bf16_gflops": round(bf16, 1),
      "copy_gbps": {k: round(v, 2) for k, v in copy.items()},
      "copy_ceiling_gbps": round(max(copy.values()), 2),
  }
