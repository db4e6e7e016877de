"""Semantic channel pruning: golden orders with ties, masking = physical removal, Fig. 7 curves."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hpnet_fixtures import BS, K, SMOKE, random_variables

from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import experiment, statistics
from hpjax.hpnet import model as model_lib
from hpjax.hpnet.analyses import pruning

CORR = np.array([[1, .9, .5, .1], [.9, 1, .1, .1], [.5, .1, 1, .9], [.1, .1, .9, 1]])


def test_semantic_order_golden_with_ties():
  # Pairs by descending correlation: (0,1) .9, (2,3) .9 [tie: (0,1) first], (0,2) .5, ...
  # (0,1): prune 0 (L1 1 < 2); (2,3): equal L1 -> prune the lower index 2; (0,2), (0,3),
  # (1,2) have a pruned member; (1,3): prune 1 (2 < 3); 3 survives.
  l1 = np.array([1.0, 2.0, 3.0, 3.0])
  assert pruning.semantic_order(CORR, l1).tolist() == [0, 2, 1, 3]
  # The other reading of the paper: prune the higher-L1 filter of a pair.
  # (0,1): prune 1; (2,3): tie -> 2; (0,3): prune 3 (3 > 1); 0 survives.
  assert pruning.semantic_order(CORR, l1, prune="higher").tolist() == [1, 2, 3, 0]


def test_semantic_order_all_equal_correlations_scan_in_index_order():
  corr = np.full((4, 4), 0.5)
  np.fill_diagonal(corr, 1.0)
  # (0,1): prune 1 (3 < 4); (0,2): prune 2; (0,3): prune 3.
  assert pruning.semantic_order(corr, np.array([4.0, 3.0, 2.0, 1.0])).tolist() == [1, 2, 3, 0]


def test_semantic_order_absolute_and_nan():
  corr = np.array([[1.0, -0.95, 0.2], [-0.95, 1.0, 0.1], [0.2, 0.1, 1.0]])
  l1 = np.array([2.0, 1.0, 3.0])
  assert pruning.semantic_order(corr, l1).tolist() == [0, 1, 2]  # (0,2) .2, then (1,2)
  assert pruning.semantic_order(corr, l1, absolute=True).tolist() == [1, 0, 2]
  corr[0, 2] = corr[2, 0] = np.nan  # scanned last, like the lowest correlation
  assert pruning.semantic_order(corr, l1).tolist() == [1, 0, 2]  # (1,2) .1 then (0,1) -.95


def test_l1_order_keep_masks_kept_channels():
  assert pruning.l1_order(np.array([2.0, 1.0, 1.0, 3.0])).tolist() == [1, 2, 0, 3]
  masks = pruning.keep_masks(np.array([2, 0, 1, 3]), [0, 1, 3])
  np.testing.assert_array_equal(masks, [[1, 1, 1, 1], [1, 1, 0, 1], [0, 0, 0, 1]])
  assert pruning.kept_channels(np.array([2, 0, 1, 3]), 2).tolist() == [1, 3]
  with pytest.raises(ValueError, match="at least one channel"):
    pruning.kept_channels(np.arange(4), 4)


def test_random_orders_are_seeded_permutations():
  a = pruning.random_orders(8, 5, seed=1)
  np.testing.assert_array_equal(np.sort(a, axis=1), np.tile(np.arange(8), (5, 1)))
  np.testing.assert_array_equal(a, pruning.random_orders(8, 5, seed=1))
  assert len({tuple(r) for r in a}) == 5


def test_default_counts():
  assert pruning.default_counts(64) == [0, 8, 16, 24, 32, 40, 48, 56]
  assert pruning.default_counts(8) == list(range(8))


@pytest.fixture(scope="module")
def models():
  out = {}
  for seed, kind in enumerate(("hpnet", "baseline")):
    model = experiment.build_model(SMOKE, K, kind)
    out[kind] = (model, random_variables(model, seed))
  return out


@pytest.fixture(scope="module")
def images():
  return jnp.asarray(SyntheticFaces("test", image_size=16, num_examples=5).get_batch(
      np.arange(5))["image"], jnp.float32) / 255.0


@pytest.mark.parametrize("kind", ["hpnet", "baseline"])
def test_masking_equals_physical_pruning(models, images, kind):
  model, v = models[kind]
  order = pruning.random_orders(8, 1, seed=4)[0]
  masked_apply = jax.jit(model.apply)
  l1 = model_lib.filter_l1_norms(v)
  np.testing.assert_allclose(
      l1, np.abs(v["params"]["extractor"]["conv3"]["kernel"]).sum((0, 1, 2)), rtol=1e-6)
  for k in (3, 7):
    new_v, kept = pruning.prune(v, order, k)
    assert kept.tolist() == sorted(order[k:].tolist())
    small = model_lib.pruned_model(model, len(kept))
    assert small.features[-1] == 8 - k
    got = jax.jit(small.apply)(new_v, images)[0]
    want = masked_apply(v, images, channel_mask=jnp.asarray(pruning.keep_masks(order, [k])[0]))[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert new_v["params"]["extractor"]["conv3"]["kernel"].shape[-1] == 8 - k
    assert new_v["batch_stats"]["extractor"]["bn3"]["var"].shape == (8 - k,)
  assert v["params"]["extractor"]["conv3"]["kernel"].shape[-1] == 8  # the input is untouched


@pytest.mark.parametrize("kind", ["hpnet", "baseline"])
def test_pruning_zero_channels_is_the_identity(models, images, kind):
  model, v = models[kind]
  new_v, kept = pruning.prune(v, np.arange(8)[::-1], 0)
  assert kept.tolist() == list(range(8))
  jax.tree.map(np.testing.assert_array_equal, new_v, v)
  np.testing.assert_array_equal(pruning.keep_masks(np.arange(8), [0]), np.ones((1, 8)))


def test_accuracy_curves_share_count_zero_and_match_model(models):
  model, v = models["hpnet"]
  src = SyntheticFaces("test", image_size=16, num_examples=24)
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=24)
  orders = pruning.orders_for(v, stats, draws=3, seed=0)
  counts = [0, 4, 7]
  curves = pruning.accuracy_curves(model.apply, v, src, orders, counts, batch_size=BS, limit=24)
  assert curves["semantic"][0] == curves["l1"][0] == curves["random_mean"][0]
  assert curves["random_std"][0] == 0.0
  full = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=24)
  np.testing.assert_allclose(curves["per_attribute"]["semantic"][0], full)
  # The masking pass (shared features, decomposed heads) equals model.apply's mask.
  mask = pruning.keep_masks(orders["semantic"], [4])[0]
  want = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=24,
                                      channel_mask=mask)
  np.testing.assert_allclose(curves["per_attribute"]["semantic"][1], want, atol=1 / 24 + 1e-9)
  assert curves["masks_evaluated"] < 5 * len(counts)  # count 0 evaluated once
  spread = pruning.random_spread(curves)
  assert spread["random_draws"] == 3 and spread["gap_counts"] == [4, 7]
  assert spread["random_std_mean"] == pytest.approx(np.mean(curves["random_std"][1:]))


def _curves():
  """Hand-made Fig. 7 curves: 3 random draws, counts 0 (all equal), 4 and 8."""
  random = np.array([[0.9, 0.70, 0.50], [0.9, 0.72, 0.56], [0.9, 0.68, 0.53]])
  return {"counts": [0, 4, 8], "semantic": np.array([0.9, 0.80, 0.70]),
          "l1": np.array([0.9, 0.66, 0.50]), "random": random, "random_mean": random.mean(0),
          "random_std": random.std(0, ddof=1)}


def test_area_gap_excludes_count_zero():
  c = _curves()
  # Counts 4 and 8: semantic - random = .10 and .17; with count 0 it would be .09.
  assert pruning.area_gap(c) == pytest.approx(0.135)
  assert pruning.area_gap(c, "l1") == pytest.approx((-0.04 - 0.03) / 2)
  # Count 0 anywhere in the list is left out; no count > 0 leaves no gap.
  swapped = {k: (v[::-1] if k != "random" else v[:, ::-1]) for k, v in c.items()}
  assert pruning.area_gap(swapped) == pytest.approx(0.135)
  only_zero = {k: (v[:1] if k != "random" else v[:, :1]) for k, v in c.items()}
  assert np.isnan(pruning.area_gap(only_zero))


def test_random_spread_over_pruned_counts():
  s = pruning.random_spread(_curves())
  std = np.array([0.02, np.std([0.50, 0.56, 0.53], ddof=1)])
  assert s["random_draws"] == 3 and s["gap_counts"] == [4, 8]
  assert s["random_std_mean"] == pytest.approx(std.mean())  # count 0 (std 0) left out
  assert s["random_sem_mean"] == pytest.approx(std.mean() / np.sqrt(3))
