"""Perturbation passes and the heads they evaluate as pure functions (hpjax.hpnet.perturbation)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hpnet_fixtures import BS, K, float_images

from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet import model as model_lib
from hpjax.hpnet import perturbation


def test_heads_equal_model_apply(hp, src):
  model, v, apply = hp
  x = float_images(src)
  mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, 8), jnp.float32)
  f = apply(v, x)[1]["features"]
  heads = jax.jit(model_lib.logits_from_features)
  for n, beta in ((1.0, 0.0), (2.5, 0.3), (0.5, 0.1)):
    want = apply(v, x, n=n, beta=beta, channel_mask=mask)[0]
    got = heads(v["params"], f * mask, n, beta)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # A vector of β gives one logit set per β (β is linear once h is pooled).
  many = jax.jit(lambda p, f: heads_lib.logits_from_masks(
      p["heads"], heads_lib.head_masks(p["heads"], f), f, 3.0, jnp.array([0.0, 0.25])))(
          v["params"], f)
  np.testing.assert_allclose(many[1], apply(v, x, n=3.0, beta=0.25)[0], rtol=1e-4, atol=1e-5)


def test_noise_is_keyed_by_image_not_batch():
  fields = jax.jit(perturbation.noise_fields, static_argnums=2)
  a = fields(3, jnp.arange(8), (4, 4, 3))
  b = fields(3, jnp.array([5, 2]), (4, 4, 3))
  np.testing.assert_array_equal(b, a[jnp.array([5, 2])])
  assert abs(float(a.std()) - 1.0) < 0.2 and not np.allclose(a[0], a[1])


def test_logit_terms_sum_to_the_logits(hp, base, src):
  for model, v, apply in (hp, base):
    f = apply(v, float_images(src, 3))[1]["features"]
    terms, bias = jax.jit(model_lib.logit_terms)(v["params"], f)
    assert terms.shape == (3, K, 8)
    np.testing.assert_allclose(terms.sum(-1) + bias, model_lib.logits_from_features(v["params"], f),
                               rtol=1e-5, atol=1e-5)


def test_any_number_of_masks_reuses_one_compilation(base):
  model, v, _ = base
  src = SyntheticFaces("test", image_size=16, num_examples=8)
  before = perturbation._perturbation_sums._cache_size()
  for m in (17, 40):  # both padded to whole groups of 16 masks
    masks = np.ones((m, 8), np.float32)
    masks[np.arange(m), np.arange(m) % 8] = 0.0
    out = perturbation.evaluate_perturbations(model.apply, v, src, channel_masks=masks,
                                              batch_size=BS, limit=8, mask_chunk=2)
    assert out["accuracy"].shape == (1, m, 1, 1, K)
  assert perturbation._perturbation_sums._cache_size() - before <= 1
