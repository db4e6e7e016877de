"""open_source: every name opens the right source, unknown names are refused listing the valid ones."""
from __future__ import annotations

import numpy as np
import pytest

import data_fixtures as fx
from hpjax.data.base import Source
from hpjax.core.errors import DataError
from hpjax.data.sources import NAMES, open_source


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  base = tmp_path_factory.mktemp("src")
  fx.write_celeba(str(base / "celeba"), n=8)
  fx.write_cifar_bin(str(base / "cifar"), n_per_batch=2)
  fx.write_idx_dataset(str(base / "mnist"), n_train=10, n_test=10)
  from hpjax.data import prepare

  prepare.prepare_celeba(str(base / "celeba"), str(base / "cache"), image_size=32, workers=0, log=lambda *a: None)
  return base


@pytest.mark.parametrize("name, sub, split, image_size, shape, n", [
    ("celeba", "celeba", "train", 32, (32, 32, 3), 4),
    ("celeba_prepared", "cache", "test", None, (32, 32, 3), 2),
    ("cifar10", "cifar", "train", None, (32, 32, 3), 10),
    ("mnist", "mnist", "test", 28, (28, 28, 1), 10),
    ("digits", None, "test", None, (8, 8, 1), 355),
])
def test_opens_each_format(roots, name, sub, split, image_size, shape, n):
  src = open_source(name, split, path=str(roots / sub) if sub else None, image_size=image_size)
  assert isinstance(src, Source)
  assert len(src) == n and src.image_shape == shape and src[0]["image"].shape == shape
  assert src[0]["image"].dtype == np.uint8 and src[0]["label"].dtype == np.int32


def test_fashion_mnist_default_root_or_clear_error():
  import os

  from hpjax.data.idx import FASHION_MNIST_ROOT

  if os.path.isdir(FASHION_MNIST_ROOT):
    assert len(open_source("fashion_mnist", "test")) == 10_000
  else:
    with pytest.raises(DataError, match="fashion-mnist"):
      open_source("fashion_mnist", "test")


def test_synthetic_is_delegated():
  pytest.importorskip("hpjax.data.synthetic")
  src = open_source("synthetic", "train", image_size=32, num_examples=4, seed=1)
  assert len(src) == 4 and src[0]["image"].shape[:2] == (32, 32)


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(DataError) as e:
    open_source("imagenet", "train")
  msg = str(e.value)
  assert "'imagenet'" in msg and all(n in msg for n in NAMES)


def test_missing_path_and_size_mismatch(roots):
  with pytest.raises(DataError, match="expected a path"):
    open_source("cifar10", "train")
  with pytest.raises(DataError, match="image_size 64 to match its fixed 32x32"):
    open_source("cifar10", "train", path=str(roots / "cifar"), image_size=64)


@pytest.mark.parametrize("name, sub", [("celeba_prepared", "cache"), ("cifar10", "cifar"), ("mnist", "mnist"), ("celeba", "celeba")])
def test_sources_pickle_small_for_worker_processes(roots, name, sub):
  import pickle

  src = open_source(name, "train", path=str(roots / sub))
  blob = pickle.dumps(src)
  assert len(blob) < 20_000  # a location, not the (memory-mapped) data
  back = pickle.loads(blob)
  assert len(back) == len(src)
  for k, v in src[1].items():
    np.testing.assert_array_equal(back[1][k], v)
