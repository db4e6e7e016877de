r"""Image score: how typical an image's chain of activation is for its class.

Paper B: "Image Score: how to select useful samples" (ICLR 2019 submission,
arXiv 1812.00334), Sec. 2.2; ``shared/SPEC.md`` B2, B3 and B5 restate the
garbled formulas and give the readings used here.

**Reference** (B2). For class :math:`c` with reference images :math:`I_c` and
tap (block) :math:`l`:

.. math::

   \bar X_l = \frac{1}{|I_c|} \sum_{I \in I_c} X_{I,l}, \qquad
   t_l = \tfrac12 \max \bar X_l, \qquad
   M_l = \mathbb 1\{\bar X_l \ge t_l\}.

The paper writes the sum; the mask is the same, and the per-image comparison
below only makes sense on the mean's scale. The ratio ½ is ``threshold_ratio``.

**Score** (B3). An image assigned (predicted) to class :math:`c`:

.. math::

   M_{I,l} = \mathbb 1\{X_{I,l} \ge t_l\}, \qquad
   s_I = \sum_l \log \frac{|M_{I,l} \wedge M_l| + \varepsilon}{|M_l| + \varepsilon}
   \quad \text{("recall")},

with the alternatives "jaccard", :math:`\log\frac{|\wedge| + \varepsilon}
{|M_{I,l} \vee M_l| + \varepsilon}`, and "dice", :math:`\log\frac{2|\wedge| +
\varepsilon}{|M_{I,l}| + |M_l| + \varepsilon}`, summed over layers the same way.
Scores are ≤ 0; 0 means the image activates every commonly active unit.

**ε** (``eps``, default :data:`DEFAULT_EPS` = 1): add-one smoothing of the
counts. A layer where the image hits none of the class's units then costs
:math:`\log(1/(|M_l|+1))` instead of :math:`-\infty` (or, with a tiny ε, a
penalty of ~-14 that would swamp every other layer); for masks of hundreds of
units the ratio moves by less than :math:`1/|M_l|`. An empty class mask
(:math:`|M_l| = 0`, e.g. a logits tap whose mean is negative everywhere) gives
:math:`\log(\varepsilon/\varepsilon) = 0` for "recall", i.e. the layer is
ignored; "jaccard" and "dice" then penalise the image's own active units.
Comparisons are ``≥``: a value exactly at the threshold counts as active.

**Class with no reference images.** :func:`fit_reference` raises by default;
with ``allow_empty_classes=True`` the class gets an empty mask, an infinite
threshold and ``counts == 0``, and images assigned to it score ``NaN`` (the
selection functions never pick NaN scores).

**Dataset-level reference** (B5, the detection setting): one mask for all
images (:func:`fit_dataset_reference`); images need no assigned class.

Three ways to score, with equal results (tested):

* :func:`make_fused_scorer`: right behind the jitted forward pass; taps stay
  device buffers, are never copied to the host and never stored
  (:func:`score_taps` is its pure, jittable core).
* :func:`score_stored`: over taps stored as ``.npy`` (:func:`save_taps`,
  :class:`TapWriter`), memory-mapped and read chunk by chunk through one jitted
  chunk scorer (fixed chunk shape, so it compiles once).
* :func:`score`: over in-memory arrays (NumPy or JAX), the same chunked driver.

:func:`score_numpy_loop` is the slow per-image reference implementation (the
golden oracle of the tests and the baseline of ``benchmarks/image_score.py``).

Memory-bandwidth notes (the scorer should read each activation once, at memory
speed): the counts are float32 sums of 0/1 values (exact below 2^24 units per
layer) because XLA:CPU splits integer reductions into unfused reduce-windows;
XLA:CPU still materialises the float comparison before its reduction, so rows
are scored in blocks (``lax.map``) whose intermediate stays in L2 — without the
blocks a 1024-image chunk ran 3–4× slower. The mask and the threshold are folded
into one per-class "effective threshold" (the threshold where the mask is set,
NaN elsewhere; ``x ≥ NaN`` is false), so the intersection is one compare and
count per unit. Packed bits were not needed: the stored activations are floats
and must be compared anyway.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SIMILARITIES = ("recall", "jaccard", "dice")
DEFAULT_EPS = 1.0
MANIFEST = "taps.json"

TapArrays = Union[Mapping[str, Any], Sequence[Any]]


# ----------------------------------------------------------------------------
# Reference


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
    named = _named_taps(taps, "ReferenceAccumulator.for_taps")
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
    xs = _aligned_taps(taps, self.names, self.tap_shapes, "ReferenceAccumulator.update")
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
    """Means, thresholds and masks from the sums (SPEC B2).

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
  r"""Builds per-class reference masks from reference activations (SPEC B2).

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
  """
  named = _named_taps(taps, "fit_reference")
  n = _num_images(named, "fit_reference")
  acc = ReferenceAccumulator.for_taps(named, num_classes, class_agnostic=class_agnostic)
  if class_agnostic:
    labels = np.zeros((n,), np.int32)
  else:
    labels = _check_labels(labels, n, acc.num_classes, "fit_reference", "labels")
  if batch_size < 1:
    raise ValueError(f"fit_reference: expected batch_size >= 1, got {batch_size}")
  size = min(batch_size, n)
  state = acc.init()
  for start in range(0, n, size):
    xs = tuple(_padded_chunk(x, start, size) for x in named.values())
    state = acc.update(state, xs, _padded_chunk(labels, start, size, fill=-1))
  return acc.finalize(state, allow_empty_classes=allow_empty_classes,
                      threshold_ratio=threshold_ratio)


def fit_dataset_reference(taps: TapArrays, *, batch_size: int = 256,
                          threshold_ratio: float = 0.5) -> Reference:
  """One dataset-level reference over all images (SPEC B5, the detection setting).

  Equivalent to :func:`fit_reference` with every image in a single class; score
  with ``assigned=None``.
  """
  return fit_reference(taps, None, None, batch_size=batch_size, class_agnostic=True,
                       threshold_ratio=threshold_ratio)


# ----------------------------------------------------------------------------
# Scoring core (pure, jittable)


# Float32 bytes of the per-block compare intermediate: XLA:CPU materialises the
# comparison before its (YNNPACK) reduction, so the rows are scored in blocks
# whose intermediate stays in L2 instead of making a round trip to memory.
_BLOCK_BYTES = 1 << 19


def _rows_per_block(batch: int, units: int) -> int:
  """The largest divisor of ``batch`` whose block stays within _BLOCK_BYTES."""
  target = max(1, _BLOCK_BYTES // (4 * max(units, 1)))
  if target >= batch:
    return batch
  return next(r for r in range(target, 0, -1) if batch % r == 0)


def _tap_counts(x: jax.Array, t_eff: jax.Array, t: jax.Array, assigned: jax.Array,
                need_size: bool) -> tuple[jax.Array, jax.Array | None]:
  """``|M_I ∧ M|`` and (if needed) ``|M_I|`` as float32 ``[batch]`` for one tap ``x [batch, D]``."""
  batch, units = x.shape

  def counts(xb, ab):
    inter = jnp.sum((xb >= t_eff[ab]).astype(jnp.float32), axis=1)
    size = jnp.sum((xb >= t[ab][:, None]).astype(jnp.float32), axis=1) if need_size else None
    return inter, size

  rows = _rows_per_block(batch, units)
  if rows == batch:
    return counts(x, assigned)
  blocks = (x.reshape(batch // rows, rows, units), assigned.reshape(batch // rows, rows))
  out = jax.lax.map(lambda args: counts(*args), blocks)
  return jax.tree.map(lambda r: r.reshape(batch), out)


def _layer_terms(reference: Reference, xs: Sequence[jax.Array], assigned: jax.Array,
                 similarity: str, eps: float) -> jax.Array:
  """Per-layer log-similarities ``[batch, L]`` for taps aligned with the reference."""
  terms = []
  for l, (x, mask) in enumerate(zip(xs, reference.masks)):
    c = mask.shape[0]
    t = reference.thresholds[:, l]
    # Mask folded into the threshold: NaN where the unit is not in M (x >= NaN is false).
    t_eff = jnp.where(mask.reshape(c, -1), t[:, None], jnp.nan)
    inter, size_i = _tap_counts(x.reshape(x.shape[0], -1), t_eff, t, assigned,
                                need_size=similarity != "recall")
    size_m = reference.mask_sizes[assigned, l]
    if similarity == "recall":
      num, den = inter, size_m
    elif similarity == "jaccard":
      num, den = inter, size_i + size_m - inter
    else:
      num, den = 2.0 * inter, size_i + size_m
    terms.append(jnp.log(num + eps) - jnp.log(den + eps))
  terms = jnp.stack(terms, axis=1)
  return jnp.where((reference.counts[assigned] > 0)[:, None], terms, jnp.nan)


def _score_arrays(reference: Reference, xs: tuple[jax.Array, ...], assigned: jax.Array, *,
                  similarity: str, eps: float) -> jax.Array:
  """Scores ``[batch]`` for taps aligned with ``reference.names``."""
  return jnp.sum(_layer_terms(reference, xs, assigned, similarity, eps), axis=1)


_score_jit = jax.jit(_score_arrays, static_argnames=("similarity", "eps"))
_terms_jit = jax.jit(_layer_terms, static_argnames=("similarity", "eps"))


def score(reference: Reference, taps: TapArrays, assigned: Any = None, *,
          similarity: str = "recall", eps: float = DEFAULT_EPS, per_layer: bool = False,
          chunk_size: int = 1024) -> np.ndarray:
  r"""Image scores of in-memory activations (SPEC B3).

  .. math::

     s_I = \sum_l \log \frac{|M_{I,l} \wedge M_l| + \varepsilon}{|M_l| + \varepsilon},
     \qquad M_{I,l} = \mathbb 1\{X_{I,l} \ge t_l\}

  Args:
    reference: from :func:`fit_reference`.
    taps: ``{name: [N, ...]}`` containing every reference tap (extra names are
      ignored), or a sequence aligned with ``reference.names``; NumPy or JAX.
    assigned: ``[N]`` int class of each image (its prediction: the score needs
      no labels); None for a dataset-level reference.
    similarity: "recall" (SPEC B3), "jaccard" or "dice".
    eps: ε, the smoothing of the counts (see the module docstring).
    per_layer: return the per-layer terms ``[N, L]`` instead of their sum.
    chunk_size: images per jitted call (the last chunk is padded, so one compile).

  Returns:
    ``[N]`` float32 scores ≤ 0 (NaN for a class without reference images), or
    ``[N, L]`` with ``per_layer``. Inside ``jit`` use :func:`make_fused_scorer`.
  """
  _check_similarity(similarity, "score")
  xs = _aligned_taps(taps, reference.names, reference.tap_shapes, "score")
  a = _assigned_or_zeros(reference, assigned, xs[0].shape[0], "score")
  fn = _terms_jit if per_layer else _score_jit
  return _score_in_chunks(reference, xs, a, chunk_size,
                          functools.partial(fn, similarity=similarity, eps=float(eps)), "score")


def _score_in_chunks(reference: Reference, xs: tuple[Any, ...], assigned: Any, chunk_size: int,
                     scorer: Callable[..., jax.Array], where: str) -> np.ndarray:
  """Runs ``scorer`` over fixed-size chunks (the last one zero-padded) and concatenates.

  On CPU the chunks are scored by one thread per core (at most 4): XLA runs each
  chunk's reduction on one core, and a read-bound reduction gains from a second core's
  memory stream (benchmarks/NOTES.md). Each thread holds one chunk, so memory stays
  bounded; the first chunk runs alone, so the scorer is traced once.
  """
  if chunk_size < 1:
    raise ValueError(f"{where}: expected chunk_size >= 1, got {chunk_size}")
  n = xs[0].shape[0]
  flat = [x.reshape(n, -1) for x in xs]
  a = np.asarray(assigned)
  size = min(chunk_size, n)
  reference = jax.device_put(reference)

  def one(start: int) -> jax.Array:  # dispatched asynchronously
    chunk = tuple(jax.device_put(_padded_chunk(x, start, size)) for x in flat)
    return scorer(reference, chunk, jax.device_put(_padded_chunk(a, start, size)))

  starts = range(0, n, size)
  out = [np.asarray(one(starts[0]))]
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = min(cores or 1, 4) if jax.default_backend() == "cpu" else 1
  if threads > 1 and len(starts) > 1:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      out += list(pool.map(lambda s: np.asarray(one(s)), starts[1:]))
  else:  # accelerators: async dispatch already overlaps transfers with compute
    out += [one(s) for s in starts[1:]]
  return np.concatenate([np.asarray(o) for o in out])[:n]


def score_taps(reference: Reference, taps: Mapping[str, jax.Array], logits: jax.Array,
               assigned: jax.Array | None = None, *, similarity: str = "recall",
               eps: float = DEFAULT_EPS) -> jax.Array:
  """Image scores of one batch of a model's taps; pure and jittable.

  The building block of :func:`make_fused_scorer`, for use inside one's own
  jitted step (e.g. scoring while training).

  Args:
    reference: from :func:`fit_reference`.
    taps: the model's ``aux["taps"]``, ``{name: [B, ...]}`` (extra names ignored).
    logits: ``[B, C]``; with ``assigned=None`` their argmax is the assigned class.
    assigned: ``[B]`` int classes, or None (the prediction; ignored for a
      dataset-level reference).
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.

  Returns:
    ``[B]`` float32 scores.
  """
  _check_similarity(similarity, "score_taps")
  missing = [n for n in reference.names if n not in taps]
  if missing:
    raise ValueError(f"score_taps: expected the model's taps to include {missing}, found "
                     f"{sorted(taps)}")
  if reference.class_agnostic:
    assigned = jnp.zeros(logits.shape[:1], jnp.int32)
  elif assigned is None:
    assigned = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  xs = tuple(taps[n] for n in reference.names)
  return _score_arrays(reference, xs, assigned, similarity=similarity, eps=float(eps))


def make_fused_scorer(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
                      reference: Reference, *, similarity: str = "recall",
                      eps: float = DEFAULT_EPS,
                      single_program: bool = False) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Forward pass and image score with the taps kept on the device, never stored.

  By default the forward pass and the score are two jitted programs dispatched
  back to back: the taps pass between them as device buffers (never copied to
  the host, never written anywhere) and are freed once scored. Measured on CPU
  (``benchmarks/image_score.py``), one program holding both ran 1.2–1.45× the
  plain forward (XLA re-fuses the forward around the score and loses its
  whole-network fusions), two programs 1.0–1.1× (ResNet18 at width ¼) and
  ~1.2× (SmallCNN, whose forward is barely more work than reading its taps).
  ``single_program=True`` gives the one-program form.

  Args:
    apply_fn: ``apply_fn(variables, images) -> (logits [B, C], {"taps": {...}})``,
      e.g. ``functools.partial(model.apply, train=False)``.
    reference: from :func:`fit_reference`; its tap names must be among the model's.
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.
    single_program: jit forward and score together.

  Returns:
    ``fn(variables, images, assigned=None) -> (logits [B, C], scores [B])``;
    with ``assigned=None`` images are scored against their predicted class
    (argmax of the logits), or the dataset-level mask.
  """
  _check_similarity(similarity, "make_fused_scorer")
  score_fn = functools.partial(score_taps, similarity=similarity, eps=float(eps))
  if single_program:
    @jax.jit
    def run(variables, reference, images, assigned):
      logits, aux = apply_fn(variables, images)
      return logits, score_fn(reference, aux["taps"], logits, assigned)
  else:
    forward = jax.jit(apply_fn)
    scorer = jax.jit(score_fn)

    def run(variables, reference, images, assigned):
      logits, aux = forward(variables, images)
      return logits, scorer(reference, aux["taps"], logits, assigned)

  def fn(variables: Any, images: jax.Array, assigned: Any = None):
    chex.assert_rank(images, 4)
    if assigned is not None:
      assigned = _check_labels(assigned, images.shape[0], reference.num_classes,
                               "fused scorer", "assigned")
    return run(variables, reference, images, assigned)

  return fn


# ----------------------------------------------------------------------------
# Stored activations


def save_taps(directory: str | os.PathLike, taps: TapArrays) -> dict[str, Path]:
  """Writes each tap to ``directory/<name>.npy`` (temp file, then rename) and a manifest.

  Args:
    directory: created if missing.
    taps: ``{name: [N, ...]}`` or a sequence (named ``tap00``, ...).

  Returns:
    ``{name: path}`` in tap order; :func:`load_taps` reads them back.
  """
  named = _named_taps(taps, "save_taps")
  n = _num_images(named, "save_taps")
  with TapWriter(directory, {k: v.shape[1:] for k, v in named.items()}, n,
                 dtype={k: np.dtype(v.dtype) for k, v in named.items()}) as writer:
    writer.write(0, named)
  return writer.paths


class TapWriter:
  """Streams batches of taps into ``.npy`` files (memory-mapped), renamed on close.

  .. code-block:: python

     with TapWriter(path, {k: v.shape[1:] for k, v in taps.items()}, n) as w:
       for start, batch in ...:
         w.write(start, aux["taps"])

  The files are written under temporary names and renamed only when the block
  exits without an error, so a reader never sees a partial file.

  Args:
    directory: created if missing.
    shapes: ``{name: per-image shape}``.
    num_images: N.
    dtype: one dtype or ``{name: dtype}`` (default float32).
  """

  def __init__(self, directory: str | os.PathLike, shapes: Mapping[str, Sequence[int]],
               num_images: int, dtype: Any = np.float32):
    self.directory = Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self.num_images = int(num_images)
    self.paths = {k: self.directory / f"{k}.npy" for k in shapes}
    self._tmp = {k: self.directory / f".{k}.npy.tmp{os.getpid()}" for k in shapes}
    dtypes = dtype if isinstance(dtype, Mapping) else {k: dtype for k in shapes}
    self._arrays = {
        k: np.lib.format.open_memmap(self._tmp[k], mode="w+", dtype=np.dtype(dtypes[k]),
                                     shape=(self.num_images,) + tuple(shapes[k]))
        for k in shapes}

  def write(self, start: int, taps: Mapping[str, Any]) -> None:
    """Writes rows ``[start, start + batch)`` of every tap."""
    for k, arr in self._arrays.items():
      if k not in taps:
        raise ValueError(f"TapWriter.write: expected tap {k!r}, found {sorted(taps)}")
      x = np.asarray(taps[k])
      if x.shape[1:] != arr.shape[1:] or start < 0 or start + x.shape[0] > arr.shape[0]:
        raise ValueError(f"TapWriter.write: tap {k!r} expected rows of shape {arr.shape[1:]} "
                         f"within [0, {arr.shape[0]}), got shape {x.shape} at row {start}")
      arr[start:start + x.shape[0]] = x

  def close(self) -> None:
    """Flushes and renames the files into place."""
    for k, arr in self._arrays.items():
      arr.flush()
      os.replace(self._tmp[k], self.paths[k])
    manifest = {"names": list(self._arrays), "num_images": self.num_images}
    tmp = self.directory / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, self.directory / MANIFEST)
    self._arrays = {}

  def abort(self) -> None:
    """Removes the temporary files."""
    self._arrays = {}
    for p in self._tmp.values():
      p.unlink(missing_ok=True)

  def __enter__(self) -> TapWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def load_taps(directory: str | os.PathLike) -> dict[str, np.ndarray]:
  """Memory-maps the taps written by :func:`save_taps` (read-only), in tap order."""
  directory = Path(directory)
  manifest_path = directory / MANIFEST
  if not manifest_path.exists():
    raise FileNotFoundError(f"load_taps: expected {manifest_path} (written by save_taps)")
  names = json.loads(manifest_path.read_text())["names"]
  return {k: np.load(directory / f"{k}.npy", mmap_mode="r") for k in names}


def score_stored(reference: Reference, taps: str | os.PathLike | TapArrays, assigned: Any = None,
                 *, chunk_size: int = 2048, similarity: str = "recall", eps: float = DEFAULT_EPS,
                 chunk_scorer: Callable[..., jax.Array] | None = None) -> np.ndarray:
  """Image scores of stored activations, read chunk by chunk (SPEC B3).

  Each chunk of ``chunk_size`` images goes through one jitted chunk scorer; the
  last chunk is zero-padded to the same shape, so the scorer compiles once.
  Memory-mapped chunks whose rows start 64-byte aligned are handed to XLA
  without a copy (``jax.device_put`` aliases them on CPU), so each activation
  is read from the page cache exactly once.

  Args:
    reference: from :func:`fit_reference`.
    taps: a directory written by :func:`save_taps`; or ``{name: path or array}``
      (paths are memory-mapped ``.npy`` files); or a sequence aligned with
      ``reference.names``. Each is ``[N, *tap_shape]``.
    assigned: ``[N]`` int class of each image; None for a dataset-level reference.
    chunk_size: images per chunk (one scorer call; rows are scored in cache-sized
      blocks inside it, so larger chunks only save dispatch overhead; on CPU one
      chunk per core is in flight).
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.
    chunk_scorer: a jitted ``(reference, xs, assigned) -> [chunk]`` to use
      instead of the module's (tests wrap it in ``chex.assert_max_traces``).

  Returns:
    ``[N]`` float32 NumPy scores.
  """
  _check_similarity(similarity, "score_stored")
  if isinstance(taps, (str, os.PathLike)):
    taps = load_taps(taps)
  elif isinstance(taps, Mapping):
    taps = {k: _open(v) for k, v in taps.items()}
  else:
    taps = [_open(v) for v in taps]
  xs = _aligned_taps(taps, reference.names, reference.tap_shapes, "score_stored")
  a = _assigned_or_zeros(reference, assigned, xs[0].shape[0], "score_stored")
  if chunk_scorer is None:
    chunk_scorer = functools.partial(_score_jit, similarity=similarity, eps=float(eps))
  return _score_in_chunks(reference, xs, a, chunk_size, chunk_scorer, "score_stored")


def score_numpy_loop(reference: Reference, taps: TapArrays, assigned: Any = None, *,
                     similarity: str = "recall", eps: float = DEFAULT_EPS) -> np.ndarray:
  """The per-image NumPy reference implementation (slow; the tests' oracle).

  Same arguments and result as :func:`score`; counts in integers, logs in float64.
  """
  _check_similarity(similarity, "score_numpy_loop")
  if isinstance(taps, Mapping):
    taps = {k: _open(v) for k, v in taps.items()}
  else:
    taps = [_open(v) for v in taps]
  xs = _aligned_taps(taps, reference.names, reference.tap_shapes, "score_numpy_loop")
  n = xs[0].shape[0]
  a = np.asarray(_assigned_or_zeros(reference, assigned, n, "score_numpy_loop"))
  thresholds = np.asarray(reference.thresholds)
  masks = [np.asarray(m).reshape(m.shape[0], -1) for m in reference.masks]
  counts = np.asarray(reference.counts)
  out = np.empty((n,), np.float64)
  for i in range(n):
    c = a[i]
    if counts[c] == 0:
      out[i] = np.nan
      continue
    s = 0.0
    for l, x in enumerate(xs):
      active = np.asarray(x[i]).reshape(-1) >= thresholds[c, l]
      inter = np.count_nonzero(active & masks[l][c])
      size_i, size_m = np.count_nonzero(active), np.count_nonzero(masks[l][c])
      if similarity == "recall":
        s += math.log((inter + eps) / (size_m + eps))
      elif similarity == "jaccard":
        s += math.log((inter + eps) / (size_i + size_m - inter + eps))
      else:
        s += math.log((2 * inter + eps) / (size_i + size_m + eps))
    out[i] = s
  return out.astype(np.float32)


# ----------------------------------------------------------------------------
# Helpers


def _open(x: Any) -> Any:
  if isinstance(x, (str, os.PathLike)):
    return np.load(x, mmap_mode="r")
  return x


def _named_taps(taps: TapArrays, where: str) -> dict[str, Any]:
  if isinstance(taps, Mapping):
    named = dict(taps)
  elif isinstance(taps, Sequence) and not isinstance(taps, (str, bytes)):
    named = {f"tap{i:02d}": x for i, x in enumerate(taps)}
  else:
    raise ValueError(f"{where}: expected taps as a dict {{name: [N, ...]}} or a sequence of "
                     f"arrays, got {type(taps).__name__}")
  if not named:
    raise ValueError(f"{where}: expected at least one tap, got none")
  for k, x in named.items():
    if len(getattr(x, "shape", ())) < 1:
      raise ValueError(f"{where}: expected tap {k!r} of shape [N, ...], got "
                       f"{getattr(x, 'shape', type(x).__name__)}")
  return named


def _num_images(named: Mapping[str, Any], where: str) -> int:
  sizes = {k: x.shape[0] for k, x in named.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"{where}: expected every tap to have the same number of images, "
                     f"got {sizes}")
  n = next(iter(sizes.values()))
  if n < 1:
    raise ValueError(f"{where}: expected at least one image, got 0")
  return n


def _aligned_taps(taps: TapArrays, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...],
                  where: str) -> tuple[Any, ...]:
  """The taps in reference order, shapes checked against the reference."""
  if isinstance(taps, Mapping):
    missing = [k for k in names if k not in taps]
    if missing:
      raise ValueError(f"{where}: expected taps {missing} of the reference, found "
                       f"{sorted(taps)}")
    xs = tuple(taps[k] for k in names)
  else:
    xs = tuple(taps)
    if len(xs) != len(names):
      raise ValueError(f"{where}: expected {len(names)} taps aligned with {list(names)}, "
                       f"got {len(xs)}")
  for k, x, s in zip(names, xs, shapes):
    if tuple(x.shape[1:]) != tuple(s):
      raise ValueError(f"{where}: tap {k!r} expected shape [N, {', '.join(map(str, s))}], "
                       f"got {tuple(x.shape)}")
  _num_images(dict(zip(names, xs)), where)
  return xs


def _check_num_classes(num_classes: Any) -> int:
  if num_classes is None or int(num_classes) < 1:
    raise ValueError(f"fit_reference: expected num_classes >= 1, got {num_classes}")
  return int(num_classes)


def _check_labels(labels: Any, n: int, num_classes: int, where: str, arg: str) -> Any:
  """Checks ``[n]`` ints in ``[0, num_classes)`` (skipped for traced values)."""
  if isinstance(labels, jax.core.Tracer):
    chex.assert_shape(labels, (n,))
    return labels
  if labels is None:
    raise ValueError(f"{where}: expected {arg} [{n}] class ids, got None")
  arr = np.asarray(labels)
  if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{where}: expected {arg} of shape ({n},) and integer dtype, got "
                     f"shape {arr.shape} dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
    raise ValueError(f"{where}: expected {arg} in [0, {num_classes}), found values in "
                     f"[{arr.min()}, {arr.max()}]")
  return arr.astype(np.int32)


def _assigned_or_zeros(reference: Reference, assigned: Any, n: int, where: str) -> Any:
  if reference.class_agnostic:
    return np.zeros((n,), np.int32)
  if assigned is None:
    raise ValueError(f"{where}: expected assigned [{n}] class ids (e.g. the predictions) for a "
                     "per-class reference, got None")
  return _check_labels(assigned, n, reference.num_classes, where, "assigned")


def _check_similarity(similarity: str, where: str) -> None:
  if similarity not in SIMILARITIES:
    raise ValueError(f"{where}: expected similarity in {SIMILARITIES}, got {similarity!r}")


def _padded_chunk(x: Any, start: int, size: int, fill: int = 0) -> Any:
  """Rows ``[start, start + size)`` of ``x``, padded with ``fill`` past the end."""
  chunk = x[start:start + size]
  if chunk.shape[0] == size:
    return chunk
  pad = size - chunk.shape[0]
  if isinstance(chunk, jax.Array):
    return jnp.pad(chunk, ((0, pad),) + ((0, 0),) * (chunk.ndim - 1), constant_values=fill)
  out = np.full((size,) + chunk.shape[1:], fill, dtype=chunk.dtype)
  out[:chunk.shape[0]] = chunk
  return out
