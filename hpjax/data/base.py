"""The random-access source protocol shared by every data set in hpjax.

A *source* is what grain calls a ``RandomAccessDataSource``: ``len(source)`` and
``source[i]`` for ``0 <= i < len(source)``, returning a dict of NumPy arrays:

* ``"image"``: ``uint8 [height, width, channels]`` (pixel values 0..255; the
  pipeline converts to float32 in [0, 1] on device).
* ``"label"``: for classification ``int32 []`` (class id); for multi-attribute
  data ``int32 [num_attributes]`` with values in {0, 1}.
* optional extras (e.g. ``"regions"``: ``bool [num_attributes, height, width]``
  for the generated faces).

A source *may* also define ``get_batch(indices) -> dict`` returning the same keys
stacked along a new leading axis; the pipeline uses it when present (vectorised
sources such as the generated faces are far faster that way).

Sources also expose metadata used by configs and reports:

* ``label_names``: tuple of attribute names (multi-attribute) or class names.
* ``image_shape``: ``(height, width, channels)``.
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


def get_batch(source: Any, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
  """Stacks ``source[i]`` for ``i`` in ``indices`` (or calls ``source.get_batch``)."""
  indices = np.asarray(indices, dtype=np.int64)
  if hasattr(source, "get_batch"):
    return source.get_batch(indices)
  examples = [source[int(i)] for i in indices]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
