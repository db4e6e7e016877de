"""CIFAR-10 (Krizhevsky, 2009) in its two distributed forms.

* Binary: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin``;
  each record is 1 label byte then 3072 pixel bytes (R, G, B planes of 32x32,
  row-major). Files are memory-mapped, nothing is read until asked for.
* Python: ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, pickled
  dicts ``{b"data": uint8 [10000, 3072], b"labels": [int] * 10000, ...}``.
  Pickles run code on load, so they are read with :class:`SafeUnpickler`, which
  resolves only the few NumPy globals an array pickle needs and refuses
  anything else with a DataError before it can be called.

Each example is ``{"image": uint8 [32, 32, 3], "label": int32 []}``.
"""
from __future__ import annotations

import codecs
import io
import os
import pickle
from typing import Any

import numpy as np

from hpjax.core.errors import DataError
from hpjax.data.base import LabelledArrays

CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
RECORD_BYTES = 1 + 3072
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
_MAX_PICKLE_BYTES = 1 << 30  # a real batch is 31 MB


def _check_split(split: str) -> str:
  if split not in SPLIT_FILES:
    raise DataError(f"CIFAR-10 split: expected one of {sorted(SPLIT_FILES)}, got {split!r}")
  return split


def _find_dir(root: str, sub: str) -> str:
  """``root/sub`` if it exists, else ``root`` itself (users point at either)."""
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise DataError(f"{root}: expected a CIFAR-10 directory ({sub}/ or its contents), found no directory")
  inner = os.path.join(root, sub)
  return inner if os.path.isdir(inner) else root


def _chw_to_hwc(flat: np.ndarray) -> np.ndarray:
  """``uint8 [N, 3072]`` (R, G, B planes) -> ``uint8 [N, 32, 32, 3]``."""
  return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _read_label_names(path: str) -> tuple[str, ...]:
  """Class names from ``batches.meta.txt`` (one per line), defaults if absent."""
  if not os.path.exists(path):
    return CLASS_NAMES
  with open(path, "rb") as f:
    raw = f.read(1 << 16)
  try:
    names = tuple(ln.strip() for ln in raw.decode("utf-8").splitlines() if ln.strip())
  except UnicodeDecodeError:
    raise DataError(f"{path}: expected 10 class names as text, found binary data") from None
  if len(names) != 10:
    raise DataError(f"{path}: expected 10 class names, got {len(names)}")
  return names


# --------------------------------------------------------------------------- binary


def parse_bin_records(data: bytes | np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Splits a binary batch into labels and images.

  Args:
    data: the file's bytes (or a uint8 memmap of them).
    name: the file name for error messages.

  Returns:
    (``uint8 [N]`` labels, ``uint8 [N, 3072]`` CHW pixels), views of ``data``.

  Raises:
    DataError: empty, a size that is not a whole number of 3073-byte records
      (truncated), or a label byte above 9.
  """
  buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
  if buf.size == 0:
    raise DataError(f"{name}: expected records of {RECORD_BYTES} bytes, found an empty file")
  if buf.size % RECORD_BYTES:
    n = buf.size // RECORD_BYTES
    raise DataError(f"{name}: expected a whole number of {RECORD_BYTES}-byte records, found {buf.size} bytes (record {n} truncated to {buf.size % RECORD_BYTES} bytes)")
  recs = buf.reshape(-1, RECORD_BYTES)
  labels = recs[:, 0]
  bad = np.flatnonzero(labels > 9)
  if bad.size:
    raise DataError(f"{name} record {int(bad[0])}: expected a label byte 0..9, found {int(labels[bad[0]])}")
  return labels, recs[:, 1:]


class Cifar10Binary:
  """CIFAR-10 binary version, memory-mapped.

  Args:
    root: ``cifar-10-batches-bin`` or the directory containing it.
    split: ``train`` (5 batches) or ``test``.
  """

  def __init__(self, root: str, split: str):
    self.split = _check_split(split)
    self.root = _find_dir(root, BIN_DIR)
    self.label_names = _read_label_names(os.path.join(self.root, "batches.meta.txt"))
    self.image_shape = (32, 32, 3)
    self.files: list[str] = []
    self._labels: list[np.ndarray] = []
    self._pixels: list[np.ndarray] = []
    for stem in SPLIT_FILES[self.split]:
      path = os.path.join(self.root, stem + ".bin")
      if not os.path.isfile(path):
        raise DataError(f"{path}: expected a CIFAR-10 binary batch, found no file")
      size = os.path.getsize(path)
      mm = np.memmap(path, np.uint8, "r") if size else np.zeros(0, np.uint8)
      labels, pixels = parse_bin_records(mm, path)
      self.files.append(path)
      self._labels.append(labels)
      self._pixels.append(pixels)
    self._offsets = np.cumsum([0] + [len(x) for x in self._labels])
    self.labels = np.concatenate(self._labels).astype(np.int32)

  # Pickled for grain's worker processes: re-map the files instead of copying them.
  def __getstate__(self) -> dict:
    return {"root": self.root, "split": self.split}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["root"], state["split"])

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(self)
    indices = np.where(indices < 0, indices + n, indices)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
      raise IndexError(f"indices out of range for a source of {n} examples")
    f = np.searchsorted(self._offsets, indices, side="right") - 1
    return f, indices - self._offsets[f]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    f, r = self._locate(np.asarray([int(index)]))
    f, r = int(f[0]), int(r[0])
    img = _chw_to_hwc(np.asarray(self._pixels[f][r]))[0]
    return {"image": np.ascontiguousarray(img), "label": np.int32(self._labels[f][r])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised read: one fancy-index per batch file touched."""
    indices = np.asarray(indices, np.int64)
    f, r = self._locate(indices)
    flat = np.empty((len(indices), 3072), np.uint8)
    labels = np.empty(len(indices), np.int32)
    for k in np.unique(f):
      sel = f == k
      flat[sel] = self._pixels[k][r[sel]]
      labels[sel] = self._labels[k][r[sel]]
    return {"image": np.ascontiguousarray(_chw_to_hwc(flat)), "label": labels}


# --------------------------------------------------------------------------- python (pickle)


def _latin1_encode(obj: Any, encoding: str = "latin1") -> bytes:
  # Python 3 protocol-2 pickles of bytes call _codecs.encode(str, "latin1");
  # any other codec name is refused so the call stays a plain byte conversion.
  if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
    raise pickle.UnpicklingError(f"_codecs.encode called with {type(obj).__name__}, {encoding!r}")
  return codecs.encode(obj, "latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
  from numpy._core import multiarray, numeric  # numpy >= 2; numpy.core is its deprecated alias

  def reconstruct(subtype, shape, dtype):
    # _reconstruct allocates `shape` before the real contents arrive in
    # __setstate__; a hostile shape would allocate unbounded memory, so only the
    # empty placeholder real pickles use, (0,), is let through.
    if subtype is not np.ndarray or tuple(shape) != (0,):
      raise pickle.UnpicklingError(f"_reconstruct({getattr(subtype, '__name__', subtype)}, {shape!r}) is not an array placeholder")
    return multiarray._reconstruct(subtype, shape, dtype)

  frombuffer = numeric._frombuffer
  return {
      # What the real (Python 2, protocol 2) CIFAR pickles reference.
      ("numpy.core.multiarray", "_reconstruct"): reconstruct,
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      # What NumPy 2 writes for the same data (protocols 2..5), for re-saved copies.
      ("numpy._core.multiarray", "_reconstruct"): reconstruct,
      ("numpy._core.numeric", "_frombuffer"): frombuffer,
      ("numpy.core.numeric", "_frombuffer"): frombuffer,
      ("_codecs", "encode"): _latin1_encode,
  }


class SafeUnpickler(pickle.Unpickler):
  """An unpickler that can build NumPy arrays, lists, dicts and bytes, nothing else.

  ``find_class`` is the only way a pickle reaches a callable, so refusing every
  global outside the allow-list stops ``__reduce__`` payloads such as
  ``os.system`` before they are looked up, let alone called.
  """

  def __init__(self, file, name: str):
    super().__init__(file, encoding="bytes")
    self._name = name
    self._allowed = _allowed_globals()

  def find_class(self, module: str, name: str) -> Any:
    fn = self._allowed.get((module, name))
    if fn is None:
      raise DataError(f"{self._name}: expected a CIFAR-10 pickle of NumPy arrays, found a reference to {module}.{name} (refused, not loaded)")
    return fn

  def persistent_load(self, pid: Any) -> Any:
    raise DataError(f"{self._name}: expected a plain pickle, found a persistent id (refused)")


def safe_unpickle(data: bytes, name: str) -> Any:
  """Unpickles ``data`` with :class:`SafeUnpickler`; any failure is a DataError."""
  if not data:
    raise DataError(f"{name}: expected a pickled CIFAR-10 batch, found an empty file")
  try:
    return SafeUnpickler(io.BytesIO(data), name).load()
  except DataError:
    raise
  except RecursionError:
    raise DataError(f"{name}: expected a CIFAR-10 pickle, found nesting too deep to be one") from None
  except Exception as e:  # UnpicklingError, EOFError, ValueError, TypeError... from a bad stream
    msg = " ".join(str(e).split())[:120]
    raise DataError(f"{name}: expected a CIFAR-10 pickle, cannot unpickle it ({type(e).__name__}: {msg})") from None


def parse_pickle_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses one pickled batch.

  Returns:
    (``uint8 [N]`` labels, ``uint8 [N, 3072]`` CHW pixels).

  Raises:
    DataError: not a safe pickle, not a dict, missing ``b"data"``/``b"labels"``,
      wrong dtype or shape, label count mismatch, labels outside 0..9.
  """
  obj = safe_unpickle(data, name)
  if not isinstance(obj, dict):
    raise DataError(f"{name}: expected a dict with b'data' and b'labels', found {type(obj).__name__}")
  keys = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
  if "data" not in keys or "labels" not in keys:
    raise DataError(f"{name}: expected keys b'data' and b'labels', found {sorted(map(str, keys))[:6]}")
  pixels, labels = keys["data"], keys["labels"]
  if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
    desc = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
    raise DataError(f"{name}: expected b'data' as uint8 [N, 3072], found {desc}")
  if not isinstance(labels, (list, tuple, np.ndarray)):
    raise DataError(f"{name}: expected b'labels' as a list of ints, found {type(labels).__name__}")
  if len(labels) != len(pixels):
    raise DataError(f"{name}: expected {len(pixels)} labels (one per image), found {len(labels)}")
  try:
    lab = np.asarray(labels)
  except Exception:
    raise DataError(f"{name}: expected b'labels' as a list of ints, found mixed values") from None
  if lab.size and (lab.dtype.kind not in "iu" or lab.ndim != 1):
    raise DataError(f"{name}: expected b'labels' as ints, found {lab.dtype} {lab.shape}")
  bad = np.flatnonzero((lab < 0) | (lab > 9)) if lab.size else np.zeros(0, int)
  if bad.size:
    raise DataError(f"{name} record {int(bad[0])}: expected a label 0..9, found {int(lab[bad[0]])}")
  if len(pixels) == 0:
    raise DataError(f"{name}: expected at least one image, found none")
  return lab.astype(np.uint8), np.ascontiguousarray(pixels)


class Cifar10Pickle(LabelledArrays):
  """CIFAR-10 python version, unpickled safely into memory.

  Args:
    root: ``cifar-10-batches-py`` or the directory containing it.
    split: ``train`` or ``test``.
  """

  def __init__(self, root: str, split: str):
    self.split = _check_split(split)
    self.root = _find_dir(root, PY_DIR)
    self.image_shape = (32, 32, 3)
    self.label_names = CLASS_NAMES
    meta = os.path.join(self.root, "batches.meta")
    if os.path.exists(meta):
      obj = safe_unpickle(_read_capped(meta), meta)
      names = obj.get(b"label_names") if isinstance(obj, dict) else None
      if not isinstance(names, list) or len(names) != 10 or not all(isinstance(x, (bytes, str)) for x in names):
        raise DataError(f"{meta}: expected b'label_names' with 10 names, found {str(names)[:60]}")
      self.label_names = tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in names)
    self.files = []
    labels, pixels = [], []
    for stem in SPLIT_FILES[self.split]:
      path = os.path.join(self.root, stem)
      if not os.path.isfile(path):
        raise DataError(f"{path}: expected a pickled CIFAR-10 batch, found no file")
      lab, pix = parse_pickle_batch(_read_capped(path), path)
      self.files.append(path)
      labels.append(lab)
      pixels.append(pix)
    self.labels = np.concatenate(labels).astype(np.int32)
    self.images = np.ascontiguousarray(_chw_to_hwc(np.concatenate(pixels)))


def _read_capped(path: str) -> bytes:
  size = os.path.getsize(path)
  if size > _MAX_PICKLE_BYTES:
    raise DataError(f"{path}: expected a CIFAR-10 batch of about 31 MB, found {size} bytes")
  with open(path, "rb") as f:
    return f.read()


def Cifar10(root: str, split: str) -> Cifar10Binary | Cifar10Pickle:
  """Opens whichever CIFAR-10 version ``root`` holds (binary preferred).

  Args:
    root: a directory holding ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/``
      (or one of those directories itself).
    split: ``train`` or ``test``.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise DataError(f"{root}: expected a CIFAR-10 directory, found no directory")
  if os.path.isdir(os.path.join(root, BIN_DIR)) or os.path.exists(os.path.join(root, "test_batch.bin")):
    return Cifar10Binary(root, split)
  if os.path.isdir(os.path.join(root, PY_DIR)) or os.path.exists(os.path.join(root, "test_batch")):
    return Cifar10Pickle(root, split)
  raise DataError(f"{root}: expected {BIN_DIR}/ or {PY_DIR}/ (or their batch files), found {sorted(os.listdir(root))[:5]}")
