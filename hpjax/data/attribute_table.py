"""Your own multi-attribute data: a folder of images and a CSV/TSV table of their attributes (paper A).

The layout read by :class:`AttributeTable`::

  ROOT/attributes.csv          (or attributes.tsv; or any table file given as the path)
  ROOT/<path listed in the table>   images: .jpg .jpeg .png .webp, any sub-folders

  file,Smiling,Eyeglasses,split,Smiling_x0,Smiling_y0,Smiling_x1,Smiling_y1,Eyeglasses_x,Eyeglasses_y
  img/0001.jpg,1,-1,train,20,40,44,52,32,24
  img/0002.jpg,-1,1,test,,,,,30,25

* **Table.** ``data_path`` is either ROOT, holding exactly one of ``attributes.csv``
  and ``attributes.tsv``, or the table file itself (then ROOT is its folder).
  Text in UTF-8 (a byte-order mark is skipped; UTF-16 with its mark, as Excel's
  "Unicode text" writes, is read too). The delimiter is the extension's (``,`` for
  ``.csv``, tab for ``.tsv``/``.tab``) when the header line holds it, otherwise the
  most frequent of comma, tab and semicolon in the header line. Fields follow the csv
  module's quoting rules (``"a, b.jpg"``); blank rows are skipped; cells are stripped.
* **Columns.** The header names them (row 1). The *file-name column* is the one
  named ``file``, ``filename``, ``file_name``, ``image``, ``image_id``, ``image_name``
  or ``path`` (any case): a path relative to ROOT with ``/`` separators, under the
  rules of :meth:`hpjax.data.folders.FolderWalk.resolve` (an image extension, no
  hidden component, inside ROOT also after following links, each file once). An optional
  ``split`` column holds ``train``, ``val``/``validation`` or ``test`` (any case).
  *Region columns*, optional, per attribute ``A``: a box ``A_x0, A_y0, A_x1, A_y1``
  or a point ``A_x, A_y``. Every other column is an *attribute*, in header order:
  values ``1``/``0``, ``1``/``-1`` or ``true``/``false`` (any case), one encoding
  per table (``0`` beside ``-1`` is refused: in some tables ``-1`` means "uncertain").
* **Regions** (for the localisation analysis), in pixels of the image as displayed
  (after its EXIF orientation, as every size of :mod:`hpjax.data.image`'s folder
  policy): a box is half-open, ``x0 <= x < x1``, ``y0 <= y < y1``; a point stands for
  the square of half-side ``POINT_HALF_SIDE`` × the crop's side around it. All of an
  attribute's region cells empty: no region on that row. They are mapped through the
  same crop and resize as the image (:func:`hpjax.data.regions.map_boxes`) and come
  out as ``"boxes": int32 [K, 4]`` (see :mod:`hpjax.data.regions`).
* **Split** without a ``split`` column (:func:`assign_splits`): the file names,
  sorted, are permuted by :func:`hpjax.data.folders.seeded_split` as one group; the
  first ``round(test_fraction · N)`` are test, the next ``round(val_fraction · N)``
  validation (each at least 1), the rest train (defaults 0.1 and 0.1; ``seed`` is the
  config's ``data_seed``). An image's split depends on the set of names and the seed,
  never on the row order. Not stratified (a multi-label table has no single class).

Validation: the whole table is parsed and checked when a source is opened (every
row, every cell, every listed image present inside ROOT with a JPEG, PNG or WebP
header, every region inside its image), and each problem is one
:class:`~hpjax.core.errors.DataError` naming the file, line and column. An attribute
that is constant over the whole table is an error: it can be neither learned nor
scored (balanced accuracy and AUROC are undefined). Images are decoded lazily, with
the folder policy of :func:`hpjax.data.image.load_image` (centre square, bilinear
resize, EXIF orientation, grayscale kept only when every image is grayscale); a
decode error names the table line too.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import gc
import io
import itertools
import operator
import os
import posixpath
import re
from typing import Sequence

import numpy as np

from hpjax.core.errors import DataError
from hpjax.data.base import check_index

TABLE_FILES: tuple[str, ...] = ("attributes.csv", "attributes.tsv")
FILE_COLUMNS: tuple[str, ...] = ("file", "filename", "file_name", "image", "image_id",
                                 "image_name", "path")
SPLIT_COLUMN = "split"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_VALUES = {"train": 0, "val": 1, "validation": 1, "test": 2}
# A point region is the square of this half-side (× the crop's side) around the point.
POINT_HALF_SIDE = 1 / 16
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_MAX_TABLE_BYTES = 512 << 20  # CelebA's 40 attributes for 202,599 images are 26 MB
_MAX_COORDINATE = 1e6
_BOX = ("x0", "y0", "x1", "y1")
_POINT = ("x", "y")
_REGION_COLUMN = re.compile(r"^(.+)_(x0|y0|x1|y1|x|y)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")

# Attribute value tokens (after strip + lower) and the encodings each fits.
_TOKENS = {"1": 1, "0": 0, "-1": 0, "true": 1, "false": 0}
_CODES = ("", *_TOKENS)  # a cell's code: its token's index here (0: not a token)
_ENCODINGS = {"1": {"0/1", "-1/1"}, "0": {"0/1"}, "-1": {"-1/1"},
              "true": {"true/false"}, "false": {"true/false"}}


def _clip(text: str, n: int = 60) -> str:
  """``repr`` of ``text`` cut to ``n`` characters: one line, whatever the cell holds."""
  return repr(text[:n] + ("…" if len(text) > n else ""))


@dataclasses.dataclass(frozen=True)
class Table:
  """A parsed, validated attribute table (no file system involved).

  Attributes:
    name: the table's path (as named in messages).
    header: the column names.
    file_column: index of the file-name column.
    attributes: the attribute names, in header order (``K`` of them).
    attribute_columns: the header index of each attribute.
    filenames: ``N`` paths relative to the root, as written (stripped).
    lines: ``int64 [N]`` the line each row starts on (1-based; line 1 is the header).
    labels: ``int32 [N, K]`` in {0, 1}.
    split_column: index of the split column, or ``None``.
    splits: ``int8 [N]`` (0 train, 1 val, 2 test), or ``None`` without a split column.
    regions: ``"box"``, ``"point"`` or ``None`` per attribute.
    region_columns: the header indices of each attribute's region columns (``()``: none).
    coords: ``float64 [N, K, 4]`` source-pixel boxes ``(x0, y0, x1, y1)`` (points as
      ``(x, y, x, y)``; NaN: no region), or ``None`` without region columns.
  """
  name: str
  header: tuple[str, ...]
  file_column: int
  attributes: tuple[str, ...]
  attribute_columns: tuple[int, ...]
  filenames: tuple[str, ...]
  lines: np.ndarray
  labels: np.ndarray
  split_column: int | None
  splits: np.ndarray | None
  regions: tuple[str | None, ...]
  region_columns: tuple[tuple[int, ...], ...]
  coords: np.ndarray | None

  def column(self, j: int) -> str:
    """``column J (NAME)`` of header index ``j`` for a message."""
    return f"column {j + 1} ({_clip(self.header[j], 40)})"

  def where(self, row: int, column: int | None = None) -> str:
    """``NAME line L[, column J (NAME)]`` of row ``row`` for a message."""
    out = f"{self.name} line {int(self.lines[row])}"
    return out if column is None else f"{out}, {self.column(column)}"


# --------------------------------------------------------------------------- text


def decode_text(data: bytes, name: str) -> str:
  """The table's text: UTF-8 (a leading byte-order mark skipped) or UTF-16 with its mark."""
  if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
    try:
      return data.decode("utf-16")
    except UnicodeDecodeError as e:
      raise DataError(f"{name}: expected UTF-16 text after its byte-order mark, found an "
                      f"undecodable byte at offset {e.start}") from None
  body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
  try:
    return body.decode("utf-8")
  except UnicodeDecodeError as e:
    line = body[:e.start].count(b"\n") + 1
    raise DataError(f"{name} line {line}: expected UTF-8 text, found the byte "
                    f"0x{body[e.start]:02x} (save the table as UTF-8 CSV)") from None


def sniff_delimiter(header_line: str, name: str) -> str:
  """The extension's delimiter if the header line holds it, else the most frequent of
  comma, tab and semicolon there (the extension's when it holds none)."""
  preferred = _DELIMITERS.get(os.path.splitext(name)[1].lower(), ",")
  if preferred in header_line:
    return preferred
  counts = {d: header_line.count(d) for d in (",", "\t", ";")}
  best = max(counts, key=counts.get)
  return best if counts[best] else preferred


def _records(text: str, name: str) -> list[tuple[int, list[str]]]:
  """``(first line, fields)`` of every non-blank record, by the csv module."""
  first = text.lstrip("\r\n").split("\n", 1)[0]
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(first, name),
                      strict=True)
  out, start = [], 1
  try:
    for row in reader:
      if "".join(row).strip():
        out.append((start, row))
      start = reader.line_num + 1
  except csv.Error as e:
    raise DataError(f"{name} line {reader.line_num}: expected CSV fields, got a malformed "
                    f"record ({e})") from None
  return out


# --------------------------------------------------------------------------- header


@dataclasses.dataclass(frozen=True)
class _Columns:
  header: tuple[str, ...]
  trailing_empty: bool          # the header ended with a delimiter (an empty last cell)
  file: int
  split: int | None
  attributes: tuple[int, ...]
  regions: dict[int, tuple[str, tuple[int, ...]]]  # attribute column -> (kind, columns)


def _columns(line: int, cells: list[str], name: str) -> _Columns:
  """Classifies the header's columns (see the module docstring)."""
  header = [c.strip() for c in cells]
  trailing = len(header) > 1 and header[-1] == ""
  if trailing:
    header.pop()
  at = lambda j: f"{name} line {line}, column {j + 1}"
  seen: dict[str, int] = {}
  for j, h in enumerate(header):
    if not h:
      raise DataError(f"{at(j)}: expected a column name, found an empty one")
    if h in seen:
      raise DataError(f"{at(j)}: expected each column name once, {_clip(h, 40)} is also "
                      f"column {seen[h] + 1}")
    seen[h] = j
  lower = [h.lower() for h in header]
  files = [j for j, h in enumerate(lower) if h in FILE_COLUMNS]
  if not files:
    raise DataError(f"{name} line {line}: expected a file-name column named one of "
                    f"{', '.join(FILE_COLUMNS)}, found columns {_clip(', '.join(header), 80)}")
  splits = [j for j, h in enumerate(lower) if h == SPLIT_COLUMN]
  for kind, found in (("file-name", files), ("split", splits)):
    if len(found) > 1:
      raise DataError(f"{at(found[1])}: expected one {kind} column, found "
                      f"{_clip(header[found[0]], 40)} and {_clip(header[found[1]], 40)}")
  special = {files[0], *splits}
  attributes = [j for j, h in enumerate(header)
                if j not in special and not _REGION_COLUMN.match(h)]
  by_name = {header[j]: j for j in attributes}
  parts: dict[int, dict[str, int]] = {}
  for j, h in enumerate(header):
    m = _REGION_COLUMN.match(h)
    if j in special or not m:
      continue
    base, suffix = m.groups()
    if base not in by_name:
      raise DataError(f"{at(j)} ({_clip(h, 40)}): expected a region column of an attribute "
                      f"column {_clip(base, 40)}, found no such column (attribute names may "
                      f"not end in _x, _y, _x0, _y0, _x1 or _y1)")
    parts.setdefault(by_name[base], {})[suffix] = j
  regions = {}
  for a, got in parts.items():
    base = header[a]
    kind = "box" if set(got) == set(_BOX) else "point" if set(got) == set(_POINT) else None
    if kind is None:
      raise DataError(
          f"{name} line {line}: expected the region of {_clip(base, 40)} as a box "
          f"({', '.join(f'{base}_{s}' for s in _BOX)}) or a point "
          f"({', '.join(f'{base}_{s}' for s in _POINT)}), found "
          f"{', '.join(f'{base}_{s}' for s in got)}")
    regions[a] = (kind, tuple(got[s] for s in (_BOX if kind == "box" else _POINT)))
  if not attributes:
    raise DataError(f"{name} line {line}: expected at least one attribute column besides "
                    f"the file-name, split and region columns, found none")
  return _Columns(tuple(header), trailing, files[0], splits[0] if splits else None,
                  tuple(attributes), regions)


# --------------------------------------------------------------------------- cells


def _filename(raw: str, where: str) -> str:
  """The file-name cell as written, or DataError (empty, or a control character: a
  table cell, not a path; the path rules are :meth:`hpjax.data.folders.FolderWalk.resolve`'s)."""
  if not raw:
    raise DataError(f"{where}: expected an image file name, found an empty cell")
  if _CONTROL.search(raw):
    raise DataError(f"{where}: expected a file name without control characters, got {_clip(raw)}")
  return raw


def _labels(rows: list[list[str]], cols: _Columns, lines: np.ndarray, name: str
            ) -> np.ndarray:
  """``int32 [N, K]`` from the attribute cells: every token a label, one encoding.

  Each cell is coded by one dict lookup per column at C speed (a CelebA-sized table of
  8M cells in about a second); only a bad table is walked cell by cell, to name its
  first bad cell.
  """
  n, k = len(rows), len(cols.attributes)
  pick = operator.itemgetter(*cols.attributes)
  code = {t: i for i, t in enumerate(_CODES) if t}  # raw cell -> index in _CODES (0: unknown)

  def encode() -> np.ndarray:
    cells = map(pick, rows) if k == 1 else itertools.chain.from_iterable(map(pick, rows))
    return np.fromiter(map(code.get, cells, itertools.repeat(0)), np.int8, n * k).reshape(n, k)

  codes = encode()
  unknown = np.argwhere(codes == 0)
  if len(unknown):  # spelled otherwise (" 1", "TRUE"): normalise the distinct ones, once
    for t in {rows[r][cols.attributes[c]] for r, c in unknown}:
      code[t] = _CODES.index(t.strip().lower()) if t.strip().lower() in _CODES[1:] else 0
    codes = encode()
  present = np.flatnonzero(np.bincount(codes.ravel(), minlength=len(_CODES)))
  fits = {"0/1", "-1/1", "true/false"}
  for i in present:
    fits &= _ENCODINGS.get(_CODES[i], set())
  if not fits:
    _first_bad_label(rows, cols, lines, name)
  labels = np.asarray([_TOKENS.get(t, 0) for t in _CODES], np.int32)[codes]
  for j in range(k):
    if (labels[:, j] == labels[0, j]).all():
      col = cols.attributes[j]
      raise DataError(f"{name} column {col + 1} ({_clip(cols.header[col], 40)}): expected an "
                      f"attribute that varies, found {labels[0, j]} on all {n} rows "
                      f"(a constant column can be neither learned nor scored: drop it)")
  return labels


def _first_bad_label(rows: list[list[str]], cols: _Columns, lines: np.ndarray, name: str
                     ) -> None:
  """Raises the DataError of the first cell, row by row, that is not a label or breaks the
  table's one encoding (the encoding of the cells before it)."""
  header = cols.header
  first: dict[str, tuple[int, int]] = {}  # token -> (row, column) of its first cell
  fits = {"0/1", "-1/1", "true/false"}
  for r, row in enumerate(rows):
    for j in cols.attributes:
      n = row[j].strip().lower()
      at = f"{name} line {lines[r]}, column {j + 1} ({_clip(header[j], 40)})"
      if n not in _TOKENS:
        raise DataError(f"{at}: expected an attribute value 0/1, -1/1 or true/false, got "
                        f"{_clip(row[j].strip())}")
      if n in first:
        continue
      if not fits & _ENCODINGS[n]:
        m, (r0, j0) = next((m, p) for m, p in first.items()
                           if not _ENCODINGS[m] & _ENCODINGS[n])
        raise DataError(f"{at}: expected one label encoding in the whole table (0/1, -1/1 or "
                        f"true/false), got {n!r} after {m!r} on line {lines[r0]}, column {j0 + 1}")
      fits &= _ENCODINGS[n]
      first[n] = (r, j)
  raise AssertionError("unreachable: a table with a bad label has a first bad cell")


def _coords(rows: list[list[str]], cols: _Columns, lines: np.ndarray, name: str
            ) -> np.ndarray | None:
  """``float64 [N, K, 4]`` region boxes in source pixels (NaN: none), or None."""
  if not cols.regions:
    return None
  out = np.full((len(rows), len(cols.attributes), 4), np.nan)
  for k, attr_col in enumerate(cols.attributes):
    if attr_col not in cols.regions:
      continue
    kind, region_cols = cols.regions[attr_col]
    for r, row in enumerate(rows):
      cells = [row[j].strip() for j in region_cols]
      if not any(cells):
        continue
      if all(cells) and all(map(_NUMBER.match, cells)):
        v = [float(c) for c in cells]
        if kind == "point":
          v = v + v
        if 0 <= min(v) and max(v) <= _MAX_COORDINATE and (
            kind == "point" or (v[0] < v[2] and v[1] < v[3])):
          out[r, k] = v
          continue
      _region_error(cells, kind, region_cols, attr_col, cols.header,
                    f"{name} line {lines[r]}")
  return out


def _region_error(cells: list[str], kind: str, region_cols: tuple[int, ...], attr_col: int,
                  header: tuple[str, ...], line: str) -> None:
  """Raises the DataError of a row's bad region cells (partial, not a number, out of
  range, or a box with no area)."""
  at = lambda j: f"{line}, column {j + 1} ({_clip(header[j], 40)})"
  for j, c in zip(region_cols, cells):
    if not c:
      raise DataError(f"{at(j)}: expected all {len(region_cols)} region values of "
                      f"{_clip(header[attr_col], 40)} on the row or none, found this one empty")
  for j, c in zip(region_cols, cells):
    if not _NUMBER.match(c):
      raise DataError(f"{at(j)}: expected a pixel coordinate (a number >= 0), got {_clip(c)}")
    if not 0 <= float(c) <= _MAX_COORDINATE:
      raise DataError(f"{at(j)}: expected a pixel coordinate between 0 and "
                      f"{_MAX_COORDINATE:.0f}, got {_clip(c)}")
  raise DataError(f"{at(region_cols[0])}: expected a box with x0 < x1 and y0 < y1, got "
                  f"({', '.join(cells)})")


# --------------------------------------------------------------------------- table


def parse_table(data: bytes, name: str) -> Table:
  """Parses and validates a whole attribute table (see the module docstring).

  Args:
    data: the file's bytes.
    name: its path, for messages (its extension picks the default delimiter).

  Returns:
    The :class:`Table`.

  Raises:
    DataError: the first problem, naming the line and column: not UTF-8, a malformed
      record, no header, no file-name column, an empty, duplicate or unknown region
      column name, no attribute column, no rows, a ragged row, an empty or repeated
      file name, a value that is not a label, two label encodings, a constant
      attribute, a bad split, a bad or partial region. (Where a path leads is checked
      against the folder when the source opens: :func:`scan`.)
  """
  # A table is millions of small strings and lists, none in a reference cycle: the
  # cyclic collector would only re-scan them as they pile up (a third of the time).
  collecting = gc.isenabled()
  gc.disable()
  try:
    return _parse(data, name)
  finally:
    if collecting:
      gc.enable()


def _parse(data: bytes, name: str) -> Table:
  records = _records(decode_text(data, name), name)
  if not records:
    raise DataError(f"{name}: expected a header row naming a file-name column and attribute "
                    f"columns, found an empty file")
  (hline, hcells), body = records[0], records[1:]
  cols = _columns(hline, hcells, name)
  if not body:
    raise DataError(f"{name}: expected one row per image after the header (line {hline}), "
                    f"found none")
  ncol = len(cols.header)
  lines = np.fromiter((ln for ln, _ in body), np.int64, len(body))
  rows = []
  for ln, row in body:
    if len(row) != ncol and not (cols.trailing_empty and len(row) == ncol + 1
                                 and not row[-1].strip()):
      raise DataError(f"{name} line {ln}: expected {ncol} fields (one per header column), got "
                      f"{len(row)}")
    rows.append(row)
  seen: dict[str, int] = {}
  filenames = []
  for ln, row in zip(lines, rows):
    where = lambda: f"{name} line {ln}, column {cols.file + 1} ({_clip(cols.header[cols.file], 40)})"
    f = row[cols.file].strip()
    if not f or _CONTROL.search(f):
      _filename(f, where())
    key = posixpath.normpath(f) if "/" in f else f  # a single name is already normal
    if key in seen:
      raise DataError(f"{where()}: expected each image once, {_clip(f)} is also on line {seen[key]}")
    seen[key] = int(ln)
    filenames.append(f)
  splits = None
  if cols.split is not None:
    splits = np.empty(len(rows), np.int8)
    for r, row in enumerate(rows):
      v = _SPLIT_VALUES.get(row[cols.split].strip().lower())
      if v is None:
        raise DataError(f"{name} line {lines[r]}, column {cols.split + 1} "
                        f"({_clip(cols.header[cols.split], 40)}): expected train, val "
                        f"(validation) or test, got {_clip(row[cols.split].strip())}")
      splits[r] = v
  labels = _labels(rows, cols, lines, name)
  coords = _coords(rows, cols, lines, name)
  return Table(name=name, header=cols.header, file_column=cols.file,
               attributes=tuple(cols.header[j] for j in cols.attributes),
               attribute_columns=cols.attributes, filenames=tuple(filenames), lines=lines,
               labels=labels, split_column=cols.split, splits=splits,
               regions=tuple(cols.regions[j][0] if j in cols.regions else None
                             for j in cols.attributes),
               region_columns=tuple(cols.regions[j][1] if j in cols.regions else ()
                                    for j in cols.attributes),
               coords=coords)


def find_table(path: str) -> tuple[str, str]:
  """``(root, table file)`` for ``data_path``: a folder holding exactly one of
  :data:`TABLE_FILES`, or the table file itself (its folder is the root)."""
  path = os.fspath(path)
  if os.path.isfile(path):
    return os.path.dirname(os.path.abspath(path)), path
  if not os.path.isdir(path):
    raise DataError(f"{path}: expected a folder holding {' or '.join(TABLE_FILES)}, or a "
                    f"table file, found nothing there")
  found = [f for f in TABLE_FILES if os.path.isfile(os.path.join(path, f))]
  if len(found) != 1:
    got = "neither" if not found else "both"
    raise DataError(f"{path}: expected exactly one of {' and '.join(TABLE_FILES)} there, found "
                    f"{got} (or pass the table file as the path)")
  return path, os.path.join(path, found[0])


def read_table(path: str) -> Table:
  """Reads and parses the table file ``path`` (:func:`parse_table`)."""
  size = os.path.getsize(path)
  if size > _MAX_TABLE_BYTES:
    raise DataError(f"{path}: expected a table under {_MAX_TABLE_BYTES >> 20} MB, found "
                    f"{size} bytes")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise DataError(f"{path}: expected a readable table, got {type(e).__name__}: "
                    f"{e.strerror}") from None
  return parse_table(data, path)


def assign_splits(filenames: Sequence[str], seed: int, val_fraction: float = 0.1,
                  test_fraction: float = 0.1, name: str = "attribute table") -> np.ndarray:
  """``int8 [N]`` split ids (0 train, 1 val, 2 test) for a table without a split column.

  :func:`hpjax.data.folders.seeded_split` of the sorted names as one group: the
  first ``max(1, round(test_fraction · N))`` of a seeded permutation are test, the
  next ``max(1, round(val_fraction · N))`` validation, the rest train. Row order
  never matters.

  Raises:
    DataError: bad fractions, or too few images to fill the three splits.
  """
  from hpjax.data.folders import seeded_split

  for nm, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
    if not 0 < f < 1:
      raise DataError(f"attribute_table {nm}: expected a fraction in (0, 1), got {f!r}")
  order = sorted(range(len(filenames)), key=lambda i: filenames[i])
  got = seeded_split(["table"] * len(order), {"test": test_fraction, "val": val_fraction},
                     seed=seed, rest="train", where={"table": name})
  out = np.zeros(len(order), np.int8)
  out[order] = [_SPLIT_VALUES[g] for g in got]
  return out


# --------------------------------------------------------------------------- the source


@dataclasses.dataclass(frozen=True)
class Scan:
  """A table checked against its images (what every split of one table shares).

  Attributes:
    root: the image root.
    table: the parsed :class:`Table`.
    sizes: ``int64 [N, 2]`` each image's ``(width, height)`` as displayed.
    grayscale: ``bool [N]`` each image's colour (:func:`hpjax.data.image.is_grayscale_mode`).
  """
  root: str
  table: Table
  sizes: np.ndarray
  grayscale: np.ndarray


_SCANS: dict[tuple, Scan] = {}


def scan(path: str) -> Scan:
  """Finds, parses and validates the table at ``path`` against its images.

  Every listed path must follow the folder rules
  (:meth:`hpjax.data.folders.FolderWalk.resolve`: inside the root also after following
  links, no loop, an image name, an existing regular file, each file once however it
  is named) and hold a JPEG, PNG or WebP header (:func:`hpjax.data.image.read_header`);
  every region must lie inside its image. Cached in-process per table file (path, size
  and modification time), so opening three splits reads it once.

  Raises:
    DataError: the first problem (see :func:`parse_table`), naming line and column.
  """
  from hpjax.data.folders import FolderWalk
  from hpjax.data.image import read_header

  root, table_path = find_table(path)
  st = os.stat(table_path)
  key = (os.path.realpath(table_path), st.st_size, st.st_mtime_ns)
  if key in _SCANS:
    return _SCANS[key]
  table = read_table(table_path)
  walk = FolderWalk(root)
  sizes = np.zeros((len(table.filenames), 2), np.int64)
  gray = np.zeros(len(table.filenames), bool)
  column = table.column(table.file_column)
  for r, f in enumerate(table.filenames):
    where = f"{table.name} line {table.lines[r]}, {column}"
    try:
      head = read_header(walk.resolve(f, where))
    except DataError as e:
      msg = str(e)
      raise DataError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    sizes[r] = head.width, head.height
    gray[r] = head.grayscale
  if table.coords is not None:
    _check_inside(table, sizes)
  if len(_SCANS) >= 4:
    _SCANS.pop(next(iter(_SCANS)))
  _SCANS[key] = out = Scan(root, table, sizes, gray)
  return out


def _check_inside(table: Table, sizes: np.ndarray) -> None:
  """DataError for the first region reaching outside its image."""
  c = table.coords
  lim = np.concatenate([sizes, sizes], -1)[:, None, :].astype(np.float64)
  outside = ~np.isnan(c[..., 0]) & (c > lim).any(-1)
  if outside.any():
    r, k = np.argwhere(outside)[0]
    w, h = sizes[r]
    region = table.region_columns[k]
    # The first region column past the image (a point's x, y repeat as x1, y1).
    j = region[int(np.argmax(c[r, k] > lim[r, 0])) % len(region)]
    cells = c[r, k] if len(region) == 4 else c[r, k, :2]
    raise DataError(f"{table.where(r, j)}: expected the region of "
                    f"{_clip(table.header[table.attribute_columns[k]], 40)} inside the {w}x{h} "
                    f"image, got ({', '.join(f'{v:g}' for v in cells)})")


def output_boxes(scan: Scan, rows: np.ndarray, image_size: int | None) -> np.ndarray:
  """``int32 [len(rows), K, 4]`` the rows' regions in output pixels
  (:mod:`hpjax.data.regions`), through each image's crop (:func:`hpjax.data.image.policy_box`)."""
  from hpjax.data.image import policy_box
  from hpjax.data.regions import map_boxes

  t = scan.table
  coords = t.coords[rows].copy()
  sizes = scan.sizes[rows]
  crops = np.array([policy_box(int(w), int(h), image_size) for w, h in sizes], np.float64)
  crops = crops.reshape(len(rows), 4)
  side = np.minimum(crops[:, 2] - crops[:, 0], crops[:, 3] - crops[:, 1])
  half = (POINT_HALF_SIDE * side)[:, None]
  for k, kind in enumerate(t.regions):
    if kind == "point":
      coords[:, k, :2] -= half
      coords[:, k, 2:] += half
  if image_size is None:
    out_w, out_h = (int(v) for v in scan.sizes[0]) if len(scan.sizes) else (0, 0)
  else:
    out_w = out_h = image_size
  return map_boxes(coords, crops[:, None, :], out_w, out_h)


class AttributeTable:
  """An attribute table and its images (module docstring), one split, decoded lazily.

  ``src[i]`` is ``{"image": uint8 [S, S, C], "label": int32 [K] in {0, 1}}`` plus
  ``"boxes": int32 [K, 4]`` when the table has region columns (see
  :mod:`hpjax.data.regions`), where ``C`` is 1 when every image of the table is
  grayscale and 3 otherwise, and images follow the folder policy of
  :mod:`hpjax.data.image` (centre square resized to ``S = image_size``; ``None``:
  as stored, which needs one size for all).

  Args:
    path: the root holding ``attributes.csv`` or ``attributes.tsv``, or the table file.
    split: ``train``, ``val`` (``validation``) or ``test``.
    image_size: output side S, or None.
    seed: the split's seed when the table has no split column.
    val_fraction, test_fraction: the split's fractions then (:func:`assign_splits`).

  Raises:
    DataError: anything wrong with the table or its images (:func:`scan`), or no
      rows in the split.
  """

  def __init__(self, path: str, split: str, *, image_size: int | None = 64, seed: int = 0,
               val_fraction: float = 0.1, test_fraction: float = 0.1):
    if split not in _SPLIT_VALUES:
      raise DataError(f"attribute_table split: expected one of train, val (validation), test, "
                      f"got {split!r}")
    if image_size is not None and not (isinstance(image_size, int) and 1 <= image_size <= 4096):
      raise DataError(f"attribute_table image_size: expected a positive int, got {image_size!r}")
    self.split = SPLITS[_SPLIT_VALUES[split]]
    self.image_size = image_size
    self.scan = s = scan(path)
    t = s.table
    self.root = s.root
    self.table_path = t.name
    ids = t.splits if t.splits is not None else assign_splits(
        t.filenames, seed, val_fraction, test_fraction, t.name)
    self.rows = np.flatnonzero(ids == _SPLIT_VALUES[split])
    if not len(self.rows):
      raise DataError(f"{t.name}: expected rows with split {self.split!r} (column "
                      f"{SPLIT_COLUMN!r}), found none")
    if image_size is None:
      odd = np.flatnonzero((s.sizes != s.sizes[0]).any(-1))
      if len(odd):
        (w0, h0), (w, h) = s.sizes[0], s.sizes[odd[0]]
        raise DataError(f"{t.where(odd[0], t.file_column)}: expected every image at "
                        f"{w0}x{h0} like line {t.lines[0]} (image_size None keeps sizes), "
                        f"found {w}x{h}; set image_size (inspect: --image-size)")
    self.channels = 1 if s.grayscale.all() else 3
    self.label_names: tuple[str, ...] = t.attributes
    self.filenames: tuple[str, ...] = tuple(t.filenames[r] for r in self.rows)
    self.labels = t.labels[self.rows]
    self.sizes = s.sizes[self.rows]  # (width, height) before the crop and resize
    self.boxes = None if t.coords is None else output_boxes(s, self.rows, image_size)
    w, h = (image_size, image_size) if image_size is not None else s.sizes[0]
    self.image_shape = (int(h), int(w), self.channels)

  def __len__(self) -> int:
    return len(self.rows)

  def __repr__(self) -> str:
    return (f"AttributeTable({self.table_path!r}, split={self.split!r}, "
            f"image_size={self.image_size}, {len(self)} images)")

  def describe(self) -> str:
    """One line on the table as a whole (``python -m hpjax.data.inspect``)."""
    t = self.scan.table
    split = (f"split column {t.header[t.split_column]!r}" if t.split_column is not None
             else "seeded split (no split column)")
    kinds = [k for k in t.regions if k]
    regions = (f"regions for {len(kinds)} of {len(t.attributes)} attributes "
               f"({', '.join(sorted(set(kinds)))})" if kinds else "no region columns")
    colour = "grayscale" if self.channels == 1 else "RGB"
    return (f"table: {t.name}, {len(t.filenames)} rows, {len(t.attributes)} attributes; "
            f"{split}; {regions}; {colour}")

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    from hpjax.data.image import load_image

    i = check_index(index, len(self))
    r = self.rows[i]
    try:
      image = load_image(os.path.join(self.root, self.filenames[i]), image_size=self.image_size,
                         channels=self.channels)
    except DataError as e:
      raise DataError(f"{self.scan.table.where(r, self.scan.table.file_column)}: {e}") from None
    out = {"image": image, "label": self.labels[i].copy()}
    if self.boxes is not None:
      out["boxes"] = self.boxes[i].copy()
    return out
