"""CIFAR-10 binary and pickled versions, the restricted unpickler, and hostile files."""
from __future__ import annotations

import os
import pickle
import pickletools
import shutil

import numpy as np
import pytest

import data_fixtures as fx
from hpjax.data import cifar10
from hpjax.core.errors import DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("cifar"))
  written = fx.write_cifar_bin(root, n_per_batch=6)
  assert fx.write_cifar_py(root, n_per_batch=6).keys() == written.keys()
  py3 = str(tmp_path_factory.mktemp("cifar_py3"))
  fx.write_cifar_py(py3, n_per_batch=6, py2=False)
  return root, py3, written


@pytest.mark.parametrize("kind", ["bin", "py2", "py3"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_all_versions_return_the_written_arrays(data, kind, split):
  root, py3, written = data
  src = {"bin": lambda: cifar10.Cifar10Binary(root, split), "py2": lambda: cifar10.Cifar10Pickle(root, split),
         "py3": lambda: cifar10.Cifar10Pickle(py3, split)}[kind]()
  labels, images = written[split]
  assert len(src) == len(labels) == (30 if split == "train" else 6)
  batch = src.get_batch(np.arange(len(src))[::-1])
  np.testing.assert_array_equal(batch["image"], images[::-1])
  np.testing.assert_array_equal(batch["label"], labels[::-1])
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
  ex = src[len(src) - 1]
  np.testing.assert_array_equal(ex["image"], images[-1])
  assert ex["label"] == labels[-1] and ex["label"].dtype == np.int32
  assert src.label_names == cifar10.CLASS_NAMES and src.image_shape == (32, 32, 3)


def test_chw_planes_become_hwc():
  rec = np.zeros(3073, np.uint8)
  rec[0] = 7
  rec[1 + 0 * 1024 + 1 * 32 + 2] = 11  # red plane, row 1, column 2
  rec[1 + 2 * 1024 + 31 * 32 + 31] = 22  # blue plane, last pixel
  labels, pixels = cifar10.parse_bin_records(rec.tobytes(), "x.bin")
  img = cifar10._chw_to_hwc(pixels)[0]
  assert labels[0] == 7 and img[1, 2, 0] == 11 and img[31, 31, 2] == 22 and img.sum() == 33


def test_fixture_pickles_reference_the_same_globals_as_the_real_files(data):
  # The distributed cifar-10-batches-py were written by Python 2 + NumPy 1.x.
  root = data[0]
  with open(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), "rb") as f:
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(f.read())]
  globs = {arg for name, arg in ops if name == "GLOBAL"}
  assert globs == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_auto_detects_the_version(data, tmp_path):
  root = data[0]
  assert isinstance(cifar10.Cifar10(root, "test"), cifar10.Cifar10Binary)
  shutil.copytree(os.path.join(root, "cifar-10-batches-py"), tmp_path / "cifar-10-batches-py")
  assert isinstance(cifar10.Cifar10(str(tmp_path), "test"), cifar10.Cifar10Pickle)
  assert isinstance(cifar10.Cifar10(str(tmp_path / "cifar-10-batches-py"), "test"), cifar10.Cifar10Pickle)


# --------------------------------------------------------------------------- hostile


class Payload:
  """A pickle that runs a shell command when loaded with plain pickle."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _bin_copy(data, tmp_path):
  d = tmp_path / "cifar-10-batches-bin"
  shutil.copytree(os.path.join(data[0], "cifar-10-batches-bin"), d)
  return str(tmp_path), str(d)


def _py_copy(data, tmp_path):
  d = tmp_path / "cifar-10-batches-py"
  shutil.copytree(os.path.join(data[0], "cifar-10-batches-py"), d)
  return str(tmp_path), str(d)


def test_pickle_carrying_code_is_refused_and_not_run(data, tmp_path):
  root, d = _py_copy(data, tmp_path)
  marker = tmp_path / "pwned"
  with open(os.path.join(d, "data_batch_3"), "wb") as f:
    pickle.dump({b"data": Payload(marker), b"labels": []}, f, protocol=2)
  with pytest.raises(DataError) as e:
    cifar10.Cifar10Pickle(root, "train")
  assert "data_batch_3" in str(e.value) and "posix.system" in str(e.value) and "refused" in str(e.value)
  assert not marker.exists()
  # The same file with plain pickle really would run it: the test can fail.
  with open(os.path.join(d, "data_batch_3"), "rb") as f:
    pickle.load(f)
  assert marker.exists()


@pytest.mark.parametrize("payload", [
    (eval, ("1+1",)),
    (getattr, (np.ndarray, "tofile")),
    (np.load, ("x.npy",)),
    (pickle.loads, (b".",)),
], ids=["eval", "getattr", "numpy.load", "pickle.loads"])
def test_unexpected_globals_are_refused(payload):
  class P:
    def __reduce__(self):
      return payload

  with pytest.raises(DataError, match=r"x\.pkl: expected a CIFAR-10 pickle of NumPy arrays, found a reference to .* \(refused"):
    cifar10.parse_pickle_batch(pickle.dumps({b"data": P()}, protocol=2), "x.pkl")


def test_codecs_encode_is_only_latin1():
  evil = pickle.dumps(b"x", protocol=2).replace(b"latin1", b"rot_13")
  with pytest.raises(DataError, match="cannot unpickle"):
    cifar10.safe_unpickle(evil, "y.pkl")


def test_hostile_array_shape_is_not_allocated():
  # _reconstruct(ndarray, (10**12,), 'b') would try to reserve a terabyte.
  text = pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2)
  evil = text.replace(b"K\x00\x85", b"\x8a\x05\x00\x10\xa5\xd4\xe8\x85", 1)  # LONG1 10**12 instead of 0
  assert evil != text
  with pytest.raises(DataError, match="placeholder"):
    cifar10.safe_unpickle(evil, "z.pkl")


PICKLE_CASES = [
    ("not a dict", [1, 2, 3], "found list"),
    ("no labels", {b"data": np.zeros((2, 3072), np.uint8)}, "b'labels'"),
    ("wrong dtype", {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8 [N, 3072], found float32"),
    ("wrong width", {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, "found uint8 (2, 3000)"),
    ("count mismatch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "expected 2 labels (one per image), found 1"),
    ("label 10", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "record 1: expected a label 0..9, found 10"),
    ("labels not ints", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"a", b"b"]}, "as ints"),
    ("no images", {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, "at least one image"),
]


@pytest.mark.parametrize("case", PICKLE_CASES, ids=[c[0] for c in PICKLE_CASES])
def test_hostile_pickle_contents(case):
  _, obj, piece = case
  for blob in (fx.py2_pickle(obj), pickle.dumps(obj, protocol=4)):
    with pytest.raises(DataError) as e:
      cifar10.parse_pickle_batch(blob, "data_batch_1")
    assert piece in str(e.value) and str(e.value).startswith("data_batch_1")


@pytest.mark.parametrize("blob, piece", [
    (b"", "empty"),
    (b"\x80\x02}q\x00(U\x04data", "cannot unpickle"),  # truncated
    (b"not a pickle", "cannot unpickle"),
    (b"\x80\x02" + b"(" * 200000 + b".", "cannot unpickle"),
])
def test_truncated_or_garbage_pickles(blob, piece):
  with pytest.raises(DataError, match=piece):
    cifar10.parse_pickle_batch(blob, "b")


def test_truncated_pickle_file(data, tmp_path):
  root, d = _py_copy(data, tmp_path)
  path = os.path.join(d, "test_batch")
  with open(path, "rb") as f:
    blob = f.read()
  with open(path, "wb") as f:
    f.write(blob[: len(blob) // 2])
  with pytest.raises(DataError, match="test_batch: expected a CIFAR-10 pickle, cannot unpickle"):
    cifar10.Cifar10Pickle(root, "test")


@pytest.mark.parametrize("case", ["truncated", "empty", "label 10", "missing", "extra byte"])
def test_hostile_binary_batches(data, tmp_path, case):
  root, d = _bin_copy(data, tmp_path)
  path = os.path.join(d, "data_batch_2.bin")
  with open(path, "rb") as f:
    blob = bytearray(f.read())
  if case == "missing":
    os.remove(path)
    piece = "data_batch_2.bin: expected a CIFAR-10 binary batch, found no file"
  else:
    if case == "truncated":
      blob = blob[:-100]
      piece = "data_batch_2.bin: expected a whole number of 3073-byte records, found 18338 bytes (record 5 truncated to 2973 bytes)"
    elif case == "extra byte":
      blob += b"\0"
      piece = "record 6 truncated to 1 bytes"
    elif case == "empty":
      blob = b""
      piece = "data_batch_2.bin: expected records of 3073 bytes, found an empty file"
    else:
      blob[3 * 3073] = 10
      piece = "data_batch_2.bin record 3: expected a label byte 0..9, found 10"
    with open(path, "wb") as f:
      f.write(blob)
  with pytest.raises(DataError) as e:
    cifar10.Cifar10Binary(root, "train")
  assert piece in str(e.value)


def test_empty_or_foreign_directory(tmp_path):
  with pytest.raises(DataError, match="cifar-10-batches-bin/ or cifar-10-batches-py/"):
    cifar10.Cifar10(str(tmp_path), "train")
  with pytest.raises(DataError, match="data_batch_1.bin: expected a CIFAR-10 binary batch, found no file"):
    cifar10.Cifar10Binary(str(tmp_path), "train")
  with pytest.raises(DataError, match="no directory"):
    cifar10.Cifar10(str(tmp_path / "nope"), "train")
  with pytest.raises(DataError, match="split"):
    cifar10.Cifar10Binary(str(tmp_path), "validation")


def test_bad_meta_files(data, tmp_path):
  root, d = _bin_copy(data, tmp_path)
  with open(os.path.join(d, "batches.meta.txt"), "w") as f:
    f.write("cat\ndog\n")
  with pytest.raises(DataError, match="batches.meta.txt: expected 10 class names, got 2"):
    cifar10.Cifar10Binary(root, "test")
  root, d = _py_copy(data, tmp_path / "p")
  with open(os.path.join(d, "batches.meta"), "wb") as f:
    f.write(fx.py2_pickle({b"label_names": [b"a"]}))
  with pytest.raises(DataError, match="batches.meta: expected b'label_names' with 10 names"):
    cifar10.Cifar10Pickle(root, "test")
