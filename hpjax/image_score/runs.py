"""Finished (or partial) semi-supervised runs, read back from their workdirs
(paper B, docs/papers.md §B5).

A :class:`Run` is one workdir of :func:`hpjax.image_score.semisupervised.train`:
its config and its "semi" records. The tables, the assembly and the figures
(:mod:`~hpjax.image_score.tables`, :mod:`~hpjax.image_score.assembly`,
:mod:`~hpjax.image_score.plots`) all start from :func:`load_runs`, and :func:`pick`
says which runs feed a row: ``mode="all"`` runs give every class's row,
``mode="per_class"`` runs boosted for class c give row c (the paper's
class-by-class setting); the baseline never adds pseudo labels, so its runs
serve both.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from hpjax.core.errors import ConfigError
from hpjax.core.metrics_writer import read_metrics
from hpjax.image_score.config import SemiConfig, method_label
from hpjax.image_score.semisupervised import read_run_config

# The methods compared with the baseline, in the tables' column order;
# image_score[jaccard|dice] runs get their own table.
TABLE_METHODS = ("image_score", "softmax", "random")


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


def pick(runs: Sequence[Run], method: str, mode: str, cls: int) -> dict[int, Run]:
  """The runs of ``method`` that feed row ``cls`` of a ``mode`` table, by seed."""
  out = {}
  for r in runs:
    if r.method != method or r.last_epoch < 1:
      continue
    if method == "baseline" or (r.config.mode == mode and (
        mode == "all" or r.config.target_class == cls)):
      # A baseline adds no pseudo labels, so its mode does not matter; prefer "all".
      if r.seed not in out or r.config.mode == "all":
        out[r.seed] = r
  return out
