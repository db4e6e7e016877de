"""Figs. 2–4 numbers of paper B (docs/papers.md §B5): count, share and accuracy per score
interval; AUROC."""
from __future__ import annotations

import numpy as np
import pytest

from hpjax.image_score import plots


def test_score_intervals_and_auroc():
  edges = np.array([-np.inf, -2.0, -1.0, 0.0])
  scores = np.array([-3.0, -1.5, -1.2, -0.5, -0.1, -1.0, np.nan])
  correct = np.array([False, False, True, True, True, True, False])
  out = plots.score_intervals(scores, correct, edges)
  # (-inf,-2]: 1 wrong; (-2,-1]: -1.5 wrong, -1.2 right, -1.0 right; (-1,0]: 2 right.
  assert out["count"] == [1, 3, 2]
  np.testing.assert_allclose(out["share"], [1 / 6, 3 / 6, 2 / 6])
  assert out["accuracy"][0] == 0.0 and out["accuracy"][1] == pytest.approx(2 / 3)
  assert out["accuracy"][2] == 1.0
  assert plots.auroc([0.1, 0.2, 0.3, 0.4], [False, False, True, True]) == 1.0
  assert plots.auroc([0.1, 0.1], [False, True]) == 0.5


def _scores_npz(path):
  """scores.npz of a run, 3 classes: the pre-trained model's scores near -1, the final
  model's near -3 (so per-stage edges would differ), jaccard half of recall."""
  rng = np.random.default_rng(0)
  arrays = {"similarities": np.asarray(("recall", "jaccard", "dice"))}
  for stage, scale in (("pretrain", 1.0), ("final", 3.0)):
    for split, n in (("train", 30), ("test", 60)):
      labels = np.arange(n) % 3
      pred = np.where(np.arange(n) % 4 == 0, (labels + 1) % 3, labels)  # a quarter wrong
      recall = -scale * rng.random(n)
      scores = np.stack([recall, 2 * recall, 1.5 * recall]).astype(np.float32)
      scores[0, 5] = np.nan  # an unscored image
      arrays.update({f"{stage}_{split}_labels": labels, f"{stage}_{split}_pred": pred,
                     f"{stage}_{split}_scores": scores,
                     f"{stage}_{split}_conf": rng.random(n).astype(np.float32)})
  np.savez(path, **arrays)
  return arrays


def test_figure_data_uses_one_set_of_edges(tmp_path):
  path = str(tmp_path / "scores.npz")
  a = _scores_npz(path)
  for cls in (1, None):
    data = plots.figure_data(path, cls=cls, num_bins=4)
    pooled = np.concatenate([
        a[f"{st}_{sp}_scores"][i][(a[f"{st}_{sp}_labels"] == cls) if cls is not None else ...]
        for st in ("pretrain", "final") for sp in ("train", "test") for i in range(3)])
    want = plots.score_edges(pooled, 4)
    assert data["edges"][0] is None and data["edges"][1:] == pytest.approx(want[1:].tolist())
    assert data["edges_from"] == {"stages": ["pretrain", "final"], "splits": ["test", "train"],
                                  "similarities": ["recall", "jaccard", "dice"]}
    # Per stage, the old per-stage edges would not have been the same intervals.
    pre = plots.score_edges(a["pretrain_test_scores"][0], 4)
    fin = plots.score_edges(a["final_test_scores"][0], 4)
    assert not np.allclose(pre[1:], fin[1:])
    edges = np.asarray([-np.inf] + data["edges"][1:])
    for stage in ("pretrain", "final"):
      for i, sim in enumerate(("recall", "jaccard", "dice")):
        entry = data[stage][sim]
        assert entry["edges"] == data["edges"]
        for split in ("train", "test"):
          labels = a[f"{stage}_{split}_labels"]
          mask = np.ones(labels.shape, bool) if cls is None else labels == cls
          s = a[f"{stage}_{split}_scores"][i][mask]
          ok = (a[f"{stage}_{split}_pred"] == labels)[mask]
          keep = ~np.isnan(s)
          # Counts: every scored image once, in the interval (e_k, e_k+1] that holds it.
          counts = [int(np.sum((s[keep] > lo) & (s[keep] <= hi)))
                    for lo, hi in zip(edges[:-1], edges[1:])]
          assert entry[split]["count"] == counts and sum(counts) == keep.sum()
          np.testing.assert_allclose(entry[split]["share"], np.array(counts) / keep.sum())
          for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = keep & (s > lo) & (s <= hi)
            assert entry[split]["accuracy"][k] == (pytest.approx(ok[inside].mean())
                                                   if inside.any() else None)
  # Given edges are used as they are (e.g. another figure's).
  fixed = [None, -2.0, -1.0, -0.5, 0.0]
  data = plots.figure_data(path, cls=None, num_bins=4, edges=fixed)
  assert data["edges"] == fixed and data["final"]["dice"]["edges"] == fixed
  # Fewer similarities: only they are pooled.
  data = plots.figure_data(path, cls=None, num_bins=4, similarities=("recall",))
  assert "jaccard" not in data["final"] and data["edges_from"]["similarities"] == ["recall"]
  only = np.concatenate([a[f"{st}_{sp}_scores"][0] for st in ("pretrain", "final")
                         for sp in ("train", "test")])
  assert data["edges"][1:] == pytest.approx(plots.score_edges(only, 4)[1:].tolist())
