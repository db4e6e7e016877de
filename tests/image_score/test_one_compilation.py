"""The semi-supervised loop compiles its training step once per run, not once per epoch.

``fit`` used to build a new ``jax.jit`` per call with the seed baked in as a Python
constant, so every epoch (the paper's schedule has 100) compiled the model again.
"""
from __future__ import annotations

import dataclasses

from hpjax.image_score import semisupervised as semi
from hpjax.image_score.config import SEMI_PRESETS


def test_pretraining_and_every_epoch_share_one_compiled_step(tmp_path, step_traces):
  cfg = dataclasses.replace(SEMI_PRESETS["smoke"], pretrain_cache=str(tmp_path / "cache"))
  semi.train(cfg, str(tmp_path / "run"), progress=False)
  phases = cfg.retrain_epochs + 1  # pre-training, then each epoch re-trains
  assert phases >= 3 and len(step_traces) == 1, (phases, len(step_traces))
