r"""The reference of image score: each class's "correct" activation mask (docs/papers.md §B2).

Paper B: "Image Score: how to select useful samples" (ICLR 2019 submission,
arXiv 1812.00334), Sec. 2.2; docs/papers.md §B2 and §B5 restate the garbled
formulas and give the readings used here.

For class :math:`c` with reference images :math:`I_c` and tap (block) :math:`l`:

.. math::

   \bar X_l = \frac{1}{|I_c|} \sum_{I \in I_c} X_{I,l}, \qquad
   t_l = \tfrac12 \max \bar X_l, \qquad
   M_l = \mathbb 1\{\bar X_l \ge t_l\}.

The paper writes the sum; the mask is the same, and the per-image comparison
(:mod:`hpjax.image_score.scoring`) only makes sense on the mean's scale. The
ratio ½ is ``threshold_ratio``. Comparisons are ``≥``: a value exactly at the
threshold counts as active.

**Class with no reference images.** :func:`fit_reference` raises by default;
with ``allow_empty_classes=True`` the class gets an empty mask, an infinite
threshold and ``counts == 0``, and images assigned to it score ``NaN`` (the
selection functions never pick NaN scores).

**Dataset-level reference** (B5, the detection setting): one mask for all
images (:func:`fit_dataset_reference`); images need no assigned class.

The reference is a streamed reduction (:class:`ReferenceAccumulator`): batches
straight from forward passes are summed per class and dropped, so memory does
not grow with the number of reference images.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hpjax.image_score.taps import (TapArrays, aligned_taps, check_labels, named_taps,
                                    num_images, padded_chunk)


@struct.dataclass
class Reference:
  """Per-class "correct" activation masks (a pytree: pass it into ``jit``).

  ``L`` taps, ``C`` classes (``C = 1`` for a dataset-level reference).

  Attributes:
    means: per tap ``[C, *tap_shape]`` float32, the class-mean activation X̄.
    thresholds: ``[C, L]`` float32, t = ratio · max(X̄) (``inf`` for an empty class).
    masks: per tap ``[C, *tap_shape]`` bool, M = X̄ ≥ t.
    mask_sizes: ``[C, L]`` float32, |M|.
    counts: ``[C]`` int32, reference images per class.
    names: tap names, aligned with the per-tap tuples (static).
    class_agnostic: one dataset-level mask; the assigned class is ignored (static).

  References:
    docs/papers.md §B2; paper B Sec. 2.2.
  """

  means: tuple[jax.Array, ...]
  thresholds: jax.Array
  masks: tuple[jax.Array, ...]
  mask_sizes: jax.Array
  counts: jax.Array
  names: tuple[str, ...] = struct.field(pytree_node=False)
  class_agnostic: bool = struct.field(pytree_node=False, default=False)

  @property
  def num_classes(self) -> int:
    return int(self.counts.shape[0])

  @property
  def tap_shapes(self) -> tuple[tuple[int, ...], ...]:
    """Per-image shape of each tap."""
    return tuple(tuple(m.shape[1:]) for m in self.masks)


@struct.dataclass
class AccumulatorState:
  """Running per-class sums of the taps.

  Attributes:
    sums: per tap ``[C, *tap_shape]`` float32.
    counts: ``[C]`` int32.
  """

  sums: tuple[jax.Array, ...]
  counts: jax.Array


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _accumulate(state: AccumulatorState, xs: tuple[jax.Array, ...], labels: jax.Array,
                num_classes: int) -> AccumulatorState:
  # Labels outside [0, C) (the padding rows, label -1) go to an extra segment
  # that is dropped.
  valid = (labels >= 0) & (labels < num_classes)
  ids = jnp.where(valid, labels, num_classes)
  sums = tuple(
      s + jax.ops.segment_sum(x.reshape(x.shape[0], -1).astype(jnp.float32), ids,
                              num_segments=num_classes + 1)[:num_classes].reshape(s.shape)
      for s, x in zip(state.sums, xs))
  counts = state.counts + jax.ops.segment_sum(
      valid.astype(jnp.int32), ids, num_segments=num_classes + 1)[:num_classes]
  return AccumulatorState(sums=sums, counts=counts)


@dataclasses.dataclass(frozen=True)
class ReferenceAccumulator:
  """Streamed reduction that builds a :class:`Reference` batch by batch.

  Batches straight from forward passes are summed per class and dropped, so
  memory does not grow with the number of reference images:

  .. code-block:: python

     acc = ReferenceAccumulator.for_taps(first_aux["taps"], num_classes=10)
     state = acc.init()
     for images, labels in batches:
       _, aux = apply(variables, images)
       state = acc.update(state, aux["taps"], labels)   # jitted
     reference = acc.finalize(state)

  ``update`` ignores rows whose label is outside ``[0, num_classes)`` (use -1
  for padding, so that a padded last batch does not recompile).

  Attributes:
    names: tap names, in the order of the reference.
    tap_shapes: per-image shape of each tap.
    num_classes: C (1 for a class-agnostic reference).
    class_agnostic: one dataset-level reference; labels may be None.

  References:
    docs/papers.md §B2; paper B Sec. 2.2.
  """

  names: tuple[str, ...]
  tap_shapes: tuple[tuple[int, ...], ...]
  num_classes: int
  class_agnostic: bool = False

  def __post_init__(self):
    if len(self.names) != len(self.tap_shapes):
      raise ValueError(f"ReferenceAccumulator: expected one shape per tap name, got "
                       f"{len(self.names)} names and {len(self.tap_shapes)} shapes")
    if self.num_classes < 1:
      raise ValueError(f"ReferenceAccumulator: expected num_classes >= 1, got {self.num_classes}")
    if self.class_agnostic and self.num_classes != 1:
      raise ValueError("ReferenceAccumulator: a class-agnostic reference has num_classes 1, "
                       f"got {self.num_classes}")

  @classmethod
  def for_taps(cls, taps: TapArrays, num_classes: int | None, *,
               class_agnostic: bool = False) -> ReferenceAccumulator:
    """An accumulator for taps shaped like ``taps`` (a batch, or ShapeDtypeStructs).

    Args:
      taps: dict ``{name: [batch, ...]}`` or a sequence of ``[batch, ...]`` arrays
        (then named ``tap00``, ``tap01``, ...).
      num_classes: C; ignored (1) when ``class_agnostic``.
      class_agnostic: build one dataset-level reference.
    """
    named = named_taps(taps, "ReferenceAccumulator.for_taps")
    return cls(names=tuple(named), tap_shapes=tuple(tuple(x.shape[1:]) for x in named.values()),
               num_classes=1 if class_agnostic else _check_num_classes(num_classes),
               class_agnostic=class_agnostic)

  def init(self) -> AccumulatorState:
    """Zero sums and counts."""
    return AccumulatorState(
        sums=tuple(jnp.zeros((self.num_classes,) + s, jnp.float32) for s in self.tap_shapes),
        counts=jnp.zeros((self.num_classes,), jnp.int32))

  def update(self, state: AccumulatorState, taps: TapArrays,
             labels: jax.Array | np.ndarray | None = None) -> AccumulatorState:
    """Adds one batch (jitted; pure, so it may also be called inside ``jit``).

    Args:
      state: the running sums.
      taps: ``{name: [batch, *tap_shape]}`` (extra names are ignored) or a
        sequence aligned with ``names``.
      labels: ``[batch]`` int class ids; None for a class-agnostic reference
        (every row counts). Rows with labels outside ``[0, C)`` are skipped.

    Returns:
      The new state.
    """
    xs = aligned_taps(taps, self.names, self.tap_shapes, "ReferenceAccumulator.update")
    batch = xs[0].shape[0]
    if labels is None:
      if not self.class_agnostic:
        raise ValueError("ReferenceAccumulator.update: labels are required for a per-class "
                         "reference, got None")
      labels = jnp.zeros((batch,), jnp.int32)
    chex.assert_shape(labels, (batch,))
    return _accumulate(state, xs, jnp.asarray(labels, jnp.int32), self.num_classes)

  def finalize(self, state: AccumulatorState, *, allow_empty_classes: bool = False,
               threshold_ratio: float = 0.5) -> Reference:
    """Means, thresholds and masks from the sums (docs/papers.md §B2).

    Args:
      state: the sums after all batches.
      allow_empty_classes: if False (default) a class without reference images
        raises; if True it gets an empty mask, an infinite threshold and
        ``counts == 0`` (its images then score NaN).
      threshold_ratio: t = ratio · max(X̄) (the paper's ½).

    Returns:
      The :class:`Reference`.
    """
    counts = np.asarray(state.counts)
    empty = np.flatnonzero(counts == 0)
    if empty.size and not allow_empty_classes:
      raise ValueError(f"fit_reference/finalize: expected at least one reference image per class, "
                       f"found "
                       f"none for classes {empty.tolist()} (pass allow_empty_classes=True to "
                       "score their images NaN)")
    return _finalize(state, threshold_ratio, self.names, self.class_agnostic)


@functools.partial(jax.jit, static_argnames=("names", "class_agnostic"))
def _finalize(state: AccumulatorState, threshold_ratio: float, names: tuple[str, ...],
              class_agnostic: bool) -> Reference:
  has_images = state.counts > 0
  denom = jnp.maximum(state.counts, 1).astype(jnp.float32)
  means, masks, thresholds = [], [], []
  for s in state.sums:
    c = s.shape[0]
    mean = s / denom.reshape((c,) + (1,) * (s.ndim - 1))
    flat = mean.reshape(c, -1)
    t = jnp.where(has_images, threshold_ratio * jnp.max(flat, axis=1), jnp.inf)
    means.append(mean)
    masks.append((flat >= t[:, None]).reshape(mean.shape))
    thresholds.append(t)
  thresholds = jnp.stack(thresholds, axis=1)
  sizes = jnp.stack([jnp.sum(m.reshape(m.shape[0], -1), axis=1, dtype=jnp.float32)
                     for m in masks], axis=1)
  return Reference(means=tuple(means), thresholds=thresholds, masks=tuple(masks),
                   mask_sizes=sizes, counts=state.counts, names=names,
                   class_agnostic=class_agnostic)


def fit_reference(taps: TapArrays, labels: Any, num_classes: int | None, *,
                  batch_size: int = 256, class_agnostic: bool = False,
                  allow_empty_classes: bool = False, threshold_ratio: float = 0.5) -> Reference:
  r"""Builds per-class reference masks from reference activations.

  .. math::

     \bar X_l = \operatorname{mean}_{I \in I_c} X_{I,l}, \quad
     t_l = \tfrac12 \max \bar X_l, \quad M_l = \mathbb 1\{\bar X_l \ge t_l\}

  Runs :class:`ReferenceAccumulator` over chunks of ``batch_size`` images (the
  last chunk padded, so ``update`` compiles once); the arrays may be NumPy
  memmaps, which are then read chunk by chunk.

  Args:
    taps: ``{name: [N, ...]}`` or a sequence of ``[N, ...]`` arrays (NumPy or JAX).
    labels: ``[N]`` int class ids in ``[0, num_classes)``; ignored (may be None)
      when ``class_agnostic``.
    num_classes: C; ignored when ``class_agnostic``.
    batch_size: images per accumulation step.
    class_agnostic: one dataset-level reference (see :func:`fit_dataset_reference`).
    allow_empty_classes: see :meth:`ReferenceAccumulator.finalize`.
    threshold_ratio: t = ratio · max(X̄).

  Returns:
    The :class:`Reference`.

  References:
    docs/papers.md §B2; paper B Sec. 2.2.
  """
  named = named_taps(taps, "fit_reference")
  n = num_images(named, "fit_reference")
  acc = ReferenceAccumulator.for_taps(named, num_classes, class_agnostic=class_agnostic)
  if class_agnostic:
    labels = np.zeros((n,), np.int32)
  else:
    labels = check_labels(labels, n, acc.num_classes, "fit_reference", "labels")
  if batch_size < 1:
    raise ValueError(f"fit_reference: expected batch_size >= 1, got {batch_size}")
  size = min(batch_size, n)
  state = acc.init()
  for start in range(0, n, size):
    xs = tuple(padded_chunk(x, start, size) for x in named.values())
    state = acc.update(state, xs, padded_chunk(labels, start, size, fill=-1))
  return acc.finalize(state, allow_empty_classes=allow_empty_classes,
                      threshold_ratio=threshold_ratio)


def fit_dataset_reference(taps: TapArrays, *, batch_size: int = 256,
                          threshold_ratio: float = 0.5) -> Reference:
  """One dataset-level reference over all images (docs/papers.md §B5, the detection setting).

  Equivalent to :func:`fit_reference` with every image in a single class; score
  with ``assigned=None``.

  References:
    docs/papers.md §B2, §B5; paper B Sec. 3.2.
  """
  return fit_reference(taps, None, None, batch_size=batch_size, class_agnostic=True,
                       threshold_ratio=threshold_ratio)


def _check_num_classes(num_classes: Any) -> int:
  if num_classes is None or int(num_classes) < 1:
    raise ValueError(f"fit_reference: expected num_classes >= 1, got {num_classes}")
  return int(num_classes)
