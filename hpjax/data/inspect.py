"""Checks a copy of a data set record by record and summarises it.

Usage::

  python -m hpjax.data.inspect FORMAT PATH [--image-size S]

FORMAT is one of celeba, celeba_prepared, celeba_tfds, cifar10, cifar10_tfds,
idx, digits (PATH ignored, give ``-``), image_folder, attribute_table, prepared
(any cache of :mod:`hpjax.data.prepare`). Every record of every split is read (for
CelebA, image folders and attribute tables every image is decoded; for a prepared
cache every file is also checksummed), streaming, so memory stays flat. Prints
counts, shapes, the label histogram (examples per class, or positives and
prevalence per attribute), the image sizes of folder sources before resizing, the
files skipped as not images, the images with a region per attribute, and split
sizes, and exits 0 for a sound copy; otherwise prints the first problem
found as one ``error: ...`` line and exits 2. ``--image-size`` is the side the
folder is read at, as training would (default: the images' own size, which
must then be one size).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, TextIO

import numpy as np

from hpjax.core.cli import guarded
from hpjax.core.errors import DataError
from hpjax.data.folders import IMAGE_EXTENSIONS, join

FORMATS = ("celeba", "celeba_prepared", "celeba_tfds", "cifar10", "cifar10_tfds", "idx", "digits",
           "image_folder", "prepared", "attribute_table")
_CELEBA_SPLITS = ("train", "validation", "test")


def _openers(fmt: str, path: str, image_size: int | None = None) -> dict[str, Callable[[], object]]:
  """Split name -> zero-argument opener, for format ``fmt``."""
  if fmt == "image_folder":
    from hpjax.data.image_folder import open_splits

    sources = open_splits(path, image_size=image_size)  # one scan validates the whole tree
    return {s: (lambda src=src: src) for s, src in sources.items()}
  if fmt == "attribute_table":
    from hpjax.data.attribute_table import SPLITS, AttributeTable

    return {s: (lambda s=s: AttributeTable(path, s, image_size=image_size)) for s in SPLITS}
  if fmt == "prepared":
    from hpjax.data.prepare import Prepared, read_manifest

    return {s: (lambda s=s: Prepared(path, s)) for s in read_manifest(path)["splits"]}
  if fmt == "celeba":
    from hpjax.data.celeba import CelebA

    return {s: (lambda s=s: CelebA(path, s, image_size=None)) for s in _CELEBA_SPLITS}
  if fmt == "celeba_prepared":
    from hpjax.data.celeba import CelebAPrepared
    from hpjax.data.prepare import read_manifest

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
    counts examples per class (classification) or positives per attribute; for
    a source without labels (an image folder's unlabelled pool) ``label_shape``
    and ``histogram`` are None.

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
    else:  # one at a time: for raw CelebA and image folders this is where every image is decoded
      exs = [src[int(i)] for i in idx]
      batch = {key: np.stack([np.asarray(e[key]) for e in exs]) for key in exs[0]}
    images = np.asarray(batch["image"])
    if images.dtype != np.uint8 or images.shape[1:] != shape:
      raise DataError(f"{name} records {start}..{idx[-1]}: expected uint8 images {shape}, found {images.dtype} {images.shape[1:]}")
    if "label" not in batch:
      hist = None
      continue
    labels = np.asarray(batch["label"])
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


def size_summary(sizes: np.ndarray, top: int = 3) -> str:
  """``40x48 (24), 64x64 (3); 2 distinct`` for ``int [N, 2]`` (width, height): the most common first."""
  pairs, counts = np.unique(np.asarray(sizes).reshape(-1, 2), axis=0, return_counts=True)
  order = np.argsort(-counts, kind="stable")[:top]
  text = ", ".join(f"{pairs[i][0]}x{pairs[i][1]} ({counts[i]})" for i in order)
  return text + (f", ...; {len(pairs)} distinct" if len(pairs) > top else f"; {len(pairs)} distinct")


def run(fmt: str, path: str, out: TextIO | None = None, image_size: int | None = None) -> dict[str, dict]:
  """Inspects every split of ``path`` in format ``fmt``, printing a summary to ``out`` (stdout)."""
  out = out or sys.stdout
  t0 = time.time()
  openers = _openers(fmt, path, image_size)
  print(f"{fmt} at {path}", file=out)
  results = {}
  skipped: tuple[str, ...] = ()
  for split, opener in openers.items():
    src = opener()
    if fmt in ("celeba_prepared", "prepared"):
      src.verify()
    if split == next(iter(openers)) and hasattr(src, "layout"):
      colour = "grayscale" if src.channels == 1 else "RGB"
      held = "" if not src.held_out else " (held out per class: " + ", ".join(
          f"{k} {v}" for k, v in src.held_out.items()) + ")"
      print(f"  layout: {src.layout.replace('_', ' ')}{held}; {len(src.label_names)} classes "
            f"({', '.join(src.label_names)}); {colour}", file=out)
      skipped = src.skipped
    if split == next(iter(openers)) and hasattr(src, "describe"):
      print(f"  {src.describe()}", file=out)
    r = inspect_source(src, f"{path} {split}")
    results[split] = r
    if r["histogram"] is None:
      print(f"  {split}: {r['count']} examples, image uint8 {r['image_shape']}, no labels", file=out)
    else:
      print(f"  {split}: {r['count']} examples, image uint8 {r['image_shape']}, label int32 {r['label_shape']}", file=out)
      what = "examples per class" if r["label_shape"] == () else "positives per attribute"
      pairs = ", ".join(f"{nm} {c}" for nm, c in zip(src.label_names, r["histogram"].tolist()))
      print(f"    {what}: {pairs}", file=out)
      if r["label_shape"] != ():
        pct = ", ".join(f"{nm} {100 * c / r['count']:.1f}%" for nm, c in zip(src.label_names, r["histogram"].tolist()))
        print(f"    prevalence: {pct}", file=out)
    if getattr(src, "boxes", None) is not None:
      pairs = ", ".join(f"{nm} {c}" for nm, c in zip(src.label_names, (src.boxes[..., 2] > src.boxes[..., 0]).sum(0).tolist()))
      print(f"    images with a region, per attribute: {pairs}", file=out)
    if getattr(src, "sizes", None) is not None:
      print(f"    image sizes before resizing (width x height): {size_summary(src.sizes)}", file=out)
  if skipped:
    print(f"  skipped {len(skipped)} files that are not {'/'.join(IMAGE_EXTENSIONS)} images, "
          f"e.g. {join(path, skipped[0])}", file=out)
  sizes = " / ".join(f"{s} {r['count']}" for s, r in results.items())
  total = sum(r["count"] for r in results.values())
  print(f"  split sizes: {sizes} (total {total}); every record read in {time.time() - t0:.1f} s: sound", file=out)
  return results


@guarded
def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m hpjax.data.inspect", description=__doc__.split("\n")[0])
  p.add_argument("format", choices=FORMATS)
  p.add_argument("path", help="data location (see docs/data.md); '-' for digits")
  p.add_argument("--image-size", type=int, default=None,
                 help="image_folder: read at this side, as training would (default: the images' own size)")
  args = p.parse_args(argv)
  run(args.format, args.path, image_size=args.image_size)
  return 0


if __name__ == "__main__":
  sys.exit(main())
