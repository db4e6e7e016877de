"""The README's main job: train HPNet and its baseline on generated faces, evaluate, report."""
from __future__ import annotations

import dataclasses
import os

from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS
from hpjax.core import configs


def run(workdir: str, *, preset: str = "demo", overrides: list[str] | None = None,
        progress: bool = True, with_report: bool = True) -> dict[str, str]:
  """Trains ``preset`` as HPNet in ``workdir`` and as the baseline in ``workdir/baseline``.

  Both are evaluated on the test split, then the paper-A analyses (pruning curves,
  mask-transform robustness, attention maps, localisation, predictability) run at
  report sizes and ``workdir/report/index.html`` is written. Returns the output paths.
  """
  from hpjax.hpnet import report  # late: matplotlib and the analyses only when the job gets here
  config = configs.override(configs.preset(ATTRIBUTE_PRESETS, preset), overrides or [])
  baseline_dir = os.path.join(workdir, "baseline")
  outputs = {}
  for model, wd in (("hpnet", workdir), ("baseline", baseline_dir)):
    print(f"== training {model} ({config.name} preset) in {wd}", flush=True)
    experiment.train(dataclasses.replace(config, model=model), wd, progress=progress)
    result = experiment.evaluate(wd)
    print(f"== {model}: mean test accuracy {100 * result['mean_accuracy']:.2f}%", flush=True)
    outputs[f"{model}_eval"] = os.path.join(wd, "eval", "attributes.json")
  if not with_report:
    return outputs
  print("== analyses and report", flush=True)
  outputs["report"] = report.build(workdir, baseline_workdir=baseline_dir)
  outputs["analyses"] = os.path.join(workdir, "analysis")
  return outputs
