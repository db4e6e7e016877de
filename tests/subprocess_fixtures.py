"""Commands run in subprocesses, as a user runs them: their environment, waiting for a file
they write, and comparing the parameters they end with."""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_CACHE: list[str] = []


def compilation_cache() -> str:
  """One persistent JAX compilation cache for every command this test process starts: the
  same programs compile once, not once per subprocess (removed when the process ends)."""
  if not _CACHE:
    _CACHE.append(tempfile.mkdtemp(prefix="hpjax-test-jax-cache-"))
    atexit.register(shutil.rmtree, _CACHE[0], True)
  return _CACHE[0]


def env(devices: int = 1, **extra) -> dict:
  """This environment without JAX/XLA/hpjax settings, on DEVICES CPU devices, plus EXTRA
  (with the tests' shared compilation cache)."""
  e = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "HPJAX_"))}
  e.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
           PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=compilation_cache(), **extra)
  return e


def wait_for(path: str | os.PathLike, proc: subprocess.Popen, timeout: float = 240) -> None:
  """Polls until PATH exists; fails if PROC ends first or TIMEOUT seconds pass."""
  deadline = time.time() + timeout
  while not os.path.exists(path):
    if proc.poll() is not None:
      raise AssertionError(f"the command ended (status {proc.returncode}) before {path} "
                           "was written")
    if time.time() > deadline:
      raise AssertionError(f"{path} not written within {timeout} s")
    time.sleep(0.01)


def kill_all(procs: list[subprocess.Popen]) -> None:
  """Kills those of PROCS still running (a failed test leaves no training behind)."""
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def assert_trees_close(a, b, atol: float) -> None:
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)
