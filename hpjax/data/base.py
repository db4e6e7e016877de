"""The random-access source protocol shared by every data set in hpjax.

A *source* is what grain calls a ``RandomAccessDataSource``: ``len(source)`` and
``source[i]`` for ``0 <= i < len(source)``, returning a dict of NumPy arrays:

* ``"image"``: ``uint8 [height, width, channels]`` (pixel values 0..255; the
  pipeline converts to float32 in [0, 1] on device).
* ``"label"``: for classification ``int32 []`` (class id); for multi-attribute
  data ``int32 [num_attributes]`` with values in {0, 1}.
* optional extras (e.g. ``"regions"``: ``bool [num_attributes, height, width]``
  for the generated faces; ``"boxes"``: ``int32 [num_attributes, 4]`` regions as
  boxes for attribute tables and CelebA, :mod:`hpjax.data.regions`).

A source *may* also define ``get_batch(indices) -> dict`` returning the same keys
stacked along a new leading axis; the pipeline uses it when present (vectorised
sources such as the generated faces are far faster that way).

Sources also expose metadata used by configs and reports:

* ``label_names``: tuple of attribute names (multi-attribute) or class names.
* ``image_shape``: ``(height, width, channels)``.

:class:`ArraySource` is the generic source over in-memory arrays; :class:`LabelledArrays`
gives the source methods to a loader that holds its whole split in memory.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Source(Protocol):
  label_names: tuple[str, ...]
  image_shape: tuple[int, int, int]

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, np.ndarray]: ...


def check_index(index: int, n: int) -> int:
  """``index`` of a source of ``n`` examples as ``0 <= i < n`` (negative counts from the end), or IndexError."""
  index = int(index)
  if index < 0:
    index += n
  if not 0 <= index < n:
    raise IndexError(f"index {index} out of range for a source of {n} examples")
  return index


def get_batch(source: Any, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
  """Stacks ``source[i]`` for ``i`` in ``indices`` (or calls ``source.get_batch``)."""
  indices = np.asarray(indices, dtype=np.int64)
  if hasattr(source, "get_batch"):
    return source.get_batch(indices)
  examples = [source[int(i)] for i in indices]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class LabelledArrays:
  """Source methods for a loader holding ``images [N, H, W, C]`` and ``labels [N]`` in memory."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self.images[index].copy(), "label": np.int32(self.labels[index])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    return {"image": self.images[indices], "label": self.labels[indices]}


class ArraySource:
  """An in-memory source over rows of an image array, with its own labels.

  The rows are picked by ``index``, so subsets and unions of one array (e.g. a
  labelled set plus a pseudo-labelled selection of the same train split) share
  its pixels instead of copying them; the labels are the source's own (true
  labels for some rows, predicted ones for others).

  Args:
    images: uint8 ``[N_all, H, W, C]``.
    index: int ``[N]`` rows of ``images``.
    labels: int32 ``[N]``.
    label_names: class names.
  """

  def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray,
               label_names: tuple[str, ...]):
    self.images = images
    self.index = np.asarray(index, np.int64)
    self.labels = np.asarray(labels, np.int32)
    if self.index.shape != self.labels.shape:
      raise ValueError(f"ArraySource: expected index and labels of the same shape, got "
                       f"{self.index.shape} and {self.labels.shape}")
    self.label_names = tuple(label_names)
    self.image_shape = tuple(images.shape[1:])

  def __len__(self) -> int:
    return int(self.index.size)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {"image": self.images[self.index[i]], "label": np.int32(self.labels[i])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    return {"image": self.images[self.index[indices]], "label": self.labels[indices]}
