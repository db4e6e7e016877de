r"""Tables, model assembly and figures of paper B's experiments (library side of
``python -m evaluate.semisupervised``).

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334),
Tables 1–3 and Figs. 2–5; ``shared/SPEC.md`` B5.

**Tables 1–2** (:func:`comparison_table`). Per class :math:`c`: the class-c test
accuracy of the baseline, image-score and softmax (and random) runs, their
differences, and one-sided bootstrap p-values of "method > baseline"
(:func:`hpjax.stats.bootstrap_pvalue`, ``alternative="greater"``). Two kinds of
samples, and every table says which it uses:

* ``"epoch"`` (the paper's): the accuracies after each re-training epoch of *one*
  seed's runs (the ``E2`` values are serially correlated, so these p-values are
  optimistic); unpaired test.
* ``"seed"`` (the sounder one): the final accuracy of each independent seed's run;
  paired test over the seeds both methods ran (same seed = same split and the
  same pre-trained model).
* ``"seed_mean"``: per seed, the mean accuracy over its re-training epochs (still
  one independent value per seed, with less of the epoch-to-epoch noise of a
  constant learning rate); paired test.

Per-seed tables also give the exact sign-flip p-value (:func:`sign_flip_pvalue`):
a bootstrap of 2–3 paired values has too few distinct resamples to be trusted.

Rows come from ``mode="all"`` runs (all classes from the same runs) or from
``mode="per_class"`` runs (row c from the runs boosted for class c, the paper's
class-by-class setting); the baseline never adds pseudo labels, so its runs
serve both.

**Table 3, assembly** (:func:`assemble`). Model :math:`M_k` (boosted for class k)
labels the test set; it *claims* the images it predicts as k, with the image
score it gives them (against its class-k reference). An image claimed by several
models gets the class of the claim with the highest score (ties: the lower
class); an image claimed by none keeps the baseline model's label (the paper
does not say; the baseline of the same seed is the natural fallback, since the
boosted models only vouch for their own class).

**Figs. 2–4** (:func:`score_intervals`): for train (labelled) and test images,
the labelling accuracy and the share of images per image-score interval, from
``scores.npz`` (the pre-trained and the final model of a run). Images are those
of true class c (the paper's "class testing accuracy"), each scored against its
*predicted* class, as the loop scores unlabelled images. The intervals are equal
widths from the 5th percentile of the scores up to 0, the lowest one open below.
The AUROC of the score for "correctly labelled" summarises "accuracy rises with
the score" in one number per similarity (0.5: no relation).

**Fig. 5** (:func:`plot_epochs`): class-c test accuracy and pseudo-label
precision over the re-training epochs, per method (mean over seeds).
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any, Sequence

import numpy as np

from hpjax.core import stats
from hpjax.core.errors import ConfigError
from hpjax.image_score.scoring import SIMILARITIES
from hpjax.core.metrics_writer import read_metrics
from hpjax.image_score.semisupervised import SemiConfig, method_label, phase_dir, read_run_config

# The table's method columns, in order; image_score[jaccard|dice] runs get their own table.
TABLE_METHODS = ("image_score", "softmax", "random")
# Sample types of Tables 1–2 (see the module docstring).
SAMPLES = ("seed", "seed_mean", "epoch")


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished (or partial) run directory.

  Attributes:
    workdir: the directory.
    config: its :class:`~hpjax.semisupervised.SemiConfig`.
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
    raise ConfigError(f"--workdirs mix data sets / models: {sorted(map(str, keys))}; compare "
                     "runs of one setting at a time")
  return runs


def _pick(runs: Sequence[Run], method: str, mode: str, cls: int) -> dict[int, Run]:
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


def _samples(picked: dict[int, Run], cls: int | None, sample: str, seed: int | None
             ) -> tuple[np.ndarray, list[int]]:
  if sample == "epoch":
    if seed not in picked:
      return np.zeros((0,)), []
    return picked[seed].class_accuracy(cls), [seed]
  seeds = sorted(picked)
  return np.asarray([_seed_value(picked[s], cls, sample) for s in seeds]), seeds


def _seed_value(run: Run, cls: int | None, sample: str) -> float:
  """One run's value in a per-seed sample: its final accuracy ("seed"), or the mean over
  its re-training epochs ("seed_mean", less noisy under a constant learning rate)."""
  if sample == "seed_mean":
    return float(np.mean(run.class_accuracy(cls)))
  return float(run.class_accuracy(cls, [run.last_epoch])[0])


def comparison_table(runs: Sequence[Run], *, mode: str = "all", sample: str = "seed",
                     seed: int | None = None, num_resamples: int = 10000,
                     methods: Sequence[str] = TABLE_METHODS) -> dict[str, Any]:
  """Tables 1–2: per class, baseline vs each method, with one-sided bootstrap p-values.

  Args:
    runs: from :func:`load_runs`.
    mode: rows from ``"all"`` runs or from class-``c`` ``"per_class"`` runs.
    sample: ``"seed"`` (final accuracy per seed, paired test), ``"seed_mean"``
      (per seed the mean over its re-training epochs, paired test) or ``"epoch"``
      (the paper's: the re-training epochs of seed ``seed``, unpaired test).
    seed: the seed of an ``"epoch"`` table (default: the lowest with a baseline run).
    num_resamples: bootstrap resamples B.
    methods: the method columns.

  Returns:
    ``{"mode", "sample", "seed", "rows": [{"class", "baseline", "<m>",
    "diff_<m>", "p_<m>", "n_<m>", ...}]}``; accuracies in percent; a row with
    fewer than two samples on a side has ``p`` None. Mode ``all`` ends with an
    ``"all"`` row (overall test accuracy).
  """
  if sample not in SAMPLES:
    raise ConfigError(f"sample must be one of {', '.join(SAMPLES)}, got {sample!r}")
  num_classes = len(runs[0].records[0]["test_accuracy_per_class"])
  if sample == "epoch" and seed is None:
    seeds = sorted({r.seed for r in runs if r.method == "baseline"})
    seed = seeds[0] if seeds else None
  rows = []
  classes: list[int | None] = list(range(num_classes)) + ([None] if mode == "all" else [])
  for c in classes:
    base_runs = _pick(runs, "baseline", mode, c if c is not None else 0)
    base, base_seeds = _samples(base_runs, c, sample, seed)
    row: dict[str, Any] = {"class": "all" if c is None else c,
                           "baseline": _pct(base), "n_baseline": int(base.size)}
    any_method = False
    for m in methods:
      picked = _pick(runs, m, mode, c if c is not None else 0)
      paired = sample != "epoch"
      if paired:  # over the seeds both sides ran
        common = sorted(set(picked) & set(base_runs))
        picked = {s: picked[s] for s in common}
        b = np.asarray([_seed_value(base_runs[s], c, sample) for s in common])
      else:
        b = base
      x, _ = _samples(picked, c, sample, seed)
      if x.size == 0:
        continue
      any_method = True
      row[m] = _pct(x)
      row[f"n_{m}"] = int(x.size)
      row[f"diff_{m}"] = _pct(x) - _pct(b) if b.size else None
      ok = x.size >= 2 and b.size >= 2
      row[f"p_{m}"] = (stats.bootstrap_pvalue(x, b, num_resamples=num_resamples, seed=0,
                                              alternative="greater", paired=paired)
                       if ok else None)
      if paired and x.size:
        row[f"p_signflip_{m}"] = sign_flip_pvalue(x - b)
    if "image_score" in row and "softmax" in row:
      row["diff_image_score_softmax"] = row["image_score"] - row["softmax"]
    if any_method or mode == "all":
      rows.append(row)
  return {"mode": mode, "sample": sample, "seed": seed if sample == "epoch" else None,
          "seeds": None if sample == "epoch" else sorted({r.seed for r in runs}),
          "rows": rows}


def sign_flip_pvalue(d: Any) -> float:
  r"""Exact one-sided p-value of mean(d) > 0 by flipping the signs of paired differences.

  Enumerates all :math:`2^n` sign patterns (n ≤ 20):
  :math:`p = \#\{s: \overline{s \cdot d} \ge \bar d\} / 2^n`. With 3 seeds the
  smallest possible p is 1/8, which is the honest resolution of 3 paired runs
  (a bootstrap of 2–3 values can print p ≈ 0.0001 for the same data).

  Args:
    d: ``[n]`` paired differences (method − baseline per seed).

  Returns:
    p in ``[2^{-n}, 1]``.
  """
  d = np.asarray(d, np.float64)
  if d.ndim != 1 or not 1 <= d.size <= 20:
    raise ValueError(f"sign_flip_pvalue: expected 1..20 paired differences, got shape {d.shape}")
  n = d.size
  signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of ±1
  means = (signs * d).mean(axis=1)
  return float(np.mean(means >= d.mean() - 1e-12 * max(1.0, abs(d.mean()))))


def _pct(x: np.ndarray) -> float | None:
  return float(100.0 * np.mean(x)) if np.size(x) else None


# ----------------------------------------------------------------------------
# Assembly (Table 3)


def assemble(preds: np.ndarray, scores: np.ndarray, classes: Sequence[int],
             fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Labels from per-class boosted models (paper B, "Model Assembly").

  Args:
    preds: int ``[K, N]``, model k's predicted class of each image.
    scores: float ``[K, N]``, the score model k gives each image (against its
      predicted class); NaN counts as the lowest score of a claim.
    classes: ``[K]``, the class model k is boosted for.
    fallback: int ``[N]``, the label of images no model claims (the baseline's).

  Returns:
    ``(labels [N], claimed_by [N])``: the assembled labels, and the index k of
    the winning claim (-1 where the fallback is used).

  Example:
    >>> labels, by = assemble(np.array([[0, 0, 1], [1, 1, 1]]),
    ...                       np.array([[-1., -3., -1.], [-2., -2., -1.]]), [0, 1],
    ...                       np.array([2, 2, 2]))
    >>> labels.tolist(), by.tolist()
    ([0, 1, 1], [0, 1, 1])
  """
  preds, scores = np.asarray(preds), np.asarray(scores, np.float64)
  classes = np.asarray(classes)[:, None]
  claim = preds == classes
  # Non-claims rank below every claim, unscored (NaN) claims below scored ones.
  key = np.where(claim, np.where(np.isnan(scores), -np.finfo(np.float64).max, scores), -np.inf)
  winner = np.argmax(key, axis=0)  # argmax takes the first (lower k) among ties
  claimed = claim.any(axis=0)
  labels = np.where(claimed, classes[winner, 0], np.asarray(fallback))
  return labels, np.where(claimed, winner, -1)


def assembly_table(runs: Sequence[Run], *, method: str = "image_score",
                   similarity: str = "recall") -> dict[str, Any]:
  """Table 3: test accuracy of the assembled per-class models vs the baseline, per epoch.

  Uses, per seed, the ``per_class`` runs of ``method`` (one per boosted class)
  and the baseline run; claims are ranked by image score (``similarity``) for
  ``image_score`` runs and by softmax confidence for ``softmax`` runs (those
  compute image scores only at the end).

  Returns:
    ``{"method", "rows": [{"seed", "classes", "epoch", "baseline", "assembled",
    "claimed_share"}]}`` with accuracies in percent.
  """
  rows = []
  for seed in sorted({r.seed for r in runs}):
    base = [r for r in runs if r.method == "baseline" and r.seed == seed]
    boosted = sorted((r for r in runs if r.config.mode == "per_class" and r.seed == seed
                      and r.method == method), key=lambda r: r.config.target_class)
    if not base or not boosted:
      continue
    base = base[0]
    last = min([base.last_epoch] + [r.last_epoch for r in boosted])
    for epoch in range(1, last + 1):
      b = _load_analysis(base, epoch)
      models = [_load_analysis(r, epoch) for r in boosted]
      preds = np.stack([m["test_pred"] for m in models])
      if method == "image_score":
        scores = np.stack([m["test_scores"][SIMILARITIES.index(similarity)] for m in models])
      else:
        scores = np.stack([m["test_conf"] for m in models])
      labels, by = assemble(preds, scores, [r.config.target_class for r in boosted],
                            b["test_pred"])
      truth = b["test_labels"]
      rows.append({"seed": seed, "classes": [r.config.target_class for r in boosted],
                   "epoch": epoch, "baseline": 100.0 * float(np.mean(b["test_pred"] == truth)),
                   "assembled": 100.0 * float(np.mean(labels == truth)),
                   "claimed_share": float(np.mean(by >= 0))})
  return {"method": method, "rows": rows}


def _load_analysis(run: Run, epoch: int) -> dict[str, np.ndarray]:
  path = os.path.join(phase_dir(run.workdir, epoch), "analysis.npz")
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------
# Figs. 2–4: accuracy and share per score interval


def score_edges(scores: np.ndarray, num_bins: int = 8) -> np.ndarray:
  """``num_bins + 1`` interval edges: equal widths from the 5th percentile to 0.

  The first edge is -inf (the lowest interval is open below), the last 0 (scores
  are ≤ 0).
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
  """Area under the ROC curve of ``scores`` for ``positive`` (ties count half)."""
  from scipy.stats import rankdata
  s, y = np.asarray(scores, np.float64), np.asarray(positive, bool)
  keep = ~np.isnan(s)
  s, y = s[keep], y[keep]
  n1, n0 = int(y.sum()), int((~y).sum())
  if n1 == 0 or n0 == 0:
    return None
  r = rankdata(s)
  return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


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
  """
  with np.load(scores_npz) as z:
    d = {k: z[k] for k in z.files}
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
  """Figs. 2–4: grouped bars (test, train) of accuracy (left) and share (right) per interval."""
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
  _save_fig(fig, path)


def plot_epochs(runs: Sequence[Run], cls: int, path: str, *, mode: str = "all") -> None:
  """Fig. 5: class-``cls`` test accuracy (left) and pseudo-label precision (right) per epoch.

  Mean over seeds per method (thin lines: single seeds); epoch 0 is the
  pre-trained model. ``mode="per_class"`` draws the runs boosted for ``cls`` (and
  the baselines).
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  colors = {"baseline": "black", "image_score": "tab:red", "softmax": "tab:blue",
            "random": "tab:green"}
  for m in ("baseline",) + TABLE_METHODS:
    picked = _pick(runs, m, mode, cls)
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
  _save_fig(fig, path)


def _save_fig(fig: Any, path: str) -> None:
  import matplotlib.pyplot as plt
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.png"
  fig.savefig(tmp, dpi=90)
  plt.close(fig)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Similarities, wall times, report


def similarity_table(runs: Sequence[Run]) -> dict[str, Any]:
  """Image-score similarities compared: final accuracy and pseudo-label precision of their
  ``mode="all"`` runs, and (from every run's pre-trained model) the AUROC of the score
  for "the test image is labelled correctly", next to the softmax confidence's."""
  rows = []
  for sim in SIMILARITIES:
    label = "image_score" if sim == "recall" else f"image_score[{sim}]"
    rs = [r for r in runs if r.method == label and r.config.mode == "all" and r.last_epoch >= 1]
    if not rs:
      continue
    final = [100 * r.records[-1]["test_accuracy"] for r in rs]
    prec = [100 * np.mean([x["precision"] for x in r.records[1:] if x.get("precision") is not None])
            for r in rs]
    rows.append({"similarity": sim, "seeds": sorted(r.seed for r in rs),
                 "final_accuracy": float(np.mean(final)), "precision": float(np.mean(prec))})
  auc: dict[str, list[float]] = {s: [] for s in SIMILARITIES + ("softmax",)}
  seen = set()
  for r in runs:
    path = os.path.join(r.workdir, "scores.npz")
    if not os.path.exists(path) or r.seed in seen:
      continue
    seen.add(r.seed)  # the pre-trained model is shared by a seed's runs: count it once
    d = figure_data(path, cls=None)["pretrain"]
    for s in SIMILARITIES:
      if d[s]["auroc_test"] is not None:
        auc[s].append(d[s]["auroc_test"])
    if d["softmax_auroc_test"] is not None:
      auc["softmax"].append(d["softmax_auroc_test"])
  return {"runs": rows, "auroc_test_pretrained": {k: (float(np.mean(v)) if v else None)
                                                  for k, v in auc.items()},
          "auroc_seeds": sorted(seen)}


def wall_times(runs: Sequence[Run]) -> dict[str, Any]:
  """Mean seconds per re-training epoch (select/train/analyse) per method, and pre-training."""
  out: dict[str, Any] = {}
  for m in sorted({r.method for r in runs}):
    parts = [x["seconds"] for r in runs if r.method == m for x in r.records[1:]]
    if parts:
      out[m] = {k: float(np.mean([p.get(k, 0.0) for p in parts]))
                for k in ("select", "train", "analyse")}
  pre = [r.records[0]["seconds"] for r in runs]
  out["pretrain"] = {k: float(np.mean([p.get(k, 0.0) for p in pre])) for k in ("train", "analyse")}
  return out


def _fmt(v: Any, digits: int = 2) -> str:
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.{digits}f}"
  return str(v)


def markdown_comparison(table: dict[str, Any], label_names: Sequence[str] | None = None) -> str:
  """A Table 1–2 style Markdown table, headed with the sample type it uses."""
  methods = [m for m in TABLE_METHODS if any(m in r for r in table["rows"])]
  if table["sample"] == "epoch":
    head = (f"Samples: per-epoch accuracies of the re-training phase of seed {table['seed']} "
            "(the paper's; serially correlated), unpaired one-sided bootstrap.")
  elif table["sample"] == "seed":
    head = (f"Samples: final accuracy of each seed {table['seeds']} (independent runs), "
            "paired one-sided bootstrap over common seeds.")
  else:
    head = (f"Samples: per seed {table['seeds']}, the mean accuracy over its re-training "
            "epochs (independent runs), paired one-sided bootstrap over common seeds.")
  seed_table = table["sample"] != "epoch"
  cols = ["class", "baseline"]
  for m in methods:
    cols += [m, "diff", "p"] + (["p flip"] if seed_table else [])
  if "image_score" in methods and "softmax" in methods:
    cols.append("is − sm")
  lines = [f"*{head} Mode: {table['mode']}. Accuracies in %.*", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in table["rows"]:
    name = r["class"]
    if label_names is not None and name != "all":
      name = f"{name} {label_names[name]}"
    cells = [str(name), _fmt(r["baseline"])]
    for m in methods:
      p = r.get(f"p_{m}")
      cells += [_fmt(r.get(m)), _fmt(r.get(f"diff_{m}")), _fmt(p, 4)]
      if seed_table:
        cells.append(_fmt(r.get(f"p_signflip_{m}"), 3))
    if "image_score" in methods and "softmax" in methods:
      cells.append(_fmt(r.get("diff_image_score_softmax")))
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("Column heads: `<method>` accuracy, `diff` = method − baseline, `p` = one-sided "
               "bootstrap p-value of method > baseline" + (
                   "; `p flip` = exact one-sided sign-flip p-value of the paired per-seed "
                   "differences (floor 1/2^seeds: 0.125 with 3 seeds); diff and p use the seeds "
                   "both the method and the baseline ran." if seed_table else "."))
  return "\n".join(lines) + "\n"


def evaluate(workdirs: Sequence[str], out: str, *, fig_class: int = 0,
             num_resamples: int = 10000,
             plot_similarities: Sequence[str] = ("recall",)) -> dict[str, Any]:
  """All tables and figures of the runs in ``workdirs``; writes ``out/semisupervised.{json,md}``
  and the PNGs.

  Args:
    workdirs: run directories of one data set and model.
    out: output directory.
    fig_class: the class of Figs. 2–5 (the paper shows class 0).
    num_resamples: bootstrap resamples.
    plot_similarities: similarities drawn as Figs. 2–4 (all three are in the JSON).

  Returns:
    The JSON-able result.
  """
  from hpjax.core.io import write_text
  runs = load_runs(workdirs)
  result: dict[str, Any] = {"num_runs": len(runs), "dataset": runs[0].config.dataset,
                            "runs": [{"workdir": r.workdir, "method": r.method,
                                      "mode": r.config.mode,
                                      "target_class": r.config.target_class, "seed": r.seed,
                                      "epochs": r.last_epoch,
                                      "final_accuracy": r.records[-1]["test_accuracy"]}
                                     for r in runs]}
  tables = {}
  for mode in ("all", "per_class"):
    if mode == "per_class" and not any(r.config.mode == "per_class" for r in runs):
      continue
    for sample in SAMPLES:
      tables[f"{mode}_{sample}"] = comparison_table(runs, mode=mode, sample=sample,
                                                    num_resamples=num_resamples)
  result["tables"] = tables
  result["assembly"] = {m: assembly_table(runs, method=m) for m in ("image_score", "softmax")}
  result["similarity"] = similarity_table(runs)
  result["wall_seconds"] = wall_times(runs)

  figs = {}
  base = sorted((r for r in runs if os.path.exists(os.path.join(r.workdir, "scores.npz"))),
                key=lambda r: (r.method != "baseline", r.seed))
  if base:
    r = base[0]
    data = figure_data(os.path.join(r.workdir, "scores.npz"), cls=fig_class)
    data_all = figure_data(os.path.join(r.workdir, "scores.npz"), cls=None)
    figs["source"] = r.workdir
    figs[f"class_{fig_class}"] = data
    figs["all_classes"] = data_all
    e1, e2 = r.config.pretrain_epochs, r.config.pretrain_epochs + r.last_epoch
    for stage, epochs in (("pretrain", e1), ("final", e2)):
      for sim in plot_similarities:
        plot_intervals(data, stage, sim, os.path.join(out, f"fig_scores_{stage}_{sim}.png"),
                       f"class {fig_class}, {r.method} run seed {r.seed}, {stage} model "
                       f"({epochs} epochs): test acc {100 * data[stage]['accuracy_test']:.1f}%")
      plot_intervals(data_all, stage, "recall",
                     os.path.join(out, f"fig_scores_{stage}_recall_allclasses.png"),
                     f"all classes, {stage} model ({epochs} epochs)")
  result["figures"] = figs
  plot_epochs(runs, fig_class, os.path.join(out, f"fig5_class{fig_class}_all.png"), mode="all")
  if any(r.config.mode == "per_class" for r in runs):
    for c in sorted({r.config.target_class for r in runs if r.config.mode == "per_class"}):
      plot_epochs(runs, c, os.path.join(out, f"fig5_class{c}_per_class.png"), mode="per_class")

  write_text(os.path.join(out, "semisupervised.json"), json.dumps(result, indent=1))
  write_text(os.path.join(out, "semisupervised.md"), markdown_report(result))
  return result


def markdown_report(result: dict[str, Any]) -> str:
  """The Markdown summary written beside the JSON."""
  parts = [f"# Semi-supervised selection on {result['dataset']} ({result['num_runs']} runs)", ""]
  for name, t in result["tables"].items():
    parts += [f"## Table ({name})", "", markdown_comparison(t)]
  for m, a in result["assembly"].items():
    if a["rows"]:
      parts += [f"## Assembly of per-class {m} models (Table 3)", "",
                "| seed | classes | epoch | baseline | assembled | claimed |", "|---|---|---|---|---|---|"]
      parts += [f"| {r['seed']} | {r['classes']} | {r['epoch']} | {r['baseline']:.2f} | "
                f"{r['assembled']:.2f} | {100 * r['claimed_share']:.1f}% |" for r in a["rows"]]
      parts.append("")
  sim = result["similarity"]
  parts += ["## Similarities", "", "| similarity | seeds | final acc | pseudo-label precision |",
            "|---|---|---|---|"]
  parts += [f"| {r['similarity']} | {r['seeds']} | {r['final_accuracy']:.2f} | "
            f"{r['precision']:.2f} |" for r in sim["runs"]]
  parts += ["", "AUROC of the score for a correct test label (pre-trained models, seeds "
            f"{sim['auroc_seeds']}): " + ", ".join(
                f"{k} {_fmt(v, 3)}" for k, v in sim["auroc_test_pretrained"].items()), ""]
  parts += ["## Wall time (s per re-training epoch)", "", "```",
            json.dumps(result["wall_seconds"], indent=1), "```", ""]
  return "\n".join(parts)
