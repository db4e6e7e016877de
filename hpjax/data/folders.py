"""Safe, deterministic walks of image folders, and the seeded split of data without split folders.

Shared by the folder sources (``image_folder``: :mod:`hpjax.data.image_folder`;
``attribute_table``); what they decode is :func:`hpjax.data.image.load_image`'s
policy. The rules of a walk (docs/data.md, "Bring your own data"):

* **Images** are the files whose extension, in any case, is one of
  :data:`IMAGE_EXTENSIONS`. Other files are not images: they are skipped and
  listed in :attr:`FolderWalk.skipped` (``inspect`` reports them), never read.
* **Hidden** names (a leading ``.``: ``.DS_Store``, ``.ipynb_checkpoints``,
  ``.git``) are skipped entirely, files and folders alike, and not listed.
* **Order**: plain ``sorted()`` of the names in every folder (code-point order,
  as torchvision's ``ImageFolder``), folders walked depth first, results sorted
  by path components: the same on every machine and file system.
* **Symbolic links** are followed when their target lies inside the root (by
  real path). A link whose target is outside the root is a ``DataError`` (a path
  escaping the root), so is a link to one of its own ancestor folders or a
  chain of links that never ends (a symlink loop), and a dangling link with an
  image's name (a missing image).
* **Duplicates**: one file reached twice (through two links, a link and its
  target, or two hard links: the same device and inode), and two images of one
  folder whose names differ only in extension or case (``cat.jpg`` and
  ``cat.png``; ``A.jpg`` and ``a.jpg``, one file on macOS and Windows) are a
  ``DataError`` naming both. Byte-identical copies under different names are not
  looked for.
* An image name must be valid UTF-8 and the file a regular file (a FIFO with
  an image's name would block a reader forever).

Every problem is one ``DataError`` line naming the path as the user wrote it
(the root joined with the path inside it) and what was expected.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import stat
import zlib
from typing import Mapping, Sequence

import numpy as np

from hpjax.core.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")


def is_image_name(name: str) -> bool:
  """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
  """Whether a file or folder name is hidden (skipped by every walk)."""
  return name.startswith(".")


def join(root: str, rel: str) -> str:
  """The path of ``rel`` (root-relative, POSIX) under ``root`` as the user wrote it."""
  return root if rel in ("", ".") else os.path.join(root, *rel.split("/"))


def path_key(rel: str) -> tuple[str, ...]:
  """Sort key of a root-relative POSIX path: its components, in code-point order."""
  return tuple(rel.split("/"))


@dataclasses.dataclass(frozen=True)
class Listing:
  """One folder's visible entries, each sorted by name.

  Attributes:
    folders: subfolder names (links to folders inside the root included).
    images: image file names (:func:`is_image_name`).
    skipped: names of the other files (not images: never read).
  """

  folders: tuple[str, ...]
  images: tuple[str, ...]
  skipped: tuple[str, ...]


class FolderWalk:
  """Walks of one root folder; every image it hands out is checked and met once.

  One instance is one pass over a data set: the duplicate check spans every
  :meth:`images` call made on it (a file of class ``a`` linked into class ``b``
  is a duplicate even though the two folders are walked separately).

  Args:
    root: the data set's folder.

  Raises:
    DataError: ``root`` is missing or not a folder.
  """

  def __init__(self, root: str):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      what = "nothing" if not os.path.lexists(self.root) else "a file"
      raise DataError(f"{self.root}: expected a folder of images, found {what}")
    self.real_root = os.path.realpath(self.root)
    self._skipped: dict[str, None] = {}  # root-relative paths of the non-image files met, in order
    self._seen: dict[tuple[int, int], str] = {}  # (device, inode) -> root-relative path

  @property
  def skipped(self) -> tuple[str, ...]:
    """Root-relative paths of the non-image files met so far (never read), sorted."""
    return tuple(sorted(self._skipped, key=path_key))

  def path(self, rel: str) -> str:
    """The path of ``rel`` (root-relative, POSIX) as the user wrote the root."""
    return join(self.root, rel)

  def _inside(self, real: str) -> bool:
    return os.path.commonpath([real, self.real_root]) == self.real_root

  def listing(self, rel: str = ".") -> Listing:
    """The visible entries of folder ``rel`` (not recursive; its images not registered as seen).

    Raises:
      DataError: the folder cannot be listed, or one of its entries breaks a
        rule (a link escaping the root, a symlink loop, a dangling link with an
        image's name, a non-UTF-8 name, an image that is not a regular file).
    """
    folders, images, skipped = [], [], []
    for name, kind, _ in self._entries(rel):
      {"folder": folders, "image": images, "other": skipped}[kind].append(name)
    for name in skipped:
      self._skipped[name if rel in ("", ".") else f"{rel}/{name}"] = None
    return Listing(tuple(folders), tuple(images), tuple(skipped))

  def _entries(self, rel: str) -> list[tuple[str, str, os.stat_result | None]]:
    """``(name, "folder"|"image"|"other", stat)`` of folder ``rel``'s visible entries, sorted."""
    where = self.path(rel)
    try:
      names = sorted(os.listdir(where))
    except OSError as e:
      raise DataError(f"{where}: expected a readable folder, got {type(e).__name__}: {e.strerror or e}") from None
    out = []
    for name in names:
      if is_hidden(name):
        continue
      child = name if rel in ("", ".") else f"{rel}/{name}"
      shown = os.path.join(where, name)
      try:
        name.encode("utf-8")
      except UnicodeEncodeError:
        raise DataError(f"{shown!r}: expected a file name in UTF-8, found undecodable bytes (rename it)") from None
      st = self._stat(child, shown, is_image_name(name))
      if st is None:
        out.append((name, "other", None))
      elif stat.S_ISDIR(st.st_mode):
        out.append((name, "folder", st))
      elif is_image_name(name):
        if not stat.S_ISREG(st.st_mode):
          raise DataError(f"{shown}: expected an image file, found a special file (FIFO, socket or device)")
        out.append((name, "image", st))
      else:
        out.append((name, "other", st))
    return out

  def _stat(self, rel: str, shown: str, image: bool) -> os.stat_result | None:
    """The followed stat of an entry, after the link rules; None for a skippable dangling link."""
    full = self.path(rel)
    try:
      lst = os.lstat(full)
    except OSError as e:
      raise DataError(f"{shown}: expected a readable entry, got {type(e).__name__}: {e.strerror or e}") from None
    if not stat.S_ISLNK(lst.st_mode):
      return lst
    try:
      st = os.stat(full)
    except FileNotFoundError:
      if image:
        raise DataError(f"{shown}: expected an image, found a link to {os.readlink(full)!r}, which does not exist (missing image)") from None
      return None
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise DataError(f"{shown}: expected a link that ends in a file or folder, found a symlink loop") from None
      raise DataError(f"{shown}: expected a readable entry, got {type(e).__name__}: {e.strerror or e}") from None
    real = os.path.realpath(full)
    if not self._inside(real):
      raise DataError(f"{shown}: expected paths inside {self.root}, found a link to {real}, outside it (a path escaping the root)")
    return st

  def images(self, rel: str = ".") -> tuple[str, ...]:
    """Every image under folder ``rel``, recursively, as root-relative POSIX paths.

    Sorted by :func:`path_key`; each is registered, so meeting the same file
    again (in this call or a later one) is a duplicate. Non-image files are
    added to :attr:`skipped` (so are those of :meth:`listing`).

    Raises:
      DataError: any broken rule of the module docstring (first one met).
    """
    # Every folder from the root down to rel is an ancestor: a link to any of them loops.
    parts = [] if rel in ("", ".") else rel.split("/")
    start = frozenset(os.path.realpath(self.path("/".join(parts[:i]))) for i in range(len(parts) + 1))
    found: list[str] = []
    stack = [(rel, start)]
    while stack:
      folder, ancestors = stack.pop()
      stems: dict[str, str] = {}
      subfolders = []
      for name, kind, st in self._entries(folder):
        child = name if folder in ("", ".") else f"{folder}/{name}"
        if kind == "other":
          self._skipped[child] = None
        elif kind == "image":
          stem = os.path.splitext(name)[0].casefold()
          if stem in stems:
            raise DataError(f"{self.path(child)}: expected one image per name in a folder, found it beside {stems[stem]} (same name up to extension or case: a duplicate)")
          stems[stem] = name
          self._register(child, st)
          found.append(child)
        else:
          real = os.path.realpath(self.path(child))
          if real in ancestors:
            raise DataError(f"{self.path(child)}: expected a folder, found a link back to its own ancestor {real} (a symlink loop)")
          subfolders.append((child, ancestors | {real}))
      stack.extend(reversed(subfolders))
    found.sort(key=path_key)
    return tuple(found)

  def _register(self, rel: str, st: os.stat_result, where: str | None = None) -> None:
    """Marks a file as met; meeting it again is a duplicate (``where``: who names it)."""
    key = (st.st_dev, st.st_ino)
    first = self._seen.get(key)
    if first is not None:
      how = f"{self.path(rel)} named twice" if first == rel else f"the file {self.path(first)} again (a link or hard link)"
      raise DataError(f"{where or self.path(rel)}: expected each image once, found {how}: a duplicate")
    self._seen[key] = rel

  def resolve(self, rel: str, where: str) -> str:
    """Checks that a path named by a table (``where``: e.g. ``labels.csv line 7``) is
    an image inside the root, registers it, and returns its full path.

    ``rel`` is POSIX, relative to the root; ``..`` components are allowed only
    while the real path stays inside the root.

    Raises:
      DataError: an absolute path, a path (or a link) escaping the root, a
        hidden component, not an image name, nothing there, a folder, a
        special file, or a file met before (a duplicate).
    """
    if not rel or rel.startswith(("/", "\\")) or os.path.isabs(rel) or "\\" in rel or "\0" in rel:
      raise DataError(f"{where}: expected a file name relative to {self.root} (forward slashes), got {rel[:80]!r}")
    parts = rel.split("/")
    if any(is_hidden(p) and p not in (".", "..") for p in parts):
      raise DataError(f"{where}: expected a visible file, got the hidden path {rel[:80]!r}")
    if not is_image_name(parts[-1]):
      raise DataError(f"{where}: expected an image name ending in {' '.join(IMAGE_EXTENSIONS)}, got {rel[:80]!r}")
    full = os.path.join(self.root, *parts)
    real = os.path.realpath(full)
    if not self._inside(real):
      raise DataError(f"{where}: expected a path inside {self.root}, got {rel[:80]!r}, which leads to {real} (a path escaping the root)")
    try:
      st = os.stat(full)
    except FileNotFoundError:
      raise DataError(f"{where}: expected the image {full}, found nothing there (missing image)") from None
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise DataError(f"{where}: expected the image {full}, found a symlink loop") from None
      raise DataError(f"{where}: expected the image {full}, got {type(e).__name__}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
      raise DataError(f"{where}: expected the image {full} to be a file, found a folder or special file")
    self._register(os.path.relpath(real, self.real_root).replace(os.sep, "/"), st, where)
    return full


def seeded_split(groups: Sequence[str], fractions: Mapping[str, float], *, seed: int,
                 rest: str = "train", where: Mapping[str, str] | None = None) -> list[str]:
  """Assigns every item to a split: deterministic, seeded, stratified by group.

  The split of data without split folders (``image_folder``'s ``ROOT/<class>/*``:
  the groups are the class names). Within each group (its items in their given
  order), a ``numpy.random.default_rng([seed, crc32(group)])`` permutation puts
  the first ``round(f * n)`` items into the first split of ``fractions``, at
  least one when ``f > 0``; the next ones into the second split, and so on; the
  rest into ``rest``, which must keep at least one. A group's assignment depends
  only on the seed, the group's name and its own items, so adding a class leaves
  the other classes' splits unchanged.

  Args:
    groups: the group of each item, ``[N]``.
    fractions: split name -> share of each group, e.g. ``{"test": 0.2}``; each in
      ``[0, 1)``, summing below 1.
    seed: the split's seed.
    rest: the split of the remaining items.
    where: group -> how to name it in errors (default: the group itself).

  Returns:
    The split name of each item, ``[N]``.

  Raises:
    DataError: bad fractions, or a group too small to give every split with a
      positive fraction one item and keep one for ``rest``.
  """
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"split seed: expected an int >= 0, got {seed!r}")
  if any(not 0.0 <= f < 1.0 for f in fractions.values()) or sum(fractions.values()) >= 1.0:
    raise DataError(f"split fractions: expected values in [0, 1) summing below 1, got {dict(fractions)}")
  out = [rest] * len(groups)
  members: dict[str, list[int]] = {}
  for i, g in enumerate(groups):
    members.setdefault(g, []).append(i)
  for g, idx in members.items():
    n = len(idx)
    counts = [max(1, int(round(f * n))) if f > 0 else 0 for f in fractions.values()]
    if sum(counts) >= n:
      need = sum(1 for f in fractions.values() if f > 0) + 1
      name = (where or {}).get(g, g)
      raise DataError(f"{name}: expected at least {need} images to fill {', '.join(fractions)} and {rest} (seeded split), found {n}")
    order = np.random.default_rng([seed, zlib.crc32(g.encode("utf-8"))]).permutation(n)
    pos = 0
    for split, k in zip(fractions, counts):
      for j in order[pos:pos + k]:
        out[idx[j]] = split
      pos += k
  return out
