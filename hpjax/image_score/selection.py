r"""Per-class sample selection for the semi-supervised loop (paper B, Sec. 3.1).

docs/papers.md §B4: the model labels the additional set; per predicted class
:math:`c` the top :math:`k_c` images by a score (image score, softmax
confidence, or a random draw) are added to the training set with their
predicted labels, where

.. math::

   k_c = \lfloor \alpha_c \cdot |I_{a,c}| \rfloor ,

:math:`I_{a,c}` being the additional images predicted as class :math:`c`. The
paper writes ":math:`\alpha_c \times l_a`" with :math:`l_a` = 20,000 (the size of
the whole additional set), which cannot be meant literally (a class has about
2,000 additional images); the project reads :math:`\alpha_c` as a fraction of
:math:`I_{a,c}`. Rounding is down (floor), so at most the stated fraction is
added. Ties are broken by the lower image index, so the selection is
deterministic. NaN scores (an image assigned to a class without reference
images) are never selected.

Presets: :data:`VGG16_FRACTIONS` and :data:`RESNET18_FRACTIONS` are the paper's
α. Classes are numbered from 0 as in the paper's tables ("Class 0" … "Class 9")
and its ResNet18 list ("c = 0...9"), so the VGG16 setting ":math:`\alpha_1` =
0.5" is class index 1 (CIFAR-10 "automobile").
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Paper B, VGG16: α_1 = 0.5 (class index 1), α_c = 0.3 for every other class
#: (docs/papers.md §B4; paper B Sec. 3.1).
VGG16_FRACTIONS: tuple[float, ...] = (0.3, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)
#: Paper B, ResNet18: α_c for c = 0..9 (docs/papers.md §B4; paper B Sec. 3.1).
RESNET18_FRACTIONS: tuple[float, ...] = (0.2, 0.3, 0.2, 0.1, 0.2, 0.2, 0.3, 0.2, 0.4, 0.2)


def selection_counts(predicted: Any, fractions: float | Sequence[float],
                     num_classes: int | None = None) -> np.ndarray:
  r"""How many images to take per predicted class, :math:`\lfloor \alpha_c |I_{a,c}| \rfloor`.

  Args:
    predicted: ``[N]`` int predicted class of each image.
    fractions: one α for every class, or ``[C]`` per-class α in [0, 1].
    num_classes: C; defaults to ``len(fractions)`` or ``max(predicted) + 1``.

  Returns:
    ``[C]`` int64 counts.

  References:
    docs/papers.md §B4; paper B Sec. 3.1.
  """
  predicted = _check_predicted(predicted, "selection_counts")
  alphas = _fractions(fractions, predicted, num_classes, "selection_counts")
  sizes = np.bincount(predicted, minlength=alphas.size)
  # The small epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from flooring to 28.
  return np.floor(alphas * sizes + 1e-9).astype(np.int64)


def select_per_class(scores: Any, predicted: Any, fractions: float | Sequence[float],
                     num_classes: int | None = None) -> np.ndarray:
  """Per predicted class, the top ``floor(α_c · |I_{a,c}|)`` images by score.

  Args:
    scores: ``[N]`` float scores (higher is better); NaN is never selected.
    predicted: ``[N]`` int predicted class of each image.
    fractions: one α for every class, or ``[C]`` per-class α in [0, 1].
    num_classes: C; defaults to ``len(fractions)`` or ``max(predicted) + 1``.

  Returns:
    ``[N]`` bool mask of the selected images (``np.flatnonzero`` gives indices).

  Example:
    >>> select_per_class([0.1, 0.5, 0.5, 0.2], [0, 0, 0, 1], 0.5).tolist()
    [False, True, False, False]

  References:
    docs/papers.md §B4; paper B Sec. 3.1.
  """
  predicted = _check_predicted(predicted, "select_per_class")
  scores = np.asarray(scores, dtype=np.float64)
  if scores.shape != predicted.shape:
    raise ValueError(f"select_per_class: expected scores of shape {predicted.shape} like "
                     f"predicted, got {scores.shape}")
  counts = selection_counts(predicted, fractions, num_classes)
  n = predicted.size
  # Sort by class, then score descending (NaN last), then index ascending.
  order = np.lexsort((np.arange(n), -scores, predicted))
  cls = predicted[order]
  starts = np.searchsorted(cls, np.arange(counts.size))
  rank = np.arange(n) - starts[cls]
  chosen = (rank < counts[cls]) & ~np.isnan(scores[order])
  mask = np.zeros((n,), bool)
  mask[order[chosen]] = True
  return mask


def select_top(scores: Any, fraction: float) -> np.ndarray:
  """The top ``floor(fraction · N)`` images by score, ignoring classes
  (docs/papers.md §B5, detection).

  Args:
    scores: ``[N]`` float scores (dataset-level reference); NaN is never selected.
    fraction: α in [0, 1] (the paper takes the top 30 % on VOC2012).

  Returns:
    ``[N]`` bool mask.

  References:
    docs/papers.md §B5; paper B Sec. 3.2.
  """
  scores = np.asarray(scores)
  return select_per_class(scores, np.zeros(scores.shape, np.int32), fraction, 1)


def softmax_confidence(logits: jax.Array) -> jax.Array:
  r"""The softmax baseline's score: :math:`\max_c \operatorname{softmax}(z)_c`.

  Args:
    logits: ``[N, C]``.

  Returns:
    ``[N]`` float32 probability of the predicted class.

  References:
    docs/papers.md §B4; paper B Sec. 3.1.
  """
  logits = jnp.asarray(logits)
  if logits.ndim != 2:
    raise ValueError(f"softmax_confidence: expected logits of rank 2 [N, classes], got shape "
                     f"{logits.shape}")
  return jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def select_random(predicted: Any, fractions: float | Sequence[float], key: jax.Array,
                  num_classes: int | None = None) -> np.ndarray:
  """Per predicted class, a uniformly random ``floor(α_c · |I_{a,c}|)`` images.

  Args:
    predicted: ``[N]`` int predicted class of each image.
    fractions: one α for every class, or ``[C]`` per-class α.
    key: a JAX PRNG key.
    num_classes: C; as in :func:`select_per_class`.

  Returns:
    ``[N]`` bool mask.

  References:
    docs/papers.md §B4; paper B Sec. 3.1.
  """
  predicted = _check_predicted(predicted, "select_random")
  scores = np.asarray(jax.random.uniform(key, predicted.shape))
  return select_per_class(scores, predicted, fractions, num_classes)


def _check_predicted(predicted: Any, where: str) -> np.ndarray:
  arr = np.asarray(predicted)
  if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{where}: expected predicted of shape [N] and integer dtype, got shape "
                     f"{arr.shape} dtype {arr.dtype}")
  if arr.size and arr.min() < 0:
    raise ValueError(f"{where}: expected predicted classes >= 0, found {arr.min()}")
  return arr.astype(np.int64)


def _fractions(fractions: Any, predicted: np.ndarray, num_classes: int | None,
               where: str) -> np.ndarray:
  arr = np.asarray(fractions, dtype=np.float64)
  top = int(predicted.max()) + 1 if predicted.size else 0
  if num_classes is None:
    num_classes = arr.size if arr.ndim == 1 else max(top, 1)
  if arr.ndim == 0:
    arr = np.full((num_classes,), float(arr))
  if arr.shape != (num_classes,):
    raise ValueError(f"{where}: expected fractions as one value or {num_classes} per-class "
                     f"values, got shape {arr.shape}")
  if top > num_classes:
    raise ValueError(f"{where}: expected predicted classes in [0, {num_classes}), found "
                     f"{top - 1}")
  if np.any(~(arr >= 0) | (arr > 1)):
    raise ValueError(f"{where}: expected fractions in [0, 1], got {arr.tolist()}")
  return arr
