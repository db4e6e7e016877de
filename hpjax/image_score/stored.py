"""Taps on disk: ``.npy`` files written whole or not at all, and scored chunk by chunk
(docs/papers.md §B3).

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334), Sec. 2.2.
A directory of stored taps holds one ``<name>.npy`` per tap, ``[N, *tap_shape]``,
and the manifest ``taps.json`` (tap names in reference order, N). Every file
reaches its path through :func:`hpjax.core.io.atomic`, so a reader never sees a
partial one. :func:`score_stored` reads them memory-mapped through the blocked
kernel of :mod:`hpjax.image_score.scoring`.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from hpjax.core import io
from hpjax.image_score.reference import Reference
from hpjax.image_score.scoring import (DEFAULT_EPS, check_similarity, jitted_scorer,
                                       score_in_chunks)
from hpjax.image_score.taps import (TapArrays, aligned_taps, assigned_or_zeros, named_taps,
                                    num_images, open_taps)

MANIFEST = "taps.json"


def save_taps(directory: str | os.PathLike, taps: TapArrays) -> dict[str, Path]:
  """Writes each tap to ``directory/<name>.npy`` (temp file, then rename) and a manifest.

  Args:
    directory: created if missing.
    taps: ``{name: [N, ...]}`` or a sequence (named ``tap00``, ...).

  Returns:
    ``{name: path}`` in tap order; :func:`load_taps` reads them back.

  References:
    docs/papers.md §B3.
  """
  named = named_taps(taps, "save_taps")
  n = num_images(named, "save_taps")
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

  Each file is one :func:`hpjax.core.io.atomic` block held open while the
  batches arrive: the memory map writes the temporary file, which is renamed
  only when the block exits without an error, so a reader never sees a partial
  file; on an error the temporary files are removed.

  Args:
    directory: created if missing.
    shapes: ``{name: per-image shape}``.
    num_images: N.
    dtype: one dtype or ``{name: dtype}`` (default float32).

  References:
    docs/papers.md §B3.
  """

  def __init__(self, directory: str | os.PathLike, shapes: Mapping[str, Sequence[int]],
               num_images: int, dtype: Any = np.float32):
    self.directory = Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self.num_images = int(num_images)
    self.paths = {k: self.directory / f"{k}.npy" for k in shapes}
    dtypes = dtype if isinstance(dtype, Mapping) else {k: dtype for k in shapes}
    self._files = contextlib.ExitStack()
    self._arrays = {}
    try:
      for k in shapes:
        tmp = self._files.enter_context(io.atomic(self.paths[k], ".npy"))
        self._arrays[k] = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.dtype(dtypes[k]), shape=(self.num_images,) + tuple(shapes[k]))
    except BaseException:
      self.abort()
      raise

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
    """Flushes and renames the files into place, then writes the manifest."""
    names = list(self._arrays)
    for arr in self._arrays.values():
      arr.flush()
    self._arrays = {}
    self._files.close()  # each atomic block exits cleanly: its file is renamed into place
    io.write_json(self.directory / MANIFEST, {"names": names, "num_images": self.num_images})

  def abort(self) -> None:
    """Removes the temporary files."""
    self._arrays = {}
    # An atomic block that exits with an exception removes its temporary file.
    error = RuntimeError("TapWriter aborted")
    self._files.__exit__(type(error), error, None)

  def __enter__(self) -> TapWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def load_taps(directory: str | os.PathLike) -> dict[str, np.ndarray]:
  """Memory-maps the taps written by :func:`save_taps` (read-only), in tap order.

  References:
    docs/papers.md §B3.
  """
  directory = Path(directory)
  manifest_path = directory / MANIFEST
  if not manifest_path.exists():
    raise FileNotFoundError(f"load_taps: expected {manifest_path} (written by save_taps)")
  names = json.loads(manifest_path.read_text())["names"]
  return {k: np.load(directory / f"{k}.npy", mmap_mode="r") for k in names}


def score_stored(reference: Reference, taps: str | os.PathLike | TapArrays, assigned: Any = None,
                 *, chunk_size: int = 2048, similarity: str = "recall", eps: float = DEFAULT_EPS,
                 chunk_scorer: Callable[..., jax.Array] | None = None) -> np.ndarray:
  """Image scores of stored activations, read chunk by chunk.

  Each chunk of ``chunk_size`` images goes through one jitted chunk scorer; the
  last chunk is zero-padded to the same shape, so the scorer compiles once.
  Memory-mapped chunks whose rows start 64-byte aligned are handed to XLA
  without a copy (``jax.device_put`` aliases them on CPU), so each activation
  is read from the page cache exactly once.

  Args:
    reference: from :func:`~hpjax.image_score.reference.fit_reference`.
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

  References:
    docs/papers.md §B3.
  """
  check_similarity(similarity, "score_stored")
  taps = load_taps(taps) if isinstance(taps, (str, os.PathLike)) else open_taps(taps)
  xs = aligned_taps(taps, reference.names, reference.tap_shapes, "score_stored")
  a = assigned_or_zeros(reference, assigned, xs[0].shape[0], "score_stored")
  if chunk_scorer is None:
    chunk_scorer = jitted_scorer(similarity, eps)
  return score_in_chunks(reference, xs, a, chunk_size, chunk_scorer, "score_stored")
