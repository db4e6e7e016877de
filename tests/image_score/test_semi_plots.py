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
