"""Attention statistics, correlations, perturbation passes, localisation (hpjax.analysis).

Models use the ``smoke`` preset's shapes (16×16 images, features (4, 8, 8, 8), 14
attributes) and batch size 32, the same as the report test's trained runs, so the
compiled passes are shared across test files.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.hpnet import analysis, experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS
from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet.transform import mask_transform

SMOKE = ATTRIBUTE_PRESETS["smoke"]
K = 14
BS = 32


def random_variables(model, seed: int = 0, image_size: int = 16):
  """Random variables of ``model``'s structure, with non-trivial BatchNorm statistics
  and affine params so that channel bookkeeping errors show.

  Shapes come from ``jax.eval_shape`` and values from NumPy: ``model.init`` spends
  ~20 s compiling its random initialisers on a loaded 2-core CPU.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))

  def fill(path, s):
    names = [getattr(p, "key", "") for p in path]
    if names[-1] == "var":
      return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
    if names[-1] == "scale":
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if names[-1] in ("bias", "mean", "mask_bias"):
      return rng.normal(0, 0.3, s.shape).astype(np.float32)
    fan_in = int(np.prod(s.shape[:-1])) if names[-1] != "mask_kernel" else s.shape[1]
    if names[-1] == "kernel" and names[-2] == "heads":
      fan_in = s.shape[1]
    return (rng.normal(0, 1, s.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def src():
  return SyntheticFaces("test", image_size=16, num_examples=40, seed=0)


def make(kind: str, seed: int):
  """A smoke-shaped model, its (non-trivial) variables and a jitted apply (op-by-op
  dispatch would compile every primitive separately)."""
  model = experiment.build_model(SMOKE, K, kind)
  v = random_variables(model, seed)
  return model, v, jax.jit(model.apply, static_argnames=("train", "return_masks"))


@pytest.fixture(scope="module")
def hp():
  return make("hpnet", 0)


@pytest.fixture(scope="module")
def base():
  return make("baseline", 1)


def _images(src, n=6):
  return jnp.asarray(src.get_batch(np.arange(n))["image"], jnp.float32) / 255.0


def test_heads_equal_model_apply(hp, src):
  model, v, apply = hp
  x = _images(src)
  mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, 8), jnp.float32)
  f = apply(v, x)[1]["features"]
  heads = jax.jit(analysis.logits_from_features)
  for n, beta in ((1.0, 0.0), (2.5, 0.3), (0.5, 0.1)):
    want = apply(v, x, n=n, beta=beta, channel_mask=mask)[0]
    got = heads(v["params"], f * mask, n, beta)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # A vector of β gives one logit set per β (β is linear once h is pooled).
  many = jax.jit(lambda p, f: analysis.logits_from_masks(
      p["heads"], analysis.head_masks(p["heads"], f), f, 3.0, jnp.array([0.0, 0.25])))(
          v["params"], f)
  np.testing.assert_allclose(many[1], apply(v, x, n=3.0, beta=0.25)[0], rtol=1e-4, atol=1e-5)


def test_tone_curve_equals_mask_transform():
  m = jnp.array([0.0, 1e-7, 0.1, 0.25, 0.4999, 0.5, 0.5001, 0.75, 0.9, 1.0 - 1e-7, 1.0])
  for n in (0.5, 1.0, 2.0, 3.7):
    np.testing.assert_allclose(analysis.tone_curve(m, n), mask_transform(m, n=n), atol=2e-6)


def test_streamed_moments_match_numpy_with_offset_and_padding():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(1000, 3))
  # Large common offsets and correlated channels: naive float32 sums of squares fail here.
  x = (1e3 + z @ np.array([[1.0, 0.8, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 2.0]])).astype(np.float32)
  m = analysis.moments_init(3)
  for start in range(0, 1000, 96):  # ragged last chunk, padded with garbage of weight 0
    chunk = np.full((96, 3), 7e3, np.float32)
    part = x[start:start + 96]
    chunk[:len(part)] = part
    w = (np.arange(96) < len(part)).astype(np.float32)
    m = analysis.moments_update(m, jnp.asarray(chunk), jnp.asarray(w))
  assert float(m.count) == 1000
  np.testing.assert_allclose(m.mean, x.astype(np.float64).mean(0), rtol=1e-6)
  want = np.corrcoef(x.astype(np.float64), rowvar=False)
  np.testing.assert_allclose(analysis.correlation_from_covariance(m.m2), want, atol=1e-4)
  np.testing.assert_allclose(want[0, 1], 0.8, atol=0.05)  # the data really are correlated


def test_correlation_of_dead_channel_is_zero():
  cov = np.array([[4.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 1.0]])
  corr = analysis.correlation_from_covariance(cov)
  np.testing.assert_allclose(corr, [[1, 0, 1], [0, 1, 0], [1, 0, 1]], atol=1e-12)


def test_statistics_match_direct_computation(hp, src):
  model, v, apply = hp
  n = 40  # two batches of 32, the second padded
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=n)
  x = _images(src, n)
  _, aux = apply(v, x, return_masks=True)
  f = np.asarray(aux["features"], np.float64)
  masks = np.asarray(aux["masks"], np.float64)
  assert int(stats["num_images"]) == n
  np.testing.assert_allclose(analysis.channel_correlation(stats, "position"),
                             np.corrcoef(f.reshape(-1, 8), rowvar=False), atol=2e-4)
  np.testing.assert_allclose(analysis.channel_correlation(stats, "gap"),
                             np.corrcoef(f.mean((1, 2)), rowvar=False), atol=2e-4)
  np.testing.assert_allclose(stats["mask_mean"], masks.mean((0, 1, 2)), atol=1e-5)
  contrib = (masks * f[:, :, :, None, :]).mean((1, 2))  # [n, K, C]
  np.testing.assert_allclose(stats["contribution"], contrib.mean(0), atol=1e-5)
  # Summed over bins, the binned attention forgets the mask: E[GAP f_c] for every k.
  np.testing.assert_allclose(stats["binned"].sum(-1), np.broadcast_to(f.mean((0, 1, 2)), (K, 8)),
                             atol=1e-5)
  np.testing.assert_allclose(analysis.channel_correlation(stats, "attention"),
                             np.corrcoef(masks.mean((0, 1, 2)), rowvar=False), atol=1e-6)


def test_baseline_has_no_attention_reading(base, src):
  model, v, _ = base
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=8)
  assert "mask_mean" not in stats
  with pytest.raises(ValueError, match="attention"):
    analysis.channel_correlation(stats, "attention")


def test_robustness_identity_cell_equals_evaluate_accuracy(hp, src):
  model, v, _ = hp
  # The default Fig. 8 grid (shared compilation with the report test).
  grid = analysis.robustness_grid(model.apply, v, src, batch_size=BS, limit=40)
  want = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40)
  np.testing.assert_array_equal(grid["accuracy"][0, 0, 0], want)
  # Other cells are separately computed transforms, checked against model.apply.
  want_t = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40, n=2.0,
                                        beta=0.5)
  np.testing.assert_allclose(grid["accuracy"][0, 1, 3], want_t, atol=1 / 40 + 1e-9)
  assert grid["accuracy"].shape == (11, 4, 4, K)
  assert not np.allclose(grid["mean_logit"][0], grid["mean_logit"][-1])  # the noise does something
  assert len(grid["best"]) == 11 and grid["best"][0]["sigma"] == 0.0


def test_noise_is_keyed_by_image_not_batch():
  fields = jax.jit(analysis.noise_fields, static_argnums=2)
  a = fields(3, jnp.arange(8), (4, 4, 3))
  b = fields(3, jnp.array([5, 2]), (4, 4, 3))
  np.testing.assert_array_equal(b, a[jnp.array([5, 2])])
  assert abs(float(a.std()) - 1.0) < 0.2 and not np.allclose(a[0], a[1])


def test_localisation_golden():
  regions = np.zeros((1, 4, 4, 4), bool)
  regions[0, :, :2, :2] = True  # top-left quadrant: area share 1/4
  regions[0, 3] = False  # attribute 3: empty region, never counted
  maps = np.zeros((1, 4, 4, 4), np.float32)
  maps[0, 0, :2, :2] = 1.0  # all mass inside
  maps[0, 1] = 1.0  # uniform
  maps[0, 1, 3, 3] = 1.5  # ... with its peak outside
  # attribute 2: all-zero map: no location
  s = analysis.localisation_sums(jnp.asarray(maps), jnp.asarray(regions), jnp.ones((1, 4)))
  out = analysis.localisation_summary(jax.tree.map(np.asarray, s))
  np.testing.assert_allclose(out["count"], [1, 1, 1, 0])
  np.testing.assert_allclose(out["share"][:3], [1.0, 4 / 16.5, 0.25], rtol=1e-6)
  np.testing.assert_allclose(out["ratio"][:3], [4.0, 16 / 16.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(out["pointing"][:3], [1.0, 0.0, 0.0])
  np.testing.assert_allclose(out["area"][:3], 0.25)


def test_grad_cam_of_baseline_is_cam(base, src):
  model, v, apply = base
  f = apply(v, _images(src, 3))[1]["features"]
  p = v["params"]
  cam = jax.jit(lambda p, f: analysis.grad_cam(
      lambda ff: analysis.logits_from_features(p, ff), f))(p, f)
  want = np.maximum(np.einsum("bhwc,ck->bkhw", f, p["classifier"]["kernel"]), 0) / (16 * 16)
  np.testing.assert_allclose(cam, want, rtol=1e-4, atol=1e-7)


def test_attention_map_is_importance_weighted_mean():
  masks = jnp.stack([jnp.full((1, 2, 2, 1), 0.2), jnp.full((1, 2, 2, 1), 0.8)], axis=-1)
  a = analysis.attention_map(masks, jnp.array([[1.0, 3.0]]))
  np.testing.assert_allclose(a, np.full((1, 1, 2, 2), 0.25 * 0.2 + 0.75 * 0.8), rtol=1e-6)


def test_top_correlated_ties_keep_attribute_order():
  corr = np.array([[1.0, 0.5, 0.5, 0.9], [0.5, 1, 0.1, 0.2], [0.5, 0.1, 1, 0.3],
                   [0.9, 0.2, 0.3, 1]])
  top = analysis.top_correlated(corr, ["a", "b", "c", "d"], top=3)
  assert [n for n, _ in top["a"]] == ["d", "b", "c"]
  assert [n for n, _ in top["b"]] == ["a", "d", "c"]
  rows = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.1], [3.0, 1.0, 0.0]])
  ac = analysis.attribute_correlation(rows)
  assert ac.shape == (3, 3) and ac[0, 1] > 0.99 and ac[0, 2] < -0.9


def test_logit_terms_sum_to_the_logits(hp, base, src):
  for model, v, apply in (hp, base):
    f = apply(v, _images(src, 3))[1]["features"]
    terms, bias = jax.jit(analysis.logit_terms)(v["params"], f)
    assert terms.shape == (3, K, 8)
    np.testing.assert_allclose(terms.sum(-1) + bias, analysis.logits_from_features(v["params"], f),
                               rtol=1e-5, atol=1e-5)


def _grid(mean):
  """A robustness_grid-shaped result: ns (1, 2), betas (0, 0.5), sigmas (0, 0.1, 0.2)."""
  return {"ns": [1.0, 2.0], "betas": [0.0, 0.5], "sigmas": [0.0, 0.1, 0.2],
          "mean_accuracy": np.asarray(mean)}


def test_validation_selection_golden():
  val = _grid([[[0.90, 0.80], [0.85, 0.70]],   # σ 0: identity best
               [[0.70, 0.75], [0.60, 0.65]],   # σ .1: (1, .5) best on val
               [[0.50, 0.52], [0.58, 0.40]]])  # σ .2: (2, 0) best on val
  test = _grid([[[0.91, 0.80], [0.90, 0.70]],
                [[0.72, 0.71], [0.80, 0.60]],  # test oracle (2, 0): +.08; val pick (1, .5): -.01
                [[0.50, 0.55], [0.53, 0.40]]])  # oracle (1, .5): +.05; val pick (2, 0): +.03
  r = analysis.validation_selection(val, test)
  rows = r["best_val_selected"]
  assert [(b["n"], b["beta"]) for b in rows] == [(1.0, 0.0), (1.0, 0.5), (2.0, 0.0)]
  for s, b in enumerate(rows):
    i, j = np.unravel_index(np.argmax(val["mean_accuracy"][s]), (2, 2))
    assert (b["n"], b["beta"]) == (test["ns"][i], test["betas"][j])  # the val argmax
    assert b["val_accuracy"] == val["mean_accuracy"][s, i, j]
    assert b["test_accuracy"] == test["mean_accuracy"][s, i, j]  # the test grid's cell
    assert b["test_identity_accuracy"] == test["mean_accuracy"][s, 0, 0]
  np.testing.assert_allclose([b["test_gain_over_identity"] for b in rows], [0, -0.01, 0.03],
                             atol=1e-12)
  np.testing.assert_allclose([b["oracle_test_gain"] for b in rows], [0, 0.08, 0.05], atol=1e-12)
  assert [b["is_oracle"] for b in rows] == [True, False, False]
  sm = r["val_selection_summary"]
  assert sm["sigmas"] == [0.1, 0.2] and sm["num_levels"] == 2
  np.testing.assert_allclose(sm["oracle_gain_mean"], 0.065, atol=1e-12)
  np.testing.assert_allclose(sm["selected_gain_mean"], 0.01, atol=1e-12)
  np.testing.assert_allclose(sm["retained_fraction"], 0.01 / 0.065, rtol=1e-9)
  assert (sm["levels_oracle_beats_identity"], sm["levels_selected_beats_identity"],
          sm["levels_selected_is_oracle"], sm["identity_beaten"]) == (2, 1, 0, True)
  with pytest.raises(ValueError, match="sigmas"):
    analysis.validation_selection({**val, "sigmas": [0.0, 0.1, 0.3]}, test)


def test_validation_selection_on_real_grids(hp, src):
  model, v, _ = hp
  val_src = SyntheticFaces("val", image_size=16, num_examples=40, seed=0)
  kw = dict(ns=(1.0, 3.0), betas=(0.0, 0.5), sigmas=(0.0, 0.3), batch_size=BS, limit=40)
  val = analysis.robustness_grid(model.apply, v, val_src, **kw)
  test = analysis.robustness_grid(model.apply, v, src, **kw)
  assert not np.array_equal(val["mean_accuracy"], test["mean_accuracy"])  # other images
  r = analysis.validation_selection(val, test)
  for s, b in enumerate(r["best_val_selected"]):
    i, j = np.unravel_index(np.argmax(val["mean_accuracy"][s]), (2, 2))
    assert (b["n"], b["beta"]) == (kw["ns"][i], kw["betas"][j])
    assert b["test_accuracy"] == pytest.approx(test["mean_accuracy"][s, i, j])
    assert b["oracle_test_gain"] == pytest.approx(test["best"][s]["gain_over_identity"])


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
  s = analysis.localisation_subsets({"m": jnp.asarray(maps)}, jnp.array([[1], [0], [1]]),
                                    jnp.asarray(regions), jnp.array([1, 1, 0]))
  out = jax.tree.map(analysis.localisation_summary, jax.tree.map(np.asarray, s),
                     is_leaf=lambda d: isinstance(d, dict) and "hit" in d)["m"]
  np.testing.assert_allclose(out["present"]["count"], [1])
  np.testing.assert_allclose(out["present"]["share"], [1.0])
  np.testing.assert_allclose(out["present"]["ratio"], [4.0])
  np.testing.assert_allclose(out["present"]["pointing"], [1.0])
  np.testing.assert_allclose(out["all"]["count"], [2])
  np.testing.assert_allclose(out["all"]["share"], [0.5])
  np.testing.assert_allclose(out["all"]["pointing"], [0.5])


def test_centre_prior_golden():
  p = analysis.centre_prior(4, 4)
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
  out = analysis.prior_localisation({"centre_prior": prior}, src, batch_size=4)["centre_prior"]
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
  s = analysis.localisation(model.apply, v, src, importance=imp, batch_size=8, limit=12,
                            controls=True)
  assert set(s) == {"attention", "grad_cam", "attention_mean_map", "grad_cam_mean_map",
                    "centre_prior"}
  images = src.get_batch(np.arange(12))["image"]
  mean_map = analysis.saliency_maps(model.apply, v, images, imp)["attention"].mean(0)
  want = analysis.prior_localisation({"m": mean_map}, src, batch_size=8, limit=12)["m"]
  for sub in ("all", "present"):
    for key in ("share", "ratio", "pointing", "count"):
      np.testing.assert_allclose(s["attention_mean_map"][sub][key], want[sub][key], rtol=1e-4,
                                 atol=1e-6)
  # The image's own map differs from the data set's mean map.
  assert not np.allclose(s["attention"]["all"]["share"], want["all"]["share"])
  means = analysis.localisation_means({"hpnet_attention": s["attention"],
                                       "mean_map_prior": s["attention_mean_map"],
                                       "centre_prior": s["centre_prior"]})
  diff = analysis.attention_minus_prior(means)
  for sub in ("all", "present"):
    best = max(means["mean_map_prior"][sub]["ratio"], means["centre_prior"][sub]["ratio"])
    assert diff[sub]["ratio"] == pytest.approx(means["hpnet_attention"][sub]["ratio"] - best)


def test_localisation_means_skip_attributes_without_pairs():
  loc = {"a": {"present": {"count": np.array([2, 0]), "share": np.array([0.5, 0.0]),
                           "area": np.array([0.25, 0.0]), "ratio": np.array([2.0, 0.0]),
                           "pointing": np.array([1.0, 0.0])}}}
  m = analysis.localisation_means(loc)["a"]["present"]
  assert m == {"ratio": 2.0, "pointing": 1.0, "share": 0.5, "area": 0.25}
