"""Writers of tiny data sets in the exact on-disk formats the loaders read.

Nothing is downloaded: each function writes a few dozen examples in the real
layout (CelebA text files and JPEGs, CIFAR-10 binary and Python-2 pickles, IDX,
TFDS array_record) and returns the arrays it wrote, so tests can compare.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import numpy as np
from PIL import Image

from hpjax.data import celeba as celeba_lib
from hpjax.data.cifar10 import CLASS_NAMES


def smooth_image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
  """A smooth random ``uint8 [height, width, channels]`` image (JPEG-friendly, so files stay small)."""
  y = np.linspace(0, 1, height)[:, None, None]
  x = np.linspace(0, 1, width)[None, :, None]
  a, b, c = rng.uniform(0, 255, (3, 1, 1, channels))
  img = a * y + b * x + c * (1 - x) * (1 - y) + rng.normal(0, 8, (height, width, channels))
  return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


# --------------------------------------------------------------------------- CelebA


def write_celeba(root: str, n: int = 24, *, landmarks: bool = True, seed: int = 0, size: tuple[int, int] = (178, 218)) -> dict:
  """Writes a CelebA-format directory of ``n`` images.

  Partition ids cycle train, train, validation, test... so every split is
  non-empty. The attribute file uses the real file's double-space layout.

  Returns:
    ``{"filenames", "attributes" (int32 [n, 40] 0/1), "partition" (int32 [n]),
    "landmarks" (int32 [n, 5, 2])}``.
  """
  rng = np.random.default_rng(seed)
  img_dir = os.path.join(root, celeba_lib.IMAGE_DIR)
  os.makedirs(img_dir, exist_ok=True)
  names = [f"{i + 1:06d}.jpg" for i in range(n)]
  attrs = rng.integers(0, 2, (n, 40)).astype(np.int32)
  parts = np.array([(0, 0, 1, 2)[i % 4] for i in range(n)], np.int32)
  lms = np.stack([rng.integers(60, 120, (n, 5)), rng.integers(100, 160, (n, 5))], -1).astype(np.int32)
  for f in names:
    with open(os.path.join(img_dir, f), "wb") as fh:
      fh.write(jpeg_bytes(smooth_image(rng, size[1], size[0])))
  with open(os.path.join(root, celeba_lib.ATTR_FILE), "w") as fh:
    fh.write(f"{n}\n" + " ".join(celeba_lib.ATTRIBUTES) + " \n")
    for f, row in zip(names, attrs):
      fh.write(f + " " + " ".join(f"{2 * v - 1:2d}" for v in row) + "\n")
  with open(os.path.join(root, celeba_lib.PARTITION_FILE), "w") as fh:
    fh.writelines(f"{f} {p}\n" for f, p in zip(names, parts))
  if landmarks:
    with open(os.path.join(root, celeba_lib.LANDMARKS_FILE), "w") as fh:
      fh.write(f"{n}\n" + " ".join(celeba_lib.LANDMARKS) + "\n")
      for f, row in zip(names, lms.reshape(n, 10)):
        fh.write(f"{f:<10}" + "".join(f"{v:6d}" for v in row) + "\n")
  return {"filenames": names, "attributes": attrs, "partition": parts, "landmarks": lms}


# --------------------------------------------------------------------------- CIFAR-10


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(``uint8 [n]`` labels, ``uint8 [n, 32, 32, 3]`` images)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 10, n).astype(np.uint8), rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _chw(images: np.ndarray) -> np.ndarray:
  return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def write_cifar_bin(root: str, n_per_batch: int = 6, seed: int = 0) -> dict:
  """Writes ``root/cifar-10-batches-bin/`` (5 train batches, 1 test batch, meta).

  Returns:
    ``{"train": (labels, images), "test": (labels, images)}``.
  """
  d = os.path.join(root, "cifar-10-batches-bin")
  os.makedirs(d, exist_ok=True)
  out = {}
  for split, stems in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
    labs, imgs = [], []
    for j, stem in enumerate(stems):
      lab, img = cifar_arrays(n_per_batch, seed * 100 + j + (50 if split == "test" else 0))
      rec = np.concatenate([lab[:, None], _chw(img)], 1)
      with open(os.path.join(d, stem + ".bin"), "wb") as fh:
        fh.write(rec.tobytes())
      labs.append(lab)
      imgs.append(img)
    out[split] = (np.concatenate(labs), np.concatenate(imgs))
  with open(os.path.join(d, "batches.meta.txt"), "w") as fh:
    fh.write("\n".join(CLASS_NAMES) + "\n\n")
  return out


class _Py2Pickler:
  """Emits protocol-2 pickles the way Python 2's cPickle wrote the real CIFAR batches.

  The distributed files reference ``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray`` and ``numpy.dtype`` and store byte strings as BINSTRING,
  which Python 3's pickler cannot reproduce (it writes ``_codecs.encode``).
  """

  def __init__(self):
    self.out = bytearray(b"\x80\x02")

  def str_(self, s: bytes) -> None:
    self.out += (b"U" + bytes([len(s)]) if len(s) < 256 else b"T" + struct.pack("<I", len(s))) + s

  def int_(self, v: int) -> None:
    self.out += b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

  def glob(self, module: str, name: str) -> None:
    self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

  def ndarray(self, a: np.ndarray) -> None:
    self.glob("numpy.core.multiarray", "_reconstruct")
    self.glob("numpy", "ndarray")
    self.out += b"K\x00\x85"  # (0,)
    self.str_(b"b")
    self.out += b"\x87R("  # TUPLE3, REDUCE, MARK of the state tuple
    self.int_(1)
    self.out += b"("
    for s in a.shape:
      self.int_(s)
    self.out += b"t"
    self.glob("numpy", "dtype")
    self.str_(a.dtype.str[1:].encode())
    self.out += b"K\x00K\x01\x87R("
    self.int_(3)
    self.str_(b"|" if a.dtype.itemsize == 1 else b"<")
    self.out += b"NNN"
    self.int_(-1)
    self.int_(-1)
    self.int_(0)
    self.out += b"tb\x89"  # dtype BUILD, then is_fortran=False
    self.str_(a.tobytes())
    self.out += b"tb"  # array state tuple, BUILD

  def value(self, v) -> None:
    if isinstance(v, np.ndarray):
      self.ndarray(v)
    elif isinstance(v, bytes):
      self.str_(v)
    elif isinstance(v, int):
      self.int_(v)
    elif isinstance(v, list):
      self.out += b"](" if v else b"]"
      for x in v:
        self.value(x)
      if v:
        self.out += b"e"
    elif isinstance(v, dict):
      self.out += b"}("
      for k, x in v.items():
        self.value(k)
        self.value(x)
      self.out += b"u"
    else:
      raise TypeError(type(v))

  def dumps(self, v) -> bytes:
    self.value(v)
    return bytes(self.out + b".")


def py2_pickle(obj) -> bytes:
  return _Py2Pickler().dumps(obj)


def write_cifar_py(root: str, n_per_batch: int = 6, seed: int = 0, *, py2: bool = True) -> dict:
  """Writes ``root/cifar-10-batches-py/`` (pickled batches and ``batches.meta``).

  Args:
    py2: write Python-2 style pickles like the distributed files; else
      NumPy 2 / Python 3 protocol-2 pickles (``_codecs.encode`` for bytes).

  Returns:
    ``{"train": (labels, images), "test": (labels, images)}``, same data as
    :func:`write_cifar_bin` for the same seed.
  """
  d = os.path.join(root, "cifar-10-batches-py")
  os.makedirs(d, exist_ok=True)
  dump = py2_pickle if py2 else (lambda o: pickle.dumps(o, protocol=2))
  out = {}
  for split, stems in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
    labs, imgs = [], []
    for j, stem in enumerate(stems):
      lab, img = cifar_arrays(n_per_batch, seed * 100 + j + (50 if split == "test" else 0))
      batch = {
          b"batch_label": f"{stem} of 5".encode(),
          b"labels": [int(x) for x in lab],
          b"data": _chw(img),
          b"filenames": [f"img_{j}_{i}.png".encode() for i in range(n_per_batch)],
      }
      with open(os.path.join(d, stem), "wb") as fh:
        fh.write(dump(batch))
      labs.append(lab)
      imgs.append(img)
    out[split] = (np.concatenate(labs), np.concatenate(imgs))
  with open(os.path.join(d, "batches.meta"), "wb") as fh:
    fh.write(dump({b"label_names": [c.encode() for c in CLASS_NAMES], b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}))
  return out


# --------------------------------------------------------------------------- IDX


def idx_bytes(a: np.ndarray) -> bytes:
  """Encodes an array in the IDX format (big-endian)."""
  codes = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype("int16"): 0x0B, np.dtype("int32"): 0x0C,
           np.dtype("float32"): 0x0D, np.dtype("float64"): 0x0E}
  head = bytes([0, 0, codes[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
  return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path: str, a: np.ndarray, gz: bool = False) -> str:
  data = idx_bytes(a)
  if gz:
    path += ".gz"
    data = gzip.compress(data, mtime=0)
  with open(path, "wb") as fh:
    fh.write(data)
  return path


def write_idx_dataset(root: str, n_train: int = 30, n_test: int = 10, *, gz: bool = True, seed: int = 0) -> dict:
  """Writes the four MNIST-style IDX files; returns ``{split: (images [n,28,28], labels [n])}``."""
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  out = {}
  for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), images, gz)
    write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), labels, gz)
    out[split] = (images, labels)
  return out


# --------------------------------------------------------------------------- TFDS


def _png(img: np.ndarray) -> io.BytesIO:
  # TFDS's Image feature encodes raw arrays with TensorFlow, which is not
  # installed; handing it encoded bytes makes it store them as they are.
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  buf.seek(0)
  return buf


def write_tfds_cifar10(data_dir: str, cifar_bin_root: str) -> None:
  """Prepares TFDS ``cifar10`` (array_record) in ``data_dir`` from a binary fixture.

  Uses the real TFDS builder class (same name, version, features) with only
  the example generation replaced, so ``tfds.data_source("cifar10")`` reads it
  exactly as it would read a real prepared copy.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.image_classification import cifar

  from hpjax.data.cifar10 import Cifar10Binary

  class Fixture(cifar.Cifar10, skip_registration=True):
    name = "cifar10"

    def _split_generators(self, dl_manager):
      self.info.features["label"].names = list(CLASS_NAMES)
      return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

    def _generate_examples(self, split):
      src = Cifar10Binary(cifar_bin_root, split)
      for i in range(len(src)):
        ex = src[i]
        yield i, {"id": f"{split}_{i:05d}", "image": _png(ex["image"]), "label": int(ex["label"])}

  Fixture(data_dir=data_dir, file_format="array_record").download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=False))


def write_tfds_celeba(data_dir: str, celeba_root: str) -> None:
  """Prepares TFDS ``celeb_a`` (array_record) in ``data_dir`` from a raw CelebA fixture.

  The JPEG files are stored byte for byte, as TFDS's own builder does.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as cb

  attr_names, attrs = celeba_lib.parse_attributes(open(os.path.join(celeba_root, celeba_lib.ATTR_FILE)).read())
  pnames, parts = celeba_lib.parse_partition(open(os.path.join(celeba_root, celeba_lib.PARTITION_FILE)).read())
  lnames, lms = celeba_lib.parse_landmarks(open(os.path.join(celeba_root, celeba_lib.LANDMARKS_FILE)).read())

  class Fixture(cb.Builder, skip_registration=True):
    name = "celeb_a"
    # TFDS finds the dataset card next to the builder's module; point it at the real one.
    pkg_dir_path = cb.Builder._get_pkg_dir_path()

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(pid) for s, pid in celeba_lib.SPLITS.items()}

    def _generate_examples(self, pid):
      for i, f in enumerate(attr_names):
        if parts[i] != pid:
          continue
        with open(os.path.join(celeba_root, celeba_lib.IMAGE_DIR, f), "rb") as fh:
          data = io.BytesIO(fh.read())
        yield f, {
            "image": data,
            "landmarks": dict(zip(celeba_lib.LANDMARKS, map(int, lms[i].reshape(10)))),
            "attributes": dict(zip(celeba_lib.ATTRIBUTES, map(bool, attrs[i]))),
            "identity": {"Identity_No": i},
        }

  Fixture(data_dir=data_dir, file_format="array_record").download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=False))


# --------------------------------------------------------------------------- attribute table


def write_attribute_table(root: str, n: int = 40, *, size: int = 32, pad: int = 4, seed: int = 0,
                          split_column: bool = True, encoding: str = "-1/1",
                          regions: bool = True, table: str = "attributes.csv") -> dict:
  """Writes ``n`` generated faces as an attribute table in the real layout.

  ``ROOT/img/0000.png``, ``0001.jpg``, ... (even rows PNG, odd rows JPEG): the
  faces of ``SyntheticFaces("train", image_size=size, seed=seed)`` with ``pad`` rows
  of gray added above and below (``size x (size + 2 pad)`` files, so the centre
  square is the face itself), and ``ROOT/attributes.csv``: a ``file`` column, the 14
  attributes (``encoding``: ``-1/1``, ``0/1`` or ``true/false``), a ``split`` column
  (rows cycle train x8, val, test) and, per attribute, the bounding box of its
  region in file pixels (``A_x0, A_y0, A_x1, A_y1``; empty when the region is empty).

  Returns:
    ``{"filenames", "image" (uint8 [n, size, size, 3], the faces), "label" (int32
    [n, 14]), "boxes" (int32 [n, 14, 4]: the regions' bounding boxes in face pixels),
    "split" (list of split names)}``.
  """
  from hpjax.data.regions import mask_boxes
  from hpjax.data.synthetic import ATTRIBUTES, SyntheticFaces

  batch = SyntheticFaces("train", image_size=size, num_examples=n, seed=seed).get_batch(np.arange(n))
  boxes = mask_boxes(batch["regions"])
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  names, splits = [], []
  neg, pos = {"-1/1": ("-1", "1"), "0/1": ("0", "1"), "true/false": ("false", "True")}[encoding]
  header = ["file", *ATTRIBUTES] + (["split"] if split_column else [])
  if regions:
    header += [f"{a}_{c}" for a in ATTRIBUTES for c in ("x0", "y0", "x1", "y1")]
  lines = [",".join(header)]
  for i in range(n):
    name = f"img/{i:04d}.{'png' if i % 2 == 0 else 'jpg'}"
    img = np.full((size + 2 * pad, size, 3), 128, np.uint8)
    img[pad:pad + size] = batch["image"][i]
    with open(os.path.join(root, name), "wb") as fh:
      fh.write(_png(img).getvalue() if i % 2 == 0 else jpeg_bytes(img, quality=95))
    split = ("train",) * 8 + ("val", "test")
    names.append(name)
    splits.append(split[i % 10])
    cells = [name, *(pos if v else neg for v in batch["label"][i])]
    if split_column:
      cells.append(splits[-1])
    if regions:
      for x0, y0, x1, y1 in boxes[i]:
        cells += ["", "", "", ""] if x1 <= x0 else [str(x0), str(y0 + pad), str(x1), str(y1 + pad)]
    lines.append(",".join(cells))
  with open(os.path.join(root, table), "w") as fh:
    fh.write("\n".join(lines) + "\n")
  return {"filenames": names, "image": batch["image"], "label": batch["label"], "boxes": boxes,
          "split": splits}


# --------------------------------------------------------------------------- image folders

SHAPE_CLASSES = ("circle", "square", "triangle")
# Each class has its own hue, so a tiny model learns them in a few steps.
_SHAPE_COLOURS = {"circle": (220, 40, 40), "square": (40, 200, 60), "triangle": (50, 70, 230)}


def shape_image(rng: np.random.Generator, cls: str, size: tuple[int, int] = (40, 48)) -> np.ndarray:
  """A ``uint8 [height, width, 3]`` image of one coloured shape on a noisy gray background."""
  from PIL import ImageDraw

  w, h = size
  bg = tuple(int(v) for v in rng.integers(90, 150, 3))
  img = Image.new("RGB", (w, h), bg)
  draw = ImageDraw.Draw(img)
  r = int(rng.integers(min(w, h) // 5, min(w, h) // 3))
  cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
  colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _SHAPE_COLOURS[cls])
  if cls == "circle":
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
  elif cls == "square":
    draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
  else:
    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
  arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (h, w, 3))
  return np.clip(arr, 0, 255).astype(np.uint8)


def write_image_folder(root: str, *, per_class: int = 10, classes: tuple[str, ...] = SHAPE_CLASSES,
                       split_folders: bool = False, test_per_class: int = 3, unlabelled: int = 0,
                       size: tuple[int, int] = (40, 48), seed: int = 0) -> dict:
  """Writes an image folder in the real layout: coloured shapes, PNG and JPEG alternating.

  ``ROOT/<class>/NNN.png|jpg`` (or ``ROOT/train/<class>/...`` and ``ROOT/test/<class>/...``
  with ``split_folders``: ``per_class`` train and ``test_per_class`` test images each),
  plus ``ROOT/unlabelled/uNNN.png|jpg`` when ``unlabelled`` > 0, all ``size`` = (width,
  height). Even-numbered files are PNG (lossless), odd ones JPEG (quality 95).

  Returns:
    ``{"classes", "files": {root-relative path: class name or None (pool)},
    "pixels": {root-relative path: uint8 [h, w, 3] as drawn}}``.
  """
  rng = np.random.default_rng(seed)
  files: dict[str, str | None] = {}
  pixels: dict[str, np.ndarray] = {}

  def put(rel: str, cls: str | None, i: int, draw_cls: str) -> None:
    arr = shape_image(rng, draw_cls, size)
    rel = f"{rel}.{'png' if i % 2 == 0 else 'jpg'}"
    path = os.path.join(root, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if i % 2 == 0:
      Image.fromarray(arr).save(path, format="PNG")
    else:
      Image.fromarray(arr).save(path, format="JPEG", quality=95)
    files[rel], pixels[rel] = cls, arr

  splits = (("train/", per_class), ("test/", test_per_class)) if split_folders else (("", per_class),)
  for prefix, n in splits:
    for j, cls in enumerate(classes):  # the j-th class draws the j-th shape (cyclically)
      for i in range(n):
        put(f"{prefix}{cls}/{i:03d}", cls, i, SHAPE_CLASSES[j % len(SHAPE_CLASSES)])
  for i in range(unlabelled):
    put(f"unlabelled/u{i:03d}", None, i, SHAPE_CLASSES[i % len(SHAPE_CLASSES)])
  return {"classes": tuple(classes), "files": files, "pixels": pixels}


def one_line_error(fn, *pieces: str) -> str:
  """Calls FN, expects a one-line DataError containing every piece; returns the message."""
  import pytest
  from hpjax.core.errors import DataError
  with pytest.raises(DataError) as e:
    fn()
  msg = str(e.value)
  assert "\n" not in msg, msg
  for p in pieces:
    assert p in msg, msg
  return msg
