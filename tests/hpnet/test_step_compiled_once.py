"""Two trainings of one config in one process share one compiled train step.

``experiment.train`` used to build a new optimizer and a new loss closure per call, so a
second run in the same process (a resume, another seed, the tests' corpora) missed
``compiled_step``'s cache and compiled the model again (10–15 s each here).
"""
from __future__ import annotations

import dataclasses

from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS


def test_second_run_of_a_config_reuses_the_compiled_step(tmp_path, step_traces):
  cfg = ATTRIBUTE_PRESETS["smoke"]
  experiment.train(cfg, str(tmp_path / "a"), progress=False)
  experiment.train(dataclasses.replace(cfg, seed=1), str(tmp_path / "b"), progress=False)
  assert len(step_traces) == 1, len(step_traces)
  # Another loss (l1_lambda) is another program.
  experiment.train(dataclasses.replace(cfg, l1_lambda=cfg.l1_lambda * 2 + 1e-3),
                   str(tmp_path / "c"), progress=False)
  assert len(step_traces) == 2, len(step_traces)
  assert experiment.make_loss_fn(cfg, (16, 16, 3), 4) is experiment.make_loss_fn(
      dataclasses.replace(cfg, log_every=3), (16, 16, 3), 4)
