"""Tests for the generated attribute faces (hpjax/data/synthetic.py)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hpjax.data import synthetic
from hpjax.core.errors import DataError
from hpjax.data.synthetic import (ATTRIBUTES, NUM_NUISANCE_FIELDS, SPLIT_SIZES,
                                  SyntheticFaces)

A = {name: k for k, name in enumerate(ATTRIBUTES)}
HAIR_COLOURS = [A["Black_Hair"], A["Blond_Hair"], A["Brown_Hair"]]


@pytest.fixture(scope="module")
def train_labels() -> np.ndarray:
  """Labels of the 20k default train images (labels are cheap: no rendering)."""
  src = SyntheticFaces("train")
  return src.latents(np.arange(len(src)))["label"]


def test_api_metadata():
  src = SyntheticFaces()
  assert len(ATTRIBUTES) == 14 and len(set(ATTRIBUTES)) == 14
  assert {"Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Wearing_Hat", "Black_Hair",
          "Blond_Hair", "Brown_Hair", "Bald", "Bangs", "Mustache", "Wearing_Lipstick",
          "Heavy_Makeup", "Rosy_Cheeks", "Pale_Skin"} == set(ATTRIBUTES)
  # CelebA's column order (alphabetical) is kept.
  assert list(ATTRIBUTES) == sorted(ATTRIBUTES)
  assert src.label_names == ATTRIBUTES
  assert src.image_shape == (64, 64, 3)
  assert len(src) == SPLIT_SIZES["train"] == 20000
  assert len(SyntheticFaces("val")) == SPLIT_SIZES["val"]
  assert len(SyntheticFaces("test", num_examples=7, image_size=20)) == 7


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_dtypes_and_label_values(size):
  src = SyntheticFaces("val", image_size=size, num_examples=50)
  batch = src.get_batch(np.arange(50))
  assert batch["image"].shape == (50, size, size, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (50, 14) and batch["label"].dtype == np.int32
  assert batch["regions"].shape == (50, 14, size, size) and batch["regions"].dtype == bool
  assert set(np.unique(batch["label"])) == {0, 1}
  example = src[3]
  assert example["image"].shape == (size, size, 3) and example["label"].shape == (14,)
  assert example["regions"].shape == (14, size, size)
  # Images use the range, not a constant.
  assert batch["image"].min() < 40 and batch["image"].max() > 215


def test_get_batch_equals_stacked_getitem_in_any_composition():
  # 64 px renders in chunks of 64 images: a batch of 150 crosses chunk borders.
  src = SyntheticFaces("train", image_size=64, num_examples=1000)
  big = src.get_batch(np.arange(150))
  other = SyntheticFaces("train", image_size=64, num_examples=1000)
  for i in (0, 63, 64, 149):
    single = other[i]
    for key in ("image", "label", "regions"):
      np.testing.assert_array_equal(big[key][i], single[key])
  indices = [149, 5, 64, 5, 0, 999]
  mixed = other.get_batch(indices)
  for j, i in enumerate(indices[:-1]):
    for key in ("image", "label", "regions"):
      np.testing.assert_array_equal(mixed[key][j], big[key][i])
  np.testing.assert_array_equal(mixed["image"][1], mixed["image"][3])
  # num_examples only bounds the indices; it does not change the images.
  small = SyntheticFaces("train", image_size=64, num_examples=10)
  np.testing.assert_array_equal(small[9]["image"], big["image"][9])
  assert np.array_equal(src[-1]["image"], src[999]["image"])


def test_seeds_and_splits_give_different_images():
  idx = np.arange(40)
  base = SyntheticFaces("train", image_size=32, seed=0).get_batch(idx)
  for other in (SyntheticFaces("train", image_size=32, seed=1),
                SyntheticFaces("val", image_size=32, seed=0),
                SyntheticFaces("test", image_size=32, seed=0)):
    batch = other.get_batch(idx)
    differs = (batch["image"] != base["image"]).any(axis=(1, 2, 3))
    assert differs.all()
    assert (batch["label"] != base["label"]).any()


def test_splits_share_no_images():
  digests = {}
  for split in ("train", "val", "test"):
    images = SyntheticFaces(split, image_size=16).get_batch(np.arange(2000))["image"]
    digests[split] = {hashlib.sha1(im.tobytes()).digest() for im in images}
    assert len(digests[split]) == 2000  # no repeats inside a split either
  assert not digests["train"] & digests["val"]
  assert not digests["train"] & digests["test"]
  assert not digests["val"] & digests["test"]


@pytest.mark.parametrize("size", [16, 32, 64])
def test_regions_non_empty_and_inside_the_image(size):
  regions = SyntheticFaces("train", image_size=size).get_batch(np.arange(300))["regions"]
  assert regions.any(axis=(2, 3)).all(), "every attribute has a region in every image"
  # Inside the image: no region is cut off by the frame (the border is never touched).
  border = np.zeros((size, size), bool)
  border[[0, -1], :] = True
  border[:, [0, -1]] = True
  assert not (regions & border).any()
  # Regions are local: none covers more than half of the image.
  assert regions.mean(axis=(2, 3)).max() < 0.5


@pytest.mark.parametrize("size", [16, 64])
def test_row_bands_hold_every_shape(size, monkeypatch):
  # Small features are drawn on bands of rows only; drawing them on whole images
  # must give the same result, also with every attribute switched on.
  src = SyntheticFaces("train", image_size=size)
  latents = src.latents(np.arange(300))
  latents["label"][:150] = 1
  banded = src.render(latents)
  monkeypatch.setattr(synthetic, "_row_slice", lambda *args: slice(None))
  whole = src.render(latents)
  np.testing.assert_array_equal(banded["image"], whole["image"])
  np.testing.assert_array_equal(banded["regions"], whole["regions"])


def _render_without(src, latents, k):
  """The same faces with attribute ``k`` removed; a hat gives way to a bald head."""
  edited = {key: value.copy() for key, value in latents.items()}
  edited["label"][:, k] = 0
  if ATTRIBUTES[k] == "Wearing_Hat":
    # Without the hat, hidden hair would appear outside the hat's region; a bald
    # head under the hat keeps the comparison local to the hat.
    edited["label"][:, A["Bald"]] = 1
  return src.render(edited)


@pytest.mark.parametrize("size", [32, 64])
def test_attribute_evidence_lies_inside_its_region(size):
  src = SyntheticFaces("test", image_size=size)
  latents = src.latents(np.arange(400))
  full = src.render(latents)
  for k, name in enumerate(ATTRIBUTES):
    present = latents["label"][:, k] == 1
    assert present.sum() >= 20, name
    sub = {key: value[present] for key, value in latents.items()}
    without = _render_without(src, sub, k)
    changed = (full["image"][present] != without["image"]).any(axis=-1)
    region = full["regions"][present, k]
    assert not (changed & ~region).any(), f"{name} changes pixels outside its region"
    changed_px = changed.sum(axis=(1, 2))
    assert (changed_px > 0).all(), f"{name} is invisible in some images"
    # The evidence is a substantial part of the region, so the region is tight.
    assert (changed_px / region.sum(axis=(1, 2))).mean() > 0.3, name


def test_adding_an_attribute_draws_it_inside_its_region():
  src = SyntheticFaces("val", image_size=48)
  latents = src.latents(np.arange(200))
  full = src.render(latents)
  for name in ("Eyeglasses", "Heavy_Makeup", "Mouth_Slightly_Open", "Mustache",
               "Pale_Skin", "Rosy_Cheeks", "Smiling", "Wearing_Lipstick"):
    k = A[name]
    absent = latents["label"][:, k] == 0
    edited = {key: value[absent].copy() for key, value in latents.items()}
    edited["label"][:, k] = 1
    added = src.render(edited)
    changed = (full["image"][absent] != added["image"]).any(axis=-1)
    assert changed.any(axis=(1, 2)).all(), name
    # Regions are where the evidence would be: the same whether present or not.
    np.testing.assert_array_equal(added["regions"][:, k], full["regions"][absent, k])
    assert not (changed & ~added["regions"][:, k]).any(), name


def test_pixel_statistics_in_regions_follow_labels():
  batch = SyntheticFaces("train", image_size=32).get_batch(np.arange(1500))
  image = batch["image"].astype(np.float32)
  label = batch["label"].astype(bool)

  def region_mean(k, channel_fn):
    m = batch["regions"][:, k]
    values = channel_fn(image)  # [B, H, W]
    return (values * m).sum(axis=(1, 2)) / m.sum(axis=(1, 2))

  redness = lambda im: im[..., 0] - im[..., 1]
  brightness = lambda im: im.mean(axis=-1)
  lip = region_mean(A["Wearing_Lipstick"], redness)
  k = A["Wearing_Lipstick"]
  assert lip[label[:, k]].mean() > lip[~label[:, k]].mean() + 40
  skin = region_mean(A["Pale_Skin"], brightness)
  k = A["Pale_Skin"]
  assert skin[label[:, k]].mean() > skin[~label[:, k]].mean() + 30
  hair = region_mean(A["Blond_Hair"], brightness)
  assert (hair[label[:, A["Blond_Hair"]]].mean()
          > hair[label[:, A["Black_Hair"]]].mean() + 100)


def test_dependency_rules_hold_exactly(train_labels):
  y = train_labels.astype(bool)
  hair = y[:, HAIR_COLOURS]
  assert not (y[:, A["Bald"]] & (hair.any(axis=1) | y[:, A["Bangs"]])).any()
  assert not (y[:, A["Wearing_Hat"]] & (hair.any(axis=1) | y[:, A["Bangs"]]
                                        | y[:, A["Bald"]])).any()
  assert hair.sum(axis=1).max() == 1


def test_conditional_rates(train_labels):
  y = train_labels.astype(bool)

  def p(target, given, value=True):
    rows = y[:, A[given]] == value
    return y[rows, A[target]].mean()

  assert p("Mouth_Slightly_Open", "Smiling") > p("Mouth_Slightly_Open", "Smiling", False) + 0.4
  assert p("Wearing_Lipstick", "Heavy_Makeup") > p("Wearing_Lipstick", "Heavy_Makeup", False) + 0.4
  assert p("Rosy_Cheeks", "Heavy_Makeup") > p("Rosy_Cheeks", "Heavy_Makeup", False) + 0.15
  assert p("Mustache", "Wearing_Lipstick") < p("Mustache", "Wearing_Lipstick", False) - 0.15
  # Attributes without a rule between them are independent.
  assert abs(p("Eyeglasses", "Smiling") - p("Eyeglasses", "Smiling", False)) < 0.02


def test_base_rates_in_range(train_labels):
  rates = train_labels.mean(axis=0)
  assert rates.min() > 0.10 and rates.max() < 0.55, dict(zip(ATTRIBUTES, rates.round(3)))


def test_labels_from_latents_match_batches():
  src = SyntheticFaces("val", image_size=16)
  idx = np.array([3, 1, 4, 1, 5, 9, 2, 6])
  latents = src.latents(idx)
  assert latents["nuisance"].shape == (8, NUM_NUISANCE_FIELDS)
  assert ((latents["nuisance"] >= 0) & (latents["nuisance"] < 1)).all()
  np.testing.assert_array_equal(latents["label"], src.get_batch(idx)["label"])


def test_nuisance_varies_between_images_with_the_same_labels(train_labels):
  same = np.flatnonzero((train_labels == train_labels[0]).all(axis=1))[:6]
  assert len(same) >= 2
  src = SyntheticFaces("train", image_size=32)
  batch = src.get_batch(same)
  corner_colour = batch["image"][:, :4, :4].reshape(len(same), -1, 3).mean(axis=1)
  assert np.ptp(corner_colour, axis=0).max() > 20  # background colours differ
  face_area = batch["regions"][:, A["Pale_Skin"]].sum(axis=(1, 2))
  assert face_area.max() > face_area.min()  # position/scale differ


def test_empty_batch():
  batch = SyntheticFaces("val", image_size=16).get_batch([])
  assert batch["image"].shape == (0, 16, 16, 3)
  assert batch["regions"].shape == (0, 14, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="training"), "split"),
    (dict(image_size=15), "image_size"),
    (dict(image_size=32.0), "image_size"),
    (dict(image_size=True), "image_size"),
    (dict(num_examples=-1), "num_examples"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**63), "seed"),
    (dict(seed="0"), "seed"),
])
def test_bad_constructor_arguments(kwargs, match):
  with pytest.raises(DataError, match=match):
    SyntheticFaces(**kwargs)


def test_bad_indices():
  src = SyntheticFaces("val", image_size=16, num_examples=10)
  for bad in ([0, 10], [-1], [[0, 1]], [0.5], ["a"]):
    with pytest.raises(DataError, match="indices"):
      src.get_batch(bad)
  with pytest.raises(DataError, match="indices"):
    src.latents([11])
  with pytest.raises(IndexError):
    src[10]
  with pytest.raises(IndexError):
    src[-11]
  with pytest.raises(DataError, match="label"):
    src.render({"label": np.zeros((2, 13), np.int32),
                "nuisance": np.zeros((2, NUM_NUISANCE_FIELDS), np.float32)})
  with pytest.raises(DataError, match="nuisance"):
    src.render({"label": np.zeros((2, 14), np.int32),
                "nuisance": np.zeros((3, NUM_NUISANCE_FIELDS), np.float32)})
