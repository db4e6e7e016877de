"""One function to open any data set hpjax reads, by name.

Imports happen inside :func:`open_source` so that asking for the digits does
not import TFDS, and the generated faces do not import PIL.
"""
from __future__ import annotations

from typing import Any

from hpjax.data.base import Source
from hpjax.core.errors import DataError

NAMES: tuple[str, ...] = (
    "synthetic", "celeba", "celeba_prepared", "celeba_tfds", "cifar10", "cifar10_tfds",
    "fashion_mnist", "mnist", "digits", "image_folder", "prepared", "attribute_table",
)
# Names whose data the user brings: a path is required.
NEEDS_PATH: frozenset[str] = frozenset(
    {"celeba", "celeba_prepared", "celeba_tfds", "cifar10", "cifar10_tfds", "mnist",
     "image_folder", "prepared", "attribute_table"})


def open_source(name: str, split: str, *, path: str | None = None, image_size: int | None = None, **kw: Any) -> Source:
  """Opens data set ``name`` as a random-access source (see :mod:`hpjax.data.base`).

  Args:
    name: one of :data:`NAMES`.
    split: ``train``/``test`` everywhere; CelebA also ``validation``; digits
      also ``all``; the generated faces take whatever splits they define; an
      image folder (and its cache) the splits it has, ``unlabelled`` included.
    path: where the data are: the CelebA root, the prepared cache (``prepared``:
      any cache of :mod:`hpjax.data.prepare`), the TFDS data_dir, the CIFAR-10
      directory, the IDX directory (Fashion-MNIST defaults to the Debian
      package's directory), the image folder's root, the attribute table's root
      or table file. Ignored for ``synthetic`` and ``digits``.
    image_size: output side for CelebA (default 64), the generated faces
      (default 64) and image folders (default None: the images' own, common
      size); the other data sets have fixed sizes and refuse another.
    **kw: ``num_examples`` and ``seed`` for ``synthetic``; ``test_fraction``,
      ``validation_fraction`` and ``seed`` (the held-out split of class
      folders, :class:`~hpjax.data.image_folder.ImageFolder`) for ``image_folder``;
      ``seed`` (the split of a table without a split column,
      :class:`~hpjax.data.attribute_table.AttributeTable`) for ``attribute_table``,
      whose ``image_size`` defaults to 64.

  Returns:
    The source.

  Raises:
    DataError: unknown name, a missing required path, or bad data.
  """
  if name not in NAMES:
    raise DataError(f"data set name: expected one of {', '.join(NAMES)}, got {name!r}")
  if name in NEEDS_PATH and not path:
    raise DataError(f"data set {name!r}: expected a path to the data, got none")
  if name == "synthetic":
    from hpjax.data.synthetic import SyntheticFaces

    return SyntheticFaces(split, image_size=image_size or 64, num_examples=kw.get("num_examples"), seed=kw.get("seed", 0))
  if name == "celeba":
    from hpjax.data.celeba import CelebA

    return CelebA(path, split, image_size=image_size or 64)
  if name == "celeba_prepared":
    from hpjax.data.celeba import CelebAPrepared

    src = CelebAPrepared(path, split)
    _check_size(name, src.image_shape, image_size)
    return src
  if name == "image_folder":
    from hpjax.data.image_folder import ImageFolder

    return ImageFolder(path, split, image_size=image_size, test_fraction=kw.get("test_fraction", 0.2),
                       validation_fraction=kw.get("validation_fraction", 0.0), seed=kw.get("seed", 0))
  if name == "attribute_table":
    from hpjax.data.attribute_table import AttributeTable

    return AttributeTable(path, split, image_size=image_size or 64, seed=kw.get("seed", 0))
  if name == "prepared":
    from hpjax.data.prepare import Prepared

    src = Prepared(path, split)
    _check_size(name, src.image_shape, image_size)
    return src
  if name == "celeba_tfds":
    from hpjax.data.tfds_sources import CelebATfds

    return CelebATfds(path, split, image_size=image_size or 64)
  if name == "cifar10":
    from hpjax.data.cifar10 import Cifar10

    src = Cifar10(path, split)
  elif name == "cifar10_tfds":
    from hpjax.data.tfds_sources import Cifar10Tfds

    src = Cifar10Tfds(path, split)
  elif name == "fashion_mnist":
    from hpjax.data.idx import FashionMNIST

    src = FashionMNIST(split, path)
  elif name == "mnist":
    from hpjax.data.idx import MNIST

    src = MNIST(split, path)
  else:  # digits
    from hpjax.data.digits import Digits

    src = Digits(split)
  _check_size(name, src.image_shape, image_size)
  return src


def _check_size(name: str, shape: tuple[int, ...], image_size: int | None) -> None:
  # Fixed-size data sets are never resized behind the caller's back: a config
  # asking for 64x64 CIFAR is a mistake worth one clear line.
  if image_size is not None and tuple(shape[:2]) != (image_size, image_size):
    raise DataError(f"data set {name!r}: expected image_size {image_size} to match its fixed {shape[0]}x{shape[1]} images, got a mismatch")
