"""CelebA raw loader, prepared cache, and every hostile-file case (fixtures in the real format)."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from hpjax.data import celeba, prepare
from hpjax.data.base import get_batch
from hpjax.core.errors import DataError


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("celeba"))
  info = fx.write_celeba(root, n=24)
  return root, info


@pytest.fixture(scope="module")
def cache(raw, tmp_path_factory):
  dst = str(tmp_path_factory.mktemp("cache") / "celeba64")
  prepare.prepare_celeba(raw[0], dst, image_size=64, workers=0, log=lambda *a: None)
  return dst


def copy_of(raw, tmp_path) -> str:
  root = str(tmp_path / "c")
  shutil.copytree(raw[0], root)
  return root


def test_splits_labels_and_landmarks_follow_the_files(raw):
  root, info = raw
  for split, pid in celeba.SPLITS.items():
    src = celeba.CelebA(root, split)
    keep = np.flatnonzero(info["partition"] == pid)
    assert len(src) == len(keep) and len(src) > 0
    assert src.filenames == tuple(info["filenames"][i] for i in keep)
    np.testing.assert_array_equal(src.labels, info["attributes"][keep])
    ex = src[0]
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
    assert ex["label"].dtype == np.int32 and set(np.unique(ex["label"])) <= {0, 1}
    # Landmarks: crop box (0, 20, 178, 198), scale 64/178.
    expect = np.rint((info["landmarks"][keep[0]] - [0, 20]) * 64 / 178).astype(np.int32)
    np.testing.assert_array_equal(ex["landmarks"], expect)
  assert celeba.CelebA(root, "val").split == "validation"
  assert src.label_names == celeba.ATTRIBUTES and src.image_shape == (64, 64, 3)


def test_image_is_center_crop_then_bilinear_resize(raw):
  root, info = raw
  src = celeba.CelebA(root, "train", image_size=None)
  img = np.asarray(Image.open(os.path.join(root, "img_align_celeba", src.filenames[1])).convert("RGB"))
  np.testing.assert_array_equal(src[1]["image"], img[20:198])
  small = celeba.CelebA(root, "train", image_size=32)[1]["image"]
  full = Image.fromarray(img)
  expect = np.asarray(full.resize((32, 32), Image.Resampling.BILINEAR, box=(0, 20, 178, 198)))
  np.testing.assert_array_equal(small, expect)
  crop_then_resize = np.asarray(Image.fromarray(img[20:198]).resize((32, 32), Image.Resampling.BILINEAR))
  assert np.abs(small.astype(int) - crop_then_resize).max() <= 1


def test_minus_one_one_become_zero_one(tmp_path):
  text = "1\n" + " ".join(celeba.ATTRIBUTES) + "\n000001.jpg " + " ".join(["-1", "1"] * 20) + "\n"
  names, labels = celeba.parse_attributes(text)
  assert names == ["000001.jpg"]
  np.testing.assert_array_equal(labels, [[0, 1] * 20])
  assert labels.dtype == np.int32


def test_prepared_cache_returns_identical_arrays(raw, cache):
  for split in celeba.SPLITS:
    a, b = celeba.CelebA(raw[0], split), celeba.CelebAPrepared(cache, split)
    assert len(a) == len(b) and a.image_shape == b.image_shape and a.label_names == b.label_names
    idx = np.arange(len(a))
    ra, rb = get_batch(a, idx), b.get_batch(idx)
    assert set(ra) == set(rb) == {"image", "label", "landmarks", "boxes"}
    for k in ra:
      np.testing.assert_array_equal(ra[k], rb[k])
      assert ra[k].dtype == rb[k].dtype
    np.testing.assert_array_equal(b[3]["image"], a[3]["image"])
    b.verify()
  man = json.load(open(os.path.join(cache, "manifest.json")))
  assert man["crop_box"] == [0, 20, 178, 198] and man["splits"]["train"]["count"] == 12


def test_prepare_rerun_is_a_verified_no_op_and_size_clash_refused(raw, cache):
  before = os.path.getmtime(os.path.join(cache, "manifest.json"))
  logs = []
  prepare.prepare_celeba(raw[0], cache, image_size=64, workers=0, log=logs.append)
  assert "already prepared" in logs[-1]
  assert os.path.getmtime(os.path.join(cache, "manifest.json")) == before
  with pytest.raises(DataError, match="image size 64, asked for 32"):
    prepare.prepare_celeba(raw[0], cache, image_size=32, workers=0)


def test_interrupted_prepare_leaves_nothing_that_looks_complete(raw, tmp_path, monkeypatch):
  dst = str(tmp_path / "out")
  real = prepare._write_split
  calls = []

  def dying(source, tmp, split, workers, log):
    calls.append(split)
    if len(calls) == 2:
      raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-way
    return real(source, tmp, split, workers, log)

  monkeypatch.setattr(prepare, "_write_split", dying)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_celeba(raw[0], dst, workers=0, log=lambda *a: None)
  assert os.listdir(tmp_path) == []  # neither dst nor a partial directory
  monkeypatch.setattr(prepare, "_write_split", real)
  # A killed run (no cleanup) leaves only a dot-partial directory; dst without a manifest is refused.
  os.makedirs(dst)
  with pytest.raises(DataError, match="manifest"):
    celeba.CelebAPrepared(dst, "train")
  with pytest.raises(DataError, match="manifest"):
    prepare.prepare_celeba(raw[0], dst, workers=0)
  os.rmdir(dst)
  prepare.prepare_celeba(raw[0], dst, workers=0, log=lambda *a: None)
  assert len(celeba.CelebAPrepared(dst, "test")) == 6


def test_prepare_with_worker_processes_matches(raw, cache, tmp_path, monkeypatch):
  monkeypatch.setattr(prepare, "_CHUNK", 4)  # several chunks so the pool is really used
  dst = str(tmp_path / "mp")
  prepare.prepare_celeba(raw[0], dst, workers=2, log=lambda *a: None)
  a, b = celeba.CelebAPrepared(dst, "train"), celeba.CelebAPrepared(cache, "train")
  np.testing.assert_array_equal(a.arrays["image"], b.arrays["image"])


def test_damaged_cache_is_detected(raw, cache, tmp_path):
  dst = str(tmp_path / "bad")
  shutil.copytree(cache, dst)
  path = os.path.join(dst, "test_images.npy")
  with open(path, "r+b") as f:
    f.seek(-1, 2)
    f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
  src = celeba.CelebAPrepared(dst, "test")
  with pytest.raises(DataError, match="test_images.npy.*sha256"):
    src.verify()
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 100)
  with pytest.raises(DataError, match="test_images.npy"):
    celeba.CelebAPrepared(dst, "test")


def test_prepare_cli(raw, tmp_path, capsys):
  dst = str(tmp_path / "cli")
  assert prepare.main(["celeba", "--src", raw[0], "--dst", dst, "--image-size", "16", "--workers", "0"]) == 0
  assert celeba.CelebAPrepared(dst, "train")[0]["image"].shape == (16, 16, 3)
  assert prepare.main(["celeba", "--src", str(tmp_path / "nowhere"), "--dst", str(tmp_path / "x")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "nowhere" in err and "\n" not in err


# --------------------------------------------------------------------------- hostile files


def _edit(path, fn):
  with open(path) as f:
    lines = f.read().split("\n")
  with open(path, "w") as f:
    f.write("\n".join(fn(lines)))


def _set(i, value):
  def fn(lines):
    lines[i] = value(lines[i]) if callable(value) else value
    return lines
  return fn


A, P, L = celeba.ATTR_FILE, celeba.PARTITION_FILE, celeba.LANDMARKS_FILE


def _jpeg(img, **kw):
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", **kw)
  return buf.getvalue()


# (name, file to edit, edit, expected message pieces); edits apply to a fresh copy.
TEXT_CASES = [
    ("missing column", A, _set(4, lambda s: s.rsplit(" ", 1)[0]), [A, "line 5", "40 values, got 39"]),
    ("extra column", A, _set(4, lambda s: s + " 1"), [A, "line 5", "40 values, got 41"]),
    ("value 0", A, _set(3, lambda s: s[:-2] + " 0"), [A, "line 4", "-1/1", "'0'"]),
    ("value 2", A, _set(2, lambda s: s.replace("-1", " 2", 1)), [A, "line 3", "-1/1", "'2'"]),
    ("count line", A, _set(0, "25"), [A, "expected 25 rows", "found 24"]),
    ("count not a number", A, _set(0, "many"), [A, "line 1", "number of images"]),
    ("header short", A, _set(1, lambda s: s.rsplit(" ", 2)[0]), [A, "line 2", "40 column names"]),
    ("header renamed", A, _set(1, lambda s: s.replace("Bald", "Hairless")), [A, "line 2", "'Bald'", "'Hairless'"]),
    ("truncated", A, lambda ls: ls[:10] + [ls[10][:30]], [A, "line 11"]),
    ("empty", A, lambda ls: [], [A, "empty"]),
    ("duplicate", A, lambda ls: ls[:3] + [ls[2]] + ls[4:], [A, "line 4", "listed again"]),
    ("path traversal", A, _set(2, lambda s: s.replace("000001.jpg", "../00001.jpg")), [A, "line 3", "file name"]),
    ("unknown partition", P, _set(5, lambda s: s[:-1] + "3"), [P, "line 6", "partition id", "'3'"]),
    ("partition fields", P, _set(5, lambda s: s + " 0"), [P, "line 6", "3 fields"]),
    ("partition missing image", P, lambda ls: ls[:7] + ls[8:], [P, "000008.jpg"]),
    ("partition extra image", P, lambda ls: ls + ["999999.jpg 0"], [P, "999999.jpg"]),
    ("partition empty", P, lambda ls: [], [P, "empty"]),
    ("landmark not int", L, _set(4, lambda s: s[:-3] + "1.5"), [L, "000003.jpg", "10 integers"]),
    ("landmark header", L, _set(1, "lefteye_x lefteye_y"), [L, "line 2", "10 column names"]),
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_hostile_text_files(raw, tmp_path, case):
  _, fname, edit, pieces = case
  root = copy_of(raw, tmp_path)
  _edit(os.path.join(root, fname), edit)
  with pytest.raises(DataError) as e:
    celeba.CelebA(root, "train")
  msg = str(e.value)
  assert "\n" not in msg
  for p in pieces:
    assert p in msg, (p, msg)


def test_non_utf8_attr_file(raw, tmp_path):
  root = copy_of(raw, tmp_path)
  with open(os.path.join(root, A), "ab") as f:
    f.write(b"\xff\xfe\x00")
  with pytest.raises(DataError, match=f"{A}: expected UTF-8 text"):
    celeba.CelebA(root, "train")


def test_listed_image_missing_on_disk(raw, tmp_path):
  root = copy_of(raw, tmp_path)
  os.remove(os.path.join(root, "img_align_celeba", "000005.jpg"))
  with pytest.raises(DataError, match=r"000005.jpg: expected the image listed in list_attr_celeba.txt row 5, found no file"):
    celeba.CelebA(root, "test")


@pytest.mark.parametrize("what", ["empty dir", "no image dir", "no attr file", "not a dir"])
def test_missing_pieces(raw, tmp_path, what):
  root = str(tmp_path / "e")
  if what == "empty dir":
    os.makedirs(root)
    piece = "img_align_celeba"
  elif what == "no image dir":
    root = copy_of(raw, tmp_path)
    shutil.rmtree(os.path.join(root, "img_align_celeba"))
    piece = "img_align_celeba"
  elif what == "no attr file":
    root = copy_of(raw, tmp_path)
    os.remove(os.path.join(root, A))
    piece = A
  else:
    piece = "no directory"
  with pytest.raises(DataError, match=piece):
    celeba.CelebA(root, "train")


rng = np.random.default_rng(1)
IMAGE_CASES = [
    ("garbage", lambda d: b"this is not a jpeg at all", "cannot identify"),
    ("empty", lambda d: b"", "0 bytes"),
    ("truncated", lambda d: d[: len(d) // 2], "truncated"),
    ("header only", lambda d: d[:200], "JPEG"),
    ("wrong size", lambda d: _jpeg(fx.smooth_image(rng, 200, 200)), "178x218 pixels (width x height), found 200x200"),
    ("grayscale", lambda d: _jpeg(fx.smooth_image(rng, 218, 178, 1)[..., 0]), "mode RGB, found L"),
    ("cmyk", lambda d: _cmyk(), "mode RGB, found CMYK"),
    ("png named jpg", lambda d: _png(), "JPEG"),
]


def _cmyk():
  buf = io.BytesIO()
  Image.new("CMYK", (178, 218)).save(buf, format="JPEG")
  return buf.getvalue()


def _png():
  buf = io.BytesIO()
  Image.new("RGB", (178, 218)).save(buf, format="PNG")
  return buf.getvalue()


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_hostile_images_fail_on_decode_naming_the_file(raw, tmp_path, case):
  _, make, piece = case
  root = copy_of(raw, tmp_path)
  path = os.path.join(root, "img_align_celeba", "000001.jpg")  # first train image
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(make(data))
  src = celeba.CelebA(root, "train")  # text files are fine: construction succeeds
  src[1]  # other images still decode
  with pytest.raises(DataError) as e:
    src[0]
  msg = str(e.value)
  assert "000001.jpg" in msg and piece in msg and "\n" not in msg, msg


def test_landmark_boxes_golden():
  # CelebA's typical aligned face (178x218 file) at image_size None: the crop moves y by -20.
  lm = np.array([[69, 91], [108, 91], [88, 115], [72, 132], [105, 132]])
  boxes = celeba.landmark_boxes(lm, 178)
  at = lambda a: boxes[celeba.ATTRIBUTES.index(a)].tolist()
  assert at("Eyeglasses") == [49, 67, 128, 107]      # ex0 - d/2, ey - 0.6d, ex1 + d/2, ey + 0.4d; d = 39
  assert at("Smiling") == at("Big_Lips") == [64, 118, 113, 146]
  assert at("Mustache") == [64, 115, 113, 132]
  assert at("Wearing_Hat") == [30, 0, 147, 45]       # clipped at the top
  assert at("Wearing_Necktie") == [33, 171, 144, 178]  # clipped at the bottom
  assert at("Male") == at("Blond_Hair") == [0, 0, 0, 0]  # no compact region: never scored
  mapped = {a for v in celeba.LANDMARK_REGIONS.values() for a in v}
  assert len(mapped) == 24 and mapped <= set(celeba.ATTRIBUTES)
  assert (boxes[:, 2] > boxes[:, 0]).sum() == 24
  np.testing.assert_array_equal(celeba.landmark_boxes(np.stack([lm, lm + 1]), 178)[0], boxes)


def test_examples_carry_the_landmarks_boxes_also_from_an_old_cache(raw, cache, tmp_path):
  src = celeba.CelebA(raw[0], "train", image_size=64)
  ex = src[2]
  np.testing.assert_array_equal(ex["boxes"], celeba.landmark_boxes(ex["landmarks"], 64))
  assert ex["boxes"].shape == (40, 4) and ex["boxes"].dtype == np.int32
  # A cache written before examples had boxes: derived from its landmarks on read.
  old = str(tmp_path / "old")
  shutil.copytree(cache, old)
  man = json.load(open(os.path.join(old, "manifest.json")))
  for entry in man["splits"].values():
    os.remove(os.path.join(old, entry["arrays"].pop("boxes")["file"]))
  with open(os.path.join(old, "manifest.json"), "w") as f:
    json.dump(man, f)
  prepared = celeba.CelebAPrepared(old, "train")
  np.testing.assert_array_equal(prepared.get_batch(np.arange(3))["boxes"], get_batch(src, np.arange(3))["boxes"])
  np.testing.assert_array_equal(prepared[2]["boxes"], ex["boxes"])
