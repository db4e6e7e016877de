"""The one statistics pass and its readings: correlations, Table 4 (hpjax.hpnet.statistics)."""
from __future__ import annotations

import numpy as np
import pytest
from hpnet_fixtures import BS, K, float_images

from hpjax.hpnet import statistics


def test_statistics_match_direct_computation(hp, src):
  model, v, apply = hp
  n = 40  # two batches of 32, the second padded
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=n)
  x = float_images(src, n)
  _, aux = apply(v, x, return_masks=True)
  f = np.asarray(aux["features"], np.float64)
  masks = np.asarray(aux["masks"], np.float64)
  assert int(stats["num_images"]) == n
  np.testing.assert_allclose(statistics.channel_correlation(stats, "position"),
                             np.corrcoef(f.reshape(-1, 8), rowvar=False), atol=2e-4)
  np.testing.assert_allclose(statistics.channel_correlation(stats, "gap"),
                             np.corrcoef(f.mean((1, 2)), rowvar=False), atol=2e-4)
  np.testing.assert_allclose(stats["mask_mean"], masks.mean((0, 1, 2)), atol=1e-5)
  contrib = (masks * f[:, :, :, None, :]).mean((1, 2))  # [n, K, C]
  np.testing.assert_allclose(stats["contribution"], contrib.mean(0), atol=1e-5)
  # Summed over bins, the binned attention forgets the mask: E[GAP f_c] for every k.
  np.testing.assert_allclose(stats["binned"].sum(-1), np.broadcast_to(f.mean((0, 1, 2)), (K, 8)),
                             atol=1e-5)
  np.testing.assert_allclose(statistics.channel_correlation(stats, "attention"),
                             np.corrcoef(masks.mean((0, 1, 2)), rowvar=False), atol=1e-6)


def test_baseline_has_no_attention_reading(base, src):
  model, v, _ = base
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=8)
  assert "mask_mean" not in stats
  with pytest.raises(ValueError, match="attention"):
    statistics.channel_correlation(stats, "attention")


def test_top_correlated_ties_keep_attribute_order():
  corr = np.array([[1.0, 0.5, 0.5, 0.9], [0.5, 1, 0.1, 0.2], [0.5, 0.1, 1, 0.3],
                   [0.9, 0.2, 0.3, 1]])
  top = statistics.top_correlated(corr, ["a", "b", "c", "d"], top=3)
  assert [n for n, _ in top["a"]] == ["d", "b", "c"]
  assert [n for n, _ in top["b"]] == ["a", "d", "c"]
  rows = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.1], [3.0, 1.0, 0.0]])
  ac = statistics.attribute_correlation(rows)
  assert ac.shape == (3, 3) and ac[0, 1] > 0.99 and ac[0, 2] < -0.9


def test_table4_hits():
  assert statistics.table4_hits({"Heavy_Makeup": [["Bangs", 1.0]]}) == (0, 1)
  assert statistics.table4_hits({}) == (0, 0)


def test_logit_std_is_accurate_when_the_spread_is_small(hp, src):
  """A logit's spread can be 1e-3 of its mean: E[z²] − E[z]² in float32 sums was off by
  12% here (0.000225 for 0.000201); centred moments agree with float64."""
  model, v, apply = hp
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=30)
  logits = np.asarray(apply(v, float_images(src, 30))[0], np.float64)
  assert logits.std(0).min() < 1e-3 * np.abs(logits.mean(0)).max()  # the hard case is here
  np.testing.assert_allclose(stats["logit_std"], logits.std(0), rtol=1e-3)
  np.testing.assert_allclose(stats["logit_mean"], logits.mean(0), rtol=1e-5, atol=1e-6)
