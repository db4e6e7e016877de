"""Decodes a data set once into a fast random-access cache.

Usage::

  python -m hpjax.data.prepare celeba --src /data/celeba --dst /data/celeba64 [--image-size 64] [--workers 8]

The cache is a directory of memory-mapped ``.npy`` arrays plus ``manifest.json``
(counts, shapes, dtypes, SHA-256 of every file). Why ``.npy`` rather than
ArrayRecord: the decoded examples are fixed-shape arrays, so a memory map gives
zero-copy random access and one vectorised fancy-index read per batch
(:meth:`~hpjax.data.celeba.CelebAPrepared.get_batch`) with no per-record
deserialisation, and NumPy alone can read it; ArrayRecord pays off for
variable-length encoded records, which is not the case after decoding.

Safety: everything is written into a fresh hidden sibling directory
``.DST.partial-XXXX`` and renamed to ``DST`` only after every image and label
was written, counted and checksummed, with the manifest written last. An
interrupted run therefore leaves only a ``.partial`` directory, never a ``DST``
that looks complete; re-running with a complete ``DST`` verifies it and
returns without work.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from hpjax.core.cli import guarded
from hpjax.data import celeba
from hpjax.core.errors import DataError

_CHUNK = 256  # images per worker task: big enough to amortise IPC, small for progress


def _decode_chunk(src: celeba.CelebA, start: int, stop: int) -> dict[str, np.ndarray]:
  """Decodes examples ``start..stop-1`` of ``src`` (runs in a worker)."""
  ex = [src[i] for i in range(start, stop)]
  return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def prepare_celeba(
    src: str, dst: str, *, image_size: int = 64, workers: int | None = None, log=print
) -> dict:
  """Decodes raw CelebA into the cache read by :class:`~hpjax.data.celeba.CelebAPrepared`.

  Args:
    src: raw CelebA root (see :class:`~hpjax.data.celeba.CelebA`).
    dst: cache directory to create; must not exist, unless it already holds a
      complete cache of the same size (then it is verified and left alone).
    image_size: output side S.
    workers: decoding processes (``None``: all CPUs, 0 or 1: in this process).
    log: progress printer.

  Returns:
    The manifest dict.

  Raises:
    DataError: bad raw data (first problem found), or ``dst`` holding something
      other than a complete cache of the requested size.
  """
  dst = os.path.abspath(dst)
  if os.path.exists(dst):
    man = celeba.read_manifest(dst)
    if man["image_size"] != image_size:
      raise DataError(f"{dst}: already holds a cache at image size {man['image_size']}, asked for {image_size}; choose another --dst")
    for split in celeba.SPLITS:
      if split in man["splits"]:
        celeba.CelebAPrepared(dst, split).verify()
    counts = ", ".join(f"{k} {v['count']}" for k, v in man["splits"].items())
    log(f"{dst}: already prepared and verified ({counts})")
    return man
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  stale = glob.glob(os.path.join(parent, f".{os.path.basename(dst)}.partial-*"))
  if stale:
    log(f"note: leftovers of interrupted runs (safe to delete): {', '.join(stale)}")
  sources = {s: celeba.CelebA(src, s, image_size=image_size) for s in celeba.SPLITS}
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.partial-", dir=parent)
  try:
    splits = {}
    for split, source in sources.items():
      splits[split] = _write_split(source, tmp, split, workers, log)
    first = sources["train"]
    man = {
        "format": celeba.CACHE_FORMAT,
        "version": celeba.CACHE_VERSION,
        "dataset": "celeba",
        "source": os.path.abspath(src),
        "image_size": image_size,
        "source_size": list(first.source_size),
        "crop_box": list(first.crop_box),
        "label_names": list(first.label_names),
        "splits": splits,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Manifest last, then one atomic rename: its presence under dst means complete.
    with open(os.path.join(tmp, celeba.MANIFEST), "w") as f:
      json.dump(man, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  counts = ", ".join(f"{k} {v['count']}" for k, v in splits.items())
  log(f"{dst}: prepared ({counts}) at {image_size}x{image_size}")
  return man


def _write_split(source: celeba.CelebA, tmp: str, split: str, workers: int | None, log) -> dict:
  """Writes one split's arrays into ``tmp`` and returns its manifest entry."""
  n = len(source)
  shapes = {"image": (n, *source.image_shape), "label": (n, len(source.label_names))}
  dtypes = {"image": np.uint8, "label": np.int32}
  if source.landmarks is not None:
    shapes["landmarks"], dtypes["landmarks"] = (n, 5, 2), np.int32
  files = {k: f"{split}_{k}s.npy" if k != "landmarks" else f"{split}_landmarks.npy" for k in shapes}
  outs = {k: np.lib.format.open_memmap(os.path.join(tmp, files[k]), mode="w+", dtype=dtypes[k], shape=shapes[k]) for k in shapes}
  chunks = [(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK)]
  written = 0
  t0 = time.time()
  for (start, stop), arrays in zip(chunks, _map_chunks(source, chunks, workers)):
    if set(arrays) != set(outs):
      raise DataError(f"{source.root}: expected keys {sorted(outs)} for images {start}..{stop - 1}, got {sorted(arrays)}")
    for k, a in arrays.items():
      outs[k][start:stop] = a
    written += stop - start
    if stop == n or (start // _CHUNK) % 40 == 0:
      log(f"{split}: {written}/{n} images ({written / max(time.time() - t0, 1e-9):.0f}/s)")
  if written != n:
    raise DataError(f"{source.root}: expected {n} {split} images, decoded {written}")
  entry = {"count": n, "filenames": list(source.filenames), "arrays": {}}
  for k, out in outs.items():
    out.flush()
    path = os.path.join(tmp, files[k])
    entry["arrays"][k] = {"file": files[k], "shape": list(shapes[k]), "dtype": np.dtype(dtypes[k]).name, "sha256": celeba.file_sha256(path)}
  outs.clear()
  return entry


def _map_chunks(source, chunks, workers):
  """Yields decoded chunks in order, in worker processes when asked."""
  if workers is None:
    workers = os.cpu_count() or 1
  if workers <= 1 or len(chunks) <= 1:
    for start, stop in chunks:
      yield _decode_chunk(source, start, stop)
    return
  # spawn: the caller may have JAX (threads) loaded, which fork does not survive.
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    futures = [pool.submit(_decode_chunk, source, a, b) for a, b in chunks]
    try:
      for fut in futures:
        yield fut.result()
    finally:
      for fut in futures:
        fut.cancel()


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m hpjax.data.prepare", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="dataset", required=True)
  c = sub.add_parser("celeba", help="raw CelebA -> decoded .npy cache")
  c.add_argument("--src", required=True, help="raw CelebA root (img_align_celeba/, list_*.txt)")
  c.add_argument("--dst", required=True, help="cache directory to create")
  c.add_argument("--image-size", type=int, default=64, help="output side (default 64)")
  c.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
  return p.parse_args(argv)


@guarded
def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  if args.image_size < 1:
    raise DataError(f"--image-size: expected a positive int, got {args.image_size}")
  prepare_celeba(args.src, args.dst, image_size=args.image_size, workers=args.workers)
  return 0


if __name__ == "__main__":
  sys.exit(main())
