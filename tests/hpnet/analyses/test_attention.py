"""Saliency, localisation against true regions and image-independent priors (analyses.attention)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hpnet_fixtures import K, float_images

from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import model as model_lib
from hpjax.hpnet.analyses import attention


def test_localisation_golden():
  regions = np.zeros((1, 4, 4, 4), bool)
  regions[0, :, :2, :2] = True  # top-left quadrant: area share 1/4
  regions[0, 3] = False  # attribute 3: empty region, never counted
  maps = np.zeros((1, 4, 4, 4), np.float32)
  maps[0, 0, :2, :2] = 1.0  # all mass inside
  maps[0, 1] = 1.0  # uniform
  maps[0, 1, 3, 3] = 1.5  # ... with its peak outside
  # attribute 2: all-zero map: no location
  s = attention.localisation_sums(jnp.asarray(maps), jnp.asarray(regions), jnp.ones((1, 4)))
  out = attention.localisation_summary(jax.tree.map(np.asarray, s))
  np.testing.assert_allclose(out["count"], [1, 1, 1, 0])
  np.testing.assert_allclose(out["share"][:3], [1.0, 4 / 16.5, 0.25], rtol=1e-6)
  np.testing.assert_allclose(out["ratio"][:3], [4.0, 16 / 16.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(out["pointing"][:3], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(out["area"][:3], 0.25)


def test_grad_cam_of_baseline_is_cam(base, src):
  model, v, apply = base
  f = apply(v, float_images(src, 3))[1]["features"]
  p = v["params"]
  cam = jax.jit(lambda p, f: attention.grad_cam(
      lambda ff: model_lib.logits_from_features(p, ff), f))(p, f)
  want = np.maximum(np.einsum("bhwc,ck->bkhw", f, p["classifier"]["kernel"]), 0) / (16 * 16)
  np.testing.assert_allclose(cam, want, rtol=1e-4, atol=1e-7)


def test_attention_map_is_importance_weighted_mean():
  masks = jnp.stack([jnp.full((1, 2, 2, 1), 0.2), jnp.full((1, 2, 2, 1), 0.8)], axis=-1)
  a = attention.attention_map(masks, jnp.array([[1.0, 3.0]]))
  np.testing.assert_allclose(a, np.full((1, 1, 2, 2), 0.25 * 0.2 + 0.75 * 0.8), rtol=1e-6)


class _RegionSource:
  """A source of blank images with given labels ``[N, K]`` and regions ``[N, K, H, W]``."""

  def __init__(self, label, regions):
    self.label, self.regions = np.asarray(label, np.int32), np.asarray(regions, bool)

  def __len__(self):
    return len(self.label)

  def get_batch(self, idx):
    h, w = self.regions.shape[2:]
    return {"image": np.zeros((len(idx), h, w, 3), np.uint8), "label": self.label[idx],
            "regions": self.regions[idx]}


def test_localisation_present_uses_only_label_one_images():
  regions = np.zeros((3, 1, 4, 4), bool)
  regions[:, 0, :2, :2] = True  # top-left quadrant, area 1/4
  maps = np.zeros((3, 1, 4, 4), np.float32)
  maps[0, 0, 0, 0] = 1.0  # image 0 (attribute present): all inside
  maps[1, 0, 3, 3] = 1.0  # image 1 (absent): all outside
  maps[2, 0, 0, 0] = 1.0  # image 2 (present, but padding): never counted
  s = attention.localisation_subsets({"m": jnp.asarray(maps)}, jnp.array([[1], [0], [1]]),
                                     jnp.asarray(regions), jnp.array([1, 1, 0]))
  out = jax.tree.map(attention.localisation_summary, jax.tree.map(np.asarray, s),
                     is_leaf=lambda d: isinstance(d, dict) and "hit" in d)["m"]
  np.testing.assert_allclose(out["present"]["count"], [1])
  np.testing.assert_allclose(out["present"]["share"], [1.0])
  np.testing.assert_allclose(out["present"]["ratio"], [4.0])
  np.testing.assert_allclose(out["present"]["pointing"], [1.0])
  np.testing.assert_allclose(out["all"]["count"], [2])
  np.testing.assert_allclose(out["all"]["share"], [0.5])
  np.testing.assert_allclose(out["all"]["pointing"], [0.5])


def test_centre_prior_golden():
  p = attention.centre_prior(4, 4)
  g = np.exp(-0.5 * (np.array([-0.375, -0.125, 0.125, 0.375]) / 0.25) ** 2)
  np.testing.assert_allclose(p, np.outer(g, g), rtol=1e-12)
  # Attribute 0: the central 2x2 (image 0, present) or the top-left pixel (image 1, absent);
  # attribute 1: pixel (1, 1), the first of the four tied central maxima, in both images.
  regions = np.zeros((2, 2, 4, 4), bool)
  regions[0, 0, 1:3, 1:3] = True
  regions[1, 0, 0, 0] = True
  regions[:, 1, 1, 1] = True
  src = _RegionSource([[1, 0], [0, 1]], regions)
  prior = np.broadcast_to(p, (2, 4, 4))
  out = attention.prior_localisation({"centre_prior": prior}, src, batch_size=4)["centre_prior"]
  e = np.exp(-1.0)  # g(.375) / g(.125)
  centre = 1 / (1 + e) ** 2  # share of the central 2x2
  corner = e ** 2 / (4 * (1 + e) ** 2)  # share of pixel (0, 0)
  pixel = 1 / (4 * (1 + e) ** 2)  # share of pixel (1, 1)
  np.testing.assert_allclose(out["present"]["share"], [centre, pixel], rtol=1e-5)
  np.testing.assert_allclose(out["present"]["ratio"], [4 * centre, 16 * pixel], rtol=1e-5)
  np.testing.assert_allclose(out["present"]["pointing"], [1.0, 1.0])
  np.testing.assert_allclose(out["present"]["count"], [1, 1])
  np.testing.assert_allclose(out["all"]["share"], [(centre + corner) / 2, pixel], rtol=1e-5)
  np.testing.assert_allclose(out["all"]["ratio"], [(4 * centre + 16 * corner) / 2, 16 * pixel],
                             rtol=1e-5)
  np.testing.assert_allclose(out["all"]["pointing"], [0.5, 1.0])


def test_localisation_controls_score_the_mean_map(hp):
  model, v, _ = hp
  src = SyntheticFaces("test", image_size=16, num_examples=12, seed=0)
  imp = np.random.default_rng(0).uniform(0, 1, (K, 8))
  s = attention.localisation(model.apply, v, src, importance=imp, batch_size=8, limit=12,
                             controls=True)
  assert set(s) == {"attention", "grad_cam", "attention_mean_map", "grad_cam_mean_map",
                    "centre_prior"}
  images = src.get_batch(np.arange(12))["image"]
  mean_map = attention.saliency_maps(model.apply, v, images, imp)["attention"].mean(0)
  want = attention.prior_localisation({"m": mean_map}, src, batch_size=8, limit=12)["m"]
  for sub in ("all", "present"):
    for key in ("share", "ratio", "pointing", "count"):
      np.testing.assert_allclose(s["attention_mean_map"][sub][key], want[sub][key], rtol=1e-4,
                                 atol=1e-6)
  # The image's own map differs from the data set's mean map.
  assert not np.allclose(s["attention"]["all"]["share"], want["all"]["share"])
  means = attention.localisation_means({"hpnet_attention": s["attention"],
                                        "mean_map_prior": s["attention_mean_map"],
                                        "centre_prior": s["centre_prior"]})
  diff = attention.attention_minus_prior(means)
  for sub in ("all", "present"):
    best = max(means["mean_map_prior"][sub]["ratio"], means["centre_prior"][sub]["ratio"])
    assert diff[sub]["ratio"] == pytest.approx(means["hpnet_attention"][sub]["ratio"] - best)


def test_localisation_means_skip_attributes_without_pairs():
  loc = {"a": {"present": {"count": np.array([2, 0]), "share": np.array([0.5, 0.0]),
                           "area": np.array([0.25, 0.0]), "ratio": np.array([2.0, 0.0]),
                           "pointing": np.array([1.0, 0.0])}}}
  m = attention.localisation_means(loc)["a"]["present"]
  assert m == {"ratio": 2.0, "pointing": 1.0, "share": 0.5, "area": 0.25}


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_grad_cam_of_hpnet_equals_one_gradient_per_attribute(hp, src, chunk):
  """jax.vmap over one VJP's cotangents, as grad_cam did, came out wrong for every second
  attribute on XLA:CPU (jaxlib 0.10.2: its YNNPACK reduce fusion), by up to the map's size."""
  model, v, apply = hp
  f = apply(v, float_images(src, 6))[1]["features"]
  p = v["params"]
  cam = jax.jit(lambda p, f: attention.grad_cam(
      lambda ff: model_lib.logits_from_features(p, ff), f, attribute_chunk=chunk))(p, f)
  one = jax.jit(lambda p, f, k: jax.grad(
      lambda ff: model_lib.logits_from_features(p, ff)[:, k].sum())(f))
  want = np.stack([np.maximum(np.einsum("bc,bhwc->bhw", one(p, f, k).mean((1, 2)), f), 0)
                   for k in range(K)], 1)
  np.testing.assert_allclose(cam, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())
