r"""Statistics: bootstrap and sign-flip tests of a difference in means (paper B, Tables 1–2;
docs/papers.md §B5), streamed moments and correlations (paper A).

The paper reports, per class, "a difference in mean bootstrapping test" with
one-sided p-values at level 0.05, without saying how it resamples. The scheme
here is the standard two-sample bootstrap test of equal means (Efron &
Tibshirani 1993, *An Introduction to the Bootstrap*, Sec. 16.4), with the plain
difference of means as the statistic:

1. :math:`t = \bar a - \bar b`.
2. Impose the null by shifting both groups to the pooled mean
   :math:`\bar z`: :math:`\tilde a_i = a_i - \bar a + \bar z`,
   :math:`\tilde b_j = b_j - \bar b + \bar z` (the spreads are kept).
3. Draw ``num_resamples`` resamples of each shifted group with replacement,
   each of its own size, and take :math:`t^* = \bar{\tilde a}^* - \bar{\tilde b}^*`.
4. ``alternative="greater"`` (H1: mean(a) > mean(b)):

   .. math:: p = \frac{1 + \#\{t^* \ge t\}}{1 + B}

   ("less": :math:`t^* \le t`; "two-sided": :math:`|t^*| \ge |t|`). The +1
   counts the observed sample as one of the resamples, so p is never exactly 0
   (the paper prints 0.0000; here the floor is :math:`1/(B+1)`).

With ``paired=True`` (the same seeds or epochs in both groups) the differences
:math:`d = a - b` are centred at 0 and resampled instead.

The plain bootstrap of a mean understates its variance: a resample mean of n
values has variance :math:`\hat\sigma^2 / n` with the plug-in
:math:`\hat\sigma^2 = \frac{1}{n}\sum (x_i - \bar x)^2 = \frac{n-1}{n} s^2`,
i.e. :math:`(n-1)/n` of the unbiased :math:`s^2 / n` (a quarter too small with
n = 4). ``unbiased_variance=True`` removes that factor by scaling each group's
deviations from its mean by :math:`\sqrt{n / (n-1)}` before resampling (the
"modified residuals" of Davison & Hinkley 1997, Sec. 3.3); the tables of paper B
use it.

The paper's samples are the per-epoch accuracies of the re-training phase,
which are serially correlated; independent seeds are the sounder samples
(docs/papers.md §B5). These functions take whichever the caller passes.

With a handful of paired values (2–3 seeds), a bootstrap has too few distinct
resamples to be trusted; :func:`sign_flip_pvalue` gives the exact one-sided
p-value of the paired differences instead (its floor :math:`2^{-n}`,
:func:`sign_flip_floor`, is the honest resolution of n pairs).

Everything is vectorised NumPy, in blocks of resamples to bound memory.

Paper A's statistics live here too: channel moments streamed over a data set and
merged pairwise (:class:`Moments`; Chan, Golub & LeVeque 1979), the Pearson
correlation read from them, and Spearman's ρ (:func:`spearman`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.typing import ArrayLike

ALTERNATIVES = ("greater", "less", "two-sided")
_BLOCK_ELEMENTS = 1 << 22  # resample indices drawn per block
MAX_EXACT_PAIRS = 20  # sign_flip_pvalue enumerates all 2^n patterns up to here


def bootstrap_pvalue(a: Any, b: Any, *, num_resamples: int = 10000, seed: int = 0,
                     alternative: str = "greater", paired: bool = False,
                     unbiased_variance: bool = False) -> float:
  r"""Bootstrap p-value of :math:`H_0: \mu_a = \mu_b` against ``alternative``.

  Args:
    a: ``[n_a]`` samples of the first group (e.g. image-score accuracies).
    b: ``[n_b]`` samples of the second group (e.g. baseline accuracies).
    num_resamples: B.
    seed: seed of the NumPy generator (the result is deterministic).
    alternative: "greater" (H1: mean(a) > mean(b)), "less" or "two-sided".
    paired: resample the differences ``a - b`` (requires ``n_a == n_b``).
    unbiased_variance: scale each group's (or the differences') deviations from
      its mean by :math:`\sqrt{n/(n-1)}` before resampling, so that the null
      distribution of a group mean has the unbiased variance :math:`s^2/n`
      instead of the plain bootstrap's :math:`\frac{n-1}{n} s^2/n`.

  Returns:
    p in ``[1/(B+1), 1]``.

  References:
    docs/papers.md §B5; paper B Tables 1–2.
  """
  a, b = _check_samples(a, b, paired, "bootstrap_pvalue")
  _check_options(alternative, num_resamples, "bootstrap_pvalue")
  rng = np.random.default_rng(seed)

  def centred(x: np.ndarray) -> np.ndarray:
    scale = np.sqrt(x.size / (x.size - 1)) if unbiased_variance and x.size > 1 else 1.0
    return (x - x.mean()) * scale

  if paired:
    d = a - b
    observed = d.mean()
    null = _resampled_means(centred(d), num_resamples, rng)
  else:
    observed = a.mean() - b.mean()
    pooled = np.concatenate([a, b]).mean()
    null = (_resampled_means(centred(a) + pooled, num_resamples, rng)
            - _resampled_means(centred(b) + pooled, num_resamples, rng))
  # A relative tolerance so that resamples equal to t up to rounding count as ties.
  tol = 1e-12 * max(1.0, abs(observed))
  if alternative == "greater":
    hits = np.count_nonzero(null >= observed - tol)
  elif alternative == "less":
    hits = np.count_nonzero(null <= observed + tol)
  else:
    hits = np.count_nonzero(np.abs(null) >= abs(observed) - tol)
  return float((1 + hits) / (1 + num_resamples))


def bootstrap_ci(a: Any, b: Any = None, *, confidence: float = 0.95, num_resamples: int = 10000,
                 seed: int = 0, alternative: str = "two-sided",
                 paired: bool = False) -> tuple[float, float]:
  r"""Percentile bootstrap interval of :math:`\mu_a - \mu_b` (or of :math:`\mu_a`).

  Each group is resampled with replacement (no null shift) and the interval is
  read from the percentiles of :math:`\bar a^* - \bar b^*`.

  Args:
    a: ``[n_a]`` samples.
    b: ``[n_b]`` samples, or None for an interval of the mean of ``a``.
    confidence: coverage, e.g. 0.95.
    num_resamples: B.
    seed: seed of the NumPy generator.
    alternative: "two-sided" gives ``(q_{(1-c)/2}, q_{(1+c)/2})``; "greater" the
      one-sided ``(q_{1-c}, inf)`` (a lower bound above 0 is significance at
      level 1-c); "less" ``(-inf, q_c)``.
    paired: resample the differences ``a - b``.

  Returns:
    ``(low, high)``.

  References:
    docs/papers.md §B5; paper B Tables 1–2.
  """
  if b is None:
    a = _check_group(a, "bootstrap_ci", "a")
  else:
    a, b = _check_samples(a, b, paired, "bootstrap_ci")
  _check_options(alternative, num_resamples, "bootstrap_ci")
  if not 0 < confidence < 1:
    raise ValueError(f"bootstrap_ci: expected confidence in (0, 1), got {confidence}")
  rng = np.random.default_rng(seed)
  if b is None:
    stats = _resampled_means(a, num_resamples, rng)
  elif paired:
    stats = _resampled_means(a - b, num_resamples, rng)
  else:
    stats = _resampled_means(a, num_resamples, rng) - _resampled_means(b, num_resamples, rng)
  if alternative == "greater":
    return float(np.quantile(stats, 1 - confidence)), float("inf")
  if alternative == "less":
    return float("-inf"), float(np.quantile(stats, confidence))
  lo, hi = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
  return float(lo), float(hi)


def sign_flip_pvalue(d: Any, *, num_resamples: int = 100000, seed: int = 0) -> float:
  r"""One-sided p-value of mean(d) > 0 by flipping the signs of paired differences.

  Up to :data:`MAX_EXACT_PAIRS` (20) pairs it enumerates all :math:`2^n` sign
  patterns, exactly: :math:`p = \#\{s: \overline{s \cdot d} \ge \bar d\} / 2^n`.
  With 3 seeds the smallest possible p is 1/8, which is the honest resolution of
  3 paired runs (a bootstrap of 2–3 values can print p ≈ 0.0001 for the same
  data). Beyond 20 pairs it draws ``num_resamples`` random sign patterns and
  counts the observed one as one of them, :math:`p = (1 + \#\{\ldots\}) / (1 + B)`.

  Args:
    d: ``[n]`` paired differences (method − baseline per seed).
    num_resamples: B, random sign patterns when n > 20 (ignored otherwise).
    seed: seed of those patterns.

  Returns:
    p in ``[sign_flip_floor(n), 1]``.

  References:
    docs/papers.md §B5; paper B Tables 1–2.
  """
  d = np.asarray(d, np.float64)
  if d.ndim != 1 or d.size < 1 or not np.all(np.isfinite(d)):
    raise ValueError(f"sign_flip_pvalue: expected a 1-D sample of finite paired differences, "
                     f"got shape {d.shape}")
  n = d.size
  tol = 1e-12 * max(1.0, abs(d.mean()))
  if n <= MAX_EXACT_PAIRS:
    signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of ±1
    return float(np.mean((signs * d).mean(axis=1) >= d.mean() - tol))
  _check_options("greater", num_resamples, "sign_flip_pvalue")
  rng = np.random.default_rng(seed)
  block = max(1, _BLOCK_ELEMENTS // n)
  hits = 0
  for start in range(0, num_resamples, block):
    signs = 1 - 2 * rng.integers(0, 2, size=(min(block, num_resamples - start), n))
    hits += int(np.count_nonzero((signs * d).mean(axis=1) >= d.mean() - tol))
  return float((1 + hits) / (1 + num_resamples))


def sign_flip_floor(n: int, num_resamples: int = 100000) -> float:
  r"""The smallest p-value :func:`sign_flip_pvalue` can give with ``n`` pairs.

  :math:`2^{-n}`: when every difference is positive only the observed sign
  pattern reaches the observed mean, so no data of n pairs give less (0.125
  with 3 seeds, 0.0625 with 4; below 0.05 only from 5 pairs on). Beyond
  :data:`MAX_EXACT_PAIRS` pairs, where the patterns are drawn, the floor is
  :math:`1/(B+1)` if that is larger.

  References:
    docs/papers.md §B5.
  """
  if n < 1:
    raise ValueError(f"sign_flip_floor: expected n >= 1 pairs, got {n}")
  return float(2.0 ** -n) if n <= MAX_EXACT_PAIRS else max(2.0 ** -n, 1 / (1 + num_resamples))


def _resampled_means(x: np.ndarray, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """Means of ``num_resamples`` resamples of ``x`` with replacement, ``[num_resamples]``."""
  n = x.size
  block = max(1, _BLOCK_ELEMENTS // n)
  out = np.empty((num_resamples,), np.float64)
  for start in range(0, num_resamples, block):
    stop = min(start + block, num_resamples)
    out[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
  return out


def _check_group(x: Any, where: str, name: str) -> np.ndarray:
  arr = np.asarray(x, dtype=np.float64)
  if arr.ndim != 1 or arr.size < 2:
    raise ValueError(f"{where}: expected {name} as a 1-D sample of at least 2 values, got shape "
                     f"{arr.shape}")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{where}: expected finite values in {name}, found NaN or inf")
  return arr


def _check_samples(a: Any, b: Any, paired: bool, where: str) -> tuple[np.ndarray, np.ndarray]:
  a, b = _check_group(a, where, "a"), _check_group(b, where, "b")
  if paired and a.shape != b.shape:
    raise ValueError(f"{where}: paired samples need equal sizes, got {a.size} and {b.size}")
  return a, b


def _check_options(alternative: str, num_resamples: int, where: str) -> None:
  if alternative not in ALTERNATIVES:
    raise ValueError(f"{where}: expected alternative in {ALTERNATIVES}, got {alternative!r}")
  if num_resamples < 1:
    raise ValueError(f"{where}: expected num_resamples >= 1, got {num_resamples}")


# ---------------------------------------------------------------------------
# Streamed moments and correlations (paper A, docs/papers.md §A5).

class Moments(NamedTuple):
  """Running count, mean ``[C]`` and centred cross-product sum ``[C, C]``."""
  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def moments_init(num_channels: int) -> Moments:
  z = jnp.zeros((num_channels,), jnp.float32)
  return Moments(jnp.zeros((), jnp.float32), z, jnp.zeros((num_channels,) * 2, jnp.float32))


def moments_update(m: Moments, x: jax.Array, weight: jax.Array) -> Moments:
  r"""Folds observations ``x [N, C]`` with 0/1 ``weight [N]`` into ``m`` (Chan's merge).

  The batch is centred at its own mean before the cross products, so float32 keeps
  the covariance accurate even when the channel means dwarf their spread:

  .. math::

     n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
     \bar x = \bar x_a + \delta\, n_b / n,\quad
     M_2 = M_{2,a} + M_{2,b} + \delta\delta^\top n_a n_b / n .

  References:
    docs/papers.md §A5 (step 2).
  """
  w = weight.astype(jnp.float32)
  nb = jnp.sum(w)
  mean_b = jnp.sum(w[:, None] * x, axis=0) / jnp.maximum(nb, 1.0)
  d = x - mean_b
  m2_b = jnp.einsum("ni,nj->ij", d * w[:, None], d)
  n = m.count + nb
  frac = nb / jnp.maximum(n, 1.0)
  delta = mean_b - m.mean
  return Moments(n, m.mean + delta * frac, m.m2 + m2_b + jnp.outer(delta, delta) * m.count * frac)


def correlation_from_covariance(cov: ArrayLike) -> np.ndarray:
  """Pearson correlation ``[C, C]`` from a covariance (or M2) matrix.

  A channel with (numerically) zero variance — dead after pruning, or constant —
  has no defined correlation; it gets 0 off the diagonal and 1 on it, so it is
  never taken for a near-duplicate of another channel.

  References:
    docs/papers.md §A5 (step 2).
  """
  cov = np.asarray(cov, np.float64)
  var = np.clip(np.diag(cov), 0.0, None)
  alive = var > 1e-12 * max(var.max(initial=0.0), 1e-30)
  std = np.sqrt(np.where(alive, var, 1.0))
  corr = cov / np.outer(std, std)
  corr[~alive, :] = 0.0
  corr[:, ~alive] = 0.0
  np.fill_diagonal(corr, 1.0)
  return np.clip(corr, -1.0, 1.0)


def profile_correlation(rows: ArrayLike) -> np.ndarray:
  """Pearson correlation between the columns of ``rows [N, D]`` → ``[D, D]``."""
  x = np.asarray(rows, np.float64)
  d = x - x.mean(axis=0)
  return correlation_from_covariance(d.T @ d)


def spearman(predicted: ArrayLike, observed: ArrayLike) -> float | None:
  """Spearman's ρ over flattened pairs; None when either side is constant (undefined).

  References:
    docs/papers.md §A7.
  """
  p, o = np.ravel(predicted), np.ravel(observed)
  if p.size < 3 or np.ptp(p) == 0 or np.ptp(o) == 0:
    return None
  return float(scipy.stats.spearmanr(p, o).statistic)
