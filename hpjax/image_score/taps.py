"""Taps as arguments: the input checks every image-score entry point shares.

A *tap* is one block's activations (docs/papers.md §B1), ``[N, *tap_shape]`` for ``N``
images. The functions of this package take taps as a dict ``{name: array}`` or
a sequence of arrays (then named ``tap00``, ``tap01``, ...); arrays may be NumPy,
JAX, memory-mapped ``.npy`` files, or (where stated) paths to them. Each check
raises ``ValueError`` naming the calling function (``where``), what it expected
and what it found.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
  from hpjax.image_score.reference import Reference

TapArrays = Union[Mapping[str, Any], Sequence[Any]]


def open_taps(taps: TapArrays) -> TapArrays:
  """The same dict or sequence, with paths to ``.npy`` files memory-mapped read-only."""
  if isinstance(taps, Mapping):
    return {k: _open(v) for k, v in taps.items()}
  return [_open(v) for v in taps]


def _open(x: Any) -> Any:
  if isinstance(x, (str, os.PathLike)):
    return np.load(x, mmap_mode="r")
  return x


def named_taps(taps: TapArrays, where: str) -> dict[str, Any]:
  """``{name: [N, ...]}`` from a dict or a sequence (named ``tap00``, ...)."""
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


def num_images(named: Mapping[str, Any], where: str) -> int:
  """N, the same for every tap and at least 1."""
  sizes = {k: x.shape[0] for k, x in named.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"{where}: expected every tap to have the same number of images, "
                     f"got {sizes}")
  n = next(iter(sizes.values()))
  if n < 1:
    raise ValueError(f"{where}: expected at least one image, got 0")
  return n


def aligned_taps(taps: TapArrays, names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...],
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
  num_images(dict(zip(names, xs)), where)
  return xs


def check_labels(labels: Any, n: int, num_classes: int, where: str, arg: str) -> Any:
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


def assigned_or_zeros(reference: Reference, assigned: Any, n: int, where: str) -> Any:
  """The checked ``[n]`` assigned classes; zeros for a dataset-level reference."""
  if reference.class_agnostic:
    return np.zeros((n,), np.int32)
  if assigned is None:
    raise ValueError(f"{where}: expected assigned [{n}] class ids (e.g. the predictions) for a "
                     "per-class reference, got None")
  return check_labels(assigned, n, reference.num_classes, where, "assigned")


def padded_chunk(x: Any, start: int, size: int, fill: int = 0) -> Any:
  """Rows ``[start, start + size)`` of ``x``, padded with ``fill`` past the end.

  Fixed-size chunks keep jitted callers from recompiling on the last one.
  """
  chunk = x[start:start + size]
  if chunk.shape[0] == size:
    return chunk
  pad = size - chunk.shape[0]
  if isinstance(chunk, jax.Array):
    return jnp.pad(chunk, ((0, pad),) + ((0, 0),) * (chunk.ndim - 1), constant_values=fill)
  out = np.full((size,) + chunk.shape[1:], fill, dtype=chunk.dtype)
  out[:chunk.shape[0]] = chunk
  return out
