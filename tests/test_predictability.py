"""Predictability scores on models with known answers; the regression leakage example."""
from __future__ import annotations

import numpy as np
import pytest
from test_analysis import BS, K, SMOKE, random_variables

from hpjax import analysis, attributes, predictability
from hpjax.data.synthetic import SyntheticFaces

N = 24


@pytest.fixture(scope="module")
def src():
  return SyntheticFaces("test", image_size=16, num_examples=N)


def _constant_mask_hpnet(seed=0):
  """HPNet whose masks ignore the features (mask_kernel = 0): M^k_c = σ(b_kc) everywhere.

  Then every head is linear in GAP(f) and pruning channel c changes the mean logit
  of attribute k by exactly -w_kc σ(b_kc) E[GAP f_c]: the direct-path predictor is exact.
  """
  model = attributes.build_model(SMOKE, K, "hpnet")
  v = random_variables(model, seed)
  heads = dict(v["params"]["heads"])
  heads["mask_kernel"] = np.zeros_like(heads["mask_kernel"])
  heads["mask_bias"] = np.random.default_rng(seed).uniform(-3, 3, heads["mask_bias"].shape
                                                           ).astype(np.float32)
  return model, {**v, "params": {**v["params"], "heads": heads}}


def test_exact_predictor_gives_rank_correlation_one(src):
  model, v = _constant_mask_hpnet()
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
  # Statistics and perturbations on the same images: predicted = observed.
  r = predictability.score(model.apply, v, stats, src, random_draws=6, batch_size=BS, limit=N,
                           families=("prune_one", "prune_random"))
  for fam in ("prune_one", "prune_random"):
    np.testing.assert_allclose(r[fam]["predicted"], r[fam]["observed"], atol=2e-4)
    assert r[fam]["spearman_logit"] > 0.999
  assert r["prune_one"]["predicted"].shape == (8, K)


def test_only_one_channel_matters(src):
  model, v = _constant_mask_hpnet(1)
  heads = dict(v["params"]["heads"])
  kernel = np.zeros_like(heads["kernel"])
  kernel[:, 3] = np.linspace(0.5, 2.0, K)  # every attribute reads channel 3 alone
  heads["kernel"] = kernel
  v = {**v, "params": {**v["params"], "heads": heads}}
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
  r = predictability.score(model.apply, v, stats, src, batch_size=BS, limit=N,
                           families=("prune_one",))["prune_one"]
  obs = r["observed"]
  # Pruning any other channel changes nothing (up to float32 summation order).
  assert np.all(np.abs(obs[np.arange(8) != 3]) < 1e-6)
  assert np.all(np.abs(obs[3]) > 1e-4)
  np.testing.assert_allclose(r["predicted"], obs, atol=2e-4)


def test_baseline_pruning_predictor_is_exact_and_transform_not_applicable(src):
  model = attributes.build_model(SMOKE, K, "baseline")
  v = random_variables(model, 2)
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
  r = predictability.score(model.apply, v, stats, src, random_draws=6, batch_size=BS, limit=N)
  np.testing.assert_allclose(r["prune_one"]["predicted"], r["prune_one"]["observed"], atol=2e-4)
  assert r["prune_one"]["spearman_logit"] > 0.999
  assert r["transform"] == {"applicable": False, "why": r["transform"]["why"]}


def test_transform_predictor_from_binned_attention(src):
  model, v = _constant_mask_hpnet(3)
  stats = analysis.collect_statistics(model.apply, v, src, batch_size=BS, limit=N, num_bins=64)
  ns, betas = predictability.TRANSFORM_NS, predictability.TRANSFORM_BETAS  # n = 1 is ns[1]
  pred, _ = predictability.predict_transform(stats, v["params"], ns, betas)
  out = analysis.evaluate_perturbations(model.apply, v, src, ns=ns, betas=betas, batch_size=BS,
                                        limit=N)
  obs = out["mean_logit"][0, 0] - out["mean_logit"][0, 0, 1, 0]  # vs (n, β) = (1, 0)
  assert np.allclose(pred[1, 0], 0.0)
  # Exact up to replacing each mask value by its bin centre.
  scale = np.abs(obs).max()
  np.testing.assert_allclose(pred, obs, atol=0.05 * scale)
  assert predictability.spearman(pred, obs) > 0.97


def test_spearman_undefined_for_constant_input():
  assert predictability.spearman(np.zeros(5), np.arange(5)) is None
  assert predictability.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)


def test_random_sets_sizes():
  m = predictability.random_sets(16, 6, seed=0)
  assert (16 - m.sum(1)).tolist() == [2, 4, 8, 2, 4, 8]


def test_gram_matrices_and_leakage():
  g = predictability.gram_matrix("legendre", 6)
  np.testing.assert_allclose(g, np.diag(2.0 / (2 * np.arange(6) + 1)), atol=1e-12)
  gf = predictability.gram_matrix("fourier", 7)
  np.testing.assert_allclose(gf, np.diag([0.5, 1, 1, 1, 1, 1, 1]), atol=1e-10)
  gm = predictability.gram_matrix("monomial", 3)  # ∫x^(i+j) = 2/(i+j+1) for even i+j
  np.testing.assert_allclose(gm, [[2, 0, 2 / 3], [0, 2 / 3, 0], [2 / 3, 0, 2 / 5]], atol=1e-12)
  # cos²(1, x²) = (2/3)² / (2 · 2/5) = 5/9; x is orthogonal to both.
  np.testing.assert_allclose(predictability.leakage(gm), [5 / 9, 0, 5 / 9], atol=1e-12)
  assert np.all(predictability.leakage(g) < 1e-12)
  assert np.all(predictability.leakage(gf) < 1e-10)


def test_regression_example():
  ex = predictability.regression_example(7)
  b = ex["bases"]
  assert b["legendre"]["mean_leakage"] < 1e-10 and b["fourier"]["mean_leakage"] < 1e-10
  assert b["monomial"]["mean_leakage"] > 0.5
  # Monomials and Legendre polynomials span the same space: the same fit.
  np.testing.assert_allclose(b["monomial"]["fit"], b["legendre"]["fit"], atol=1e-8)
  assert max(v["rmse"] for v in b.values()) < 0.15  # noise std 0.1
  # The change from perturbing one coefficient is δ φ_j.
  d = b["legendre"]["perturbed"] - b["legendre"]["fit"]
  np.testing.assert_allclose(d, 0.5 * predictability.basis_matrix("legendre", 7, ex["x"])[:, 2],
                             atol=1e-12)
