"""Experiment sets of paper B: every run behind Tables 1–3, in one resumable command.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334), Tables 1–3.
``python -m train.semisupervised --suite tables --workdir ROOT`` runs each run of the
set in turn in one process (compilations are shared), each in its own workdir
``ROOT/<mode>/<method>_s<seed>`` or ``ROOT/per_class/c<k>_<method>_s<seed>``, with one
pre-training per seed shared through ``ROOT/pretrain_cache``. A finished run is
skipped and an interrupted one resumes, so re-running the command continues the set;
``python -m evaluate.semisupervised --workdirs ROOT/*/*`` then writes the tables.

The ``tables`` set (docs/results.md "Paper B"):

* ``all``: baseline, image score and softmax with all classes at once, seeds
  ``0 … num_seeds − 1`` (5: the exact paired sign-flip test can reach p = 1/32);
* ``dataset``: image score against one class-agnostic reference and softmax, the top
  α of the whole additional set selected once (the detection protocol, §B5), same seeds;
* ``per_class``: for every class k, image score and softmax adding only class k's
  pseudo labels (the paper's class-by-class runs), seeds ``0 … num_class_seeds − 1``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from hpjax.core.errors import ConfigError
from hpjax.image_score.config import SemiConfig


@dataclasses.dataclass(frozen=True)
class SuiteRun:
  """One run of a set: its workdir below the set's root and its config."""

  name: str
  config: SemiConfig


def tables_runs(base: SemiConfig, num_classes: int, *, num_seeds: int = 5,
                num_class_seeds: int = 3) -> list[SuiteRun]:
  """The ``tables`` set, cheapest-first within each seed so that a set stopped early
  has whole comparisons: all-class and dataset-level runs, then per-class runs."""
  if num_class_seeds > num_seeds:
    raise ConfigError(f"num_class_seeds ({num_class_seeds}) must be <= num_seeds "
                      f"({num_seeds}): the per-class runs compare with the baseline's seeds")
  runs = []
  for seed in range(num_seeds):
    for mode, method in (("all", "baseline"), ("all", "image_score"), ("all", "softmax"),
                         ("dataset", "image_score"), ("dataset", "softmax")):
      runs.append(SuiteRun(f"{mode}/{method}_s{seed}", dataclasses.replace(
          base, method=method, mode=mode, seed=seed)))
  for seed in range(num_class_seeds):
    for k in range(num_classes):
      for method in ("image_score", "softmax"):
        runs.append(SuiteRun(f"per_class/c{k}_{method}_s{seed}", dataclasses.replace(
            base, method=method, mode="per_class", target_class=k, seed=seed)))
  return runs


SUITES = {"tables": tables_runs}


def suite_runs(name: str, base: SemiConfig, num_classes: int) -> list[SuiteRun]:
  """The runs of set ``name`` built on ``base`` (method, mode, class and seed are the set's)."""
  if name not in SUITES:
    raise ConfigError(f"--suite must be one of {', '.join(SUITES)}, got {name!r}")
  return SUITES[name](base, num_classes)


def run_suite(name: str, base: SemiConfig, root: str, *, progress: bool = False,
              log=print) -> list[dict[str, Any]]:
  """Runs (or resumes) every run of set ``name`` under ``root``; returns their last records.

  Each run's pre-training goes to ``root/pretrain_cache`` unless ``base`` names a cache.
  """
  from hpjax.image_score import semisupervised
  if not base.pretrain_cache:
    base = dataclasses.replace(base, pretrain_cache=os.path.join(root, "pretrain_cache"))
  num_classes = len(semisupervised.open_split(base, "test").label_names)
  runs = suite_runs(name, base, num_classes)
  records, t_start = [], time.perf_counter()
  for i, run in enumerate(runs):
    t0 = time.perf_counter()
    rec = semisupervised.train(run.config, os.path.join(root, run.name), progress=progress)
    records.append(rec)
    log(f"[{i + 1}/{len(runs)}] {run.name}: test accuracy {100 * rec['test_accuracy']:.2f}% "
        f"({time.perf_counter() - t0:.0f} s; {time.perf_counter() - t_start:.0f} s in all)")
  return records
