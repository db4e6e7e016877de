"""Per-class selection (paper B, docs/papers.md §B4): counts, rounding, ties, NaN, presets."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from hpjax.image_score import selection


def test_counts_floor_per_predicted_class():
  predicted = np.array([0] * 3 + [1] * 10 + [2] * 7 + [3] * 100)
  counts = selection.selection_counts(predicted, [0.5, 0.3, 0.0, 0.29])
  # floor(1.5) = 1, floor(3.0) = 3, 0, floor(28.999999999999996) must be 29.
  np.testing.assert_array_equal(counts, [1, 3, 0, 29])


def test_select_per_class_counts_ties_and_order():
  #             0    1    2    3    4    5    6    7    8
  scores = [-0.5, -0.1, -0.1, -0.9, -0.1, -2.0, -1.0, -1.0, -3.0]
  predicted = [0, 0, 0, 0, 0, 1, 1, 1, 2]
  mask = selection.select_per_class(scores, predicted, [0.6, 0.7, 0.5])
  # class 0: 5 images -> floor(3.0) = 3: the three tied -0.1 (indices 1, 2, 4).
  # class 1: 3 images -> floor(2.1) = 2: -1.0 at 6 and 7 (both beat -2.0).
  # class 2: 1 image  -> floor(0.5) = 0.
  np.testing.assert_array_equal(np.flatnonzero(mask), [1, 2, 4, 6, 7])
  # A tie at the cut goes to the lower index: one of three tied -0.1 scores.
  mask = selection.select_per_class(scores, predicted, [0.2, 0.0, 0.0])
  np.testing.assert_array_equal(np.flatnonzero(mask), [2 - 1])
  mask = selection.select_per_class(scores, predicted, [0.4, 0.4, 0.0])
  np.testing.assert_array_equal(np.flatnonzero(mask), [1, 2, 6])


def test_nan_scores_are_never_selected():
  scores = [np.nan, -1.0, np.nan, -2.0]
  mask = selection.select_per_class(scores, [0, 0, 0, 0], 1.0)
  np.testing.assert_array_equal(mask, [False, True, False, True])


def test_select_top_ignores_classes():
  mask = selection.select_top([0.0, -1.0, -0.5, -0.2, -3.0, -0.2, -9, -8, -7, -6], 0.3)
  np.testing.assert_array_equal(np.flatnonzero(mask), [0, 3, 5])


def test_softmax_confidence_and_selection():
  logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]]))
  conf = np.asarray(selection.softmax_confidence(logits))
  np.testing.assert_allclose(conf, [0.7, 0.6, 0.6, 0.5], rtol=1e-6)
  mask = selection.select_per_class(conf, logits.argmax(-1), [0.5, 1.0, 1.0])
  np.testing.assert_array_equal(mask, [True, True, True, False])


def test_select_random_counts_and_determinism():
  predicted = np.repeat(np.arange(4), [10, 20, 5, 1])
  fractions = [0.5, 0.25, 0.4, 1.0]
  a = selection.select_random(predicted, fractions, jax.random.key(0))
  b = selection.select_random(predicted, fractions, jax.random.key(0))
  c = selection.select_random(predicted, fractions, jax.random.key(1))
  np.testing.assert_array_equal(np.bincount(predicted[a], minlength=4), [5, 5, 2, 1])
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_paper_presets():
  assert selection.VGG16_FRACTIONS[1] == 0.5
  assert [f for i, f in enumerate(selection.VGG16_FRACTIONS) if i != 1] == [0.3] * 9
  assert selection.RESNET18_FRACTIONS == (0.2, 0.3, 0.2, 0.1, 0.2, 0.2, 0.3, 0.2, 0.4, 0.2)


def test_bad_arguments():
  with pytest.raises(ValueError, match="expected fractions in"):
    selection.select_per_class([0.0], [0], 1.5)
  with pytest.raises(ValueError, match="expected fractions as one value or 2"):
    selection.select_per_class([0.0, 1.0], [0, 1], [0.1, 0.2, 0.3], num_classes=2)
  with pytest.raises(ValueError, match=r"predicted classes in \[0, 2\)"):
    selection.select_per_class([0.0, 1.0], [0, 2], [0.1, 0.2])
  with pytest.raises(ValueError, match="scores of shape"):
    selection.select_per_class([0.0], [0, 1], 0.5)
