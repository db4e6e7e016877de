"""image_folder: both layouts, the decode policy, every hostile tree, the cache, inspect, and
an end-to-end semi-supervised run on a generated folder of coloured shapes (real PNG/JPEG files)."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import data_fixtures as fx
from hpjax.core.errors import ConfigError, DataError
from hpjax.data import image_folder as imf
from hpjax.data import inspect, prepare
from hpjax.data.base import get_batch
from hpjax.data.image import center_square_box
from hpjax.data.sources import open_source

CLASSES = fx.SHAPE_CLASSES


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("shapes") / "shapes")
  info = fx.write_image_folder(root, per_class=10, unlabelled=4)
  with open(os.path.join(root, "README.txt"), "w") as f:
    f.write("not an image")
  return root, info


def copy_of(shapes, tmp_path) -> str:
  root = str(tmp_path / "copy")
  shutil.copytree(shapes[0], root, symlinks=True)
  return root


# --------------------------------------------------------------------------- layouts


def test_class_layout_sorted_classes_stratified_seeded_split_and_pool(shapes):
  root, info = shapes
  splits = imf.open_splits(root, image_size=16)
  assert set(splits) == {"train", "test", "unlabelled"}
  train, test, pool = splits["train"], splits["test"], splits["unlabelled"]
  assert train.label_names == CLASSES and train.layout == "class_folders"
  assert train.class_counts().tolist() == [8, 8, 8] and test.class_counts().tolist() == [2, 2, 2]
  labelled = {r for r, c in info["files"].items() if c is not None}
  assert set(train.filenames) | set(test.filenames) == labelled
  assert not set(train.filenames) & set(test.filenames)
  for src in (train, test):
    assert [CLASSES[i] for i in src.labels] == [info["files"][f] for f in src.filenames]
  assert pool.filenames == tuple(f"unlabelled/u{i:03d}.{'png' if i % 2 == 0 else 'jpg'}" for i in range(4))
  assert pool.labels is None and set(pool[0]) == {"image"} and pool[0]["image"].shape == (16, 16, 3)
  ex = train[0]
  assert ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32 and ex["label"] == 0
  # Deterministic: a second scan gives the same split; another seed another one.
  assert imf.ImageFolder(root, "test", image_size=16).filenames == test.filenames
  other = imf.ImageFolder(root, "test", image_size=16, seed=1)
  assert other.filenames != test.filenames and other.class_counts().tolist() == [2, 2, 2]
  assert imf.ImageFolder(root, "validation", validation_fraction=0.1).class_counts().tolist() == [1, 1, 1]
  assert train.skipped == ("README.txt",)


def test_class_names_sort_as_torchvision_does(tmp_path):
  root = str(tmp_path / "f")
  fx.write_image_folder(root, per_class=2, classes=("b_dog", "Zebra", "a_cat", "B_cow"))
  # torchvision: classes = sorted(entry.name for entry in os.scandir(dir) if entry.is_dir())
  assert imf.ImageFolder(root, "train").label_names == ("B_cow", "Zebra", "a_cat", "b_dog")


def test_split_folders_as_given(tmp_path):
  root = str(tmp_path / "f")
  info = fx.write_image_folder(root, per_class=4, split_folders=True, test_per_class=2, unlabelled=2)
  splits = imf.open_splits(root, image_size=8)
  assert set(splits) == {"train", "test", "unlabelled"} and splits["train"].layout == "split_folders"
  assert splits["test"].filenames == tuple(sorted((f for f in info["files"] if f.startswith("test/")),
                                                  key=lambda f: f.split("/")))
  assert splits["train"].class_counts().tolist() == [4, 4, 4]
  os.rename(os.path.join(root, "test"), os.path.join(root, "val"))
  assert len(imf.ImageFolder(root, "val")) == 6 and imf.ImageFolder(root, "validation").splits == (
      "train", "validation", "unlabelled")
  fx.one_line_error(lambda: imf.ImageFolder(root, "test"), "expected a split among train, validation, unlabelled")


# --------------------------------------------------------------------------- the decode policy


def test_pixels_follow_the_documented_policy(shapes):
  root, info = shapes
  src = imf.ImageFolder(root, "train", image_size=16)
  box = center_square_box(40, 48)
  assert box == (0, 4, 40, 44)
  for i, rel in enumerate(src.filenames[:4]):
    im = Image.open(os.path.join(root, rel))
    if rel.endswith(".jpg"):
      im.draft("RGB", (16, 16))  # the reduced DCT decode of JPEGs twice the output or larger
      assert im.size == (20, 24)
      ref = im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR, box=center_square_box(20, 24))
    else:
      ref = im.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR, box=box)
    np.testing.assert_array_equal(src[i]["image"], np.asarray(ref))
  full = imf.ImageFolder(root, "train", image_size=None)
  assert full.image_shape == (48, 40, 3)
  for i, rel in enumerate(full.filenames[:4]):
    # As they are: PNGs give the drawn pixels, JPEGs PIL's own full decode of the file.
    drawn = info["pixels"][rel] if rel.endswith(".png") else np.asarray(
        Image.open(os.path.join(root, rel)).convert("RGB"))
    np.testing.assert_array_equal(full[i]["image"], drawn)


def _save(path, arr, fmt="PNG", **kw):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(arr).save(path, format=fmt, **kw)


def test_orientation_grayscale_16_bit_and_alpha(tmp_path):
  rng = np.random.default_rng(0)
  root = str(tmp_path / "f")
  gray = rng.integers(0, 256, (2, 2, 20, 30)).astype(np.uint8)  # stored 30 wide, 20 high
  for c in range(2):
    for i in range(2):
      _save(os.path.join(root, f"c{c}", f"{i}.png"), gray[c, i])
  src = imf.ImageFolder(root, "train", image_size=None, test_fraction=0.4)
  assert src.channels == 1 and src.image_shape == (20, 30, 1)
  c, i = int(src.filenames[0][1]), int(src.filenames[0][3])
  np.testing.assert_array_equal(src[0]["image"][..., 0], gray[c, i])
  # EXIF orientation 6 (stored rotated 90° clockwise): read upright, 20 wide and 30 high.
  exif = Image.Exif()
  exif[0x0112] = 6
  for c in range(2):
    for i in range(2):
      _save(os.path.join(root, f"c{c}", f"{i}.png"), gray[c, i], exif=exif)
  src = imf.ImageFolder(root, "test", image_size=None, test_fraction=0.4)
  assert src.image_shape == (30, 20, 1) and src.sizes.tolist()[0] == [20, 30]
  c, i = int(src.filenames[0][1]), int(src.filenames[0][3])
  np.testing.assert_array_equal(src[0]["image"][..., 0], np.rot90(gray[c, i], -1))
  # One colour image makes the whole data set RGB; grayscale ones are replicated.
  rgba = rng.integers(0, 256, (30, 20, 4)).astype(np.uint8)
  rgba[..., 3] = 0  # fully transparent: the alpha is dropped, not composited
  _save(os.path.join(root, "c1", "9.png"), rgba)
  src = imf.ImageFolder(root, "train", image_size=None, test_fraction=0.4)
  assert src.channels == 3
  k = src.filenames.index("c1/9.png")
  np.testing.assert_array_equal(src[k]["image"], rgba[..., :3])
  g = src[0]["image"]
  assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
  # 16-bit grayscale becomes 8-bit: round(v * 255 / 65535).
  deep = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(30, 0)[:, :, None].repeat(5, 2)
  deep = deep.transpose(0, 2, 1).reshape(30, 20)
  d16 = str(tmp_path / "d16")
  for c in range(2):
    for i in range(2):
      _save(os.path.join(d16, f"c{c}", f"{i}.png"), deep)
  assert Image.open(os.path.join(d16, "c0", "0.png")).mode == "I;16"
  src = imf.ImageFolder(d16, "train", image_size=None, test_fraction=0.4)
  np.testing.assert_array_equal(np.unique(src[0]["image"]), [0, 1, 128, 255])


def test_webp_and_upper_case_extensions(tmp_path):
  rng = np.random.default_rng(2)
  root = str(tmp_path / "f")
  arrays = {}
  for c in range(2):
    for i, ext in enumerate(("WEBP", "webp", "Png")):
      arrays[f"c{c}/{i}.{ext}"] = a = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
      _save(os.path.join(root, f"c{c}", f"{i}.{ext}"), a, "WEBP" if ext.lower() == "webp" else "PNG",
            **({"lossless": True} if ext.lower() == "webp" else {}))
  src = imf.ImageFolder(root, "train", test_fraction=0.3)
  assert len(src) == 4 and src.image_shape == (12, 10, 3)
  for k, rel in enumerate(src.filenames):
    np.testing.assert_array_equal(src[k]["image"], arrays[rel])


def test_large_jpegs_decode_reduced_then_resize_like_the_full_decode(tmp_path):
  rng = np.random.default_rng(1)
  root = str(tmp_path / "f")
  for c in range(2):
    for i in range(2):
      _save(os.path.join(root, f"c{c}", f"{i}.jpg"), fx.smooth_image(rng, 300, 400), "JPEG", quality=92)
  src = imf.ImageFolder(root, "train", image_size=32, test_fraction=0.4)
  full = Image.open(os.path.join(root, src.filenames[0])).convert("RGB")
  ref = np.asarray(full.resize((32, 32), Image.Resampling.BILINEAR, box=center_square_box(400, 300)))
  got = src[0]["image"].astype(int)
  assert got.shape == (32, 32, 3) and np.abs(got - ref).mean() < 2.0


# --------------------------------------------------------------------------- hostile trees


def _dangling(root):
  os.symlink("gone.jpg", os.path.join(root, "circle", "010.jpg"))


def _garbage(root):
  with open(os.path.join(root, "square", "004.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n not really")


def _duplicate(root):
  shutil.copy(os.path.join(root, "circle", "002.png"), os.path.join(root, "circle", "002.jpg"))


def _linked_twice(root):
  os.symlink(os.path.join("..", "circle", "002.png"), os.path.join(root, "square", "xx.png"))


def _empty_class(root):
  os.makedirs(os.path.join(root, "hexagon"))
  with open(os.path.join(root, "hexagon", "notes.txt"), "w") as f:
    f.write("x")


def _one_image_class(root):
  os.makedirs(os.path.join(root, "hexagon"))
  shutil.copy(os.path.join(root, "circle", "002.png"), os.path.join(root, "hexagon", "only.png"))


def _mixed_sizes(root):
  Image.new("RGB", (41, 48)).save(os.path.join(root, "triangle", "005.jpg"), format="JPEG")


def _escaping(root):
  outside = os.path.join(os.path.dirname(root), "outside.png")
  shutil.copy(os.path.join(root, "circle", "002.png"), outside)
  os.symlink(outside, os.path.join(root, "circle", "evil.png"))


def _loop(root):
  os.symlink("..", os.path.join(root, "circle", "again"))


def _image_at_top(root):
  shutil.copy(os.path.join(root, "circle", "002.png"), os.path.join(root, "stray.png"))


def _one_class(root):
  for c in ("square", "triangle"):
    shutil.rmtree(os.path.join(root, c))


def _class_named_test(root):
  os.rename(os.path.join(root, "triangle"), os.path.join(root, "test"))


def _empty_pool(root):
  shutil.rmtree(os.path.join(root, "unlabelled"))
  os.makedirs(os.path.join(root, "unlabelled"))


def _special_file(root):
  os.mkfifo(os.path.join(root, "circle", "fifo.jpg"))


# (name, how to break the copy, what the message must say). The first problem found is
# reported, naming the file (or folder) and what was expected.
HOSTILE = [
    ("missing image", _dangling, ["circle/010.jpg", "'gone.jpg', which does not exist (missing image)"]),
    ("unreadable image", _garbage, ["square/004.png", "expected a JPEG/PNG/WEBP image, cannot identify it"]),
    ("duplicate name", _duplicate, ["circle/002.png", "beside 002.jpg", "a duplicate"]),
    ("duplicate file", _linked_twice, ["square/xx.png", "circle/002.png again", "a duplicate"]),
    ("empty class", _empty_class, ["hexagon", "in class folder 'hexagon', found none (an empty class)"]),
    ("class with one image", _one_image_class, ["hexagon/only.png", "expected at least 2 images in class 'hexagon'"]),
    ("mixed sizes", _mixed_sizes, ["triangle/005.jpg", "expected 40x48 pixels like", "found 41x48 (mixed sizes)"]),
    ("path escaping the root", _escaping, ["circle/evil.png", "a path escaping the root"]),
    ("symlink loop", _loop, ["circle/again: expected a folder, found a link back to its own ancestor", "a symlink loop"]),
    ("image outside class folders", _image_at_top, ["stray.png", "expected images inside class folders"]),
    ("one class", _one_class, ["expected at least 2 class folders, found 1 (circle)"]),
    ("class named like a split", _class_named_test, ["test: expected class folders, found a split's name"]),
    ("empty unlabelled folder", _empty_pool, ["unlabelled: expected images"]),
    ("special file", _special_file, ["circle/fifo.jpg", "found a special file"]),
]


@pytest.mark.parametrize("name, breaker, pieces", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_trees_fail_at_open_with_one_line(shapes, tmp_path, name, breaker, pieces):
  root = copy_of(shapes, tmp_path)
  breaker(root)
  fx.one_line_error(lambda: imf.ImageFolder(root, "train", image_size=None), root, *pieces)


def test_truncated_image_fails_on_decode_naming_it(shapes, tmp_path):
  root = copy_of(shapes, tmp_path)
  path = os.path.join(root, "square", "003.jpg")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])  # the header is intact: opening succeeds
  src = next(s for s in imf.open_splits(root, image_size=16).values() if "square/003.jpg" in s.filenames)
  fx.one_line_error(lambda: src[src.filenames.index("square/003.jpg")], "square/003.jpg",
           "corrupt or truncated JPEG data")


def test_split_folders_must_share_classes_and_hold_only_splits(tmp_path):
  root = str(tmp_path / "f")
  fx.write_image_folder(root, per_class=3, split_folders=True, test_per_class=2)
  shutil.rmtree(os.path.join(root, "test", "square"))
  fx.one_line_error(lambda: imf.ImageFolder(root, "train"),
           os.path.join(root, "test"), "expected the class folders of", "missing 'square'")
  shutil.copytree(os.path.join(root, "train", "square"), os.path.join(root, "test", "square"))
  os.makedirs(os.path.join(root, "extras"))
  fx.one_line_error(lambda: imf.ImageFolder(root, "train"), "extras", "expected only the split folders")


def test_bad_arguments(shapes):
  root = shapes[0]
  fx.one_line_error(lambda: imf.ImageFolder(root, "train", test_fraction=0.7, validation_fraction=0.4),
           "split fractions")
  fx.one_line_error(lambda: imf.ImageFolder(root, "train", image_size=0), "image_size")
  fx.one_line_error(lambda: imf.ImageFolder(root + "-nope", "train"), "expected a folder of images, found nothing")


# --------------------------------------------------------------------------- sources, cache, inspect


def test_open_source_and_pickle_for_worker_processes(shapes):
  root = shapes[0]
  src = open_source("image_folder", "train", path=root, image_size=16, seed=0)
  assert len(src) == 24 and src.image_shape == (16, 16, 3)
  back = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(back[5]["image"], src[5]["image"])
  with pytest.raises(DataError, match="expected a path"):
    open_source("image_folder", "train")


def test_prepared_cache_returns_identical_arrays(shapes, tmp_path, monkeypatch):
  root = shapes[0]
  dst = str(tmp_path / "cache")
  man = prepare.prepare_image_folder(root, dst, image_size=16, workers=0, log=lambda *a: None)
  assert man["dataset"] == "image_folder" and man["label_names"] == list(CLASSES)
  assert {s: e["count"] for s, e in man["splits"].items()} == {"train": 24, "test": 6, "unlabelled": 4}
  live = imf.open_splits(root, image_size=16)
  for split, a in live.items():
    b = open_source("prepared", split, path=dst, image_size=16)
    ra, rb = get_batch(a, np.arange(len(a))), b.get_batch(np.arange(len(b)))
    assert set(ra) == set(rb) == ({"image"} if split == "unlabelled" else {"image", "label"})
    for k in ra:
      np.testing.assert_array_equal(ra[k], rb[k])
      assert ra[k].dtype == rb[k].dtype
    assert b.filenames == a.filenames and b.label_names == CLASSES
    b.verify()
  logs = []
  prepare.prepare_image_folder(root, dst, image_size=16, workers=0, log=logs.append)
  assert "already prepared and verified" in logs[-1]
  fx.one_line_error(lambda: prepare.prepare_image_folder(root, dst, image_size=16, seed=3, workers=0),
           "already holds a cache with seed 0, asked for 3")
  fx.one_line_error(lambda: prepare.Prepared(dst, "train", dataset="celeba"), "expected a prepared celeba cache, found one of image_folder")
  # Worker processes give the same bytes.
  monkeypatch.setattr(prepare, "_CHUNK", 8)
  mp = str(tmp_path / "mp")
  prepare.prepare_image_folder(root, mp, image_size=16, workers=2, log=lambda *a: None)
  np.testing.assert_array_equal(prepare.Prepared(mp, "train").arrays["image"],
                                prepare.Prepared(dst, "train").arrays["image"])


def test_a_celeba_cache_of_the_earlier_format_still_opens_and_verifies(tmp_path):
  from hpjax.data import celeba

  raw, dst = str(tmp_path / "raw"), str(tmp_path / "c")
  fx.write_celeba(raw, n=8)
  prepare.prepare_celeba(raw, dst, image_size=16, workers=0, log=lambda *a: None)
  path = os.path.join(dst, prepare.MANIFEST)
  man = json.load(open(path))
  del man["dataset"]
  man["format"] = "hpjax-celeba-prepared"  # as written before the format was shared
  with open(path, "w") as f:
    json.dump(man, f)
  assert len(celeba.CelebAPrepared(dst, "val")) == 2
  assert open_source("prepared", "train", path=dst).dataset == "celeba"
  logs = []
  prepare.prepare_celeba(raw, dst, image_size=16, workers=0, log=logs.append)
  assert "already prepared and verified" in logs[-1]


def test_prepare_cli(shapes, tmp_path, capsys):
  root = shapes[0]
  dst = str(tmp_path / "cli")
  assert prepare.main(["image_folder", "--src", root, "--dst", dst, "--image-size", "8",
                       "--test-fraction", "0.3", "--workers", "0"]) == 0
  assert len(prepare.Prepared(dst, "test")) == 9  # round(0.3 * 10) of each class
  assert prepare.main(["image_folder", "--src", root, "--dst", str(tmp_path / "x"), "--image-size", "none",
                       "--workers", "0"]) == 0
  assert prepare.Prepared(str(tmp_path / "x"), "train").image_shape == (48, 40, 3)
  capsys.readouterr()
  assert prepare.main(["image_folder", "--src", root + "-nope", "--dst", str(tmp_path / "y")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and "nope" in err


def test_inspect_reports_counts_sizes_skipped_and_first_problem(shapes, tmp_path, capsys):
  root = shapes[0]
  assert inspect.main(["image_folder", root, "--image-size", "16"]) == 0
  out = capsys.readouterr().out
  for piece in ["layout: class folders (held out per class: test 0.2, validation 0.0, seed 0); "
                "3 classes (circle, square, triangle); RGB",
                "train: 24 examples, image uint8 (16, 16, 3), label int32 ()",
                "examples per class: circle 8, square 8, triangle 8",
                "image sizes before resizing (width x height): 40x48 (24); 1 distinct",
                "unlabelled: 4 examples, image uint8 (16, 16, 3), no labels",
                f"skipped 1 files that are not .jpg/.jpeg/.png/.webp images, e.g. {root}/README.txt",
                "split sizes: train 24 / test 6 / unlabelled 4 (total 34)", "sound"]:
    assert piece in out, out
  bad = copy_of(shapes, tmp_path)
  path = os.path.join(bad, "unlabelled", "u003.jpg")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:200])
  assert inspect.main(["image_folder", bad]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and "unlabelled/u003.jpg" in err, err
  _mixed_sizes(bad)
  assert inspect.main(["image_folder", bad]) == 2
  assert "mixed sizes" in capsys.readouterr().err


# --------------------------------------------------------------------------- the semi-supervised loop


@pytest.fixture(scope="module")
def semi_run(tmp_path_factory):
  """train.semisupervised on a generated folder with a pool, then evaluate.semisupervised."""
  from hpjax.commands import evaluate_semisupervised, train_semisupervised

  base = tmp_path_factory.mktemp("semi_folder")
  root = str(base / "shapes")
  fx.write_image_folder(root, per_class=12, unlabelled=9, seed=3)
  work = str(base / "run")
  sets = ["dataset=image_folder", f"data_path={root}", "image_size=16", "batch_size=8",
          "num_train=None", "eval_batch_size=16", "num_train_scored=8", "num_classes=3"]
  argv = ["--config", "smoke", "--workdir", work, "--no-progress"]
  for s in sets:
    argv += ["--set", s]
  rc = train_semisupervised.main(argv)
  rc_eval = evaluate_semisupervised.main(["--workdirs", work, "--out", str(base / "eval"),
                                          "--num-resamples", "50"])
  return root, work, str(base / "eval"), rc, rc_eval, argv


def test_semisupervised_trains_on_the_folder_with_its_pool_and_records_class_names(semi_run):
  from hpjax.image_score import semisupervised as semi

  root, work, out, rc, rc_eval, _ = semi_run
  assert rc == 0 and rc_eval == 0
  with open(os.path.join(work, "data.json")) as f:
    data_json = json.load(f)
  assert data_json["label_names"] == list(CLASSES)
  assert (data_json["num_train"], data_json["num_unlabelled"], data_json["num_test"]) == (30, 9, 6)
  config = semi.read_run_config(work)
  data = semi.load_data(config)
  assert data.num_unlabelled == 9 and (data.train_labels[30:] == -1).all()
  np.testing.assert_array_equal(data.additional[-9:], np.arange(30, 39))  # the pool, after the split's
  assert data.additional.size == 12 + 9 and data.labelled.size == 18
  records = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
  assert [r["epoch"] for r in records] == [0, 1, 2]
  for epoch in (1, 2):
    with np.load(os.path.join(semi.phase_dir(work, epoch), "selection.npz")) as s:
      index, pseudo = s["index"], s["pseudo"]
    rows = data.additional[index]
    from_pool = rows >= 30
    rec = records[epoch]
    assert rec["num_selected"] == index.size and rec["num_selected_unlabelled"] == int(from_pool.sum())
    true = data.train_labels[rows[~from_pool]]
    expect = float(np.mean(true == pseudo[~from_pool])) if true.size else None
    assert rec["precision"] == (pytest.approx(expect) if expect is not None else None)
  with open(os.path.join(out, "semisupervised.json")) as f:
    assert json.load(f)["dataset"] == "image_folder"


def test_semisupervised_num_classes_checked_and_pool_only_additional(semi_run, tmp_path, capsys):
  import dataclasses

  from hpjax.commands import train_semisupervised
  from hpjax.image_score import semisupervised as semi

  root, work, _, _, _, argv = semi_run
  wrong = [a.replace("num_classes=3", "num_classes=4") for a in argv]
  wrong[wrong.index("--workdir") + 1] = str(tmp_path / "w")
  capsys.readouterr()
  assert train_semisupervised.main(wrong) == 2
  err = capsys.readouterr().err
  assert err == ("error: config field num_classes is 4, but data set 'image_folder' has 3 classes "
                 "(circle, square, triangle)\n"), err
  config = dataclasses.replace(semi.read_run_config(work), labelled_fraction=1.0)
  data = semi.load_data(config)
  assert data.labelled.size == 30
  np.testing.assert_array_equal(data.additional, np.arange(30, 39))
  analysis = {"test_pred": data.test_labels, "add_pred": np.zeros(9, np.int64)}
  rec = semi.epoch_record(1, analysis, data, {"index": np.arange(3), "pseudo": np.zeros(3, np.int32)}, {})
  assert rec["precision"] is None and rec["additional_accuracy"] is None
  assert rec["num_selected"] == 3 and rec["num_selected_unlabelled"] == 3
  # The prepared cache of the folder gives the loop the same arrays, its pool included.
  cache = str(tmp_path / "cache")
  prepare.prepare_image_folder(root, cache, image_size=16, workers=0, log=lambda *a: None)
  cached = semi.load_data(dataclasses.replace(config, dataset="prepared", data_path=cache))
  for field in ("train_images", "train_labels", "labelled", "additional", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(cached, field), getattr(data, field))
  assert cached.label_names == data.label_names and cached.num_unlabelled == 9
  from hpjax.image_score.config import SemiConfig
  for field, value, piece in [("test_fraction", 1.0, "test_fraction must be in (0, 1)"),
                              ("num_classes", 1, "num_classes must be >= 2"),
                              ("image_size", 0, "image_size must be > 0"),
                              ("labelled_fraction", 1.5, "labelled_fraction must be in (0, 1]")]:
    with pytest.raises(ConfigError, match=re.escape(piece)):
      SemiConfig(**{field: value})
  no_pool = str(tmp_path / "nopool")
  shutil.copytree(root, no_pool)
  shutil.rmtree(os.path.join(no_pool, "unlabelled"))
  with pytest.raises(ConfigError, match="leaves no additional images"):
    semi.load_data(dataclasses.replace(config, data_path=no_pool))
