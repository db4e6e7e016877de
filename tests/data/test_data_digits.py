"""scikit-learn digits as a source: real counts, scaling and the documented split."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from hpjax.data.digits import Digits, split_indices
from hpjax.core.errors import DataError


def test_counts_values_and_stratified_split():
  train, test, full = Digits("train"), Digits("test"), Digits("all")
  assert (len(train), len(test), len(full)) == (1442, 355, 1797)
  counts = np.bincount(test.labels, minlength=10)
  assert counts.min() >= 34 and counts.max() <= 36
  d = load_digits()
  np.testing.assert_array_equal(full.images[..., 0], np.rint(d.images * 255 / 16).astype(np.uint8))
  assert full.images.max() == 255 and full.image_shape == (8, 8, 1)
  ex = test[0]
  assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32


def test_split_rule_on_a_literal():
  labels = np.array([0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0])
  # class 0 at 0,1,3,4,5,10 -> 5th is index 5; class 1 at 2,6,7,8,9 -> 5th is index 9
  np.testing.assert_array_equal(split_indices(labels, "test"), [5, 9])
  assert len(split_indices(labels, "train")) == 9
  with pytest.raises(DataError, match="digits split"):
    split_indices(labels, "validation")
