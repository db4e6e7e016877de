"""Model assembly (paper B, Table 3; docs/papers.md §B5): claims, ties, NaN scores and the
fallback."""
from __future__ import annotations

import numpy as np

from hpjax.image_score import assembly


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
