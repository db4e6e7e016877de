"""Bootstrap and sign-flip tests of a difference in means (paper B, Tables 1–2; docs/papers.md §B5);
paper A's streamed moments, correlations and Spearman's ρ."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from hpjax.core import stats


def _samples(shift, n=40, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)


def test_known_difference_gives_small_p():
  a, b = _samples(1.5)
  p = stats.bootstrap_pvalue(a, b, num_resamples=5000)
  # Nothing among 5000 null resamples reaches a 1.5-sigma mean shift with n = 40.
  assert p == pytest.approx(1 / 5001)
  # The reverse hypothesis is rejected: p close to 1.
  assert stats.bootstrap_pvalue(a, b, num_resamples=5000, alternative="less") > 0.99


def test_equal_samples_give_p_near_half():
  a = np.arange(20.0)
  b = a[::-1].copy()  # same values: observed difference 0
  p = stats.bootstrap_pvalue(a, b, num_resamples=4000)
  assert 0.45 < p < 0.56
  _, b2 = _samples(0.0, seed=3)
  a2, _ = _samples(0.0, seed=4)
  assert stats.bootstrap_pvalue(a2, b2, num_resamples=4000) > 0.05


def test_agrees_with_welch_t_test():
  a, b = _samples(0.1, n=200, seed=1)
  welch = scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
  p = stats.bootstrap_pvalue(a, b, num_resamples=20000, seed=1)
  assert 0.05 < welch < 0.2  # a borderline case, where the two must agree
  assert p == pytest.approx(welch, abs=0.01)


def test_greater_and_less_are_complementary():
  a, b = _samples(0.2, n=15, seed=2)
  n = 3000
  pg = stats.bootstrap_pvalue(a, b, num_resamples=n, alternative="greater")
  pl = stats.bootstrap_pvalue(a, b, num_resamples=n, alternative="less")
  # Same seed, same null draws, continuous data: every resample lands on one side.
  assert pg + pl == pytest.approx((n + 2) / (n + 1))
  p2 = stats.bootstrap_pvalue(a, b, num_resamples=n, alternative="two-sided")
  assert p2 >= min(pg, pl)


def test_paired():
  rng = np.random.default_rng(5)
  b = rng.normal(80, 5, 12)  # e.g. per-seed accuracies: big spread between seeds
  a = b + 0.5 + rng.normal(0, 0.1, 12)  # a consistent +0.5 within each seed
  assert stats.bootstrap_pvalue(a, b, paired=True, num_resamples=2000) < 0.01
  assert stats.bootstrap_pvalue(a, b, paired=False, num_resamples=2000) > 0.3


def test_bootstrap_ci():
  a, b = _samples(1.0, n=100, seed=6)
  lo, hi = stats.bootstrap_ci(a, b, num_resamples=4000)
  diff = a.mean() - b.mean()
  assert lo < diff < hi and lo > 0.5 and hi < 1.6
  lower, upper = stats.bootstrap_ci(a, b, alternative="greater", num_resamples=4000)
  assert lo < lower < diff and upper == np.inf
  mlo, mhi = stats.bootstrap_ci(a, num_resamples=4000)
  se = a.std(ddof=1) / np.sqrt(a.size)
  assert mlo == pytest.approx(a.mean() - 1.96 * se, abs=0.05)
  assert mhi == pytest.approx(a.mean() + 1.96 * se, abs=0.05)


def test_bad_arguments():
  with pytest.raises(ValueError, match="at least 2 values"):
    stats.bootstrap_pvalue([1.0], [1.0, 2.0])
  with pytest.raises(ValueError, match="expected alternative"):
    stats.bootstrap_pvalue([1.0, 2.0], [1.0, 2.0], alternative="bigger")
  with pytest.raises(ValueError, match="paired samples need equal sizes"):
    stats.bootstrap_pvalue([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)
  with pytest.raises(ValueError, match="finite"):
    stats.bootstrap_ci([1.0, np.nan])


def test_sign_flip_pvalue_is_exact():
  # 3 positive differences: only the all-plus pattern reaches the mean -> 1/8.
  assert stats.sign_flip_pvalue([1.0, 2.0, 3.0]) == 0.125
  # [3, -1]: patterns (+,+) 1, (+,-) 2, (-,+) -2, (-,-) -1 vs observed 1 -> 2/4.
  assert stats.sign_flip_pvalue([3.0, -1.0]) == 0.5
  assert stats.sign_flip_pvalue([-1.0, -1.0]) == 1.0


def test_sign_flip_floor_and_many_pairs():
  assert [stats.sign_flip_floor(n) for n in (1, 3, 4, 5)] == [0.5, 0.125, 0.0625, 0.03125]
  # The floor is reached exactly when every difference is positive.
  for n in range(1, 8):
    assert stats.sign_flip_pvalue(np.arange(1.0, n + 1)) == stats.sign_flip_floor(n)
  with pytest.raises(ValueError, match="n >= 1"):
    stats.sign_flip_floor(0)
  # Beyond 20 pairs the patterns are drawn: the floor is 1/(B+1).
  assert stats.sign_flip_pvalue(np.ones(25), num_resamples=999) == 1 / 1000
  assert stats.sign_flip_floor(25, num_resamples=999) == 1 / 1000
  d = np.random.default_rng(0).normal(0.3, 1.0, 24)
  signs = 1 - 2 * np.random.default_rng(1).integers(0, 2, (200000, 24))
  reference = np.mean((signs * d).mean(1) >= d.mean())  # an independent draw of patterns
  assert stats.sign_flip_pvalue(d, num_resamples=50000) == pytest.approx(reference, abs=0.01)


def _enumerated_bootstrap_p(d):
  """Exact paired bootstrap p of mean(d) > 0 with the variance correction: all n^n resamples
  of the centred differences scaled by sqrt(n/(n-1))."""
  n = d.size
  centred = (d - d.mean()) * np.sqrt(n / (n - 1))
  idx = np.stack(np.meshgrid(*[np.arange(n)] * n, indexing="ij"), -1).reshape(-1, n)
  return np.mean(centred[idx].mean(1) >= d.mean() - 1e-12)


def test_unbiased_variance_scales_the_resampled_mean():
  d = np.array([0.9, -0.4, 0.3, 0.7])
  want = _enumerated_bootstrap_p(d)
  plain = np.mean(((d - d.mean())[np.stack(np.meshgrid(*[np.arange(4)] * 4, indexing="ij"),
                                           -1).reshape(-1, 4)]).mean(1) >= d.mean() - 1e-12)
  assert want > plain  # the correction widens the null: a larger p
  p = stats.bootstrap_pvalue(d, np.zeros(4), paired=True, unbiased_variance=True,
                             num_resamples=200000)
  assert p == pytest.approx(want, abs=0.003)
  assert stats.bootstrap_pvalue(d, np.zeros(4), paired=True,
                                num_resamples=200000) == pytest.approx(plain, abs=0.003)
  # Unpaired: the same as the plain test on groups whose spread is scaled by sqrt(n/(n-1)).
  rng = np.random.default_rng(0)
  a, b = rng.normal(0.5, 1, 4), rng.normal(0, 2, 5)
  scaled = [x.mean() + (x - x.mean()) * np.sqrt(x.size / (x.size - 1)) for x in (a, b)]
  p = stats.bootstrap_pvalue(a, b, unbiased_variance=True, num_resamples=3000)
  assert p == pytest.approx(stats.bootstrap_pvalue(*scaled, num_resamples=3000), abs=1e-12)
  assert p > stats.bootstrap_pvalue(a, b, num_resamples=3000)


def test_streamed_moments_match_numpy_with_offset_and_padding():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(1000, 3))
  # Large common offsets and correlated channels: naive float32 sums of squares fail here.
  x = (1e3 + z @ np.array([[1.0, 0.8, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 2.0]])).astype(np.float32)
  m = stats.moments_init(3)
  for start in range(0, 1000, 96):  # ragged last chunk, padded with garbage of weight 0
    chunk = np.full((96, 3), 7e3, np.float32)
    part = x[start:start + 96]
    chunk[:len(part)] = part
    w = (np.arange(96) < len(part)).astype(np.float32)
    m = stats.moments_update(m, jnp.asarray(chunk), jnp.asarray(w))
  assert float(m.count) == 1000
  np.testing.assert_allclose(m.mean, x.astype(np.float64).mean(0), rtol=1e-6)
  want = np.corrcoef(x.astype(np.float64), rowvar=False)
  np.testing.assert_allclose(stats.correlation_from_covariance(m.m2), want, atol=1e-4)
  np.testing.assert_allclose(want[0, 1], 0.8, atol=0.05)  # the data really are correlated


def test_correlation_of_dead_channel_is_zero():
  cov = np.array([[4.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 0.0, 1.0]])
  corr = stats.correlation_from_covariance(cov)
  np.testing.assert_allclose(corr, [[1, 0, 1], [0, 1, 0], [1, 0, 1]], atol=1e-12)


def test_spearman_undefined_for_constant_input():
  assert stats.spearman(np.zeros(5), np.arange(5)) is None
  assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
