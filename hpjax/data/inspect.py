"""Checks a copy of a data set record by record and summarises it.

Usage::

  python -m hpjax.data.inspect FORMAT PATH

FORMAT is one of celeba, celeba_prepared, celeba_tfds, cifar10, cifar10_tfds,
idx, digits (PATH ignored, give ``-``). Every record of every split is read
(for CelebA every JPEG is decoded; for the prepared cache every file is also
checksummed), streaming, so memory stays flat. Prints counts, shapes, the
label histogram and split sizes and exits 0 for a sound copy; otherwise prints
the first problem found as one ``error: ...`` line and exits 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, TextIO

import numpy as np

from hpjax.core.cli import guarded
from hpjax.core.errors import DataError

FORMATS = ("celeba", "celeba_prepared", "celeba_tfds", "cifar10", "cifar10_tfds", "idx", "digits")
_CELEBA_SPLITS = ("train", "validation", "test")


def _openers(fmt: str, path: str) -> dict[str, Callable[[], object]]:
  """Split name -> zero-argument opener, for format ``fmt``."""
  if fmt == "celeba":
    from hpjax.data.celeba import CelebA

    return {s: (lambda s=s: CelebA(path, s, image_size=None)) for s in _CELEBA_SPLITS}
  if fmt == "celeba_prepared":
    from hpjax.data.celeba import CelebAPrepared, read_manifest

    splits = [s for s in _CELEBA_SPLITS if s in read_manifest(path)["splits"]]
    return {s: (lambda s=s: CelebAPrepared(path, s)) for s in splits}
  if fmt == "celeba_tfds":
    from hpjax.data.tfds_sources import CelebATfds

    return {s: (lambda s=s: CelebATfds(path, s, image_size=None)) for s in _CELEBA_SPLITS}
  if fmt == "cifar10":
    from hpjax.data.cifar10 import Cifar10

    return {s: (lambda s=s: Cifar10(path, s)) for s in ("train", "test")}
  if fmt == "cifar10_tfds":
    from hpjax.data.tfds_sources import Cifar10Tfds

    return {s: (lambda s=s: Cifar10Tfds(path, s)) for s in ("train", "test")}
  if fmt == "idx":
    from hpjax.data.idx import MNIST_CLASSES, open_idx_split

    return {s: (lambda s=s: open_idx_split(path, s, MNIST_CLASSES)) for s in ("train", "test")}
  if fmt == "digits":
    from hpjax.data.digits import Digits

    return {s: (lambda s=s: Digits(s)) for s in ("train", "test")}
  raise DataError(f"inspect FORMAT: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def inspect_source(src, name: str, chunk: int = 512) -> dict:
  """Reads every record of ``src``, checking shapes and dtypes, and summarises.

  Args:
    src: a source (see :mod:`hpjax.data.base`).
    name: what to call it in errors (e.g. ``cifar10/train``).
    chunk: records per read when the source has ``get_batch``.

  Returns:
    ``{"count", "image_shape", "label_shape", "histogram"}`` where the histogram
    counts examples per class (classification) or positives per attribute.

  Raises:
    DataError: the first bad record.
  """
  n = len(src)
  if n == 0:
    raise DataError(f"{name}: expected at least one example, found none")
  shape = tuple(src.image_shape)
  k = len(src.label_names)
  hist = np.zeros(k, np.int64)
  label_shape = None
  for start in range(0, n, chunk):
    idx = np.arange(start, min(start + chunk, n))
    if hasattr(src, "get_batch"):
      batch = src.get_batch(idx)
      images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
    else:  # one at a time: for raw CelebA this is where every JPEG is decoded
      exs = [src[int(i)] for i in idx]
      images = np.stack([e["image"] for e in exs])
      labels = np.stack([np.asarray(e["label"]) for e in exs])
    if images.dtype != np.uint8 or images.shape[1:] != shape:
      raise DataError(f"{name} records {start}..{idx[-1]}: expected uint8 images {shape}, found {images.dtype} {images.shape[1:]}")
    label_shape = labels.shape[1:]
    if labels.ndim == 1:
      if labels.min() < 0 or labels.max() >= k:
        raise DataError(f"{name} records {start}..{idx[-1]}: expected labels 0..{k - 1}, found {labels.min()}..{labels.max()}")
      hist += np.bincount(labels, minlength=k)
    else:
      if labels.shape[1:] != (k,) or not np.isin(labels, (0, 1)).all():
        raise DataError(f"{name} records {start}..{idx[-1]}: expected {k} attribute values in {{0, 1}}, found shape {labels.shape[1:]}")
      hist += labels.sum(0)
  return {"count": n, "image_shape": shape, "label_shape": label_shape, "histogram": hist}


def run(fmt: str, path: str, out: TextIO | None = None) -> dict[str, dict]:
  """Inspects every split of ``path`` in format ``fmt``, printing a summary to ``out`` (stdout)."""
  out = out or sys.stdout
  openers = _openers(fmt, path)
  print(f"{fmt} at {path}", file=out)
  results = {}
  t0 = time.time()
  for split, opener in openers.items():
    src = opener()
    if fmt == "celeba_prepared":
      src.verify()
    r = inspect_source(src, f"{path} {split}")
    results[split] = r
    print(f"  {split}: {r['count']} examples, image uint8 {r['image_shape']}, label int32 {r['label_shape']}", file=out)
    what = "examples per class" if r["label_shape"] == () else "positives per attribute"
    pairs = ", ".join(f"{nm} {c}" for nm, c in zip(src.label_names, r["histogram"].tolist()))
    print(f"    {what}: {pairs}", file=out)
  sizes = " / ".join(f"{s} {r['count']}" for s, r in results.items())
  total = sum(r["count"] for r in results.values())
  print(f"  split sizes: {sizes} (total {total}); every record read in {time.time() - t0:.1f} s: sound", file=out)
  return results


@guarded
def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m hpjax.data.inspect", description=__doc__.split("\n")[0])
  p.add_argument("format", choices=FORMATS)
  p.add_argument("path", help="data location (see docs/data.md); '-' for digits")
  args = p.parse_args(argv)
  run(args.format, args.path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
