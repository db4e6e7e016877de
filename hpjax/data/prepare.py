"""Decodes a data set once into a fast random-access cache, and reads the cache back.

Usage::

  python -m hpjax.data.prepare celeba --src /data/celeba --dst /data/celeba64 [--image-size 64] [--workers 8]
  python -m hpjax.data.prepare image_folder --src /data/pets --dst /data/pets64 [--image-size 64]
      [--test-fraction 0.2] [--seed 0] [--workers 8]
  python -m hpjax.data.prepare attribute_table --src /data/faces --dst /data/faces64 [--image-size 64] [--seed 0]

Any source (:mod:`hpjax.data.base`) whose examples are fixed-shape arrays can be
prepared by :func:`prepare`; :func:`prepare_celeba`, :func:`prepare_image_folder` and
:func:`prepare_attribute_table` are the ones the command line offers. The cache is a directory of memory-mapped
``.npy`` arrays, one per split and example key (``{split}_images.npy``,
``{split}_labels.npy``, ``{split}_landmarks.npy``...: :func:`array_file`), plus
``manifest.json`` (format, data set, the settings it was prepared with, label
names, and per split: count, file names, and each array's shape, dtype and
SHA-256). :class:`Prepared` re-opens any split of any cache
(``open_source("prepared", split, path=DST)``); ``CelebAPrepared`` is the same,
checked to hold CelebA. Why ``.npy`` rather than ArrayRecord: the decoded
examples are fixed-shape arrays, so a memory map gives zero-copy random access
and one vectorised fancy-index read per batch (:meth:`Prepared.get_batch`) with
no per-record deserialisation, and NumPy alone can read it; ArrayRecord pays off
for variable-length encoded records, which is not the case after decoding.

Safety: everything is written into a fresh hidden sibling directory
``.DST.partial-XXXX`` and renamed to ``DST`` only after every split was written,
counted and checksummed, with the manifest written last. An interrupted run
therefore leaves only a ``.partial`` directory, never a ``DST`` that looks
complete; re-running with a complete ``DST`` prepared with the same settings
verifies it and returns without work, and one prepared with other settings is
refused.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping

import numpy as np

from hpjax.core import io, workdir
from hpjax.core.errors import DataError
from hpjax.data.base import check_index

MANIFEST = "manifest.json"
CACHE_FORMAT = "hpjax-prepared"
CACHE_VERSION = 1
# CelebA caches written before the format was shared: the same layout, read as dataset "celeba".
_LEGACY_FORMAT = ("hpjax-celeba-prepared", 1)
# Split spellings every prepared cache accepts for its canonical split names.
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "unlabeled": "unlabelled"}
_CHUNK = 256  # images per worker task: big enough to amortise IPC, small for progress
# How settings are named in messages.
_SETTING_NAMES = {"image_size": "image size", "dataset": "data set"}


def file_sha256(path: str, chunk: int = 8 << 20) -> str:
  """Hex SHA-256 of a file, streamed."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def array_file(split: str, key: str) -> str:
  """The file of one split's arrays of one example key: ``train_images.npy``, ``test_landmarks.npy``."""
  return f"{split}_{key if key.endswith('s') else key + 's'}.npy"


def read_manifest(dst: str) -> dict:
  """Loads and sanity-checks ``dst/manifest.json`` of a prepared cache.

  Raises:
    DataError: no directory, no manifest (an interrupted or foreign directory),
      not JSON, or another format or version.
  """
  path = os.path.join(dst, MANIFEST)
  if not os.path.isdir(dst):
    raise DataError(f"{dst}: expected a prepared cache (python -m hpjax.data.prepare), found no directory")
  if not os.path.isfile(path):
    raise DataError(f"{path}: expected the manifest of a complete cache, found none (an interrupted or foreign directory; re-run prepare)")
  try:
    with open(path, "rb") as f:
      man = json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: expected JSON, got a parse error ({e})") from None
  kind = (man.get("format"), man.get("version")) if isinstance(man, dict) else None
  if kind == _LEGACY_FORMAT:
    man = {**man, "dataset": "celeba"}
  elif kind != (CACHE_FORMAT, CACHE_VERSION):
    raise DataError(f"{path}: expected format {CACHE_FORMAT!r} version {CACHE_VERSION}, got {str(man)[:80]}")
  if not isinstance(man.get("splits"), dict) or not isinstance(man.get("label_names"), list):
    raise DataError(f"{path}: expected 'splits' and 'label_names' entries, found {sorted(man)}")
  return man


class Prepared:
  """One split of a prepared cache, memory-mapped (a source: :mod:`hpjax.data.base`).

  Returns exactly the arrays the prepared source returned, every key it had
  (``image``, ``label``, CelebA's ``landmarks``...; the unlabelled split of an
  image folder has no ``label``). Opening checks every array's shape and dtype
  against the manifest (cheap); :meth:`verify` also checks the SHA-256 of every
  file (reads everything).

  Args:
    dst: the cache directory.
    split: one of the cache's splits (:attr:`splits`); ``val``, ``valid`` and
      ``unlabeled`` are read as ``validation`` and ``unlabelled``.
    dataset: the data set the cache must hold (e.g. ``"celeba"``), or None.

  Attributes:
    manifest: the manifest dict; ``dataset`` its data set; ``splits`` its splits.
    label_names, image_shape, image_size: the source's metadata.
    filenames: the prepared source's file names of this split.
    arrays: key -> the memory-mapped array ``[N, ...]``.
  """

  def __init__(self, dst: str, split: str, *, dataset: str | None = None):
    self.root = os.fspath(dst)
    self.manifest = read_manifest(self.root)
    man = self.manifest
    where = os.path.join(self.root, MANIFEST)
    if dataset is not None and man["dataset"] != dataset:
      raise DataError(f"{where}: expected a prepared {dataset} cache, found one of {man['dataset']}")
    self.dataset, self._expected = man["dataset"], dataset
    self.splits = tuple(man["splits"])
    self.split = SPLIT_ALIASES.get(split, split)
    entry = man["splits"].get(self.split)
    if entry is None:
      raise DataError(f"{where}: expected split {self.split!r}, found {sorted(self.splits)}")
    self._entry = entry
    self.arrays: dict[str, np.ndarray] = {}
    for key, info in entry["arrays"].items():
      path = os.path.join(self.root, info["file"])
      try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
      except FileNotFoundError:
        raise DataError(f"{path}: expected the {key} array listed in {MANIFEST}, found no file") from None
      except (ValueError, OSError) as e:
        raise DataError(f"{path}: expected a .npy array, got {type(e).__name__}: {e}") from None
      if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
        raise DataError(f"{path}: expected {info['dtype']} {tuple(info['shape'])} per {MANIFEST}, found {arr.dtype} {arr.shape}")
      self.arrays[key] = arr
    if "image" not in self.arrays:
      raise DataError(f"{where}: expected an image array for split {self.split!r}, found {sorted(self.arrays)}")
    self.filenames: tuple[str, ...] = tuple(entry.get("filenames", ()))
    self.label_names = tuple(man["label_names"])
    self.image_shape = tuple(self.arrays["image"].shape[1:])
    self.image_size = man.get("image_size")

  # Pickled for grain's worker processes: send the location, not the memory
  # maps (pickling a memmap copies the whole array), and re-open on arrival.
  def __getstate__(self) -> dict:
    return {"root": self.root, "split": self.split, "dataset": self._expected}

  def __setstate__(self, state: dict) -> None:
    Prepared.__init__(self, state["root"], state["split"], dataset=state["dataset"])

  def __len__(self) -> int:
    return int(self._entry["count"])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = check_index(index, len(self))
    return {k: np.array(a[index]) for k, a in self.arrays.items()}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """``{key: array [len(indices), ...]}`` by one fancy-index read per array."""
    indices = np.asarray(indices, np.int64)
    n = len(self)
    if indices.size and (indices.min() < -n or indices.max() >= n):
      raise IndexError(f"indices out of range for a source of {n} examples")
    return {k: np.asarray(a[indices]) for k, a in self.arrays.items()}

  def verify(self) -> None:
    """Checks every file of this split against the manifest's SHA-256."""
    for info in self._entry["arrays"].values():
      path = os.path.join(self.root, info["file"])
      got = file_sha256(path)
      if got != info["sha256"]:
        raise DataError(f"{path}: expected sha256 {info['sha256'][:16]}... per {MANIFEST}, found {got[:16]}... (file changed or damaged)")


# --------------------------------------------------------------------------- writing


def _locked(fn: Callable[..., dict]) -> Callable[..., dict]:
  """FN(dst, ...) under a lock on DST (``.DST.lock`` beside it, taken as a workdir's:
  :func:`hpjax.core.workdir.lock`), so two runs never prepare one cache at once; the
  folder of DST is checked first (writable, not full), and a write that fails for
  lack of space is one error line. An existing DST is only read (verified): no lock,
  so a cache on a read-only disk verifies."""

  @functools.wraps(fn)
  def wrapper(dst: str, *args: Any, **kwargs: Any) -> dict:
    where = os.path.abspath(dst)
    if os.path.exists(where):
      return fn(dst, *args, **kwargs)
    with workdir.lock(os.path.dirname(where), name=f".{os.path.basename(where)}.lock",
                      label="the folder of --dst", flag="--dst"), io.write_errors(where):
      return fn(dst, *args, **kwargs)

  return wrapper


@_locked
def prepare(dst: str, open_splits: Callable[[], Mapping[str, Any]], *, settings: Mapping[str, Any],
            source: str, workers: int | None = None, log=print) -> dict:
  """Decodes every split of a data set into the cache at ``dst``.

  Args:
    dst: cache directory to create; must not exist, unless it already holds a
      complete cache prepared with the same ``settings`` (then it is verified
      and left alone).
    open_splits: returns split name -> source; called only when there is work.
      Every example of every source must have the same keys, shapes and dtypes
      within a split; ``label_names`` comes from the first source.
    settings: JSON-able values that determine the cache (``dataset``, the data
      set's name, and ``image_size`` at least), recorded in the manifest and
      compared with an existing ``dst``'s.
    source: where the data came from (recorded, not compared).
    workers: decoding processes (``None``: all CPUs, 0 or 1: in this process).
    log: progress printer.

  Returns:
    The manifest dict.

  Raises:
    DataError: bad data (the first problem found), or ``dst`` holding something
      other than a complete cache with these settings.
  """
  dst = os.path.abspath(dst)
  settings = json.loads(json.dumps(dict(settings)))
  if os.path.exists(dst):
    man = read_manifest(dst)
    for key, want in settings.items():
      if man.get(key) != want:
        name = _SETTING_NAMES.get(key, key)
        raise DataError(f"{dst}: already holds a cache with {name} {man.get(key)}, asked for {want}; choose another --dst")
    for split in man["splits"]:
      Prepared(dst, split).verify()
    counts = ", ".join(f"{k} {v['count']}" for k, v in man["splits"].items())
    log(f"{dst}: already prepared and verified ({counts})")
    return man
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  stale = glob.glob(os.path.join(parent, f".{os.path.basename(dst)}.partial-*"))
  if stale:
    log(f"note: leftovers of interrupted runs (safe to delete): {', '.join(stale)}")
  sources = dict(open_splits())
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.partial-", dir=parent)
  try:
    splits = {split: _write_split(src, tmp, split, workers, log) for split, src in sources.items()}
    first = next(iter(sources.values()))
    man = {"format": CACHE_FORMAT, "version": CACHE_VERSION, **settings,
           "source": os.path.abspath(source), "label_names": list(first.label_names),
           "splits": splits, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # Manifest last, then one atomic rename: its presence under dst means complete.
    path = os.path.join(tmp, MANIFEST)
    io.write_json(path, man)
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
    os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  counts = ", ".join(f"{k} {v['count']}" for k, v in splits.items())
  log(f"{dst}: prepared ({counts}) at image size {settings.get('image_size')}")
  return man


def prepare_celeba(src: str, dst: str, *, image_size: int = 64, workers: int | None = None,
                   log=print) -> dict:
  """Decodes raw CelebA into the cache read by :class:`~hpjax.data.celeba.CelebAPrepared`.

  Args:
    src: raw CelebA root (see :class:`~hpjax.data.celeba.CelebA`).
    dst, workers, log: as :func:`prepare`.
    image_size: output side S.

  Returns:
    The manifest dict (with CelebA's ``source_size`` and ``crop_box``).
  """
  from hpjax.data import celeba
  from hpjax.data.image import center_square_box

  settings = {"dataset": "celeba", "image_size": image_size, "source_size": list(celeba.SOURCE_SIZE),
              "crop_box": list(center_square_box(*celeba.SOURCE_SIZE))}
  return prepare(dst, lambda: {s: celeba.CelebA(src, s, image_size=image_size) for s in celeba.SPLITS},
                 settings=settings, source=src, workers=workers, log=log)


def prepare_image_folder(src: str, dst: str, *, image_size: int | None = 64,
                         test_fraction: float = 0.2, validation_fraction: float = 0.0,
                         seed: int = 0, workers: int | None = None, log=print) -> dict:
  """Decodes a folder of class folders (:class:`~hpjax.data.image_folder.ImageFolder`),
  every split of it, the unlabelled pool included, into a cache.

  Args:
    src: the folder's root.
    dst, workers, log: as :func:`prepare`.
    image_size, test_fraction, validation_fraction, seed: as ``ImageFolder``
      (the fractions and seed matter only without split folders).

  Returns:
    The manifest dict.
  """
  from hpjax.data import image_folder

  settings = {"dataset": "image_folder", "image_size": image_size, "test_fraction": test_fraction,
              "validation_fraction": validation_fraction, "seed": seed}
  return prepare(dst, lambda: image_folder.open_splits(
      src, image_size=image_size, test_fraction=test_fraction,
      validation_fraction=validation_fraction, seed=seed),
      settings=settings, source=src, workers=workers, log=log)


def prepare_attribute_table(src: str, dst: str, *, image_size: int | None = 64, seed: int = 0,
                            workers: int | None = None, log=print) -> dict:
  """Decodes an attribute table's images (:class:`~hpjax.data.attribute_table.AttributeTable`),
  its splits ``train``, ``validation`` and ``test``, with their labels and region
  boxes, into a cache.

  Args:
    src: the table's root, or the table file.
    dst, workers, log: as :func:`prepare`.
    image_size, seed: as ``AttributeTable`` (the seed matters only without a split column).

  Returns:
    The manifest dict.
  """
  from hpjax.data.attribute_table import AttributeTable

  settings = {"dataset": "attribute_table", "image_size": image_size, "seed": seed}
  return prepare(dst, lambda: {name: AttributeTable(src, split, image_size=image_size, seed=seed)
                               for name, split in (("train", "train"), ("validation", "val"),
                                                   ("test", "test"))},
                 settings=settings, source=src, workers=workers, log=log)


def _decode_chunk(src: Any, start: int, stop: int) -> dict[str, np.ndarray]:
  """Decodes examples ``start..stop-1`` of ``src`` (runs in a worker)."""
  ex = [src[i] for i in range(start, stop)]
  return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def _write_split(source: Any, tmp: str, split: str, workers: int | None, log) -> dict:
  """Writes one split's arrays into ``tmp`` and returns its manifest entry."""
  n = len(source)
  where = getattr(source, "root", "the source")
  if n == 0:
    raise DataError(f"{where}: expected at least one {split} image, found none")
  probe = source[0]
  shapes = {k: (n, *np.shape(v)) for k, v in probe.items()}
  dtypes = {k: np.asarray(v).dtype for k, v in probe.items()}
  files = {k: array_file(split, k) for k in probe}
  outs = {k: np.lib.format.open_memmap(os.path.join(tmp, files[k]), mode="w+", dtype=dtypes[k], shape=shapes[k]) for k in probe}
  chunks = [(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK)]
  written = 0
  t0 = time.time()
  for (start, stop), arrays in zip(chunks, _map_chunks(source, chunks, workers)):
    if set(arrays) != set(outs):
      raise DataError(f"{where}: expected keys {sorted(outs)} for {split} images {start}..{stop - 1}, got {sorted(arrays)}")
    for k, a in arrays.items():
      if a.shape != (stop - start, *shapes[k][1:]) or a.dtype != dtypes[k]:
        raise DataError(f"{where}: expected {k} {dtypes[k]} {shapes[k][1:]} for every {split} image (as image 0), got {a.dtype} {a.shape[1:]} among images {start}..{stop - 1}")
      outs[k][start:stop] = a
    written += stop - start
    if stop == n or (start // _CHUNK) % 40 == 0:
      log(f"{split}: {written}/{n} images ({written / max(time.time() - t0, 1e-9):.0f}/s)")
  if written != n:
    raise DataError(f"{where}: expected {n} {split} images, decoded {written}")
  entry = {"count": n, "filenames": list(getattr(source, "filenames", ())), "arrays": {}}
  for k, out in outs.items():
    out.flush()
    path = os.path.join(tmp, files[k])
    entry["arrays"][k] = {"file": files[k], "shape": list(shapes[k]), "dtype": dtypes[k].name, "sha256": file_sha256(path)}
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


# --------------------------------------------------------------------------- command line


def _image_size(text: str) -> int | None:
  if text.lower() == "none":
    return None
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise DataError(f"--image-size: expected a positive int (or none for image folders), got {text!r}")
  return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m hpjax.data.prepare", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="dataset", required=True)
  for name, helps in (("celeba", ("raw CelebA -> decoded .npy cache", "raw CelebA root (img_align_celeba/, list_*.txt)")),
                      ("image_folder", ("folder of class folders -> decoded .npy cache", "ROOT/<class>/* or ROOT/<split>/<class>/* (docs/data.md)")),
                      ("attribute_table", ("images + attribute table -> decoded .npy cache", "ROOT holding attributes.csv or attributes.tsv, or the table file (docs/data.md)"))):
    c = sub.add_parser(name, help=helps[0])
    c.add_argument("--src", required=True, help=helps[1])
    c.add_argument("--dst", required=True, help="cache directory to create")
    c.add_argument("--image-size", type=str, default="64",
                   help="output side (default 64)" + ("; none: the images' own (equal) size" if name != "celeba" else ""))
    c.add_argument("--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
    if name == "image_folder":
      c.add_argument("--test-fraction", type=float, default=0.2, help="share of each class held out as test, without split folders (default 0.2)")
      c.add_argument("--validation-fraction", type=float, default=0.0, help="share of each class held out as validation, without split folders (default 0)")
      c.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    if name == "attribute_table":
      c.add_argument("--seed", type=int, default=0, help="seed of the split of a table without a split column (default 0; data_seed in the config)")
  return p.parse_args(argv)


def _main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  size = _image_size(args.image_size)
  if args.dataset == "celeba":
    if size is None:
      raise DataError("--image-size: expected a positive int for CelebA, got none")
    prepare_celeba(args.src, args.dst, image_size=size, workers=args.workers)
  elif args.dataset == "attribute_table":
    prepare_attribute_table(args.src, args.dst, image_size=size, seed=args.seed, workers=args.workers)
  else:
    prepare_image_folder(args.src, args.dst, image_size=size, test_fraction=args.test_fraction,
                         validation_fraction=args.validation_fraction, seed=args.seed,
                         workers=args.workers)
  return 0


def main(argv: list[str] | None = None) -> int:
  """``python -m hpjax.data.prepare``: errors as one ``error:`` line and exit 2."""
  # Late: the decoding worker processes import this module, and the CLI plumbing imports JAX.
  from hpjax.core.cli import guarded

  return guarded(_main)(argv)


if __name__ == "__main__":
  sys.exit(main())
