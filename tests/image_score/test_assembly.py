"""Model assembly (paper B, Table 3; docs/papers.md §B5): claims, ties, NaN scores and the
fallback; the per-epoch table from fake per-class run directories."""
from __future__ import annotations

import numpy as np
import pytest

from semi_fake_runs import analysis, write_run
from hpjax.image_score import assembly
from hpjax.image_score.runs import load_runs


def test_assemble_known_answer():
  #                  img: 0   1   2   3   4
  preds = np.array([[0, 0, 1, 0, 2],    # M_0 claims 0, 1, 3
                    [1, 1, 1, 0, 2],    # M_1 claims 0, 1, 2
                    [2, 0, 2, 2, 1]])   # M_2 claims 0, 2, 3
  scores = np.array([[-1.0, -5.0, 0.0, -2.0, 0.0],
                     [-3.0, -1.0, -4.0, 0.0, 0.0],
                     [-1.0, 0.0, np.nan, -2.0, 0.0]])
  fallback = np.array([9, 9, 9, 9, 7])
  labels, by = assembly.assemble(preds, scores, [0, 1, 2], fallback)
  # img 0: M_0 and M_2 tie at -1 -> the lower k (0); img 1: M_1 (-1 > -5);
  # img 2: M_1 (-4) beats M_2's NaN claim; img 3: tie -2 -> M_0; img 4: nobody -> 7.
  assert labels.tolist() == [0, 1, 1, 0, 7]
  assert by.tolist() == [0, 1, 1, 0, -1]


def test_assembly_table_on_fake_runs(tmp_path):
  # 6 test images of 3 classes; model M_k (per_class, boosted for k) claims what it predicts as k.
  labels = [0, 0, 1, 1, 2, 2]
  nan = np.nan
  base = analysis([0, 1, 1, 2, 2, 0], labels)                        # 3 of 6 right
  # recall (row 0) decides image-score claims, jaccard (row 1) differs on image 2.
  m0 = analysis([0, 0, 0, 1, 2, 2], labels, test_conf=[.9, .9, .9, .5, .5, .5],
                test_scores=[[-1, -2, -.5, nan, nan, nan], [-1, -2, -.1, nan, nan, nan],
                             [nan] * 6])
  m1 = analysis([1, 0, 1, 1, 2, 1], labels, test_conf=[.8, .5, .6, .7, .5, .9],
                test_scores=[[-3, nan, -.2, -1, nan, -1], [-3, nan, -.2, -1, nan, -1],
                             [nan] * 6])
  dirs = [write_run(tmp_path, "b0", method="baseline", seed=0, analyses=[base, base, base]),
          write_run(tmp_path, "c0", method="image_score", seed=0, analyses=[base, m0, m0],
                    mode="per_class", target=0),
          # M_1 finished epoch 1 only: the table stops there.
          write_run(tmp_path, "c1", method="image_score", seed=0, analyses=[base, m1],
                    mode="per_class", target=1),
          write_run(tmp_path, "s0", method="softmax", seed=0, analyses=[base, m0, m0],
                    mode="per_class", target=0),
          write_run(tmp_path, "s1", method="softmax", seed=0, analyses=[base, m1, m1],
                    mode="per_class", target=1),
          # Not part of seed 0's image-score assembly: mode all, another similarity,
          # and seed 1, which has no baseline.
          write_run(tmp_path, "a0", method="image_score", seed=0, analyses=[base, m1]),
          write_run(tmp_path, "j0", method="image_score", seed=0, analyses=[base, m1],
                    mode="per_class", target=2, similarity="jaccard"),
          write_run(tmp_path, "c0s1", method="image_score", seed=1, analyses=[base, m0],
                    mode="per_class", target=0)]
  runs = load_runs(dirs)
  t = assembly.assembly_table(runs)
  # img 0: M_0 (-1) beats M_1 (-3) -> 0 right; img 1: M_0 only -> 0 right; img 2: M_1 (-0.2)
  # beats M_0 (-0.5) -> 1 right; img 3: M_1 -> 1 right; img 4: nobody, baseline 2 right;
  # img 5: M_1 -> 1 wrong.
  assert t["method"] == "image_score" and t["rows"] == [
      {"seed": 0, "classes": [0, 1], "epoch": 1, "baseline": 50.0,
       "assembled": pytest.approx(500 / 6), "claimed_share": pytest.approx(5 / 6)}]
  # One seed: +33.3 points, the sign-flip p is its floor 1/2.
  assert t["per_seed"] == [{"seed": 0, "mean_diff": pytest.approx(100 / 3),
                            "final_diff": pytest.approx(100 / 3)}]
  assert t["summary"] == {"n": 1, "mean_diff": pytest.approx(100 / 3),
                          "final_diff": pytest.approx(100 / 3), "p_mean_diff": 0.5,
                          "p_final_diff": 0.5, "p_floor": 0.5}
  # jaccard: img 2 goes to M_0 (-0.1 > -0.2), predicted 0, wrong.
  rows = assembly.assembly_table(runs, similarity="jaccard")["rows"]
  assert rows[0]["assembled"] == pytest.approx(400 / 6)
  # softmax runs rank claims by confidence: img 0 M_0 (.9 > .8), img 2 M_0 (.9 > .6); 2 epochs.
  rows = assembly.assembly_table(runs, method="softmax")["rows"]
  assert [r["epoch"] for r in rows] == [1, 2]
  assert all(r["assembled"] == pytest.approx(400 / 6) and r["baseline"] == 50.0 for r in rows)
