"""Predictability scores on models with known answers; the regression leakage example."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hpnet_fixtures import BS, K, SMOKE, random_variables

from hpjax.core.stats import spearman
from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import experiment, perturbation, statistics
from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet import model as model_lib
from hpjax.hpnet.analyses import predictability

N = 24


@pytest.fixture(scope="module")
def src():
  return SyntheticFaces("test", image_size=16, num_examples=N)


def _constant_mask_hpnet(seed=0):
  """HPNet whose masks ignore the features (mask_kernel = 0): M^k_c = σ(b_kc) everywhere.

  Then every head is linear in GAP(f) and pruning channel c changes the mean logit
  of attribute k by exactly -w_kc σ(b_kc) E[GAP f_c]: the direct-path predictor is exact.
  """
  model = experiment.build_model(SMOKE, K, "hpnet")
  v = random_variables(model, seed)
  heads = dict(v["params"]["heads"])
  heads["mask_kernel"] = np.zeros_like(heads["mask_kernel"])
  heads["mask_bias"] = np.random.default_rng(seed).uniform(-3, 3, heads["mask_bias"].shape
                                                           ).astype(np.float32)
  return model, {**v, "params": {**v["params"], "heads": heads}}


def test_exact_predictor_gives_rank_correlation_one(src):
  model, v = _constant_mask_hpnet()
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
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
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
  r = predictability.score(model.apply, v, stats, src, batch_size=BS, limit=N,
                           families=("prune_one",))["prune_one"]
  obs = r["observed"]
  # Pruning any other channel changes nothing (up to float32 summation order).
  assert np.all(np.abs(obs[np.arange(8) != 3]) < 1e-6)
  assert np.all(np.abs(obs[3]) > 1e-4)
  np.testing.assert_allclose(r["predicted"], obs, atol=2e-4)


def test_baseline_pruning_predictor_is_exact_and_transform_not_applicable(src):
  model = experiment.build_model(SMOKE, K, "baseline")
  v = random_variables(model, 2)
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=N)
  r = predictability.score(model.apply, v, stats, src, random_draws=6, batch_size=BS, limit=N)
  np.testing.assert_allclose(r["prune_one"]["predicted"], r["prune_one"]["observed"], atol=2e-4)
  assert r["prune_one"]["spearman_logit"] > 0.999
  assert r["transform"] == {"applicable": False, "why": r["transform"]["why"]}


def test_transform_predictor_from_binned_attention(src):
  model, v = _constant_mask_hpnet(3)
  stats = statistics.collect_statistics(model.apply, v, src, batch_size=BS, limit=N, num_bins=64)
  ns, betas = predictability.TRANSFORM_NS, predictability.TRANSFORM_BETAS  # n = 1 is ns[1]
  pred, _ = predictability.predict_transform(stats, v["params"], ns, betas)
  out = perturbation.evaluate_perturbations(model.apply, v, src, ns=ns, betas=betas,
                                            batch_size=BS, limit=N)
  obs = out["mean_logit"][0, 0] - out["mean_logit"][0, 0, 1, 0]  # vs (n, β) = (1, 0)
  assert np.allclose(pred[1, 0], 0.0)
  # Exact up to replacing each mask value by its bin centre.
  scale = np.abs(obs).max()
  np.testing.assert_allclose(pred, obs, atol=0.05 * scale)
  assert spearman(pred, obs) > 0.97


def _with_heads(v, **heads):
  return {**v, "params": {**v["params"], "heads": {**v["params"]["heads"], **heads}}}


def _images_float(source, n):
  return jnp.asarray(source.get_batch(np.arange(n))["image"], jnp.float32) / 255.0


@pytest.mark.parametrize("kind", ["hpnet", "baseline"])
def test_direct_path_simulation_is_exact_when_no_mask_reads_another_channel(src, kind):
  """A diagonal mask kernel: M^k_c = σ(a_kc f_c + b_kc) depends on the features, but only on
  its own channel, so removing channels leaves every other mask as it was and the
  simulated accuracy is the observed one (the baseline: always)."""
  model = experiment.build_model(SMOKE, K, kind)
  v = random_variables(model, 5)
  if kind == "hpnet":
    mk = np.zeros((K, 8, 8), np.float32)
    mk[:, np.arange(8), np.arange(8)] = np.random.default_rng(5).uniform(1.0, 3.0, (K, 8))
    v = _with_heads(v, mask_kernel=mk)
    masks = jax.jit(model.apply, static_argnames="return_masks")(
        v, _images_float(src, 8), return_masks=True)[1]["masks"]
    assert float(np.std(masks, axis=(0, 1, 2)).mean()) > 0.02  # the masks do depend on f
  sets = predictability.random_sets(8, 9, seed=1)
  sim = perturbation.direct_path_accuracy(model.apply, v, src, sets, batch_size=BS, limit=N)
  out = perturbation.evaluate_perturbations(model.apply, v, src, channel_masks=np.concatenate(
      [np.ones((1, 8), np.float32), sets]), batch_size=BS, limit=N)
  acc = out["accuracy"][0, :, 0, 0]
  np.testing.assert_allclose(sim["base_accuracy"], acc[0], atol=1e-12)
  # Equal up to a logit within rounding of 0 (at most one image either way).
  np.testing.assert_allclose(sim["accuracy"], acc[1:], atol=1 / N + 1e-9)
  assert np.mean(np.abs(sim["accuracy"] - acc[1:]) > 1e-9) < 0.02
  assert np.ptp(acc[1:]) > 0.1  # pruning really changes the accuracy


class _OwnLabels:
  """The first ``n`` images of ``source`` labelled with the model's own decisions, so the
  unpruned accuracy is 1 and an accuracy drop is the fraction of flipped decisions."""

  def __init__(self, source, model, v, n):
    self.batch = dict(source.get_batch(np.arange(n)))
    f = jax.jit(model.apply)(v, _images_float(source, n))[1]["features"]
    self.batch["label"] = (np.asarray(model_lib.logits_from_features(v["params"], f)) > 0
                           ).astype(np.int32)

  def __len__(self):
    return len(self.batch["label"])

  def get_batch(self, idx):
    return {k: a[idx] for k, a in self.batch.items()}


def _key_channel_hpnet(seed=0, n=64):
  """HPNet whose masks depend on the features, built so that pruning damage is known.

  Attribute k reads one *key* channel κ(k) = k mod C with a weight that makes its term
  vary by 1 (sd) across images; every other channel's |w_kc| E|GAP(M^k_c f_c)| is at
  most 0.2 of that, so removing κ(k) must hurt attribute k most. Every mask reads its
  own channel (diagonal of the mask kernel) and other channels (random off-diagonal),
  except that no other channel feeds κ(k)'s mask: removing a small channel cannot undo
  the key channel through the masks. The bias puts each decision threshold at the 30th
  percentile of the training logits: 70% positive decisions, so removing the key channel
  (all decisions negative) costs about 0.7 and a sign error in a prediction shows.
  """
  c = 8
  model = experiment.build_model(SMOKE, K, "hpnet")
  v = random_variables(model, seed)
  rng = np.random.default_rng(seed)
  key = np.arange(K) % c
  mk = rng.normal(0, 1, (K, c, c)) / np.sqrt(c)  # [K, C_in, C_out]
  mk[np.arange(K), :, key] = 0.0
  mk[:, np.arange(c), np.arange(c)] = 2.0
  v = _with_heads(v, mask_kernel=mk.astype(np.float32), mask_bias=np.zeros((K, c), np.float32))
  train = SyntheticFaces("train", image_size=16, num_examples=n)
  f = jax.jit(model.apply)(v, _images_float(train, n))[1]["features"]
  ones = _with_heads(v, kernel=np.ones((K, c), np.float32))["params"]
  t = np.asarray(model_lib.logit_terms(ones, f)[0])  # GAP(M^k_c f_c) per image, [n, K, C]
  key_sd = t[:, np.arange(K), key].std(0)
  w = (0.2 * rng.uniform(0.2, 1.0, (K, c)) * key_sd[:, None] / np.abs(t).mean(0)
       * rng.choice([-1.0, 1.0], (K, c)))
  w[np.arange(K), key] = 1.0 / key_sd
  v = _with_heads(v, kernel=w.astype(np.float32), bias=np.zeros(K, np.float32))
  z = np.asarray(model_lib.logits_from_features(v["params"], f))
  v = _with_heads(v, bias=(-np.quantile(z, 0.3, axis=0)).astype(np.float32))
  test = SyntheticFaces("test", image_size=16, num_examples=n)
  return model, v, key, _OwnLabels(train, model, v, n), _OwnLabels(test, model, v, n)


def test_prune_accuracy_ranks_known_damage_with_feature_dependent_masks():
  n = 64
  model, v, key, train, test = _key_channel_hpnet(0, n)
  stats = statistics.collect_statistics(model.apply, v, train, batch_size=BS, limit=n)
  # The construction: |w| x mean mask x mean feature is largest on the key channel.
  design = np.abs(v["params"]["heads"]["kernel"]) * stats["mask_mean"] * stats["gap_abs_mean"]
  np.testing.assert_array_equal(design.argmax(1), key)
  one = 1.0 - np.eye(8, dtype=np.float32)
  pred, sim = predictability.predict_pruning_accuracy(model.apply, v, train, one,
                                                      batch_size=BS, limit=n)
  assert sim["base_accuracy"].min() == 1.0 and sim["num_images"] == n
  out = perturbation.evaluate_perturbations(model.apply, v, test, channel_masks=np.concatenate(
      [np.ones((1, 8), np.float32), one]), batch_size=BS, limit=n)
  acc = out["accuracy"][0, :, 0, 0]
  drop = acc[0] - acc[1:]  # [C, K]
  # The masks depend on f, and removing a channel moves the other channels' masks
  # (what the direct path leaves out); with mask_kernel = 0 neither would hold.
  h = v["params"]["heads"]
  f = jax.jit(model.apply)(v, _images_float(test, 8))[1]["features"]
  m = np.asarray(heads_lib.head_masks(h, f))
  assert m.std(axis=(0, 1, 2)).mean() > 0.02
  moved = np.abs(np.asarray(heads_lib.head_masks(h, f * one[0])) - m)[..., 1:]
  assert moved.max() > 0.05
  # Exact order where the construction fixes it: removing the key channel hurts most,
  # predicted (training images) and observed (test images), for every attribute.
  np.testing.assert_array_equal(pred.argmax(0), key)
  np.testing.assert_array_equal(drop.argmax(0), key)
  kd = np.arange(K)
  assert drop[key, kd].min() > 0.1
  np.testing.assert_allclose(pred[key, kd], drop[key, kd], atol=0.2)  # a sign error: ~0.4
  assert spearman(pred, drop) > 0.6
  # The family, on random channel sets, through score(): same sets and observations as
  # prune_random, its own prediction.
  r = predictability.score(model.apply, v, stats, test, random_draws=12, batch_size=BS, limit=n,
                           families=("prune_random", "prune_accuracy"), train_source=train,
                           train_limit=n)
  pa = r["prune_accuracy"]
  np.testing.assert_array_equal(pa["observed_drop"], r["prune_random"]["observed_drop"])
  want, _ = predictability.predict_pruning_accuracy(
      model.apply, v, train, predictability.random_sets(8, 12, 0), batch_size=BS, limit=n)
  np.testing.assert_array_equal(pa["predicted_damage"], want)
  assert pa["set_sizes"].tolist() == [1, 2, 4] * 4
  assert pa["spearman_accuracy"] > 0.8 and pa["spearman_accuracy_within_size"] > 0.7
  # ... and it ranks better than the logit-shift proxy of prune_random.
  assert pa["spearman_accuracy"] > r["prune_random"]["spearman_accuracy"]
  assert pa["spearman_logit"] is None and "prune_one" not in r and "transform" not in r
  no_train = predictability.score(model.apply, v, stats, test, random_draws=3, batch_size=BS,
                                  limit=n, families=("prune_accuracy",))
  assert no_train["prune_accuracy"]["applicable"] is False


def test_spearman_within_groups():
  pred = np.array([[1.0, 2.0], [3.0, 4.0], [9.0, 1.0], [8.0, 2.0]])
  obs = np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 9.0], [1.0, 8.0]])
  # Group 0 agrees (ρ 1), group 1 is reversed (ρ -0.8); pooled, ρ is something else.
  assert predictability.spearman_within(pred, obs, [0, 0, 1, 1]) == pytest.approx(0.1)
  assert predictability.spearman_within(np.zeros((2, 2)), obs[:2], [0, 0]) is None


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
