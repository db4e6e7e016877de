"""TFDS ``celeb_a`` and ``cifar10`` already prepared in a data_dir, read without TensorFlow.

Reads through ``tfds.data_source(name, split=..., data_dir=..., download=False)``,
which needs the data prepared in the ArrayRecord file format
(``DATA_DIR/celeb_a/2.1.0/celeb_a-train.array_record-00000-of-000NN`` ...). A
data_dir prepared as TFRecord (the TFDS default before 4.9) can be converted
with ``tfds build --file_format=array_record`` or ``tfds convert_format``.

Downloading is never attempted (``download=False``): there is no network here,
and TFDS's own CelebA download is known to fail: the files sit on Google Drive,
which answers automated downloads with a quota or virus-scan page instead of
the archive, so ``tfds.load("celeb_a")`` ends in ``NonMatchingChecksumError``
(tensorflow/datasets issues #1482, #3544). For CelebA, put the distributed files in place by hand and use
:class:`hpjax.data.celeba.CelebA` (``open_source("celeba", ...)``) or its
prepared cache; or place the archives in TFDS's manual directory and build the
TFDS copy on a machine with TensorFlow.

Examples match the raw-file loaders: ``celeb_a`` gives the same centre crop,
resize, 0/1 attributes in the official order and scaled landmarks as
:class:`~hpjax.data.celeba.CelebA`; ``cifar10`` gives ``uint8 [32, 32, 3]`` and
an int32 class id.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from hpjax.data import celeba
from hpjax.data.cifar10 import CLASS_NAMES as CIFAR10_CLASSES
from hpjax.core.errors import DataError
from hpjax.data.image import center_square_box, crop_resize, scale_points

_CELEBA_SPLITS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


def open_tfds(name: str, split: str, data_dir: str):
  """``tfds.data_source`` with every failure turned into one DataError line.

  Args:
    name: TFDS dataset name (``celeb_a``, ``cifar10``).
    split: TFDS split name.
    data_dir: the TFDS data directory.
  """
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(f"{data_dir}: expected a TFDS data_dir holding {name}/<version>/, found no directory")
  versions = sorted(glob.glob(os.path.join(data_dir, name, "*", "dataset_info.json")))
  if not versions:
    raise DataError(f"{data_dir}: expected TFDS {name!r} prepared in it ({name}/<version>/dataset_info.json), found none"
                    + (" - TFDS cannot download CelebA; see docs/data.md for the manual path" if name == "celeb_a" else ""))
  if not glob.glob(os.path.join(os.path.dirname(versions[-1]), "*.array_record*")):
    raise DataError(f"{os.path.dirname(versions[-1])}: expected {name} in the array_record file format (needed for random access), "
                    "found none (prepared as tfrecord? convert with `tfds convert_format`)")
  import tensorflow_datasets as tfds  # lazy: slow import, optional for users of the raw formats

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # TFDS raises assorted types (AssertionError, ValueError, DatasetNotFoundError...)
    msg = " ".join(str(e).split())[:200]
    raise DataError(f"{data_dir}: expected TFDS {name!r} split {split!r} readable by tfds.data_source, got {type(e).__name__}: {msg}") from None


def _get(ds, index: int, where: str) -> dict:
  try:
    return ds[index]
  except IndexError:
    raise
  except Exception as e:  # a damaged record fails inside TFDS's decoders
    raise DataError(f"{where} record {index}: expected a decodable example, got {type(e).__name__}: {' '.join(str(e).split())[:120]}") from None


class CelebATfds:
  """TFDS ``celeb_a`` (218x178 JPEGs) cropped and resized like :class:`~hpjax.data.celeba.CelebA`.

  Args:
    data_dir: the TFDS data directory.
    split: ``train``, ``validation`` (``val``) or ``test``.
    image_size: output side; ``None`` keeps the 178x178 crop.
  """

  def __init__(self, data_dir: str, split: str, *, image_size: int | None = 64):
    if split not in _CELEBA_SPLITS:
      raise DataError(f"celeb_a split: expected one of {sorted(_CELEBA_SPLITS)}, got {split!r}")
    self.split = _CELEBA_SPLITS[split]
    self.data_dir = os.fspath(data_dir)
    self._ds = open_tfds("celeb_a", self.split, self.data_dir)
    self.image_size = image_size
    self.crop_box = center_square_box(*celeba.SOURCE_SIZE)
    self.label_names = celeba.ATTRIBUTES
    s = self.crop_box[2] - self.crop_box[0] if image_size is None else image_size
    self.image_shape = (s, s, 3)

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    from PIL import Image

    where = f"{self.data_dir} celeb_a/{self.split}"
    ex = _get(self._ds, int(index), where)
    img = np.asarray(ex["image"])
    if img.shape != (celeba.SOURCE_SIZE[1], celeba.SOURCE_SIZE[0], 3) or img.dtype != np.uint8:
      raise DataError(f"{where} record {index}: expected uint8 image (218, 178, 3), found {img.dtype} {img.shape}")
    try:
      attrs = np.array([bool(ex["attributes"][k]) for k in celeba.ATTRIBUTES], np.int32)
      lms = np.array([int(ex["landmarks"][k]) for k in celeba.LANDMARKS], np.int32).reshape(5, 2)
    except (KeyError, TypeError) as e:
      raise DataError(f"{where} record {index}: expected the 40 attributes and 10 landmark values, missing {e}") from None
    lms = scale_points(lms, self.crop_box, self.image_size)
    return {
        "image": crop_resize(Image.fromarray(img), self.crop_box, self.image_size),
        "label": attrs,
        "landmarks": lms,
        "boxes": celeba.landmark_boxes(lms, self.image_shape[0]),
    }


class Cifar10Tfds:
  """TFDS ``cifar10``.

  Args:
    data_dir: the TFDS data directory.
    split: ``train`` or ``test``.
  """

  def __init__(self, data_dir: str, split: str):
    if split not in ("train", "test"):
      raise DataError(f"cifar10 split: expected 'train' or 'test', got {split!r}")
    self.split = split
    self.data_dir = os.fspath(data_dir)
    self._ds = open_tfds("cifar10", split, self.data_dir)
    self.label_names = CIFAR10_CLASSES
    self.image_shape = (32, 32, 3)

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    where = f"{self.data_dir} cifar10/{self.split}"
    ex = _get(self._ds, int(index), where)
    img = np.asarray(ex["image"])
    label = int(ex["label"])
    if img.shape != (32, 32, 3) or img.dtype != np.uint8 or not 0 <= label <= 9:
      raise DataError(f"{where} record {index}: expected uint8 (32, 32, 3) and a label 0..9, found {img.dtype} {img.shape}, {label}")
    return {"image": img, "label": np.int32(label)}
