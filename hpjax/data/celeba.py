"""CelebA as distributed (Liu et al., "Deep Learning Face Attributes in the Wild", ICCV 2015).

The raw layout read by :class:`CelebA`::

  ROOT/img_align_celeba/000001.jpg ...     aligned 178x218 RGB JPEGs
  ROOT/list_attr_celeba.txt                count line, 40 names, then "000001.jpg  -1  1 ..."
  ROOT/list_eval_partition.txt             "000001.jpg 0" (0 train, 1 validation, 2 test)
  ROOT/list_landmarks_align_celeba.txt     optional: count, 10 names, "000001.jpg 69 109 ..."

The text files are validated completely when a source is built (every line,
every value, every listed image present on disk); images are decoded lazily,
each decode checking format, mode and size.

Each example is ``{"image": uint8 [S, S, 3], "label": int32 [40] in {0, 1},
"landmarks": int32 [5, 2] (x, y), "boxes": int32 [40, 4]}`` (landmarks and boxes
only when the file is present) where ``S = image_size``: the centred 178x178 square
(crop box ``(0, 20, 178, 198)``, see :func:`hpjax.data.image.center_square_box`)
resized bilinearly. Attribute values -1/1 become 0/1. ``"boxes"`` are the
attributes' regions built from the landmarks (:func:`landmark_boxes`,
:data:`LANDMARK_REGIONS`), which the localisation analysis scores attention against.

:class:`CelebAPrepared` reads the decoded cache written by
``python -m hpjax.data.prepare celeba`` (:mod:`hpjax.data.prepare`) and returns identical arrays.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from hpjax.core.errors import DataError
from hpjax.data.base import check_index
from hpjax.data.image import center_square_box, crop_resize, decode_image, scale_points
from hpjax.data.prepare import Prepared

# The official attribute order (alphabetical, as in list_attr_celeba.txt).
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
LANDMARKS: tuple[str, ...] = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
IMAGE_DIR = "img_align_celeba"
# (width, height) of the aligned-and-cropped images CelebA distributes.
SOURCE_SIZE = (178, 218)
SPLITS = {"train": 0, "validation": 1, "test": 2}
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}
# Only plain file names: a listed "../x.jpg" must not reach outside the image directory.
_FILENAME = re.compile(r"^[A-Za-z0-9_.-]+\.(jpg|jpeg|png)$", re.IGNORECASE)
_SMALL_INT = re.compile(r"^-?[0-9]{1,5}$")
_MAX_TEXT_BYTES = 256 << 20  # the real attribute file is 26 MB


def split_name(split: str) -> str:
  """Canonical split name (``train``/``validation``/``test``) or DataError."""
  s = _SPLIT_ALIASES.get(split, split)
  if s not in SPLITS:
    raise DataError(f"CelebA split: expected one of {sorted(SPLITS)}, got {split!r}")
  return s


# --------------------------------------------------------------------------- text files


def read_text(path: str) -> str:
  """Reads a small text file as UTF-8, raising DataError if missing, empty or binary."""
  name = os.path.basename(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: expected the file {name}, found nothing there")
  size = os.path.getsize(path)
  if size == 0:
    raise DataError(f"{path}: expected text, found an empty file")
  if size > _MAX_TEXT_BYTES:
    raise DataError(f"{path}: expected a text file under {_MAX_TEXT_BYTES >> 20} MB, found {size} bytes")
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: expected UTF-8 text, found a non-text byte at offset {e.start}") from None


def _lines(text: str) -> list[tuple[int, list[str]]]:
  """(1-based line number, whitespace tokens) of the non-blank lines."""
  return [(i + 1, ln.split()) for i, ln in enumerate(text.splitlines()) if ln.strip()]


def _check_filename(fname: str, where: str) -> None:
  if not _FILENAME.match(fname):
    raise DataError(f"{where}: expected an image file name like 000001.jpg, got {fname[:60]!r}")


def _parse_table(
    text: str, name: str, expected_columns: Sequence[str], allowed: frozenset[str] | None
) -> tuple[list[str], list[list[str]]]:
  """Parses the shared layout of the attribute and landmark files.

  Line 1 is the row count, line 2 the column names, then one row per image:
  a file name followed by one value per column.

  Returns:
    (file names, rows of value tokens), validated against the count line, the
    expected column names and (if given) the set of allowed value tokens.
  """
  lines = _lines(text)
  if not lines:
    raise DataError(f"{name}: expected a count line, found no text")
  ln, toks = lines[0]
  if len(toks) != 1 or not (toks[0].isascii() and toks[0].isdigit()):
    raise DataError(f"{name} line {ln}: expected the number of images, got {' '.join(toks)[:60]!r}")
  count = int(toks[0])
  if len(lines) < 2:
    raise DataError(f"{name}: expected a header line of {len(expected_columns)} column names after the count, found end of file")
  ln, header = lines[1]
  if tuple(header) != tuple(expected_columns):
    if len(header) != len(expected_columns):
      raise DataError(f"{name} line {ln}: expected {len(expected_columns)} column names, got {len(header)}")
    j = next(j for j, (a, b) in enumerate(zip(header, expected_columns)) if a != b)
    raise DataError(f"{name} line {ln}: expected column {j + 1} to be {expected_columns[j]!r}, got {header[j][:40]!r}")
  ncol = len(expected_columns)
  fnames: list[str] = []
  rows: list[list[str]] = []
  seen: set[str] = set()
  for ln, toks in lines[2:]:
    if len(toks) != ncol + 1:
      raise DataError(f"{name} line {ln}: expected a file name and {ncol} values, got {len(toks) - 1} values")
    fname, vals = toks[0], toks[1:]
    _check_filename(fname, f"{name} line {ln}")
    if fname in seen:
      raise DataError(f"{name} line {ln}: expected each image once, {fname} is listed again")
    seen.add(fname)
    if allowed is not None and not allowed.issuperset(vals):
      bad = next(v for v in vals if v not in allowed)
      raise DataError(f"{name} line {ln}: expected values {'/'.join(sorted(allowed))}, got {bad[:20]!r}")
    fnames.append(fname)
    rows.append(vals)
  if len(fnames) != count:
    raise DataError(f"{name}: expected {count} rows (line 1), found {len(fnames)}")
  return fnames, rows


def _fast_table(text: str, expected_columns: Sequence[str], value_ok) -> tuple[list[str], list[str]] | None:
  """Whole-file vectorised check of the count/header/rows layout.

  Validating 200k lines one by one takes seconds; this checks the same rules
  on the flat token list at C speed and returns ``None`` whenever anything is
  off, so the line-by-line parser can then name the exact line.

  Returns:
    (file names, flat value tokens, row-major) or ``None``.
  """
  toks = text.split()
  ncol = len(expected_columns)
  if not toks or not (toks[0].isascii() and toks[0].isdigit()):
    return None
  n = int(toks[0])
  if len(toks) != 1 + ncol + n * (ncol + 1) or tuple(toks[1 : 1 + ncol]) != tuple(expected_columns):
    return None
  # Equal token totals could hide one short and one long line: the line count
  # plus the per-column checks below (a shifted row puts a value where a file
  # name must be) rule that out.
  if sum(1 for ln in text.splitlines() if ln.strip()) != n + 2:
    return None
  body = toks[1 + ncol :]
  fnames = body[:: ncol + 1]
  del body[:: ncol + 1]
  if len(set(fnames)) != n or not all(map(_FILENAME.match, fnames)) or not value_ok(body):
    return None
  return fnames, body


def parse_attributes(text: str, name: str = ATTR_FILE) -> tuple[list[str], np.ndarray]:
  """Parses ``list_attr_celeba.txt``.

  Args:
    text: the file's contents.
    name: the file name used in error messages.

  Returns:
    (file names, ``int32 [num_images, 40]`` attribute values in {0, 1}).

  Raises:
    DataError: wrong count line, header, column count, a value other than -1/1,
      a bad or repeated file name.
  """
  fast = _fast_table(text, ATTRIBUTES, lambda vals: set(vals) <= {"-1", "1"})
  if fast is not None:
    fnames, vals = fast
    # "1" has length 1, "-1" length 2: len() maps the tokens to 0/1 at C speed.
    lengths = np.fromiter(map(len, vals), np.int8, len(vals))
    return fnames, (lengths == 1).astype(np.int32).reshape(len(fnames), len(ATTRIBUTES))
  fnames, rows = _parse_table(text, name, ATTRIBUTES, frozenset({"-1", "1"}))
  if not rows:
    return fnames, np.zeros((0, len(ATTRIBUTES)), np.int32)
  # Tokens are already checked to be "-1"/"1", so a string compare is exact.
  labels = (np.array(rows, dtype="U2") == "1").astype(np.int32)
  return fnames, labels


def parse_landmarks(text: str, name: str = LANDMARKS_FILE) -> tuple[list[str], np.ndarray]:
  """Parses ``list_landmarks_align_celeba.txt``.

  Returns:
    (file names, ``int32 [num_images, 5, 2]`` (x, y) in source-image pixels).
  """
  fast = _fast_table(text, LANDMARKS, lambda vals: all(map(_SMALL_INT.match, vals)))
  if fast is not None:
    fnames, vals = fast
    out = np.array(vals, dtype=np.int64).reshape(len(fnames), 5, 2)
    if not out.size or np.abs(out).max() <= 10_000:
      return fnames, out.astype(np.int32)
  fnames, rows = _parse_table(text, name, LANDMARKS, None)
  out = np.zeros((len(rows), 10), np.int32)
  for i, vals in enumerate(rows):
    try:
      v = [int(t) for t in vals]
    except ValueError:
      raise DataError(f"{name} row {i + 1} ({fnames[i]}): expected 10 integers, got {' '.join(vals)[:60]!r}") from None
    if any(not -10_000 <= x <= 10_000 for x in v):
      raise DataError(f"{name} row {i + 1} ({fnames[i]}): expected pixel coordinates, got {v}")
    out[i] = v
  return fnames, out.reshape(-1, 5, 2)


def parse_partition(text: str, name: str = PARTITION_FILE) -> tuple[list[str], np.ndarray]:
  """Parses ``list_eval_partition.txt`` (``000001.jpg 0|1|2``, no header).

  Returns:
    (file names, ``int32 [num_images]`` partition ids).
  """
  toks = text.split()
  if toks and len(toks) % 2 == 0 and sum(1 for ln in text.splitlines() if ln.strip()) == len(toks) // 2:
    fnames, ids = toks[0::2], toks[1::2]
    if set(ids) <= {"0", "1", "2"} and len(set(fnames)) == len(fnames) and all(map(_FILENAME.match, fnames)):
      return fnames, np.fromiter(map(int, ids), np.int32, len(ids))
  # Slow path: line by line, to name the first bad line.
  fnames: list[str] = []
  parts: list[int] = []
  seen: set[str] = set()
  for ln, toks in _lines(text):
    if len(toks) != 2:
      raise DataError(f"{name} line {ln}: expected '<file> <0|1|2>', got {len(toks)} fields")
    fname, pid = toks
    _check_filename(fname, f"{name} line {ln}")
    if pid not in ("0", "1", "2"):
      raise DataError(f"{name} line {ln}: expected partition id 0 (train), 1 (validation) or 2 (test), got {pid[:20]!r}")
    if fname in seen:
      raise DataError(f"{name} line {ln}: expected each image once, {fname} is listed again")
    seen.add(fname)
    fnames.append(fname)
    parts.append(int(pid))
  if not fnames:
    raise DataError(f"{name}: expected one line per image, found none")
  return fnames, np.asarray(parts, np.int32)


def _align(ref: list[str], ref_name: str, other: list[str], other_name: str) -> np.ndarray:
  """Index into ``other`` for each name of ``ref``; DataError when the sets differ."""
  pos = {f: i for i, f in enumerate(other)}
  idx = np.empty(len(ref), np.int64)
  for i, f in enumerate(ref):
    j = pos.get(f)
    if j is None:
      raise DataError(f"{other_name}: expected an entry for {f} (listed in {ref_name}), found none")
    idx[i] = j
  if len(other) != len(ref):
    extra = next(f for f in other if f not in set(ref))
    raise DataError(f"{other_name}: lists {extra}, which {ref_name} does not have")
  return idx


# --------------------------------------------------------------------------- sources


class CelebA:
  """CelebA from the distributed files, official partition, decoded lazily.

  Args:
    root: directory holding ``img_align_celeba/`` and the list files.
    split: ``train``, ``validation`` (or ``val``) or ``test``.
    image_size: output side S; ``None`` keeps the 178x178 crop.
    source_size: ``(width, height)`` every JPEG must have.

  Raises:
    DataError: anything wrong with the text files or a listed image missing.
  """

  def __init__(
      self,
      root: str,
      split: str,
      *,
      image_size: int | None = 64,
      source_size: tuple[int, int] = SOURCE_SIZE,
  ):
    self.root = os.fspath(root)
    self.split = split_name(split)
    self.image_size = image_size
    self.source_size = tuple(source_size)
    self.crop_box = center_square_box(*self.source_size)
    if image_size is not None and not (isinstance(image_size, int) and 1 <= image_size <= 4096):
      raise DataError(f"CelebA image_size: expected a positive int, got {image_size!r}")
    if not os.path.isdir(self.root):
      raise DataError(f"{self.root}: expected a CelebA directory with {IMAGE_DIR}/, {ATTR_FILE}, {PARTITION_FILE}, found no directory")
    self.image_dir = os.path.join(self.root, IMAGE_DIR)
    if not os.path.isdir(self.image_dir):
      raise DataError(f"{self.image_dir}: expected the directory of CelebA JPEGs, found nothing")

    attr_path = os.path.join(self.root, ATTR_FILE)
    fnames, labels = parse_attributes(read_text(attr_path), attr_path)
    part_path = os.path.join(self.root, PARTITION_FILE)
    pnames, parts = parse_partition(read_text(part_path), part_path)
    parts = parts[_align(fnames, attr_path, pnames, part_path)]
    lm_path = os.path.join(self.root, LANDMARKS_FILE)
    landmarks = None
    if os.path.exists(lm_path):
      lnames, lms = parse_landmarks(read_text(lm_path), lm_path)
      landmarks = lms[_align(fnames, attr_path, lnames, lm_path)]
    # One listdir instead of 200k stat calls.
    present = set(os.listdir(self.image_dir))
    for i, f in enumerate(fnames):
      if f not in present:
        raise DataError(f"{os.path.join(self.image_dir, f)}: expected the image listed in {ATTR_FILE} row {i + 1}, found no file")

    keep = np.flatnonzero(parts == SPLITS[self.split])
    self.filenames: tuple[str, ...] = tuple(fnames[i] for i in keep)
    self.labels = labels[keep]
    self.landmarks = None if landmarks is None else landmarks[keep]
    self.label_names = ATTRIBUTES
    s = self.crop_box[2] - self.crop_box[0] if image_size is None else image_size
    self.image_shape = (s, s, 3)

  def __len__(self) -> int:
    return len(self.filenames)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = check_index(index, len(self))
    path = os.path.join(self.image_dir, self.filenames[index])
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise DataError(f"{path}: expected a readable image file, got {type(e).__name__}: {e.strerror}") from None
    img = decode_image(data, path, formats=("JPEG",), mode="RGB", size=self.source_size)
    out = {"image": crop_resize(img, self.crop_box, self.image_size), "label": self.labels[index].copy()}
    if self.landmarks is not None:
      out["landmarks"] = scale_points(self.landmarks[index], self.crop_box, self.image_size)
      out["boxes"] = landmark_boxes(out["landmarks"], self.image_shape[0])
    return out


# --------------------------------------------------------------------------- regions from landmarks

# The attributes whose evidence sits at a place the five landmarks locate, by region
# (docs/data.md, "CelebA's regions"). The other 16 (hair colour and texture, face
# shape, Attractive, Blurry, Chubby, Heavy_Makeup, Male, Pale_Skin, Sideburns,
# Wearing_Earrings, Young) have no compact region and are not scored.
LANDMARK_REGIONS: dict[str, tuple[str, ...]] = {
    "eyes": ("Arched_Eyebrows", "Bags_Under_Eyes", "Bushy_Eyebrows", "Eyeglasses", "Narrow_Eyes"),
    "nose": ("Big_Nose", "Pointy_Nose"),
    "mouth": ("Big_Lips", "Mouth_Slightly_Open", "Smiling", "Wearing_Lipstick"),
    "upper_lip": ("Mustache",),
    "chin": ("Double_Chin", "Goatee"),
    "lower_face": ("5_o_Clock_Shadow", "No_Beard"),
    "cheeks": ("High_Cheekbones", "Rosy_Cheeks"),
    "forehead": ("Bangs", "Receding_Hairline"),
    "crown": ("Bald", "Wearing_Hat"),
    "neck": ("Wearing_Necklace", "Wearing_Necktie"),
}


def landmark_boxes(landmarks: np.ndarray, side: int) -> np.ndarray:
  """The 40 attributes' regions from the five landmarks, in the same pixels.

  With the eyes at ``(ex0, ey)``, ``(ex1, ey)`` (mean height), the nose at
  ``(nx, ny)``, the mouth corners spanning ``mx0..mx1`` at height ``my`` and the
  inter-ocular distance ``d = ex1 - ex0`` (at least 1), the regions
  (:data:`LANDMARK_REGIONS`) are the boxes ``(x0, y0, x1, y1)``:

  ==========  =====================================================
  eyes        ``ex0 - d/2, ey - 0.6d, ex1 + d/2, ey + 0.4d`` (brows to bags)
  nose        ``nx - 0.4d, ey, nx + 0.4d, ny + 0.3d``
  mouth       ``mx0 - 0.2d, my - 0.35d, mx1 + 0.2d, my + 0.35d``
  upper_lip   ``mx0 - 0.2d, ny, mx1 + 0.2d, my``
  chin        ``mx0 - 0.3d, my + 0.2d, mx1 + 0.3d, my + d``
  lower_face  ``ex0 - d/2, ny, ex1 + d/2, my + d``
  cheeks      ``ex0 - 0.6d, ey + 0.3d, ex1 + 0.6d, my``
  forehead    ``ex0 - 0.6d, ey - 1.5d, ex1 + 0.6d, ey - d/2``
  crown       ``ex0 - d, ey - 2.6d, ex1 + d, ey - 1.2d``
  neck        ``mx0 - d, my + d, mx1 + d, my + 2.2d``
  ==========  =====================================================

  clipped to the ``side x side`` image (:func:`hpjax.data.regions.map_boxes`); an
  attribute with no region, or one clipped away, gets ``(0, 0, 0, 0)``. The
  proportions are this project's reading of the aligned faces (eyes ~39 px apart
  in the 178x218 originals), not an annotation.

  Args:
    landmarks: ``int [..., 5, 2]`` (x, y) of left eye, right eye, nose, left and
      right mouth corner, in output pixels (the examples' ``"landmarks"``).
    side: the output image's side.

  Returns:
    ``int32 [..., 40, 4]`` half-open boxes in output pixels.
  """
  from hpjax.data.regions import map_boxes

  p = np.asarray(landmarks, np.float64)
  x, y = p[..., 0], p[..., 1]
  ex0, ex1, ey = np.minimum(x[..., 0], x[..., 1]), np.maximum(x[..., 0], x[..., 1]), y[..., :2].mean(-1)
  nx, ny = x[..., 2], y[..., 2]
  mx0, mx1, my = np.minimum(x[..., 3], x[..., 4]), np.maximum(x[..., 3], x[..., 4]), y[..., 3:].mean(-1)
  d = np.maximum(ex1 - ex0, 1.0)
  region = {
      "eyes": (ex0 - d / 2, ey - 0.6 * d, ex1 + d / 2, ey + 0.4 * d),
      "nose": (nx - 0.4 * d, ey, nx + 0.4 * d, ny + 0.3 * d),
      "mouth": (mx0 - 0.2 * d, my - 0.35 * d, mx1 + 0.2 * d, my + 0.35 * d),
      "upper_lip": (mx0 - 0.2 * d, ny, mx1 + 0.2 * d, my),
      "chin": (mx0 - 0.3 * d, my + 0.2 * d, mx1 + 0.3 * d, my + d),
      "lower_face": (ex0 - d / 2, ny, ex1 + d / 2, my + d),
      "cheeks": (ex0 - 0.6 * d, ey + 0.3 * d, ex1 + 0.6 * d, my),
      "forehead": (ex0 - 0.6 * d, ey - 1.5 * d, ex1 + 0.6 * d, ey - d / 2),
      "crown": (ex0 - d, ey - 2.6 * d, ex1 + d, ey - 1.2 * d),
      "neck": (mx0 - d, my + d, mx1 + d, my + 2.2 * d),
  }
  boxes = np.full(p.shape[:-2] + (len(ATTRIBUTES), 4), np.nan)
  for name, attributes in LANDMARK_REGIONS.items():
    box = np.stack(region[name], -1)
    for a in attributes:
      boxes[..., ATTRIBUTES.index(a), :] = box
  return map_boxes(boxes, (0, 0, side, side), side, side)


# --------------------------------------------------------------------------- prepared cache


class CelebAPrepared(Prepared):
  """The decoded CelebA cache written by ``python -m hpjax.data.prepare celeba``.

  A :class:`~hpjax.data.prepare.Prepared` cache checked to hold CelebA:
  memory-mapped ``{split}_images.npy`` ``uint8 [N, S, S, 3]``,
  ``{split}_labels.npy`` ``int32 [N, 40]`` and optionally
  ``{split}_landmarks.npy`` ``int32 [N, 5, 2]``, identical to :class:`CelebA`'s.

  Args:
    dst: the cache directory.
    split: ``train``, ``validation`` (``val``) or ``test``.
  """

  def __init__(self, dst: str, split: str):
    super().__init__(dst, split_name(split), dataset="celeba")

  # A cache prepared before CelebA's examples had boxes: derived from its landmarks.
  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return _with_boxes(super().__getitem__(index), self.image_shape[0])

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return _with_boxes(super().get_batch(indices), self.image_shape[0])


def _with_boxes(example: dict[str, np.ndarray], side: int) -> dict[str, np.ndarray]:
  if "landmarks" in example and "boxes" not in example:
    example["boxes"] = landmark_boxes(example["landmarks"], side)
  return example
