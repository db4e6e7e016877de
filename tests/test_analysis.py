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

from hpjax import analysis, attributes, configs
from hpjax.data.synthetic import SyntheticFaces
from hpjax.mask_transformation import mask_transform

SMOKE = configs.ATTRIBUTE_PRESETS["smoke"]
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
  model = attributes.build_model(SMOKE, K, kind)
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
  want = attributes.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40)
  np.testing.assert_array_equal(grid["accuracy"][0, 0, 0], want)
  # Other cells are separately computed transforms, checked against model.apply.
  want_t = attributes.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40, n=2.0,
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
