"""Fig. 8: the (n, β) × σ grid and the validation-selected transform (analyses.robustness)."""
from __future__ import annotations

import numpy as np
import pytest
from hpnet_fixtures import BS, K

from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import experiment
from hpjax.hpnet.analyses import robustness


def test_robustness_identity_cell_equals_evaluate_accuracy(hp, src):
  model, v, _ = hp
  # The default Fig. 8 grid (shared compilation with the report test).
  grid = robustness.robustness_grid(model.apply, v, src, batch_size=BS, limit=40)
  want = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40)
  np.testing.assert_array_equal(grid["accuracy"][0, 0, 0], want)
  # Other cells are separately computed transforms, checked against model.apply.
  want_t = experiment.evaluate_accuracy(model.apply, v, src, batch_size=BS, limit=40, n=2.0,
                                        beta=0.5)
  np.testing.assert_allclose(grid["accuracy"][0, 1, 3], want_t, atol=1 / 40 + 1e-9)
  assert grid["accuracy"].shape == (11, 4, 4, K)
  assert not np.allclose(grid["mean_logit"][0], grid["mean_logit"][-1])  # the noise does something
  assert len(grid["best"]) == 11 and grid["best"][0]["sigma"] == 0.0


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
  r = robustness.validation_selection(val, test)
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
    robustness.validation_selection({**val, "sigmas": [0.0, 0.1, 0.3]}, test)


def test_validation_selection_on_real_grids(hp, src):
  model, v, _ = hp
  val_src = SyntheticFaces("val", image_size=16, num_examples=40, seed=0)
  kw = dict(ns=(1.0, 3.0), betas=(0.0, 0.5), sigmas=(0.0, 0.3), batch_size=BS, limit=40)
  val = robustness.robustness_grid(model.apply, v, val_src, **kw)
  test = robustness.robustness_grid(model.apply, v, src, **kw)
  assert not np.array_equal(val["mean_accuracy"], test["mean_accuracy"])  # other images
  r = robustness.validation_selection(val, test)
  for s, b in enumerate(r["best_val_selected"]):
    i, j = np.unravel_index(np.argmax(val["mean_accuracy"][s]), (2, 2))
    assert (b["n"], b["beta"]) == (kw["ns"][i], kw["betas"][j])
    assert b["test_accuracy"] == pytest.approx(test["mean_accuracy"][s, i, j])
    assert b["oracle_test_gain"] == pytest.approx(test["best"][s]["gain_over_identity"])
