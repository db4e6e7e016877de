"""Test-wide setup: 4 forced CPU devices (multi-device logic is tested on one host).

Set before JAX is imported anywhere, so every test sees the same 4 devices and
compiled functions are shared across tests.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment above)


@pytest.fixture
def step_traces(monkeypatch):
  """A list that grows by one each time ``hpjax.core.training.train_step`` is traced (never
  per step); ``compiled_step``'s cache is emptied before and after, so no counting step is
  left behind for other tests."""
  from hpjax.core import training
  traces = []
  real = training.train_step

  def counting(*args, **kwargs):
    traces.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(training, "train_step", counting)
  training.compiled_step.cache_clear()
  yield traces
  training.compiled_step.cache_clear()
