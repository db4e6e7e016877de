"""scikit-learn's digits: 1,797 real 8x8 handwritten digits (UCI optdigits test set).

Pixel values 0..16 are scaled to uint8 0..255 (``round(v * 255 / 16)``).

Split (deterministic, no RNG, stratified): within each class, in the order of
``load_digits()``, every fifth example (the 5th, 10th, ...) goes to ``test``,
the rest to ``train``: 1,442 train and 355 test images, 34..36 test images per
class. The data are ordered by writer, so this also spreads writers over both.

Examples are ``{"image": uint8 [8, 8, 1], "label": int32 []}``.
"""
from __future__ import annotations

import numpy as np

from hpjax.core.errors import DataError
from hpjax.data.base import LabelledArrays

SPLITS = ("train", "test", "all")
TEST_EVERY = 5  # every 5th example (index % 5 == 4) is a test example


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
  """Sorted indices of ``split`` given all labels (see the module docstring)."""
  if split not in SPLITS:
    raise DataError(f"digits split: expected one of {list(SPLITS)}, got {split!r}")
  labels = np.asarray(labels)
  if split == "all":
    return np.arange(len(labels))
  # Rank of each example within its class, in file order.
  rank = np.zeros(len(labels), np.int64)
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    rank[members] = np.arange(len(members))
  is_test = rank % TEST_EVERY == TEST_EVERY - 1
  return np.flatnonzero(is_test if split == "test" else ~is_test)


class Digits(LabelledArrays):
  """The scikit-learn digits as a source.

  Args:
    split: ``train``, ``test`` or ``all``.
  """

  def __init__(self, split: str):
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    d = load_digits()
    images = np.asarray(d.images)
    if images.shape[1:] != (8, 8) or images.min() < 0 or images.max() > 16:
      raise DataError(f"sklearn load_digits: expected [N, 8, 8] values 0..16, found {images.shape} in {images.min()}..{images.max()}")
    keep = split_indices(d.target, split)
    self.split = split
    self.images = np.rint(images[keep] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    self.labels = np.asarray(d.target[keep], np.int32)
    self.label_names = tuple(str(i) for i in range(10))
    self.image_shape = (8, 8, 1)
