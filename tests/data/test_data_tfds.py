"""TFDS celeb_a / cifar10 read through tfds.data_source from a tiny array_record data_dir built here."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import data_fixtures as fx
from hpjax.data import celeba, cifar10
from hpjax.core.errors import DataError
from hpjax.data.tfds_sources import CelebATfds, Cifar10Tfds


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("tfds")
  raw_celeba, raw_cifar, data_dir = str(base / "celeba"), str(base / "cifar"), str(base / "data_dir")
  fx.write_celeba(raw_celeba, n=12)
  fx.write_cifar_bin(raw_cifar, n_per_batch=3)
  fx.write_tfds_cifar10(data_dir, raw_cifar)
  fx.write_tfds_celeba(data_dir, raw_celeba)
  return raw_celeba, raw_cifar, data_dir


def _multiset(src):
  # TFDS stores examples in a hash-of-key order, not file order: compare contents.
  return sorted(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(src[i].items())) for i in range(len(src)))


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_tfds_matches_the_binary_files(prepared, split):
  src = Cifar10Tfds(prepared[2], split)
  raw = cifar10.Cifar10Binary(prepared[1], split)
  assert len(src) == len(raw) and src.label_names == raw.label_names
  ex = src[0]
  assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32
  assert _multiset(src) == _multiset(raw)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_celeba_tfds_matches_the_raw_files(prepared, split):
  src = CelebATfds(prepared[2], split, image_size=32)
  raw = celeba.CelebA(prepared[0], split, image_size=32)
  assert len(src) == len(raw) > 0
  assert src.label_names == raw.label_names and src.image_shape == raw.image_shape
  assert _multiset(src) == _multiset(raw)


def test_data_dir_without_prepared_data(tmp_path):
  with pytest.raises(DataError, match="no directory"):
    Cifar10Tfds(str(tmp_path / "absent"), "train")
  with pytest.raises(DataError) as e:
    CelebATfds(str(tmp_path), "train")
  msg = str(e.value)
  assert str(tmp_path) in msg and "celeb_a/<version>/dataset_info.json" in msg and "docs/data.md" in msg


def test_data_dir_prepared_as_tfrecord_only(prepared, tmp_path):
  d = tmp_path / "cifar10" / "3.0.2"
  d.mkdir(parents=True)
  info = json.load(open(os.path.join(prepared[2], "cifar10", "3.0.2", "dataset_info.json")))
  (d / "dataset_info.json").write_text(json.dumps(info))
  (d / "cifar10-train.tfrecord-00000-of-00001").write_bytes(b"")
  with pytest.raises(DataError, match="array_record file format.*convert_format"):
    Cifar10Tfds(str(tmp_path), "train")


def test_damaged_array_record_is_a_data_error(prepared, tmp_path):
  import shutil

  shutil.copytree(prepared[2], tmp_path / "dd")
  vdir = tmp_path / "dd" / "cifar10" / "3.0.2"
  for f in vdir.glob("cifar10-test.array_record*"):
    f.write_bytes(b"\0" * 64)
  with pytest.raises(DataError) as e:
    src = Cifar10Tfds(str(tmp_path / "dd"), "test")
    src[0]
  assert "cifar10" in str(e.value) and "\n" not in str(e.value)


def test_bad_split_names(prepared):
  with pytest.raises(DataError, match="split"):
    Cifar10Tfds(prepared[2], "validation")
  with pytest.raises(DataError, match="split"):
    CelebATfds(prepared[2], "dev")
