"""The safe directory walk and the seeded split shared by the folder sources (hpjax.data.folders)."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

import data_fixtures as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpjax.core.errors import DataError
from hpjax.data.folders import IMAGE_EXTENSIONS, FolderWalk, path_key, seeded_split

_LONG = int(os.environ.get("HPJAX_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 60, deadline=2000, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def touch(root, rel: str, data: bytes = b"x") -> str:
  path = os.path.join(root, *rel.split("/"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


# --------------------------------------------------------------------------- what a walk returns


def test_sorted_by_components_hidden_skipped_others_listed(tmp_path):
  root = str(tmp_path)
  for rel in ("a/b/2.png", "a/1.jpg", "a/c.JPEG", "a/B.webp", "a/.hidden.jpg", "a/.cache/x.jpg",
              "a/notes.txt", "a/b/scan.gif", "a-b/0.jpg"):
    touch(root, rel)
  walk = FolderWalk(root)
  # Code-point order per component ("B" < "b" < "c"), depth first: a/b/2.png sits between
  # a/B.webp and a/c.JPEG; "a" < "a-b" as a component although "a-" < "a/" as a string.
  assert walk.images(".") == ("a/1.jpg", "a/B.webp", "a/b/2.png", "a/c.JPEG", "a-b/0.jpg")
  assert walk.skipped == ("a/b/scan.gif", "a/notes.txt")  # hidden ones not even listed
  listing = FolderWalk(root).listing("a")
  assert listing.folders == ("b",) and listing.images == ("1.jpg", "B.webp", "c.JPEG")
  assert listing.skipped == ("notes.txt",)
  assert sorted(["a/b", "a-b", "a/B"], key=path_key) == ["a/B", "a/b", "a-b"]


def test_links_inside_the_root_are_followed(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "store/cat1.png")
  os.makedirs(os.path.join(root, "cats"))
  os.symlink(os.path.join(root, "store", "cat1.png"), os.path.join(root, "cats", "c.png"))
  os.symlink(os.path.join("..", "store2"), os.path.join(root, "cats", "more"))  # relative link
  touch(root, "store2/x.jpg")
  walk = FolderWalk(root)
  assert walk.images("cats") == ("cats/c.png", "cats/more/x.jpg")
  # The same file reached twice in one walk (cats/c.png, then store/cat1.png) is a duplicate.
  fx.one_line_error(lambda: walk.images("store"), "store/cat1.png", "cats/c.png", "a duplicate")


# --------------------------------------------------------------------------- hostile trees, one per rule


def test_link_escaping_the_root(tmp_path):
  root = str(tmp_path / "r")
  outside = touch(str(tmp_path), "secret/passwd.jpg")
  touch(root, "cls/a.jpg")
  os.symlink(outside, os.path.join(root, "cls", "b.jpg"))
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), os.path.join(root, "cls", "b.jpg"),
                 "a path escaping the root")
  os.remove(os.path.join(root, "cls", "b.jpg"))
  os.symlink(str(tmp_path / "secret"), os.path.join(root, "cls", "sub"))  # a folder outside
  fx.one_line_error(lambda: FolderWalk(root).images("."), "cls/sub", "escaping the root")


def test_symlink_loops(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "cls/a.jpg")
  os.symlink("..", os.path.join(root, "cls", "up"))
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), "cls/up", "a symlink loop")
  os.remove(os.path.join(root, "cls", "up"))
  os.symlink("self.jpg", os.path.join(root, "cls", "self.jpg"))  # a link to itself
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), "cls/self.jpg", "a symlink loop")


def test_dangling_links(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "cls/a.jpg")
  os.symlink("gone.txt", os.path.join(root, "cls", "readme.txt"))  # not an image: skipped
  walk = FolderWalk(root)
  assert walk.images("cls") == ("cls/a.jpg",) and walk.skipped == ("cls/readme.txt",)
  os.symlink("gone.jpg", os.path.join(root, "cls", "b.jpg"))
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), "cls/b.jpg", "'gone.jpg', which does not exist (missing image)")


@pytest.mark.parametrize("second, how", [
    ("cls/a.PNG", "same name up to extension or case"),
    ("cls/A.jpg", "same name up to extension or case"),
    ("hardlink", "a link or hard link"),
    ("symlink", "a link or hard link"),
])
def test_duplicates(tmp_path, second, how):
  root = str(tmp_path / "r")
  first = touch(root, "cls/a.jpg")
  if second in ("hardlink", "symlink"):
    os.makedirs(os.path.join(root, "other"))
    (os.link if second == "hardlink" else os.symlink)(first, os.path.join(root, "other", "z.jpg"))
    where = ("cls", "other")
  else:
    touch(root, second)
    where = ("cls",)
  walk = FolderWalk(root)

  def run():
    for w in where:
      walk.images(w)
  fx.one_line_error(run, how, "a duplicate")


def test_special_file_with_an_image_name(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "cls/a.jpg")
  os.mkfifo(os.path.join(root, "cls", "b.jpg"))  # reading it would block forever
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), "cls/b.jpg", "a special file")


def test_non_utf8_name(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "cls/a.jpg")
  with open(os.path.join(os.fsencode(root), b"cls", b"caf\xe9.jpg"), "wb") as f:
    f.write(b"x")
  fx.one_line_error(lambda: FolderWalk(root).images("cls"), "expected a file name in UTF-8")


def test_root_missing_or_a_file(tmp_path):
  fx.one_line_error(lambda: FolderWalk(str(tmp_path / "nope")), "nope", "found nothing")
  f = touch(str(tmp_path), "file.jpg")
  fx.one_line_error(lambda: FolderWalk(f), "file.jpg", "found a file")


def test_unreadable_folder(tmp_path):
  if os.geteuid() == 0:
    pytest.skip("root reads every folder")
  root = str(tmp_path / "r")
  touch(root, "cls/a.jpg")
  os.chmod(os.path.join(root, "cls"), 0)
  try:
    fx.one_line_error(lambda: FolderWalk(root).images("cls"), "expected a readable folder")
  finally:
    os.chmod(os.path.join(root, "cls"), 0o755)


def test_resolve_paths_named_by_a_table(tmp_path):
  root = str(tmp_path / "r")
  touch(root, "img/a.jpg")
  touch(str(tmp_path), "outside.jpg")
  os.symlink(str(tmp_path / "outside.jpg"), os.path.join(root, "img", "link.jpg"))
  walk = FolderWalk(root)
  assert walk.resolve("img/a.jpg", "t.csv line 2") == os.path.join(root, "img", "a.jpg")
  for rel, piece in [("../outside.jpg", "a path escaping the root"),
                     ("img/link.jpg", "a path escaping the root"),
                     ("/etc/passwd.jpg", "relative to"), ("img\\a.jpg", "forward slashes"),
                     ("img/.a.jpg", "hidden"), ("img/a.txt", "an image name"),
                     ("img/b.jpg", "missing image"), ("img/a.jpg", "img/a.jpg named twice")]:
    fx.one_line_error(lambda: walk.resolve(rel, "t.csv line 7"), "t.csv line 7", piece)


# --------------------------------------------------------------------------- fuzzing the walk


@st.composite
def trees(draw):
  """A random tree of ops: folders, files (image or not, hidden or not), links anywhere."""
  names = st.sampled_from(["a", "b", "B", ".h", "c d", "é"])
  exts = st.sampled_from([".jpg", ".PNG", ".webp", ".jpeg", ".txt", ""])
  ops = []
  for _ in range(draw(st.integers(1, 14))):
    depth = draw(st.integers(0, 3))
    parent = "/".join(draw(names) for _ in range(depth))
    kind = draw(st.sampled_from(["file", "file", "dir", "link"]))
    name = draw(names) + (draw(exts) if kind != "dir" else "")
    target = draw(st.sampled_from(["..", ".", "/", "../..", "a", "a/b.jpg", "missing.jpg", name,
                                   "../../outside"]))
    ops.append((kind, parent, name, target))
  return ops


@FUZZ
@given(ops=trees())
def test_walk_fuzz_valid_result_or_one_data_error(ops):
  base = tempfile.mkdtemp()
  try:
    root = os.path.join(base, "root")
    os.makedirs(root)
    touch(base, "outside/x.jpg")
    for kind, parent, name, target in ops:
      folder = os.path.join(root, *parent.split("/")) if parent else root
      path = os.path.join(folder, name)
      try:  # an op the tree built so far makes impossible (a file where a folder goes) is dropped
        os.makedirs(folder, exist_ok=True)
        if os.path.lexists(path):
          continue
        if kind == "file":
          with open(path, "wb") as f:
            f.write(b"x")
        elif kind == "dir":
          os.makedirs(path)
        else:
          os.symlink(target, path)
      except OSError:
        continue
    walk = FolderWalk(root)
    try:
      found = walk.images(".")
    except DataError as e:
      assert str(e) and "\n" not in str(e)
      return
    real_root = os.path.realpath(root)
    assert list(found) == sorted(found, key=path_key) and len(set(found)) == len(found)
    inodes = set()
    for rel in found:
      parts = rel.split("/")
      assert not any(p.startswith(".") for p in parts)
      assert os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS
      real = os.path.realpath(os.path.join(root, *parts))
      assert os.path.commonpath([real, real_root]) == real_root and os.path.isfile(real)
      st_ = os.stat(real)
      inodes.add((st_.st_dev, st_.st_ino))
    assert len(inodes) == len(found)
  finally:
    shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- the seeded split


def test_seeded_split_is_stratified_deterministic_and_per_class():
  groups = ["cat"] * 10 + ["dog"] * 7 + ["eel"] * 2
  a = seeded_split(groups, {"test": 0.2}, seed=0)
  assert a == seeded_split(groups, {"test": 0.2}, seed=0)
  per = {g: sum(1 for x, s in zip(groups, a) if x == g and s == "test") for g in ("cat", "dog", "eel")}
  assert per == {"cat": 2, "dog": 1, "eel": 1}  # round(0.2 n), at least one
  assert seeded_split(groups, {"test": 0.2}, seed=1) != a
  # A class's split depends on its name and items only: dropping "dog" leaves "cat" alone.
  b = seeded_split(["cat"] * 10 + ["eel"] * 2, {"test": 0.2}, seed=0)
  assert b[:10] == a[:10]
  c = seeded_split(groups[:17], {"test": 0.2, "validation": 0.1}, seed=0)
  # cat: 2 test, 1 validation, 7 train; dog: round(1.4) = 1 test, round(0.7) = 1 validation, 5 train
  assert (c.count("test"), c.count("validation"), c.count("train")) == (3, 2, 12)


def test_seeded_split_refuses_what_cannot_be_split():
  fx.one_line_error(lambda: seeded_split(["a", "a"], {"test": 0.2, "validation": 0.2}, seed=0,
                                      where={"a": "ROOT/a"}),
                 "ROOT/a: expected at least 3 images to fill test, validation and train", "found 2")
  fx.one_line_error(lambda: seeded_split(["a"] * 5, {"test": 0.6, "validation": 0.5}, seed=0), "summing below 1")
  fx.one_line_error(lambda: seeded_split(["a"] * 5, {"test": 0.2}, seed=-1), "split seed")
  assert np.array_equal(np.asarray(seeded_split(["a"] * 5, {"test": 0.0}, seed=0)), ["train"] * 5)
