"""Finished (or partial) semi-supervised runs, read back from their workdirs
(paper B, docs/papers.md §B5).

A :class:`Run` is one workdir of :func:`hpjax.image_score.semisupervised.train`:
its config and its "semi" records. The tables, the assembly and the figures
(:mod:`~hpjax.image_score.tables`, :mod:`~hpjax.image_score.assembly`,
:mod:`~hpjax.image_score.plots`) all start from :func:`load_runs`, and :func:`pick`
says which runs feed a row: ``mode="all"`` runs give every class's row,
``mode="per_class"`` runs boosted for class c give row c (the paper's
class-by-class setting), ``mode="dataset"`` runs (one class-agnostic reference,
the top 30 % of the additional set selected once; the detection setting of
Sec. 3.2) give every class's row like ``"all"``; the baseline never adds pseudo
labels, so its runs serve every mode.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from hpjax.core.configs import from_dict
from hpjax.core.errors import ConfigError
from hpjax.core.metrics_writer import read_metrics
from hpjax.image_score.config import SemiConfig, method_label
from hpjax.image_score.semisupervised import read_run_config

# The methods compared with the baseline, in the tables' column order;
# image_score[jaccard|dice] runs get their own table.
TABLE_METHODS = ("image_score", "softmax", "random")
# Modes whose runs select for all classes at once, so one run feeds every row of a table
# (and its overall accuracy); "per_class" runs feed only the row of their target class.
WHOLE_MODES = ("all", "dataset")


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished (or partial) run directory.

  Attributes:
    workdir: the directory.
    config: its :class:`~hpjax.image_score.config.SemiConfig`.
    records: the "semi" records by epoch (0 = pre-trained model).
  """

  workdir: str
  config: SemiConfig
  records: tuple[dict[str, Any], ...]

  @property
  def method(self) -> str:
    return method_label(self.config)

  @property
  def seed(self) -> int:
    return self.config.seed

  @property
  def last_epoch(self) -> int:
    return int(self.records[-1]["epoch"])

  def class_accuracy(self, c: int | None, epochs: Sequence[int] | None = None) -> np.ndarray:
    """Test accuracy of class ``c`` (None: overall) at ``epochs`` (default: 1..last)."""
    by_epoch = {r["epoch"]: r for r in self.records}
    epochs = range(1, self.last_epoch + 1) if epochs is None else epochs
    key = "test_accuracy" if c is None else "test_accuracy_per_class"
    return np.asarray([by_epoch[e][key] if c is None else by_epoch[e][key][c] for e in epochs],
                      np.float64)


def load_runs(workdirs: Sequence[str]) -> list[Run]:
  """Reads config and "semi" records of each workdir (with at least epoch 0 recorded)."""
  runs = []
  for w in workdirs:
    config = read_run_config(w)
    records = tuple(sorted((r for r in read_metrics(w) if r.get("kind") == "semi"),
                           key=lambda r: r["epoch"]))
    if not records:
      raise ConfigError(f"{w}: no 'semi' records in metrics.jsonl; has the run started?")
    runs.append(Run(w, config, records))
  keys = {(r.config.dataset, r.config.model, r.config.num_train) for r in runs}
  if len(keys) > 1:
    raise ConfigError(f"expected runs of one data set and model, got a mix of (dataset, model, "
                      f"num_train) {sorted(map(str, keys))}; compare one setting at a time")
  return runs


# What a summary keeps of each record: every number the tables read, no per-image data.
SUMMARY_FIELDS = ("epoch", "test_accuracy", "test_accuracy_per_class", "additional_accuracy",
                  "num_selected", "num_selected_per_class", "precision", "precision_per_class",
                  "seconds")


def runs_summary(runs: Sequence[Run], root: str | None = None) -> dict[str, Any]:
  """The runs as one small JSON-able dict: each run's config and its records' numbers
  (:data:`SUMMARY_FIELDS`), workdirs relative to ``root``. :func:`runs_from_summary`
  reads it back, so the tables can be recomputed without the run directories."""
  return {"kind": "semisupervised_runs", "runs": [
      {"workdir": os.path.relpath(r.workdir, root) if root else r.workdir,
       "config": dataclasses.asdict(r.config),
       "records": [{k: rec[k] for k in SUMMARY_FIELDS if k in rec}
                   for rec in r.records]}
      for r in runs]}


def runs_from_summary(path: str) -> list[Run]:
  """The runs of a :func:`runs_summary` file (their records hold the tables' numbers only:
  no assembly, figures or AUROC, which need the run directories).

  Raises:
    ConfigError: the file is not such a summary (one line naming it).
  """
  try:
    with open(path) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"--summary {path}: cannot read it as JSON ({e})") from None
  if not isinstance(summary, dict) or summary.get("kind") != "semisupervised_runs":
    raise ConfigError(f"--summary {path}: expected a runs summary written by "
                      "evaluate.semisupervised (runs_summary.json)")
  try:
    return [Run(r["workdir"], from_dict(SemiConfig, r["config"]), tuple(r["records"]))
            for r in summary["runs"]]
  except (KeyError, TypeError, ValueError, ConfigError) as e:
    raise ConfigError(f"--summary {path}: a run entry is not valid ({e})") from None


def pick(runs: Sequence[Run], method: str, mode: str, cls: int | None) -> dict[int, Run]:
  """The runs of ``method`` that feed row ``cls`` of a ``mode`` table, by seed.

  Args:
    runs: from :func:`load_runs`.
    method: a method label (``"baseline"``, ``"image_score"``, ...).
    mode: ``"all"``, ``"dataset"`` (runs of that mode, for every row) or
      ``"per_class"`` (the runs boosted for class ``cls``).
    cls: the row's class; None (the overall row) only in ``"all"``/``"dataset"``.

  Returns:
    ``{seed: run}``; baseline runs of any mode, those of mode ``"all"`` preferred.
  """
  out = {}
  for r in runs:
    if r.method != method or r.last_epoch < 1:
      continue
    if method == "baseline" or (r.config.mode == mode and (
        mode in WHOLE_MODES or r.config.target_class == cls)):
      # A baseline adds no pseudo labels, so its mode does not matter; prefer "all".
      if r.seed not in out or r.config.mode == "all":
        out[r.seed] = r
  return out
