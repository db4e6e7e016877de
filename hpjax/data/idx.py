"""IDX files (LeCun et al.'s MNIST format, also used by Fashion-MNIST, Xiao et al. 2017).

Layout: magic ``00 00 TT NN`` (``TT`` the element type code, ``NN`` the number
of dimensions), then ``NN`` big-endian uint32 sizes, then the elements in
row-major order, big-endian. Files may be gzipped (``.gz``).

Uncompressed files are memory-mapped; gzipped ones are decompressed in a stream
that stops exactly at the size the header announces, so a decompression bomb
or trailing garbage is detected without reading it all.

:class:`IdxSource` pairs an image file ``[N, H, W]`` with a label file ``[N]``;
examples are ``{"image": uint8 [H, W, 1], "label": int32 []}``.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from hpjax.core.errors import DataError

# Type code -> big-endian NumPy dtype, from the format's definition.
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_ELEMENTS = 1 << 32  # 70,000 28x28 images are 5.5e7; anything near 4e9 is a broken header
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def parse_header(head: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
  """Parses the magic and sizes.

  Args:
    head: at least the first ``4 + 4 * ndim`` bytes of the file.
    name: file name for errors.

  Returns:
    (dtype, shape, header length in bytes).

  Raises:
    DataError: truncated header, non-zero magic bytes, unknown type code, zero
      dimensions, or an absurd element count.
  """
  if len(head) < 4:
    raise DataError(f"{name}: expected an IDX header of at least 4 bytes, found {len(head)}")
  if head[0] != 0 or head[1] != 0:
    raise DataError(f"{name}: expected IDX magic starting 00 00, found {head[:4].hex(' ')} (not an IDX file, or still compressed)")
  code, ndim = head[2], head[3]
  if code not in DTYPES:
    raise DataError(f"{name}: expected an IDX type code in {{{', '.join(f'0x{c:02X}' for c in DTYPES)}}}, found 0x{code:02X}")
  if ndim == 0:
    raise DataError(f"{name}: expected at least one IDX dimension, found 0")
  hlen = 4 + 4 * ndim
  if len(head) < hlen:
    raise DataError(f"{name}: expected a {hlen}-byte header for {ndim} dimensions, file ends after {len(head)} bytes")
  shape = struct.unpack(f">{ndim}I", head[4:hlen])
  # Zero sizes are skipped in the product: (0, 2**31, 2**31) holds no data but
  # is still no shape a real file has, and NumPy refuses to build it.
  if np.prod([max(s, 1) for s in shape], dtype=np.float64) > _MAX_ELEMENTS:
    raise DataError(f"{name}: expected a plausible IDX shape, header claims {shape}")
  return np.dtype(DTYPES[code]), tuple(int(s) for s in shape), hlen


def parse_idx_bytes(data: bytes, name: str) -> np.ndarray:
  """Parses a whole (uncompressed) IDX file held in memory.

  Returns:
    The array, native byte order, shape from the header.

  Raises:
    DataError: header problems (:func:`parse_header`), a body shorter (truncated)
      or longer (trailing bytes) than the header announces.
  """
  dtype, shape, hlen = parse_header(data[: 4 + 4 * 255], name)
  need = int(np.prod(shape)) * dtype.itemsize
  body = len(data) - hlen
  if body != need:
    what = "truncated" if body < need else "trailing bytes"
    raise DataError(f"{name}: expected {need} data bytes for shape {shape}, found {body} ({what})")
  return np.frombuffer(data, dtype, offset=hlen).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file, gzipped (``.gz``, or detected by its magic) or not.

  Uncompressed unsigned-byte files come back as a read-only memory map.

  Raises:
    DataError: missing or empty file, bad gzip stream, or any IDX problem.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: expected an IDX file, found nothing")
  size = os.path.getsize(path)
  if size == 0:
    raise DataError(f"{path}: expected an IDX file, found an empty file")
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return _read_gz(path)
  with open(path, "rb") as f:
    head = f.read(4 + 4 * 255)
  dtype, shape, hlen = parse_header(head, path)
  need = int(np.prod(shape)) * dtype.itemsize
  if size - hlen != need:
    what = "truncated" if size - hlen < need else "trailing bytes"
    raise DataError(f"{path}: expected {need} data bytes for shape {shape}, found {size - hlen} ({what})")
  if need == 0:
    return np.zeros(shape, dtype.newbyteorder("="))
  arr = np.memmap(path, dtype, "r", offset=hlen, shape=shape)
  return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def _read_gz(path: str) -> np.ndarray:
  try:
    with gzip.open(path, "rb") as f:
      head = f.read(4)
      if len(head) == 4 and head[:2] == b"\0\0":
        head += f.read(4 * head[3])
      dtype, shape, _ = parse_header(head, path)
      need = int(np.prod(shape)) * dtype.itemsize
      body = f.read(need)
      extra = f.read(1)
  except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
    raise DataError(f"{path}: expected a complete gzip stream, got {type(e).__name__}: {' '.join(str(e).split())[:100]}") from None
  if len(body) != need or extra:
    what = f"found {len(body)} (truncated)" if len(body) != need else "found trailing bytes"
    raise DataError(f"{path}: expected {need} data bytes for shape {shape} after decompression, {what}")
  return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=dtype.itemsize > 1)


def find_idx(root: str, stem: str) -> str:
  """``root/stem`` or ``root/stem.gz``, preferring the uncompressed (mappable) one."""
  for cand in (stem, stem + ".gz"):
    p = os.path.join(root, cand)
    if os.path.isfile(p):
      return p
  raise DataError(f"{os.path.join(root, stem)}: expected this IDX file (or .gz), found neither")


class IdxSource:
  """A pair of IDX files: images ``uint8 [N, H, W]`` and labels ``uint8 [N]``.

  Args:
    images_path: the ``*-images-idx3-ubyte(.gz)`` file.
    labels_path: the ``*-labels-idx1-ubyte(.gz)`` file.
    label_names: class names; labels must be below ``len(label_names)``.

  Raises:
    DataError: wrong types, dimension counts, count mismatch or label out of range.
  """

  def __init__(self, images_path: str, labels_path: str, label_names: tuple[str, ...]):
    self.files = (images_path, labels_path)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
      raise DataError(f"{images_path}: expected unsigned-byte images of 3 dimensions [N, H, W], found {images.dtype} with {images.ndim} dimensions {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
      raise DataError(f"{labels_path}: expected unsigned-byte labels of 1 dimension [N], found {labels.dtype} with {labels.ndim} dimensions {labels.shape}")
    if len(images) != len(labels):
      raise DataError(f"{labels_path}: expected {len(images)} labels to match {os.path.basename(images_path)}, found {len(labels)}")
    if len(images) == 0:
      raise DataError(f"{images_path}: expected at least one image, found 0")
    bad = np.flatnonzero(np.asarray(labels) >= len(label_names))
    if bad.size:
      raise DataError(f"{labels_path} record {int(bad[0])}: expected a label below {len(label_names)}, found {int(labels[bad[0]])}")
    self.images = images
    self.labels = np.asarray(labels, np.int32)
    self.label_names = tuple(label_names)
    self.image_shape = (images.shape[1], images.shape[2], 1)

  # Pickled for grain's worker processes: re-map the files instead of copying them.
  def __getstate__(self) -> dict:
    return {"files": self.files, "label_names": self.label_names}

  def __setstate__(self, state: dict) -> None:
    self.__init__(*state["files"], state["label_names"])

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": np.array(self.images[index])[..., None], "label": np.int32(self.labels[index])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    return {"image": np.asarray(self.images[indices])[..., None], "label": self.labels[indices]}


def open_idx_split(root: str, split: str, label_names: tuple[str, ...]) -> IdxSource:
  """The standard MNIST-style file pair of ``split`` (``train`` or ``test``) under ``root``."""
  if split not in SPLIT_PREFIX:
    raise DataError(f"IDX split: expected one of {sorted(SPLIT_PREFIX)}, got {split!r}")
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise DataError(f"{root}: expected a directory of IDX files (train-images-idx3-ubyte.gz ...), found no directory")
  p = SPLIT_PREFIX[split]
  return IdxSource(find_idx(root, f"{p}-images-idx3-ubyte"), find_idx(root, f"{p}-labels-idx1-ubyte"), label_names)


def FashionMNIST(split: str, root: str | None = None) -> IdxSource:
  """Fashion-MNIST; ``root`` defaults to the Debian package's directory."""
  return open_idx_split(root or FASHION_MNIST_ROOT, split, FASHION_MNIST_CLASSES)


def MNIST(split: str, root: str) -> IdxSource:
  """MNIST from a directory of its four IDX files."""
  return open_idx_split(root, split, MNIST_CLASSES)
