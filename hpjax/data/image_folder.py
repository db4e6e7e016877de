"""Your own classification data, a folder per class (torchvision's ``ImageFolder`` layout), for paper B.

Two layouts (docs/data.md, "Bring your own data")::

  ROOT/<class>/*.jpg|.jpeg|.png|.webp    class folders: the test split (and, if asked,
  ROOT/unlabelled/*                      a validation split) held out per class, seeded

  ROOT/train/<class>/*                   split folders: the splits as given
  ROOT/test/<class>/*                    (validation/ or val/ optional)
  ROOT/unlabelled/*                      optional in both layouts

A ``train`` folder at the top means the split layout; then only ``train``,
``test``, ``validation`` (or ``val``) and ``unlabelled`` (or ``unlabeled``) may sit
there, and every split has the class folders of ``train``. Otherwise every
visible top-level folder but ``unlabelled`` is a class, and no class may be
named like a split. Inside a class folder images may sit in subfolders (walked
recursively, as torchvision does); :mod:`hpjax.data.folders` says which files are
images, how links, hidden files and duplicates are handled, and the order.

* **Classes**: plain ``sorted()`` of the class folder names (code-point order:
  ``B`` before ``a``), exactly torchvision's ``ImageFolder.find_classes``; class
  ``i`` is the ``i``-th name, and ``label_names`` carries them with the run.
* **Seeded split** (class layout): per class, :func:`hpjax.data.folders.seeded_split`
  with ``{"test": test_fraction, "validation": validation_fraction}`` (defaults
  0.2 and 0) and ``seed`` (default 0): ``round(fraction * n)`` images of each
  class, at least one, picked by a permutation seeded with the seed and the
  class name; the same folder, fractions and seed give the same split anywhere.
* **Unlabelled pool**: ``ROOT/unlabelled/`` holds images with no class (no class
  folders; subfolders are only storage). Its split, ``unlabelled``, has
  examples without a ``"label"``; the semi-supervised loop scores it as the
  additional pool (:mod:`hpjax.image_score.semisupervised`).
* **Decoding**: the folder policy of :mod:`hpjax.data.image` (EXIF orientation,
  RGB unless every image of every split is grayscale, centre square resized
  bilinearly to ``image_size``, or images as they are when ``image_size`` is None).

Opening validates the whole tree (every split, the pool included) and reads
every image's header (format, size, colour), so every problem is one
``DataError`` line naming the file or folder before anything trains: a missing
(dangling) image, an unreadable or non-image file with an image's name, a
duplicate, an empty class, a class with one image, fewer than two classes, class
folders differing between splits, images outside class folders, mixed sizes
when ``image_size`` is None, a path escaping the root, a symlink loop. A
corrupt or truncated image body is found when it is decoded (``inspect`` and
``prepare`` decode every image).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hpjax.core.errors import DataError
from hpjax.data.base import check_index
from hpjax.data.folders import IMAGE_EXTENSIONS, FolderWalk, join, seeded_split
from hpjax.data.image import load_image, read_header

LABELLED_SPLITS: tuple[str, ...] = ("train", "validation", "test")
UNLABELLED = "unlabelled"
# Folder spellings -> split names (a folder of either spelling, never both).
_SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation",
                  "unlabelled": UNLABELLED, "unlabeled": UNLABELLED}
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "unlabeled": UNLABELLED}
_EXTS = " ".join(IMAGE_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class FolderIndex:
  """One validated scan of an image folder (every split).

  Attributes:
    root: the folder, as given.
    layout: ``"class_folders"`` or ``"split_folders"``.
    label_names: the sorted class names.
    files: split -> root-relative POSIX paths of its images (sorted by class,
      then path; the pool sorted by path).
    labels: split -> int32 ``[N]`` class ids (labelled splits only).
    sizes: split -> int32 ``[N, 2]`` (width, height) as displayed.
    channels: 1 when every image is grayscale, else 3.
    skipped: root-relative paths of the non-image files met.
    held_out: class layout: split -> fraction of each class, and ``seed``;
      None with split folders.
  """

  root: str
  layout: str
  label_names: tuple[str, ...]
  files: dict[str, tuple[str, ...]]
  labels: dict[str, np.ndarray]
  sizes: dict[str, np.ndarray]
  channels: int
  skipped: tuple[str, ...]
  held_out: dict[str, float] | None = None

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(s for s in (*LABELLED_SPLITS, UNLABELLED) if s in self.files)


def scan(root: str, *, image_size: int | None, test_fraction: float = 0.2,
         validation_fraction: float = 0.0, seed: int = 0) -> FolderIndex:
  """Walks and validates the whole folder, reading every image's header.

  Args:
    root: the data set's folder (either layout of the module docstring).
    image_size: the output side, or None (then every image must have one size).
    test_fraction: share of each class held out as ``test`` (class layout).
    validation_fraction: share held out as ``validation`` (class layout; 0: none).
    seed: seed of the held-out split (class layout).

  Returns:
    The :class:`FolderIndex`.

  Raises:
    DataError: the first problem found (module docstring), or a bad argument.
  """
  if image_size is not None and not (isinstance(image_size, (int, np.integer)) and 1 <= image_size <= 4096):
    raise DataError(f"image_folder image_size: expected a positive int or None, got {image_size!r}")
  walk = FolderWalk(root)
  top = walk.listing(".")
  if top.images:
    raise DataError(f"{walk.path(top.images[0])}: expected images inside class folders (ROOT/<class>/...), found one at the top of the folder")
  folders = {}
  for name in top.folders:
    split = _SPLIT_FOLDERS.get(name)
    if split in folders:
      raise DataError(f"{root}: expected one folder for split {split}, found {folders[split]}/ and {name}/")
    if split is not None:
      folders[split] = name
  pool = folders.pop(UNLABELLED, None)
  files: dict[str, tuple[str, ...]] = {}
  labels: dict[str, np.ndarray] = {}
  held_out = None
  if "train" in folders:
    layout = "split_folders"
    extra = [n for n in top.folders if _SPLIT_FOLDERS.get(n) is None]
    if extra:
      raise DataError(f"{walk.path(extra[0])}: expected only the split folders train, test, validation (or val) and unlabelled beside {walk.path(folders['train'])}, found {extra[0]!r}")
    names = _classes(walk, folders["train"])
    for split in LABELLED_SPLITS:
      if split in folders:
        if split != "train":
          _same_classes(walk, folders[split], names, folders["train"])
        files[split], labels[split] = _class_images(walk, folders[split], names)
  else:
    layout = "class_folders"
    named = [n for n in top.folders if _SPLIT_FOLDERS.get(n) not in (None, UNLABELLED)]
    if named:
      raise DataError(f"{walk.path(named[0])}: expected class folders, found a split's name without {walk.path('train')} (split folders need train/; rename the class)")
    names = _classes(walk, ".")
    every, ids = _class_images(walk, ".", names)
    fractions = {"test": test_fraction, "validation": validation_fraction}
    held_out = {**fractions, "seed": seed}
    assigned = np.asarray(seeded_split([names[i] for i in ids], fractions, seed=seed,
                                       where={n: walk.path(n) for n in names}))
    for split in LABELLED_SPLITS:
      keep = np.flatnonzero(assigned == split)
      if keep.size:
        files[split] = tuple(every[i] for i in keep)
        labels[split] = ids[keep]
  if pool is not None:
    files[UNLABELLED] = walk.images(pool)
    if not files[UNLABELLED]:
      raise DataError(f"{walk.path(pool)}: expected images ({_EXTS}) in the unlabelled folder, found none")
  sizes, channels = _headers(walk, files, image_size)
  return FolderIndex(root=walk.root, layout=layout, label_names=names, files=files, labels=labels,
                     sizes=sizes, channels=channels, skipped=walk.skipped, held_out=held_out)


def _classes(walk: FolderWalk, folder: str) -> tuple[str, ...]:
  """The sorted class folder names of ``folder``; no images beside them, at least two."""
  listing = walk.listing(folder)
  if listing.images:
    rel = listing.images[0] if folder == "." else f"{folder}/{listing.images[0]}"
    raise DataError(f"{walk.path(rel)}: expected images inside class folders, found one beside them")
  names = tuple(n for n in listing.folders if folder != "." or _SPLIT_FOLDERS.get(n) != UNLABELLED)
  if len(names) < 2:
    raise DataError(f"{walk.path(folder)}: expected at least 2 class folders, found {len(names)}{' (' + names[0] + ')' if names else ''}")
  return names


def _same_classes(walk: FolderWalk, folder: str, names: tuple[str, ...], train: str) -> None:
  listing = walk.listing(folder)
  if listing.images:
    raise DataError(f"{walk.path(folder + '/' + listing.images[0])}: expected images inside class folders, found one beside them")
  missing = [n for n in names if n not in listing.folders]
  extra = [n for n in listing.folders if n not in names]
  if missing or extra:
    what = f"missing {missing[0]!r}" if missing else f"found the extra class {extra[0]!r}"
    raise DataError(f"{walk.path(folder)}: expected the class folders of {walk.path(train)} ({', '.join(names)}), {what}")


def _class_images(walk: FolderWalk, folder: str, names: tuple[str, ...]
                  ) -> tuple[tuple[str, ...], np.ndarray]:
  """Every image of every class folder (class order, then path) and its class id."""
  files: list[str] = []
  ids: list[int] = []
  for i, name in enumerate(names):
    rel = name if folder == "." else f"{folder}/{name}"
    found = walk.images(rel)
    if not found:
      raise DataError(f"{walk.path(rel)}: expected images ({_EXTS}) in class folder {name!r}, found none (an empty class)")
    if len(found) == 1:
      raise DataError(f"{walk.path(found[0])}: expected at least 2 images in class {name!r}, found only this one (a class with one image cannot be both trained and tested on)")
    files.extend(found)
    ids.extend([i] * len(found))
  return tuple(files), np.asarray(ids, np.int32)


def _headers(walk: FolderWalk, files: dict[str, tuple[str, ...]], image_size: int | None
             ) -> tuple[dict[str, np.ndarray], int]:
  """Every image's (width, height), and the data set's channel count (1: all grayscale)."""
  sizes = {}
  gray = True
  first = None
  for split, rels in files.items():
    wh = np.empty((len(rels), 2), np.int32)
    for j, rel in enumerate(rels):
      head = read_header(walk.path(rel))
      wh[j] = head.width, head.height
      gray = gray and head.grayscale
      if image_size is None:
        if first is None:
          first = (rel, head.width, head.height)
        elif (head.width, head.height) != first[1:]:
          raise DataError(f"{walk.path(rel)}: expected {first[1]}x{first[2]} pixels like {walk.path(first[0])} (with image_size None every image must have one size; set image_size to resize), found {head.width}x{head.height} (mixed sizes)")
    sizes[split] = wh
  return sizes, 1 if gray else 3


class ImageFolder:
  """One split of an image folder, decoded lazily (a source: :mod:`hpjax.data.base`).

  Examples are ``{"image": uint8 [S, S, C], "label": int32 []}`` (``[H, W, C]``
  when ``image_size`` is None; no ``"label"`` in the ``unlabelled`` split), with
  ``C`` = 1 when every image of the folder is grayscale, else 3.

  Args:
    root: the folder (module docstring).
    split: ``train``, ``test``, ``validation`` (``val``) or ``unlabelled``
      (``unlabeled``); one of :attr:`splits`.
    image_size: output side S, or None (the images' own, common size).
    test_fraction, validation_fraction, seed: the held-out split of the class
      layout (:func:`scan`); ignored with split folders.
    index: a :func:`scan` of ``root`` with these settings, to share one scan
      between splits (:func:`open_splits`).

  Attributes:
    label_names: the sorted class names; ``splits``: the splits present;
    ``filenames``: root-relative paths; ``labels``: int32 ``[N]`` (None for the
    pool); ``sizes``: int32 ``[N, 2]`` (width, height) before resizing;
    ``channels``, ``image_shape``, ``layout``, ``skipped`` (non-image files),
    ``held_out`` (:class:`FolderIndex`).

  Raises:
    DataError: any problem of the folder (module docstring), or a split it lacks.
  """

  def __init__(self, root: str, split: str = "train", *, image_size: int | None = None,
               test_fraction: float = 0.2, validation_fraction: float = 0.0, seed: int = 0,
               index: FolderIndex | None = None):
    if index is None:
      index = scan(root, image_size=image_size, test_fraction=test_fraction,
                   validation_fraction=validation_fraction, seed=seed)
    self.root = index.root
    self.split = _SPLIT_ALIASES.get(split, split)
    if self.split not in index.files:
      raise DataError(f"{self.root}: expected a split among {', '.join(index.splits)} (layout {index.layout}), asked for {split!r}")
    self.layout = index.layout
    self.splits = index.splits
    self.label_names = index.label_names
    self.filenames = index.files[self.split]
    self.labels = index.labels.get(self.split)
    self.sizes = index.sizes[self.split]
    self.channels = index.channels
    self.skipped = index.skipped
    self.held_out = index.held_out
    self.image_size = image_size
    h, w = (image_size, image_size) if image_size is not None else self.sizes[0][::-1]
    self.image_shape = (int(h), int(w), self.channels)

  def __len__(self) -> int:
    return len(self.filenames)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = check_index(index, len(self))
    path = join(self.root, self.filenames[index])
    image = load_image(path, image_size=self.image_size, channels=self.channels)
    if image.shape != self.image_shape:  # the file changed since the folder was opened
      raise DataError(f"{path}: expected an image of {self.image_shape[1]}x{self.image_shape[0]} pixels (as when the folder was opened), found {image.shape[1]}x{image.shape[0]}")
    out: dict[str, Any] = {"image": image}
    if self.labels is not None:
      out["label"] = np.int32(self.labels[index])
    return out

  def class_counts(self) -> np.ndarray:
    """Images per class ``[num_classes]`` (all zero for the pool)."""
    if self.labels is None:
      return np.zeros(len(self.label_names), np.int64)
    return np.bincount(self.labels, minlength=len(self.label_names))


def open_splits(root: str, *, image_size: int | None = None, test_fraction: float = 0.2,
                validation_fraction: float = 0.0, seed: int = 0) -> dict[str, ImageFolder]:
  """Every split of the folder (the pool included), from one scan."""
  index = scan(root, image_size=image_size, test_fraction=test_fraction,
               validation_fraction=validation_fraction, seed=seed)
  return {s: ImageFolder(root, s, image_size=image_size, index=index) for s in index.splits}
