r"""Image score: how typical an image's chain of activation is for its class (docs/papers.md §B3).

Paper B: "Image Score: how to select useful samples" (ICLR 2019 submission,
arXiv 1812.00334), Sec. 2.2; docs/papers.md §B3 restates the garbled formula
and gives the reading used here. The reference (:math:`t_l`, :math:`M_l`) is
:mod:`hpjax.image_score.reference`.

An image assigned (predicted) to class :math:`c`:

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
On a small tap ε is not small: on a 10-unit logits tap whose class mask holds one unit
(the usual case) "recall" gives every image either 0 (it reaches the threshold there)
or :math:`\log\tfrac12 \approx -0.693` — as much as missing half of a 512-unit layer
(:math:`\log\tfrac{257}{513} \approx -0.691`; missing one of its units costs −0.0020).
That is why :func:`hpjax.image_score.intermediates.tapped_apply` leaves the logits out
by default (docs/papers.md §B3).
Comparisons are ``≥``: a value exactly at the threshold counts as active. An
image assigned to a class without reference images scores ``NaN``.

Three ways to score, with equal results (tested), all through the one blocked
kernel of this module:

* :func:`hpjax.image_score.fused.make_fused_scorer`: right behind the jitted
  forward pass; taps stay device buffers, are never copied to the host and
  never stored (:func:`score_taps` is its pure, jittable core).
* :func:`hpjax.image_score.stored.score_stored`: over taps stored as ``.npy``,
  memory-mapped and read chunk by chunk through one jitted chunk scorer (fixed
  chunk shape, so it compiles once).
* :func:`score`: over in-memory arrays (NumPy or JAX), the same chunked driver
  (:func:`score_in_chunks`).

:func:`score_numpy_loop` is the slow per-image reference implementation (the
golden oracle of the tests and the baseline of ``benchmarks/image_score.py``).

Memory-bandwidth notes (the scorer should read each activation once, at memory
speed): the counts are float32 sums of 0/1 values (exact below 2^24 units per
layer) because XLA:CPU splits integer reductions into unfused reduce-windows;
XLA:CPU still materialises the float comparison before its reduction, so rows
are scored in blocks (``lax.map``) whose intermediate stays in L2 — without the
blocks a 1024-image chunk ran several times slower. The block size is the chunking
rule's (:mod:`hpjax.core.chunking`): this L2 budget on CPU, a share of device memory
on GPU/TPU (where a batch fits in one block). The mask and the threshold are folded
into one per-class "effective threshold" (the threshold where the mask is set,
NaN elsewhere; ``x ≥ NaN`` is false), so the intersection is one compare and
count per unit. Packed bits were not needed: the stored activations are floats
and must be compared anyway.
"""
from __future__ import annotations

import concurrent.futures
import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from hpjax.core import chunking, distributed
from hpjax.image_score.reference import Reference
from hpjax.image_score.taps import (TapArrays, aligned_taps, assigned_or_zeros, open_taps,
                                    padded_chunk)

SIMILARITIES = ("recall", "jaccard", "dice")
DEFAULT_EPS = 1.0


def check_similarity(similarity: str, where: str) -> None:
  if similarity not in SIMILARITIES:
    raise ValueError(f"{where}: expected similarity in {SIMILARITIES}, got {similarity!r}")


# ----------------------------------------------------------------------------
# The blocked kernel (pure, jittable)


# CPU: float32 bytes of the per-block compare intermediate. XLA:CPU materialises the
# comparison before its (YNNPACK) reduction, so the rows are scored in blocks whose
# intermediate stays in L2 instead of making a round trip to memory. Other backends
# fuse compare and sum and size blocks from device memory (hpjax.core.chunking): a
# batch then fits in one block, and no loop is compiled.
_BLOCK_BYTES = 1 << 19


def _rows_per_block(batch: int, units: int) -> int:
  """The largest divisor of ``batch`` within the chunking rule's rows per block
  (:func:`hpjax.core.chunking.rows_per_chunk` of ``units`` float32 compares per row)."""
  target = chunking.rows_per_chunk(4 * max(units, 1), cpu_bytes=_BLOCK_BYTES)
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
  """Per-layer log-similarities ``[batch, L]`` for taps aligned with the reference.

  Under a mesh whose ``data`` axis splits the batch
  (:func:`hpjax.core.distributed.data_axis`), each device scores its own rows
  (``shard_map``): the blocks cover the local rows, the reference is replicated, and
  nothing is gathered; every term is per image, so no collective is needed at all.
  """
  fn = functools.partial(_local_layer_terms, similarity=similarity, eps=eps)
  axis = distributed.data_axis(assigned.shape[0])
  if axis is not None:
    fn = jax.shard_map(fn, in_specs=(P(), P(axis), P(axis)), out_specs=P(axis))
  return fn(reference, tuple(xs), assigned)


def _local_layer_terms(reference: Reference, xs: Sequence[jax.Array], assigned: jax.Array,
                       similarity: str, eps: float) -> jax.Array:
  """:func:`_layer_terms` on the rows at hand (one device's, or all of them)."""
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


def jitted_scorer(similarity: str, eps: float, *, per_layer: bool = False
                  ) -> Callable[..., jax.Array]:
  """The module's jitted chunk scorer ``(reference, xs, assigned) -> [chunk]`` (or
  ``[chunk, L]`` with ``per_layer``), for taps ``xs`` aligned with the reference."""
  fn = _terms_jit if per_layer else _score_jit
  return functools.partial(fn, similarity=similarity, eps=float(eps))


def score(reference: Reference, taps: TapArrays, assigned: Any = None, *,
          similarity: str = "recall", eps: float = DEFAULT_EPS, per_layer: bool = False,
          chunk_size: int = 1024) -> np.ndarray:
  r"""Image scores of in-memory activations.

  .. math::

     s_I = \sum_l \log \frac{|M_{I,l} \wedge M_l| + \varepsilon}{|M_l| + \varepsilon},
     \qquad M_{I,l} = \mathbb 1\{X_{I,l} \ge t_l\}

  Args:
    reference: from :func:`~hpjax.image_score.reference.fit_reference`.
    taps: ``{name: [N, ...]}`` containing every reference tap (extra names are
      ignored), or a sequence aligned with ``reference.names``; NumPy or JAX.
    assigned: ``[N]`` int class of each image (its prediction: the score needs
      no labels); None for a dataset-level reference.
    similarity: "recall" (docs/papers.md §B3), "jaccard" or "dice".
    eps: ε, the smoothing of the counts (see the module docstring).
    per_layer: return the per-layer terms ``[N, L]`` instead of their sum.
    chunk_size: images per jitted call (the last chunk is padded, so one compile).

  Returns:
    ``[N]`` float32 scores ≤ 0 (NaN for a class without reference images), or
    ``[N, L]`` with ``per_layer``. Inside ``jit`` use
    :func:`~hpjax.image_score.fused.make_fused_scorer`.

  References:
    docs/papers.md §B3; paper B Sec. 2.2.
  """
  check_similarity(similarity, "score")
  xs = aligned_taps(taps, reference.names, reference.tap_shapes, "score")
  a = assigned_or_zeros(reference, assigned, xs[0].shape[0], "score")
  return score_in_chunks(reference, xs, a, chunk_size,
                         jitted_scorer(similarity, eps, per_layer=per_layer), "score")


def score_in_chunks(reference: Reference, xs: tuple[Any, ...], assigned: Any, chunk_size: int,
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
    chunk = tuple(jax.device_put(padded_chunk(x, start, size)) for x in flat)
    return scorer(reference, chunk, jax.device_put(padded_chunk(a, start, size)))

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

  The building block of :func:`~hpjax.image_score.fused.make_fused_scorer`, for use
  inside one's own jitted step (e.g. scoring while training).

  Args:
    reference: from :func:`~hpjax.image_score.reference.fit_reference`.
    taps: the model's ``aux["taps"]``, ``{name: [B, ...]}`` (extra names ignored).
    logits: ``[B, C]``; with ``assigned=None`` their argmax is the assigned class.
    assigned: ``[B]`` int classes, or None (the prediction; ignored for a
      dataset-level reference).
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.

  Returns:
    ``[B]`` float32 scores.

  References:
    docs/papers.md §B3; paper B Sec. 2.2.
  """
  check_similarity(similarity, "score_taps")
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


# ----------------------------------------------------------------------------
# The oracle


def score_numpy_loop(reference: Reference, taps: TapArrays, assigned: Any = None, *,
                     similarity: str = "recall", eps: float = DEFAULT_EPS) -> np.ndarray:
  """The per-image NumPy reference implementation (slow; the tests' oracle).

  Same arguments and result as :func:`score` (taps may also be paths to ``.npy``
  files); counts in integers, logs in float64.

  References:
    docs/papers.md §B3; paper B Sec. 2.2.
  """
  check_similarity(similarity, "score_numpy_loop")
  xs = aligned_taps(open_taps(taps), reference.names, reference.tap_shapes, "score_numpy_loop")
  n = xs[0].shape[0]
  a = np.asarray(assigned_or_zeros(reference, assigned, n, "score_numpy_loop"))
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
