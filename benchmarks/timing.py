"""The one timing rule of every suite: best wall time of N calls after one warm-up call.

Kept free of JAX so that grain worker processes importing a suite stay light.
"""
from __future__ import annotations

import time
from typing import Any, Callable


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Best wall time of ``repeats`` calls of ``fn`` after one warm-up call."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best
