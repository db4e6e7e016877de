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
(:func:`score_edges`), computed once per figure data set from the pooled scores
of both stages, both splits and every similarity it shows, so that the
intervals of the pre-trained and the final model (and of the similarities) are
the same intervals. The AUROC of the score for "correctly labelled"
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


def figure_data(scores_npz: str, *, cls: int | None = 0, num_bins: int = 8,
                similarities: Sequence[str] = SIMILARITIES,
                edges: Sequence[float] | None = None) -> dict[str, Any]:
  """Figs. 2–4 numbers of one run: per stage (pretrain/final), split and similarity.

  Every interval count of the result uses **one** set of edges, so that "share of
  images in (a, b]" means the same interval for both stages, both splits and
  every similarity: by default :func:`score_edges` of the pooled scores of
  everything the result holds (the selected images of both stages and splits,
  under every similarity in ``similarities``).

  Args:
    scores_npz: a run's ``scores.npz``.
    cls: true class of the images (None: all images).
    num_bins: intervals (with ``edges``: ``len(edges) - 1``).
    similarities: the similarities to include (and pool for the edges).
    edges: ``num_bins + 1`` increasing edges to use instead (e.g. another run's,
      to compare two figures); None for -inf.

  Returns:
    ``{"class", "edges", "edges_from", stage: {similarity: {"edges", "train":
    intervals, "test": intervals, "auroc_train", "auroc_test"},
    "softmax_auroc_test", "accuracy_test", "accuracy_train"}}``; ``"edges"`` (None
    for -inf) is the same list at the top and in every entry, ``"edges_from"``
    names the stages, splits and similarities pooled for it. A split missing
    from the file (no labelled images scored) is left out.

  References:
    docs/papers.md §B5; paper B Figs. 2–4.
  """
  d = load_npz(scores_npz)
  names = [str(x) for x in d["similarities"]] if "similarities" in d else list(SIMILARITIES)
  stages = [st for st in ("pretrain", "final") if f"{st}_test_scores" in d]
  splits = {st: [sp for sp in ("train", "test") if f"{st}_{sp}_scores" in d] for st in stages}
  sel: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # (mask, correct)
  for stage in stages:
    for split in splits[stage]:
      labels = d[f"{stage}_{split}_labels"]
      mask = np.ones(labels.shape, bool) if cls is None else labels == cls
      sel[stage, split] = (mask, d[f"{stage}_{split}_pred"] == labels)

  def scores(stage: str, split: str, sim: str) -> np.ndarray:
    return d[f"{stage}_{split}_scores"][names.index(sim)][sel[stage, split][0]]

  if edges is None:
    pooled = [scores(st, sp, sim) for st in stages for sp in splits[st] for sim in similarities]
    edge_arr = score_edges(np.concatenate(pooled) if pooled else np.zeros((0,)), num_bins)
  else:
    edge_arr = np.asarray([-np.inf if e is None else e for e in edges], np.float64)
  edge_list = [None if not np.isfinite(e) else float(e) for e in edge_arr]
  pooled_from = {"stages": stages, "splits": sorted({sp for st in stages for sp in splits[st]}),
                 "similarities": list(similarities)}
  out: dict[str, Any] = {"class": cls, "edges": edge_list, "edges_from": pooled_from}
  for stage in stages:
    st: dict[str, Any] = {}
    for split in splits[stage]:
      mask, correct = sel[stage, split]
      st[f"accuracy_{split}"] = float(np.mean(correct[mask])) if mask.any() else None
    mask, correct = sel[stage, "test"]
    st["softmax_auroc_test"] = auroc(d[f"{stage}_test_conf"][mask], correct[mask])
    for sim in similarities:
      entry: dict[str, Any] = {"edges": list(edge_list)}
      for split in splits[stage]:
        mask, correct = sel[stage, split]
        s = scores(stage, split, sim)
        entry[split] = score_intervals(s, correct[mask], edge_arr)
        entry[f"auroc_{split}"] = auroc(s, correct[mask])
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
