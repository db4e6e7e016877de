"""Fake semi-supervised run directories with known numbers, for the tables, the assembly and
the figures of paper B (docs/papers.md §B5).

They are written the way :func:`hpjax.image_score.semisupervised.train` writes a run:
``config.json`` (the SemiConfig), ``pretrain/analysis.npz`` and
``epoch_XXX/analysis.npz`` (the analysis of each model), ``records/epoch_XXX.json``
(made by ``semisupervised.epoch_record`` from those analyses, so the accuracies are the
ones the loop would record), ``metrics.jsonl`` (rebuilt from the records by
``semisupervised._write_metrics``) and, when given, ``scores.npz``.
"""
from __future__ import annotations

import dataclasses
import os
import types
from typing import Any, Sequence

import numpy as np

from hpjax.core import io
from hpjax.image_score import semisupervised as semi
from hpjax.image_score.config import SEMI_PRESETS

SMOKE = SEMI_PRESETS["smoke"]
NUM_CLASSES = 3
N_PER_CLASS = 20  # test images per class: a class accuracy is a multiple of 5 %


def analysis(test_pred: Sequence[int], test_labels: Sequence[int], *,
             test_scores: Any = None, test_conf: Any = None) -> dict[str, np.ndarray]:
  """The arrays of ``semisupervised.analyse`` for a model with the given test predictions.

  ``test_scores [3, N]`` (recall, jaccard, dice) and ``test_conf [N]`` default to NaN
  and 1. The additional set is four images, all predicted as class 0.
  """
  pred = np.asarray(test_pred, np.int32)
  n = pred.size
  scores = np.full((3, n), np.nan, np.float32) if test_scores is None else test_scores
  conf = np.ones((n,), np.float32) if test_conf is None else test_conf
  return {"add_pred": np.zeros((4,), np.int32), "add_conf": np.ones((4,), np.float32),
          "add_scores": np.full((3, 4), -1.0, np.float32), "test_pred": pred,
          "test_conf": np.asarray(conf, np.float32),
          "test_scores": np.asarray(scores, np.float32),
          "test_labels": np.asarray(test_labels, np.int32)}


def correct_analysis(correct: Sequence[int]) -> dict[str, np.ndarray]:
  """A model that labels ``correct[c]`` of class c's N_PER_CLASS test images right (the
  first ones) and the rest as class c + 1: class-c accuracy ``correct[c] / 20``."""
  labels = np.repeat(np.arange(len(correct)), N_PER_CLASS)
  pred = labels.copy()
  for c, k in enumerate(correct):
    pred[np.flatnonzero(labels == c)[k:]] = (c + 1) % len(correct)
  return analysis(pred, labels)


def write_run(root: Any, name: str, *, method: str, seed: int,
              analyses: Sequence[dict[str, np.ndarray]], mode: str = "all", target: int = 0,
              similarity: str = "recall", scores: dict[str, np.ndarray] | None = None) -> str:
  """A run directory whose model after epoch e (0: pre-trained) has ``analyses[e]``.

  ``mode`` is written into config.json as given (also one that config.py does not
  know yet, such as ``"dataset"``).
  """
  w = os.path.join(str(root), name)
  os.makedirs(w)
  cfg = dataclasses.asdict(dataclasses.replace(
      SMOKE, method=method, seed=seed, target_class=target, similarity=similarity,
      retrain_epochs=len(analyses) - 1))
  cfg["mode"] = mode
  io.write_json(os.path.join(w, "config.json"), cfg)
  first = analyses[0]
  data = types.SimpleNamespace(num_classes=NUM_CLASSES, train_labels=np.zeros((4,), np.int64),
                               additional=np.arange(4), test_labels=first["test_labels"],
                               num_unlabelled=0)
  for e, a in enumerate(analyses):
    d = os.path.join(w, "pretrain") if e == 0 else semi.phase_dir(w, e)
    io.write_npz(os.path.join(d, "analysis.npz"), **a)
    selected = None
    if e:  # the epoch trained with one pseudo-labelled image: the first additional one
      selected = {"index": np.array([0]), "pseudo": analyses[e - 1]["add_pred"][:1]}
    io.write_json(semi.record_path(w, e),
                  semi.epoch_record(e, a, data, selected, {"select": 0.0, "train": 1.0}))
  semi._write_metrics(w)
  if scores is not None:
    io.write_npz(os.path.join(w, "scores.npz"), **scores)
  return w


def accuracy_run(root: Any, name: str, *, method: str, seed: int,
                 correct: Sequence[Sequence[int]], **kw: Any) -> str:
  """:func:`write_run` with ``correct[e][c]`` right class-c test images after epoch e."""
  return write_run(root, name, method=method, seed=seed,
                   analyses=[correct_analysis(c) for c in correct], **kw)
