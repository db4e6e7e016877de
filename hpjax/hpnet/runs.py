"""Trained runs on disk: loading, the shared statistics cache, where analyses write.

Every paper-A analysis (:mod:`hpjax.hpnet.analyses`) takes a :class:`TrainedRun`
restored from its workdir (and, optionally, the baseline's) and writes its JSON and
figures under :func:`output_dir`. The statistics pass they share
(:func:`hpjax.hpnet.statistics.collect_statistics` on the training split) is cached
there by :func:`run_statistics`, keyed by the weights' fingerprint.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from hpjax.core import io, jit
from hpjax.core.errors import ConfigError
from hpjax.hpnet import experiment, statistics
from hpjax.hpnet import model as model_lib


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedRun:
  """A trained attribute model restored from its workdir."""
  workdir: str
  config: Any
  model: nn.Module
  variables: dict[str, Any]
  label_names: tuple[str, ...]
  step: int

  @property
  def apply_fn(self) -> jit.ApplyFn:
    return self.model.apply

  @property
  def is_hpnet(self) -> bool:
    return model_lib.is_hpnet(self.variables)

  @functools.cached_property
  def fingerprint(self) -> str:
    """Short hash of the variables: cached analyses are keyed by it, so a run retrained
    into the same workdir (same step, new weights) is never read from a stale cache."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(self.variables):
      h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:12]

  def split(self, name: str) -> Any:
    return experiment.open_split(self.config, name)


def load_run(workdir: str) -> TrainedRun:
  """Restores the latest checkpoint of ``workdir`` (:func:`hpjax.hpnet.experiment.load`).

  Raises:
    ConfigError: ``workdir`` has no checkpoints.
  """
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"--workdir {workdir}: no checkpoints/ there; train first with "
                      "python -m train.attributes")
  config, state, names = experiment.load(workdir)
  model = experiment.build_model(config, len(names))
  return TrainedRun(workdir, config, model, jax.device_get(state.variables), tuple(names),
                    int(state.step))


def default_baseline(workdir: str) -> str | None:
  """``WORKDIR/baseline`` when it holds a trained run, else None."""
  path = os.path.join(workdir, "baseline")
  return path if os.path.isdir(os.path.join(path, "checkpoints")) else None


def load_runs(workdir: str, baseline_workdir: str | None = None
              ) -> tuple[TrainedRun, TrainedRun | None]:
  """The run of ``workdir`` and its baseline's (``baseline_workdir``, else
  :func:`default_baseline`; None when there is neither)."""
  baseline_workdir = baseline_workdir or default_baseline(workdir)
  return load_run(workdir), load_run(baseline_workdir) if baseline_workdir else None


def require_hpnet(run: TrainedRun, what: str) -> None:
  """Raises ConfigError unless ``run`` is HPNet; ``what`` completes "…; <what>"."""
  if not run.is_hpnet:
    raise ConfigError(f"--workdir {run.workdir}: holds a {run.config.model} model; {what}")


def eval_majority_rate(workdir: str | None) -> float | None:
  """``mean_majority_rate`` of ``WORKDIR/eval/attributes.json`` (written by
  :func:`hpjax.hpnet.experiment.evaluate`): the accuracy of always answering each
  attribute's majority class, averaged over attributes, on that evaluation's images.
  None when there is no workdir, no such file, or the file predates the key. Fig. 7 and
  8 draw it as a dashed line."""
  path = os.path.join(workdir, "eval", "attributes.json") if workdir else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    rate = json.load(f).get("mean_majority_rate")
  return None if rate is None else float(rate)


def output_dir(workdir: str) -> str:
  return os.path.join(workdir, "analysis")


def run_statistics(run: TrainedRun, *, limit: int | None = 1024, batch_size: int = 32,
                   num_bins: int = 32) -> dict[str, np.ndarray]:
  """:func:`hpjax.hpnet.statistics.collect_statistics` on the training split, cached in
  ``WORKDIR/analysis/stats-<fingerprint>-<limit>-<bins>.npz`` (analyses share one pass)."""
  path = os.path.join(output_dir(run.workdir),
                      f"stats-{run.fingerprint}-{limit if limit else 'all'}-{num_bins}.npz")
  if os.path.exists(path):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  stats = statistics.collect_statistics(run.apply_fn, run.variables, run.split("train"),
                                        batch_size=batch_size, limit=limit, num_bins=num_bins)
  io.write_npz(path, **stats)
  return stats


def run_info(run: TrainedRun) -> dict[str, Any]:
  """What an analysis' JSON records of the run it analysed (``fingerprint``: the weights)."""
  return {"workdir": os.path.abspath(run.workdir), "model": run.config.model, "step": run.step,
          "fingerprint": run.fingerprint,
          "preset": run.config.name, "features": list(run.config.features),
          "image_size": run.config.image_size, "dataset": run.config.dataset}
