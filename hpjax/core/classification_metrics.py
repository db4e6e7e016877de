"""Per-attribute binary classification metrics that expose a dead head.

Mean accuracy hides a head that always answers the same: on an attribute with
prevalence 0.1, "always absent" scores 90 %. Beside accuracy this module gives, per
attribute (column), the prevalence, the majority-rate accuracy (what that constant
answer scores), the balanced accuracy (mean of the true-positive and true-negative
rates: 0.5 for any constant answer), the AUROC of the scores (0.5 for a constant or
random score; ties count one half), and a ``dead`` flag for a head whose predictions
are constant or whose balanced accuracy is below :data:`DEAD_BALANCED_ACCURACY`.

All functions take NumPy arrays ``[N, K]`` on the host: evaluation sets are small
next to the model, and exact ranks (for AUROC) are simplest there.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats as scipy_stats

# A head whose balanced accuracy is below this is reported dead (0.5 is chance).
DEAD_BALANCED_ACCURACY = 0.55


def _columns(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels)
  if s.ndim == 1:
    s, y = s[:, None], y.reshape(-1, 1)
  if s.shape != y.shape or s.ndim != 2:
    raise ValueError(f"scores {s.shape} and labels {y.shape} must both be [N, K]")
  if s.shape[0] == 0:
    raise ValueError("no examples to score")
  return s, y > 0


def auroc(scores: Any, labels: Any) -> np.ndarray:
  """Area under the ROC curve per column (``[K]``); NaN where a column has one class.

  The Mann–Whitney form: the probability that a random positive scores above a
  random negative, ties counting one half (mid-ranks).
  """
  s, y = _columns(scores, labels)
  ranks = scipy_stats.rankdata(s, axis=0)  # average ranks for ties
  pos = y.sum(axis=0)
  neg = y.shape[0] - pos
  rank_sum = np.where(y, ranks, 0.0).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where((pos > 0) & (neg > 0),
                    (rank_sum - pos * (pos + 1) / 2) / (pos * neg), np.nan)


def binary_metrics(scores: Any, labels: Any, *, threshold: float = 0.0) -> dict[str, np.ndarray]:
  """Per-column metrics of scores (logits) against {0, 1} labels.

  Args:
    scores: ``[N, K]`` (or ``[N]``) real scores; predicted positive when ``> threshold``.
    labels: ``[N, K]`` in {0, 1} (or -1/1: positive is ``> 0``).
    threshold: decision threshold on the scores (0 for logits).

  Returns:
    ``{"accuracy", "prevalence", "majority_rate", "balanced_accuracy", "auroc",
    "constant", "dead"}``, each ``[K]``. ``balanced_accuracy`` is the mean of the
    true-positive and true-negative rates over the classes present (a column with
    one class gets that class's rate); ``constant`` marks columns whose predictions
    are all the same; ``dead`` = constant or balanced accuracy <
    :data:`DEAD_BALANCED_ACCURACY`.
  """
  s, y = _columns(scores, labels)
  pred = s > threshold
  n = y.shape[0]
  pos = y.sum(axis=0)
  neg = n - pos
  tp = (pred & y).sum(axis=0)
  tn = (~pred & ~y).sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    tpr = np.where(pos > 0, tp / np.maximum(pos, 1), np.nan)
    tnr = np.where(neg > 0, tn / np.maximum(neg, 1), np.nan)
  balanced = np.nanmean(np.stack([tpr, tnr]), axis=0)
  prevalence = pos / n
  constant = np.all(pred == pred[:1], axis=0)
  return {
      "accuracy": (tp + tn) / n,
      "prevalence": prevalence,
      "majority_rate": np.maximum(prevalence, 1.0 - prevalence),
      "balanced_accuracy": balanced,
      "auroc": auroc(s, y),
      "constant": constant,
      "dead": constant | (balanced < DEAD_BALANCED_ACCURACY),
  }


def per_attribute(metrics: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, dict]:
  """``{name: {metric: value}}`` with plain Python floats/bools (JSON-ready; NaN → None)."""
  def plain(v):
    if isinstance(v, (bool, np.bool_)):
      return bool(v)
    v = float(v)
    return None if np.isnan(v) else v
  return {name: {m: plain(metrics[m][k]) for m in metrics} for k, name in enumerate(names)}


def dead_attributes(metrics: dict[str, np.ndarray], names: Sequence[str]) -> list[str]:
  """Names of the attributes flagged ``dead``."""
  return [name for name, d in zip(names, metrics["dead"]) if d]
