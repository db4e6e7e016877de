r"""Bootstrap tests of a difference in means (paper B, Tables 1–2; SPEC B5).

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

The paper's samples are the per-epoch accuracies of the re-training phase,
which are serially correlated; independent seeds are the sounder samples
(SPEC B5). These functions take whichever the caller passes.

Everything is vectorised NumPy, in blocks of resamples to bound memory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ALTERNATIVES = ("greater", "less", "two-sided")
_BLOCK_ELEMENTS = 1 << 22  # resample indices drawn per block


def bootstrap_pvalue(a: Any, b: Any, *, num_resamples: int = 10000, seed: int = 0,
                     alternative: str = "greater", paired: bool = False) -> float:
  r"""Bootstrap p-value of :math:`H_0: \mu_a = \mu_b` against ``alternative``.

  Args:
    a: ``[n_a]`` samples of the first group (e.g. image-score accuracies).
    b: ``[n_b]`` samples of the second group (e.g. baseline accuracies).
    num_resamples: B.
    seed: seed of the NumPy generator (the result is deterministic).
    alternative: "greater" (H1: mean(a) > mean(b)), "less" or "two-sided".
    paired: resample the differences ``a - b`` (requires ``n_a == n_b``).

  Returns:
    p in ``[1/(B+1), 1]``.
  """
  a, b = _check_samples(a, b, paired, "bootstrap_pvalue")
  _check_options(alternative, num_resamples, "bootstrap_pvalue")
  rng = np.random.default_rng(seed)
  if paired:
    d = a - b
    observed = d.mean()
    null = _resampled_means(d - observed, num_resamples, rng)
  else:
    observed = a.mean() - b.mean()
    pooled = np.concatenate([a, b]).mean()
    null = (_resampled_means(a - a.mean() + pooled, num_resamples, rng)
            - _resampled_means(b - b.mean() + pooled, num_resamples, rng))
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
