"""Table 3 of paper B: assembling per-class boosted models into one labeller.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334),
"Model Assembly" and Table 3; docs/papers.md §B5.

Model :math:`M_k` (boosted for class k) labels the test set; it *claims* the
images it predicts as k, with the image score it gives them (against its class-k
reference). An image claimed by several models gets the class of the claim with
the highest score (ties: the lower class); an image claimed by none keeps the
baseline model's label (the paper does not say; the baseline of the same seed is
the natural fallback, since the boosted models only vouch for their own class).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from hpjax.core import stats

from hpjax.image_score.runs import Run
from hpjax.image_score.scoring import SIMILARITIES
from hpjax.image_score.semisupervised import load_npz, phase_dir


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

  References:
    docs/papers.md §B5; paper B Table 3.
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
    "claimed_share"}], "per_seed": [{"seed", "mean_diff", "final_diff"}], "summary"}``
    with accuracies in percent; ``per_seed`` gives each seed's assembled − baseline,
    averaged over its epochs and at its last epoch, and ``summary`` their means over
    seeds with the exact one-sided sign-flip p of "assembled > baseline" (the seeds are
    the independent samples; the epochs of one seed are not) and its floor.

  References:
    docs/papers.md §B5; paper B Table 3.
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
  per_seed = []
  for seed in sorted({r["seed"] for r in rows}):
    d = [r["assembled"] - r["baseline"] for r in rows if r["seed"] == seed]
    per_seed.append({"seed": seed, "mean_diff": float(np.mean(d)), "final_diff": float(d[-1])})
  summary = None
  if per_seed:
    means = np.asarray([p["mean_diff"] for p in per_seed])
    finals = np.asarray([p["final_diff"] for p in per_seed])
    summary = {"n": len(per_seed), "mean_diff": float(means.mean()),
               "final_diff": float(finals.mean()),
               "p_mean_diff": stats.sign_flip_pvalue(means),
               "p_final_diff": stats.sign_flip_pvalue(finals),
               "p_floor": stats.sign_flip_floor(len(per_seed))}
  return {"method": method, "rows": rows, "per_seed": per_seed, "summary": summary}


def _load_analysis(run: Run, epoch: int) -> dict[str, np.ndarray]:
  return load_npz(os.path.join(phase_dir(run.workdir, epoch), "analysis.npz"))
