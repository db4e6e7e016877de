"""The semi-supervised loop compiles its training step once per run, not once per epoch.

``fit`` used to build a new ``jax.jit`` per call with the seed baked in as a Python
constant, so every epoch (the paper's schedule has 100) compiled the model again.
"""
from __future__ import annotations

import dataclasses

from hpjax.core import training
from hpjax.image_score import semisupervised as semi
from hpjax.image_score.config import SEMI_PRESETS


def test_pretraining_and_every_epoch_share_one_compiled_step(tmp_path, monkeypatch):
  traces = []
  real = training.train_step

  def counting(*args, **kwargs):  # runs once per trace, never per step
    traces.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(training, "train_step", counting)
  training.compiled_step.cache_clear()
  cfg = dataclasses.replace(SEMI_PRESETS["smoke"], pretrain_cache=str(tmp_path / "cache"))
  try:
    semi.train(cfg, str(tmp_path / "run"), progress=False)
  finally:
    training.compiled_step.cache_clear()  # no counting step left behind for other tests
  phases = cfg.retrain_epochs + 1  # pre-training, then each epoch re-trains
  assert phases >= 3 and len(traces) == 1, (phases, len(traces))
