"""The attribute-table source: layout, split, regions, every hostile case, fuzzing (hpjax.data.attribute_table)."""
from __future__ import annotations

import csv
import io
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import data_fixtures as fx
from hpjax.core.errors import DataError
from hpjax.data import attribute_table as at
from hpjax.data.regions import box_masks, map_boxes, mask_boxes
from hpjax.data.synthetic import ATTRIBUTES
from test_data_fuzz import FUZZ, mutated

EXAMPLE = (b"file,Smiling,Eyeglasses,split,Smiling_x0,Smiling_y0,Smiling_x1,Smiling_y1,"
           b"Eyeglasses_x,Eyeglasses_y\n"
           b"img/0001.jpg,1,-1,train,20,40,44,52,32,24\n"
           b"\"img/a, b.jpg\",-1,1,TEST,,,,,30,25\n")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("faces"))
  return root, fx.write_attribute_table(root, 40, size=32, pad=4)


def _open(root, split="train", **kw):
  return at.AttributeTable(root, split, **kw)


# --------------------------------------------------------------------------- parsing


def test_the_documented_example_parses():
  t = at.parse_table(EXAMPLE, "attributes.csv")
  assert t.attributes == ("Smiling", "Eyeglasses") and t.file_column == 0
  assert t.filenames == ("img/0001.jpg", "img/a, b.jpg")
  np.testing.assert_array_equal(t.labels, [[1, 0], [0, 1]])
  np.testing.assert_array_equal(t.splits, [0, 2])
  np.testing.assert_array_equal(t.lines, [2, 3])
  assert t.regions == ("box", "point")
  np.testing.assert_array_equal(t.coords[0], [[20, 40, 44, 52], [32, 24, 32, 24]])
  assert np.isnan(t.coords[1, 0]).all()
  np.testing.assert_array_equal(t.coords[1, 1], [30, 25, 30, 25])


@pytest.mark.parametrize("data,name", [
    (EXAMPLE.replace(b",", b"\t").replace(b"\"img/a\t b.jpg\"", b"img/a, b.jpg"), "x.tsv"),
    (EXAMPLE.replace(b",", b";").replace(b"\"img/a; b.jpg\"", b"\"img/a, b.jpg\""), "x.csv"),
    (b"\xef\xbb\xbf" + EXAMPLE, "x.csv"),                      # Excel's "CSV UTF-8"
    (EXAMPLE.decode().encode("utf-16"), "x.csv"),             # Excel's "Unicode text"
    (EXAMPLE.replace(b"\n", b"\r\n"), "x.csv"),
    (EXAMPLE.replace(b"\n", b",\n"), "x.csv"),                 # a trailing delimiter everywhere
    (EXAMPLE + b"\n,,,,,,,,,\n\n", "x.csv"),                  # blank and empty rows at the end
    (EXAMPLE.replace(b"-1", b"0"), "x.txt"),
])
def test_delimiters_boms_line_ends_and_encodings(data, name):
  t = at.parse_table(data, name)
  assert t.attributes == ("Smiling", "Eyeglasses")
  assert t.filenames == ("img/0001.jpg", "img/a, b.jpg")
  np.testing.assert_array_equal(t.labels, [[1, 0], [0, 1]])


def test_true_false_and_file_column_names_in_any_case():
  t = at.parse_table(b"Image_ID,Smiling,split\na.jpg,TRUE,Validation\nb.png,false,train\n", "t.csv")
  assert t.filenames == ("a.jpg", "b.png") and t.header[t.file_column] == "Image_ID"
  np.testing.assert_array_equal(t.labels[:, 0], [1, 0])
  np.testing.assert_array_equal(t.splits, [1, 0])


T = "t.csv"
HOSTILE = [
    ("empty table", b"", ["t.csv:", "empty file"]),
    ("header only", b"file,a\n", ["t.csv:", "one row per image", "found none"]),
    ("no file-name column", b"name,a\nx.jpg,1\n", ["line 1", "file-name column", "'name, a'"]),
    ("two file-name columns", b"file,path,a\nx.jpg,y.jpg,1\n", ["line 1, column 2", "one file-name column"]),
    ("no attribute column", b"file,split\nx.jpg,train\n", ["line 1", "at least one attribute column"]),
    ("empty column name", b"file,,a\nx.jpg,1,0\n", ["line 1, column 2", "column name"]),
    ("duplicate column", b"file,a,a\nx.jpg,1,0\n", ["line 1, column 3", "'a' is also column 2"]),
    ("ragged row", b"file,a\nx.jpg,1\ny.jpg,0,1\n", ["line 3", "expected 2 fields", "got 3"]),
    ("short row", b"file,a,b\nx.jpg,1,0\ny.jpg,0\n", ["line 3", "expected 3 fields", "got 2"]),
    ("not a label", b"file,a\nx.jpg,1\ny.jpg,yes\n", ["line 3, column 2 ('a')", "0/1, -1/1 or true/false", "'yes'"]),
    ("empty label", b"file,a\nx.jpg,1\ny.jpg,\n", ["line 3, column 2 ('a')", "got ''"]),
    ("0 beside -1", b"file,a,b\nx.jpg,1,0\ny.jpg,-1,1\n", ["line 3, column 2 ('a')", "one label encoding", "'-1' after '0' on line 2, column 3"]),
    ("numbers beside true/false", b"file,a\nx.jpg,true\ny.jpg,0\n", ["line 3, column 2", "'0' after 'true'"]),
    ("constant attribute", b"file,a,b\nx.jpg,1,0\ny.jpg,1,1\n", ["column 2 ('a')", "varies", "on all 2 rows"]),
    ("duplicate file", b"file,a\nx.jpg,1\ny.jpg,0\nx.jpg,0\n", ["line 4, column 1 ('file')", "each image once", "line 2"]),
    ("duplicate after normalising", b"file,a\nd/x.jpg,1\nd/./x.jpg,0\n", ["line 3", "each image once", "line 2"]),
    ("empty file name", b"file,a\n,1\ny.jpg,0\n", ["line 2, column 1", "empty cell"]),
    ("newline inside a name", b"file,a\n\"x\n.jpg\",1\ny.jpg,0\n", ["line 2", "control characters"]),
    ("unterminated quote", b"file,a\n\"x.jpg,1\n", ["line 2", "malformed record"]),
    ("NUL byte", b"file,a\nx.jpg,1\x00\n", ["line 2, column 2", "'1\\x00'"]),
    ("not UTF-8", b"file,a\nx.jpg,1\nna\xefve.jpg,0\n", ["line 3", "UTF-8", "0xef"]),
    ("bad split", b"file,a,split\nx.jpg,1,train\ny.jpg,0,dev\n", ["line 3, column 3 ('split')", "train, val (validation) or test", "'dev'"]),
    ("two split columns", b"file,a,split,Split\nx.jpg,1,train,test\n", ["line 1, column 4", "one split column"]),
    ("region of no attribute", b"file,a,b_x0\nx.jpg,1,3\n", ["line 1, column 3 ('b_x0')", "attribute column 'b'"]),
    ("partial box columns", b"file,a,a_x0,a_y0\nx.jpg,1,3,4\n", ["line 1", "'a' as a box", "found a_x0, a_y0"]),
    ("partial box row", b"file,a,a_x,a_y\nx.jpg,1,3,\ny.jpg,0,1,1\n", ["line 2, column 4 ('a_y')", "all 2 region values"]),
    ("box not a number", b"file,a,a_x,a_y\nx.jpg,1,3,four\ny.jpg,0,1,1\n", ["line 2, column 4 ('a_y')", "pixel coordinate", "'four'"]),
    ("negative coordinate", b"file,a,a_x,a_y\nx.jpg,1,-3,4\ny.jpg,0,1,1\n", ["line 2, column 3 ('a_x')", "pixel coordinate"]),
    ("nan coordinate", b"file,a,a_x,a_y\nx.jpg,1,nan,4\ny.jpg,0,1,1\n", ["line 2, column 3", "'nan'"]),
    ("empty box", b"file,a,a_x0,a_y0,a_x1,a_y1\nx.jpg,1,5,4,5,9\ny.jpg,0,,,,\n", ["line 2, column 3 ('a_x0')", "x0 < x1 and y0 < y1", "(5, 4, 5, 9)"]),
]


@pytest.mark.parametrize("case,data,needles", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_each_problem_is_one_line_naming_file_line_and_column(case, data, needles):
  with pytest.raises(DataError) as e:
    at.parse_table(data, T)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(T)
  for needle in needles:
    assert needle in msg, (case, msg)


# --------------------------------------------------------------------------- fuzzing


def _valid_or_data_error(data, name):
  try:
    t = at.parse_table(data, name)
  except DataError as e:
    assert str(e) and "\n" not in str(e) and str(e).startswith(name)
    return None
  k, n = len(t.attributes), len(t.filenames)
  assert t.labels.shape == (n, k) and set(np.unique(t.labels)) == {0, 1}
  assert len(set(t.filenames)) == n and all(t.filenames)
  if t.coords is not None:
    c = t.coords[~np.isnan(t.coords[..., 0])]
    assert (c >= 0).all() and (c[:, :2] <= c[:, 2:]).all()
  return t


@FUZZ
@given(mutated(EXAMPLE))
def test_fuzz_mutated_tables(data):
  _valid_or_data_error(data, "f.csv")


_CELL = st.one_of(st.sampled_from(["1", "0", "-1", "true", "FALSE", "", " 1 ", "train", "val",
                                   "test", "a.jpg", "b.png", "../c.jpg", "3", "4.5", "x"]),
                  st.text(max_size=8))


@FUZZ
@given(st.lists(st.sampled_from(["file", "a", "b", "split", "a_x", "a_y", "b_x0", "b_y0", "b_x1",
                                 "b_y1", "path", "", "c"]), min_size=0, max_size=8),
       st.lists(st.lists(_CELL, max_size=9), max_size=6), st.sampled_from([",", "\t", ";"]))
def test_fuzz_rows_written_by_the_csv_module(header, rows, delimiter):
  buf = io.StringIO()
  w = csv.writer(buf, delimiter=delimiter)
  w.writerow(header)
  w.writerows(rows)
  t = _valid_or_data_error(buf.getvalue().encode(), "f.csv")
  if t is not None:
    assert len(t.filenames) == sum(1 for r in rows if any(c.strip() for c in r))


# --------------------------------------------------------------------------- the source


def test_images_labels_splits_and_regions_follow_the_files(faces):
  root, w = faces
  for split in ("train", "val", "test"):
    src = _open(root, split, image_size=32)
    rows = [i for i, s in enumerate(w["split"]) if s == split]
    assert len(src) == len(rows) and src.label_names == ATTRIBUTES
    assert src.image_shape == (32, 32, 3) and src.filenames == tuple(w["filenames"][i] for i in rows)
    np.testing.assert_array_equal(src.labels, w["label"][rows])
    # The centre square of the padded file is the face: its boxes come back exactly.
    np.testing.assert_array_equal(src.boxes, w["boxes"][rows])
    ex = src[0]
    assert set(ex) == {"image", "label", "boxes"} and ex["boxes"].dtype == np.int32
    assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32
  train = _open(root, "train", image_size=32)
  np.testing.assert_array_equal(train[0]["image"], w["image"][0])  # PNG: lossless
  stored = np.asarray(Image.open(os.path.join(root, w["filenames"][1])).convert("RGB"))
  np.testing.assert_array_equal(train[1]["image"], stored[4:36])  # JPEG: the centre square


def test_regions_follow_the_resize(faces):
  root, w = faces
  src = _open(root, "train", image_size=16)
  assert src.image_shape == (16, 16, 3) and src[0]["image"].shape == (16, 16, 3)
  b = w["boxes"][0]
  want = np.stack([b[:, 0] // 2, b[:, 1] // 2, -(-b[:, 2] // 2), -(-b[:, 3] // 2)], -1)
  want[b[:, 2] <= b[:, 0]] = 0
  np.testing.assert_array_equal(src.boxes[0], want)
  # Every pixel of a region at 32 px lies in its box at 16 px.
  full = box_masks(w["boxes"][0], 32, 32)
  half = box_masks(src.boxes[0], 16, 16)
  assert (half[:, np.arange(32) // 2][:, :, np.arange(32) // 2] >= full).all()


def test_map_boxes_golden():
  # A 100x60 image, centre square (20, 0, 80, 60) resized to 30: scale 1/2.
  got = map_boxes(np.array([[20, 0, 80, 60], [30, 10, 31, 11], [0, 0, 10, 10],
                            [np.nan] * 4, [70, 50, 100, 60]], float), (20, 0, 80, 60), 30, 30)
  np.testing.assert_array_equal(got, [[0, 0, 30, 30], [5, 5, 6, 6], [0, 0, 0, 0], [0, 0, 0, 0],
                                      [25, 25, 30, 30]])
  masks = np.zeros((2, 5, 6), bool)
  masks[0, 1:3, 2:5] = True
  np.testing.assert_array_equal(mask_boxes(masks), [[2, 1, 5, 3], [0, 0, 0, 0]])
  np.testing.assert_array_equal(box_masks(mask_boxes(masks), 5, 6), masks)


def _write(root, text: str, images=("a.png", "b.png", "c.png", "d.png"), size=(8, 8), mode="RGB"):
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(0)
  for f in images:
    p = os.path.join(root, f)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(p)
  with open(os.path.join(root, "attributes.csv"), "w") as fh:
    fh.write(text)
  return root


TABLE = "file,a,split\na.png,1,train\nb.png,0,train\nc.png,1,val\nd.png,0,test\n"


def test_point_regions_are_squares_of_a_sixteenth_of_the_crop(tmp_path):
  root = _write(str(tmp_path), "file,a,a_x,a_y,split\na.png,1,16,16,train\nb.png,0,,,train\n"
                "c.png,1,0,0,val\nd.png,0,1,1,test\n", size=(32, 32))
  src = _open(root, "train", image_size=32)
  np.testing.assert_array_equal(src.boxes[:, 0], [[14, 14, 18, 18], [0, 0, 0, 0]])
  assert src.boxes.shape == (2, 1, 4)


def test_seeded_split_is_deterministic_and_ignores_row_order(tmp_path):
  names = [f"{i:02d}.png" for i in range(30)]
  rows = [f"{f},{i % 2}" for i, f in enumerate(names)]
  a = _write(str(tmp_path / "a"), "file,a\n" + "\n".join(rows) + "\n", names, size=(4, 4))
  b = _write(str(tmp_path / "b"), "file,a\n" + "\n".join(rows[::-1]) + "\n", names, size=(4, 4))
  split = lambda root, seed: {s: set(_open(root, s, image_size=4, seed=seed).filenames)
                              for s in ("train", "val", "test")}
  sa, sb = split(a, 0), split(b, 0)
  assert sa == sb and [len(sa[s]) for s in ("train", "val", "test")] == [24, 3, 3]
  assert set().union(*sa.values()) == set(names)
  assert split(a, 1) != sa
  np.testing.assert_array_equal(at.assign_splits(names, 0), at.assign_splits(names[::-1], 0)[::-1])


def test_grayscale_tables_keep_one_channel_and_mixed_ones_become_rgb(tmp_path):
  gray = _write(str(tmp_path / "g"), TABLE, mode="L")
  assert _open(gray, image_size=8).image_shape == (8, 8, 1)
  assert _open(gray, image_size=8)[0]["image"].shape == (8, 8, 1)
  mixed = _write(str(tmp_path / "m"), TABLE, mode="L")
  _write(mixed, TABLE, images=("c.png",))
  src = _open(mixed, "train", image_size=8)
  assert src.image_shape == (8, 8, 3) and src[0]["image"].shape == (8, 8, 3)
  ex = src[0]["image"]
  assert (ex[..., 0] == ex[..., 1]).all()  # gray replicated


def test_image_size_none_keeps_the_common_size(tmp_path):
  root = _write(str(tmp_path), TABLE, size=(10, 6))
  src = _open(root, image_size=None)
  assert src.image_shape == (6, 10, 3) and src[0]["image"].shape == (6, 10, 3)


def test_the_table_file_may_be_given_and_named_freely(tmp_path):
  root = _write(str(tmp_path), TABLE)
  os.rename(os.path.join(root, "attributes.csv"), os.path.join(root, "labels.tsv"))
  with open(os.path.join(root, "labels.tsv"), "w") as fh:
    fh.write(TABLE.replace(",", "\t"))
  src = _open(os.path.join(root, "labels.tsv"), image_size=8)
  assert len(src) == 2 and src.root == root


def _err(root, split="train", **kw) -> str:
  with pytest.raises(DataError) as e:
    _open(root, split, **{"image_size": 8, **kw})[0]
  msg = str(e.value)
  assert "\n" not in msg
  return msg


def test_missing_image(tmp_path):
  root = _write(str(tmp_path), TABLE.replace("d.png,0", "e.png,0"))
  msg = _err(root)
  assert "attributes.csv line 5, column 1 ('file')" in msg and "e.png" in msg and "found nothing" in msg


def test_unreadable_image_at_open(tmp_path):
  root = _write(str(tmp_path), TABLE)
  with open(os.path.join(root, "c.png"), "wb") as fh:
    fh.write(b"not an image at all")
  msg = _err(root)
  assert "line 4, column 1 ('file')" in msg and "c.png" in msg and "cannot identify" in msg


def test_truncated_image_at_decode_names_the_line(tmp_path):
  root = _write(str(tmp_path), TABLE, size=(64, 64))
  p = os.path.join(root, "b.png")
  data = open(p, "rb").read()
  with open(p, "wb") as fh:
    fh.write(data[:len(data) // 2])
  src = _open(root, image_size=8)
  with pytest.raises(DataError) as e:
    src[1]
  assert "attributes.csv line 3, column 1 ('file')" in str(e.value) and "truncated" in str(e.value)


def test_a_folder_listed_as_an_image(tmp_path):
  root = _write(str(tmp_path), TABLE)
  os.remove(os.path.join(root, "d.png"))
  os.makedirs(os.path.join(root, "d.png"))
  assert "line 5" in _err(root) and "folder" in _err(root)


@pytest.mark.parametrize("name,needles", [
    ("../x.png", ["escaping the root"]),
    ("d/../../x.png", ["escaping the root"]),
    ("/etc/x.png", ["relative to"]),
    ("d\\x.png", ["forward slashes"]),
    ("x.gif", ["image name ending in .jpg .jpeg .png .webp", "'x.gif'"]),
    (".hidden/x.png", ["hidden path"]),
])
def test_paths_outside_the_rules(tmp_path, name, needles):
  _write(str(tmp_path / "outside"), TABLE, images=("x.png",))
  root = _write(str(tmp_path / "root"), TABLE.replace("d.png", name))
  msg = _err(root)
  assert msg.startswith(os.path.join(root, "attributes.csv") + " line 5, column 1 ('file'): ")
  for needle in needles:
    assert needle in msg, msg


def test_symlink_escaping_the_root(tmp_path):
  root = _write(str(tmp_path / "root"), TABLE)
  _write(str(tmp_path / "outside"), TABLE, images=("x.png",))
  os.remove(os.path.join(root, "c.png"))
  os.symlink(os.path.join(tmp_path, "outside", "x.png"), os.path.join(root, "c.png"))
  msg = _err(root)
  assert "line 4, column 1" in msg and "outside/x.png (a path escaping the root)" in msg


def test_two_names_of_one_file_are_duplicates(tmp_path):
  root = _write(str(tmp_path), TABLE)
  os.remove(os.path.join(root, "d.png"))
  os.symlink("b.png", os.path.join(root, "d.png"))
  msg = _err(root)
  assert "line 5, column 1" in msg and "b.png" in msg and "a duplicate" in msg


def test_symlink_loop(tmp_path):
  root = _write(str(tmp_path), TABLE)
  os.remove(os.path.join(root, "d.png"))
  os.symlink("d.png", os.path.join(root, "d.png"))
  assert "line 5" in _err(root)


def test_region_outside_its_image(tmp_path):
  root = _write(str(tmp_path), "file,a,a_x0,a_y0,a_x1,a_y1,split\na.png,1,0,0,8,8,train\n"
                "b.png,0,2,2,9,4,train\nc.png,1,,,,,val\nd.png,0,,,,,test\n")
  msg = _err(root)
  assert "line 3, column 5 ('a_x1')" in msg and "inside the 8x8 image" in msg and "(2, 2, 9, 4)" in msg
  root = _write(str(tmp_path / "p"), "file,a,a_x,a_y,split\na.png,1,3,8.5,train\nb.png,0,1,1,train\n"
                "c.png,1,,,val\nd.png,0,,,test\n")
  msg = _err(root)
  assert "line 2, column 4 ('a_y')" in msg and "inside the 8x8 image, got (3, 8.5)" in msg


def test_mixed_sizes_need_an_image_size(tmp_path):
  root = _write(str(tmp_path), TABLE)
  _write(root, TABLE, images=("c.png",), size=(9, 8))
  msg = _err(root, image_size=None)
  assert "line 4, column 1" in msg and "8x8" in msg and "9x8" in msg and "set image_size" in msg
  assert len(_open(root, image_size=8)) == 2


def test_an_empty_split(tmp_path):
  root = _write(str(tmp_path), TABLE.replace("val", "train"))
  assert "expected rows with split 'val'" in _err(root, "val")


def test_too_few_images_to_split(tmp_path):
  root = _write(str(tmp_path), "file,a\na.png,1\nb.png,0\n")
  msg = _err(root)
  assert msg.startswith(os.path.join(root, "attributes.csv")) and "at least 3 images to fill test, val and train" in msg


def test_no_table_or_two_tables(tmp_path):
  assert "expected exactly one of attributes.csv and attributes.tsv" in _err(str(tmp_path))
  root = _write(str(tmp_path), TABLE)
  open(os.path.join(root, "attributes.tsv"), "w").write(TABLE.replace(",", "\t"))
  assert "found both" in _err(root)
  assert "found nothing there" in _err(str(tmp_path / "nope"))


def test_bad_split_name():
  with pytest.raises(DataError, match="split: expected one of train, val"):
    at.AttributeTable("/nonexistent", "dev")


# --------------------------------------------------------------------------- open, prepare, inspect


def test_open_source_and_the_prepared_cache_return_identical_arrays(faces, tmp_path):
  import pickle

  from hpjax.data import prepare
  from hpjax.data.base import get_batch
  from hpjax.data.sources import open_source

  root, _ = faces
  dst = str(tmp_path / "faces16")
  man = prepare.prepare_attribute_table(root, dst, image_size=16, workers=0, log=lambda *a: None)
  assert man["dataset"] == "attribute_table" and man["label_names"] == list(ATTRIBUTES)
  for split in ("train", "val", "test"):
    a = open_source("attribute_table", split, path=root, image_size=16)
    b = open_source("prepared", split, path=dst, image_size=16)
    assert len(a) == len(b) and a.image_shape == b.image_shape == (16, 16, 3)
    assert b.filenames == a.filenames and b.label_names == a.label_names
    ra, rb = get_batch(a, np.arange(len(a))), b.get_batch(np.arange(len(b)))
    assert set(ra) == set(rb) == {"image", "label", "boxes"}
    for k in ra:
      np.testing.assert_array_equal(ra[k], rb[k])
      assert ra[k].dtype == rb[k].dtype
    # Pickled for grain's worker processes: the same examples on arrival.
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c[1]["image"], a[1]["image"])
  logs = []
  prepare.prepare_attribute_table(root, dst, image_size=16, workers=0, log=logs.append)
  assert "already prepared" in logs[-1]


def test_prepare_command_line(faces, tmp_path, capsys):
  from hpjax.data import prepare
  root, _ = faces
  dst = str(tmp_path / "c")
  assert prepare.main(["attribute_table", "--src", os.path.join(root, "attributes.csv"),
                       "--dst", dst, "--image-size", "8", "--workers", "0"]) == 0
  assert "prepared (train 32, validation 4, test 4)" in capsys.readouterr().out
  assert prepare.main(["attribute_table", "--src", str(tmp_path), "--dst", str(tmp_path / "d"),
                       "--workers", "0"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and "attributes.csv" in err
  assert not os.path.exists(tmp_path / "d")


def test_inspect_reports_counts_prevalence_sizes_and_regions(faces, capsys):
  from hpjax.data import inspect
  root, w = faces
  assert inspect.main(["attribute_table", root, "--image-size", "16"]) == 0
  out = capsys.readouterr().out
  assert "14 attributes; split column 'split'; regions for 14 of 14 attributes (box); RGB" in out
  assert "train: 32 examples, image uint8 (16, 16, 3), label int32 (14,)" in out
  train = np.array([s == "train" for s in w["split"]])
  k = ATTRIBUTES.index("Smiling")
  positives = int(w["label"][train, k].sum())
  assert f"Smiling {positives}," in out and f"Smiling {100 * positives / 32:.1f}%" in out
  assert "image sizes before resizing (width x height): 32x40 (32); 1 distinct" in out
  assert "split sizes: train 32 / val 4 / test 4 (total 40)" in out and "sound" in out


def test_inspect_prints_the_first_problem_as_one_line(tmp_path, capsys):
  from hpjax.data import inspect
  root = _write(str(tmp_path), TABLE)
  with open(os.path.join(root, "c.png"), "wb") as fh:
    fh.write(b"\x89PNG\r\n\x1a\n")  # a PNG signature and nothing else
  assert inspect.main(["attribute_table", root]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"error: {os.path.join(root, 'attributes.csv')} line 4, column 1 ('file'): ")
