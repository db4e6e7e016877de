"""Figs. 2–5 of paper B: accuracy per image-score interval, and accuracy over the epochs.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334),
Figs. 2–5; docs/papers.md §B5.

**Figs. 2–4** (:func:`figure_data`, :func:`plot_intervals`): for train
(labelled) and test images, the labelling accuracy and the share of images per
image-score interval (:func:`score_intervals`), from ``scores.npz`` (the
pre-trained and the final model of a run). Images are those of true class c (the
paper's "class testing accuracy"), each scored against its *predicted* class, as
the loop scores unlabelled images. The intervals are equal widths from the 5th
percentile of the scores up to 0, the lowest one open below
(:func:`score_edges`). The AUROC of the score for "correctly labelled"
summarises "accuracy rises with the score" in one number per similarity (0.5:
no relation).

**Fig. 5** (:func:`plot_epochs`): class-c test accuracy and pseudo-label
precision over the re-training epochs, per method (mean over seeds).

Figures are written with :func:`hpjax.core.io.save_figure`.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from hpjax.core import classification_metrics, io
from hpjax.image_score.runs import TABLE_METHODS, Run, pick
from hpjax.image_score.scoring import SIMILARITIES
from hpjax.image_score.semisupervised import load_npz


def score_edges(scores: np.ndarray, num_bins: int = 8) -> np.ndarray:
  """``num_bins + 1`` interval edges: equal widths from the 5th percentile to 0.

  The first edge is -inf (the lowest interval is open below), the last 0 (scores
  are ≤ 0).

  References:
    docs/papers.md §B5; paper B Figs. 2–4.
  """
  s = np.asarray(scores, np.float64)
  s = s[np.isfinite(s)]
  lo = float(np.quantile(s, 0.05)) if s.size else -1.0
  lo = min(lo, -1e-6)
  edges = np.linspace(lo, 0.0, num_bins + 1)
  edges[0] = -np.inf
  return edges


def score_intervals(scores: np.ndarray, correct: np.ndarray, edges: np.ndarray
                    ) -> dict[str, list[float | None]]:
  """Per interval ``(e_i, e_{i+1}]``: number, share and labelling accuracy of the images.

  Args:
    scores: ``[N]`` image scores (NaN are left out).
    correct: bool ``[N]``, the image's predicted label is its true label.
    edges: ``[B + 1]`` increasing.

  Returns:
    ``{"count": [B], "share": [B], "accuracy": [B]}`` (accuracy None for an
    empty interval).

  References:
    docs/papers.md §B5; paper B Figs. 2–4.
  """
  s, ok = np.asarray(scores, np.float64), np.asarray(correct, bool)
  keep = ~np.isnan(s)
  s, ok = s[keep], ok[keep]
  idx = np.clip(np.searchsorted(edges, s, side="left") - 1, 0, len(edges) - 2)
  b = len(edges) - 1
  count = np.bincount(idx, minlength=b)
  hits = np.bincount(idx, weights=ok.astype(np.float64), minlength=b)
  return {"count": count.tolist(), "share": (count / max(s.size, 1)).tolist(),
          "accuracy": [float(h / n) if n else None for h, n in zip(hits, count)]}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
  """Area under the ROC curve of ``scores`` for ``positive`` (ties count half).

  :func:`hpjax.core.classification_metrics.auroc` of the images with a score:
  NaN scores (a class without reference images) are left out, and where only
  one class is left the result is None (a JSON null), not NaN.
  """
  s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
  keep = ~np.isnan(s)
  s, y = s[keep], y[keep]
  if y.all() or not y.any():  # also an empty set
    return None
  return float(classification_metrics.auroc(s, y)[0])


def figure_data(scores_npz: str, *, cls: int | None = 0, num_bins: int = 8) -> dict[str, Any]:
  """Figs. 2–4 numbers of one run: per stage (pretrain/final), split and similarity.

  Args:
    scores_npz: a run's ``scores.npz``.
    cls: true class of the images (None: all images).
    num_bins: intervals.

  Returns:
    ``{stage: {similarity: {"edges", "train": intervals, "test": intervals,
    "auroc_train", "auroc_test"}, "softmax_auroc_test", "accuracy_test",
    "accuracy_train"}}``.

  References:
    docs/papers.md §B5; paper B Figs. 2–4.
  """
  d = load_npz(scores_npz)
  out: dict[str, Any] = {"class": cls}
  for stage in ("pretrain", "final"):
    if f"{stage}_test_scores" not in d:
      continue
    st: dict[str, Any] = {}
    sel = {}
    for split in ("train", "test"):
      labels = d[f"{stage}_{split}_labels"]
      sel[split] = np.ones(labels.shape, bool) if cls is None else labels == cls
      correct = d[f"{stage}_{split}_pred"] == labels
      st[f"accuracy_{split}"] = float(np.mean(correct[sel[split]]))
      sel[split] = (sel[split], correct)
    st["softmax_auroc_test"] = auroc(d[f"{stage}_test_conf"][sel["test"][0]],
                                     sel["test"][1][sel["test"][0]])
    for i, sim in enumerate(SIMILARITIES):
      both = np.concatenate([d[f"{stage}_{sp}_scores"][i][sel[sp][0]] for sp in ("train", "test")])
      edges = score_edges(both, num_bins)
      entry: dict[str, Any] = {"edges": [None if not np.isfinite(e) else float(e) for e in edges]}
      for split in ("train", "test"):
        m, correct = sel[split]
        s = d[f"{stage}_{split}_scores"][i][m]
        entry[split] = score_intervals(s, correct[m], edges)
        entry[f"auroc_{split}"] = auroc(s, correct[m])
      st[sim] = entry
    out[stage] = st
  return out


def plot_intervals(data: dict[str, Any], stage: str, similarity: str, path: str,
                   title: str) -> None:
  """Figs. 2–4: grouped bars (test, train) of accuracy (left) and share (right) per interval.

  References:
    docs/papers.md §B5; paper B Figs. 2–4.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  entry = data[stage][similarity]
  edges = entry["edges"]
  names = [f"({'-inf' if a is None else f'{a:.1f}'}, {b:.1f}]" for a, b in zip(edges, edges[1:])]
  x = np.arange(len(names))
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
  for ax, key, ylabel in ((axes[0], "accuracy", "labelling accuracy"),
                          (axes[1], "share", "share of images")):
    for off, split, color in ((-0.2, "test", "tab:blue"), (0.2, "train", "tab:orange")):
      vals = [np.nan if v is None else v for v in entry[split][key]]
      ax.bar(x + off, vals, 0.4, label=split, color=color)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(f"image score interval ({similarity})")
  axes[0].set_ylim(0, 1.02)
  axes[0].legend()
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  io.save_figure(fig, path, dpi=90)


def plot_epochs(runs: Sequence[Run], cls: int, path: str, *, mode: str = "all") -> None:
  """Fig. 5: class-``cls`` test accuracy (left) and pseudo-label precision (right) per epoch.

  Mean over seeds per method (thin lines: single seeds); epoch 0 is the
  pre-trained model. ``mode="per_class"`` draws the runs boosted for ``cls`` (and
  the baselines).

  References:
    docs/papers.md §B5; paper B Fig. 5.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  colors = {"baseline": "black", "image_score": "tab:red", "softmax": "tab:blue",
            "random": "tab:green"}
  for m in ("baseline",) + TABLE_METHODS:
    picked = pick(runs, m, mode, cls)
    if not picked:
      continue
    c = colors.get(m, "gray")
    accs, precs = [], []
    for r in picked.values():
      epochs = [x["epoch"] for x in r.records]
      acc = [100 * x["test_accuracy_per_class"][cls] for x in r.records]
      prec = [np.nan if x.get("precision_per_class") is None
              or x["precision_per_class"][cls] is None else 100 * x["precision_per_class"][cls]
              for x in r.records]
      axes[0].plot(epochs, acc, color=c, alpha=0.25, lw=0.8)
      accs.append(acc)
      precs.append(prec)
    n = min(len(a) for a in accs)
    axes[0].plot(range(n), np.mean([a[:n] for a in accs], 0), color=c, lw=2,
                 label=f"{m} ({len(accs)} seeds)")
    if m != "baseline":
      with warnings.catch_warnings():  # epoch 0 has no selection: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_prec = np.nanmean([p[:n] for p in precs], 0)
      axes[1].plot(range(n), mean_prec, color=c, lw=2, marker="o", label=m)
  axes[0].set_xlabel("epoch (0 = pre-trained)")
  axes[0].set_ylabel(f"class {cls} test accuracy (%)")
  axes[0].legend(fontsize=8)
  axes[1].set_xlabel("re-training epoch")
  axes[1].set_ylabel(f"precision of class-{cls} pseudo labels (%)")
  axes[1].legend(fontsize=8)
  fig.suptitle(f"Fig. 5 analogue: labelling accuracy over re-training ({mode} runs)", fontsize=9)
  fig.tight_layout()
  io.save_figure(fig, path, dpi=90)
