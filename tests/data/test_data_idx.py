"""IDX reader (MNIST / Fashion-MNIST), gzipped or not, hostile headers and bodies, and the real Fashion-MNIST."""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest

import data_fixtures as fx
from hpjax.data import idx
from hpjax.core.errors import DataError


@pytest.mark.parametrize("gz", [False, True])
def test_reads_what_was_written(tmp_path, gz):
  written = fx.write_idx_dataset(str(tmp_path), n_train=30, n_test=10, gz=gz)
  for split in ("train", "test"):
    src = idx.MNIST(split, str(tmp_path))
    images, labels = written[split]
    assert len(src) == len(labels) and src.image_shape == (28, 28, 1)
    b = src.get_batch(np.array([3, 0, 3]))
    np.testing.assert_array_equal(b["image"][..., 0], images[[3, 0, 3]])
    np.testing.assert_array_equal(b["label"], labels[[3, 0, 3]])
    assert b["image"].dtype == np.uint8 and b["label"].dtype == np.int32
    ex = src[5]
    assert ex["image"].shape == (28, 28, 1) and ex["label"] == labels[5]
  # Uncompressed files are memory-mapped, not read.
  assert isinstance(src.images, np.memmap) != gz


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_every_type_code_round_trips(dtype):
  a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
  out = idx.parse_idx_bytes(fx.idx_bytes(a), "t")
  np.testing.assert_array_equal(out, a)
  assert out.dtype == a.dtype


def _header(code=0x08, dims=(2, 3)):
  return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


BYTES_CASES = [
    ("empty", b"", "at least 4 bytes, found 0"),
    ("short header", b"\x00\x00", "at least 4 bytes, found 2"),
    ("wrong magic", b"\x01\x02\x08\x01" + b"\0" * 8, "magic starting 00 00, found 01 02 08 01"),
    ("gzip magic", gzip.compress(_header() + b"\0" * 6), "magic starting 00 00, found 1f 8b"),
    ("type code", _header(code=0x07) + b"\0" * 6, "type code in {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E}, found 0x07"),
    ("zero dims", b"\x00\x00\x08\x00", "at least one IDX dimension, found 0"),
    ("dims cut", _header(dims=(2, 3, 4))[:10], "16-byte header for 3 dimensions, file ends after 10 bytes"),
    ("truncated body", _header() + b"\0" * 5, "expected 6 data bytes for shape (2, 3), found 5 (truncated)"),
    ("trailing bytes", _header() + b"\0" * 7, "found 7 (trailing bytes)"),
    ("absurd shape", _header(dims=(2**31, 2**31)), "plausible IDX shape"),
]


@pytest.mark.parametrize("case", BYTES_CASES, ids=[c[0] for c in BYTES_CASES])
def test_hostile_bytes(tmp_path, case):
  _, blob, piece = case
  with pytest.raises(DataError, match="^t: .*" + __import__("re").escape(piece)):
    idx.parse_idx_bytes(blob, "t")
  if blob[:2] != b"\x1f\x8b":
    # Same answer from a file, plain and gzipped.
    for name, data in (("f", blob), ("f.gz", gzip.compress(blob))):
      p = tmp_path / name
      p.write_bytes(data)
      with pytest.raises(DataError) as e:
        idx.read_idx(str(p))
      assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def _dataset(tmp_path, gz=True):
  fx.write_idx_dataset(str(tmp_path), n_train=20, n_test=10, gz=gz)
  return str(tmp_path)


def test_truncated_and_foreign_gzip(tmp_path):
  root = _dataset(tmp_path)
  p = os.path.join(root, "train-images-idx3-ubyte.gz")
  blob = open(p, "rb").read()
  open(p, "wb").write(blob[: len(blob) // 2])
  with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: expected a complete gzip stream"):
    idx.MNIST("train", root)
  open(p, "wb").write(b"\x1f\x8b" + b"garbage" * 10)
  with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: expected a complete gzip stream"):
    idx.MNIST("train", root)


@pytest.mark.parametrize("case", ["count mismatch", "image dims", "label dims", "label type", "label 10", "zero images"])
def test_hostile_pairs(tmp_path, case):
  root = _dataset(tmp_path, gz=False)
  imgs = os.path.join(root, "t10k-images-idx3-ubyte")
  labs = os.path.join(root, "t10k-labels-idx1-ubyte")
  if case == "count mismatch":
    fx.write_idx(labs, np.zeros(9, np.uint8))
    piece = "t10k-labels-idx1-ubyte: expected 10 labels to match t10k-images-idx3-ubyte, found 9"
  elif case == "image dims":
    fx.write_idx(imgs, np.zeros((10, 784), np.uint8))
    piece = "t10k-images-idx3-ubyte: expected unsigned-byte images of 3 dimensions [N, H, W], found uint8 with 2 dimensions"
  elif case == "label dims":
    fx.write_idx(labs, np.zeros((10, 1), np.uint8))
    piece = "t10k-labels-idx1-ubyte: expected unsigned-byte labels of 1 dimension [N], found uint8 with 2"
  elif case == "label type":
    fx.write_idx(labs, np.zeros(10, np.int32))
    piece = "found int32"
  elif case == "label 10":
    fx.write_idx(labs, np.arange(1, 11).astype(np.uint8))
    piece = "t10k-labels-idx1-ubyte record 9: expected a label below 10, found 10"
  else:
    fx.write_idx(imgs, np.zeros((0, 28, 28), np.uint8))
    fx.write_idx(labs, np.zeros(0, np.uint8))
    piece = "at least one image, found 0"
  with pytest.raises(DataError) as e:
    idx.MNIST("test", root)
  assert piece in str(e.value), str(e.value)


def test_missing_files_and_empty_dir(tmp_path):
  with pytest.raises(DataError, match="train-images-idx3-ubyte: expected this IDX file \\(or .gz\\), found neither"):
    idx.MNIST("train", str(tmp_path))
  with pytest.raises(DataError, match="no directory"):
    idx.MNIST("train", str(tmp_path / "none"))
  (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
  fx.write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(3, np.uint8))
  with pytest.raises(DataError, match="train-images-idx3-ubyte: expected an IDX file, found an empty file"):
    idx.MNIST("train", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(idx.FASHION_MNIST_ROOT), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_debian_package():
  for split, n in (("train", 60_000), ("test", 10_000)):
    src = idx.FashionMNIST(split)
    assert len(src) == n and src.image_shape == (28, 28, 1)
    np.testing.assert_array_equal(np.bincount(src.labels, minlength=10), [n // 10] * 10)
    img = src[0]["image"]
    assert img.shape == (28, 28, 1) and img.dtype == np.uint8 and img.max() > 100
  assert src.label_names[9] == "Ankle boot"
