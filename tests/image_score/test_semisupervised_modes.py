"""The dataset-level mode (docs/papers.md §B5), the experiment set, and no label leaks: the
hidden labels of the additional set reach neither references, scores nor selections."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from hpjax.core.errors import ConfigError
from hpjax.image_score import semisupervised as semi
from hpjax.image_score import suite
from hpjax.image_score.config import SEMI_PRESETS, SemiConfig

SMOKE = SEMI_PRESETS["smoke"]


def test_dataset_mode_selects_the_top_share_of_the_whole_set():
  rng = np.random.default_rng(0)
  pred = np.array([0] * 12 + [1] * 4 + [2] * 4)
  analysis = {"add_pred": pred, "add_conf": rng.random(20), "add_scores": -rng.random((3, 20)),
              "add_scores_dataset": -rng.random((3, 20))}
  cfg = dataclasses.replace(SMOKE, mode="dataset", fractions=(0.25,), method="image_score")
  mask = semi.select(cfg, analysis, 3, epoch=1)
  # The 5 best class-agnostic recall scores, whatever their predicted classes.
  np.testing.assert_array_equal(np.flatnonzero(mask),
                                np.sort(np.argsort(-analysis["add_scores_dataset"][0])[:5]))
  jac = semi.select(dataclasses.replace(cfg, similarity="jaccard"), analysis, 3, epoch=1)
  np.testing.assert_array_equal(np.flatnonzero(jac),
                                np.sort(np.argsort(-analysis["add_scores_dataset"][1])[:5]))
  sm = semi.select(dataclasses.replace(cfg, method="softmax"), analysis, 3, epoch=1)
  np.testing.assert_array_equal(np.flatnonzero(sm), np.sort(np.argsort(-analysis["add_conf"])[:5]))
  rnd = semi.select(dataclasses.replace(cfg, method="random"), analysis, 3, epoch=1)
  assert rnd.sum() == 5
  assert not semi.select(dataclasses.replace(cfg, method="baseline"), analysis, 3, 1).any()
  with pytest.raises(ConfigError, match="mode dataset selects one share"):
    SemiConfig(mode="dataset", fractions=(0.3, 0.2))


def test_tables_suite_has_every_comparison_with_shared_seeds():
  runs = suite.suite_runs("tables", SEMI_PRESETS["fashion_mnist_tables"], 10)
  names = [r.name for r in runs]
  assert len(names) == len(set(names)) == 5 * 5 + 10 * 2 * 3
  by = {(r.config.mode, r.config.method, r.config.target_class if r.config.mode == "per_class"
         else None, r.config.seed) for r in runs}
  for seed in range(5):
    for mode, method in (("all", "baseline"), ("all", "image_score"), ("all", "softmax"),
                         ("dataset", "image_score"), ("dataset", "softmax")):
      assert (mode, method, None, seed) in by
  for seed in range(3):
    for k in range(10):
      assert {("per_class", m, k, seed) for m in ("image_score", "softmax")} <= by
  # Every run of one seed shares the pre-training.
  keys = {r.config.seed: set() for r in runs}
  for r in runs:
    keys[r.config.seed].add(semi.pretrain_key(r.config))
  assert all(len(k) == 1 for k in keys.values())
  with pytest.raises(ConfigError, match="--suite must be one of"):
    suite.suite_runs("nope", SMOKE, 10)


# ----------------------------------------------------------------------------
# The loop, in-process (compilations shared): dataset mode, and label leaks


def _run(root, name, cfg, *, relabel=None, monkeypatch):
  """One run whose data's labels are changed by ``relabel(data) -> labels`` first."""
  load = semi.load_data
  if relabel is not None:
    monkeypatch.setattr(semi, "load_data", lambda c: (lambda d: dataclasses.replace(
        d, train_labels=relabel(d)))(load(c)))
  w = str(root / name)
  semi.train(cfg, w, progress=False)
  monkeypatch.setattr(semi, "load_data", load)
  out = {}
  for epoch in range(1, cfg.retrain_epochs + 1):
    with np.load(os.path.join(semi.phase_dir(w, epoch), "selection.npz")) as s:
      out[f"sel{epoch}"] = s["index"], s["pseudo"]
    with np.load(os.path.join(semi.phase_dir(w, epoch), "analysis.npz")) as a:
      out[f"an{epoch}"] = {k: a[k] for k in ("add_pred", "add_scores", "test_scores")}
  with np.load(os.path.join(semi.pretrain_dir(cfg, w), "analysis.npz")) as a:
    out["an0"] = {k: a[k] for k in ("add_pred", "add_scores", "test_scores")}
  return w, out


def _same(a, b):
  for k in a:
    if isinstance(a[k], dict):
      for kk in a[k]:
        np.testing.assert_array_equal(a[k][kk], b[k][kk], err_msg=f"{k}/{kk}")
    else:
      for x, y in zip(a[k], b[k]):
        np.testing.assert_array_equal(x, y, err_msg=k)


def test_dataset_mode_run_selects_once_from_the_class_agnostic_score(tmp_path, monkeypatch):
  cfg = dataclasses.replace(SMOKE, method="image_score", mode="dataset", retrain_epochs=2)
  w, out = _run(tmp_path, "ds", cfg, monkeypatch=monkeypatch)
  (i1, p1), (i2, p2) = out["sel1"], out["sel2"]
  np.testing.assert_array_equal(i1, i2)   # selected once, after the pre-training
  np.testing.assert_array_equal(p1, p2)
  data = semi.load_data(cfg)
  assert i1.size == int(np.floor(cfg.fractions[0] * data.additional.size))
  # The selection is the top share by the class-agnostic recall score of the pre-trained model.
  _, template = semi.load_final_state(w)
  state = semi.finished_phase_state(semi.pretrain_dir(cfg, w), template,
                                    semi.distributed.replicated(semi.distributed.make_mesh()))
  scores = semi.dataset_level_scores(state, data, cfg)[0]
  assert np.all(np.isfinite(scores))
  np.testing.assert_array_equal(i1, np.sort(np.argsort(-scores, kind="stable")[:i1.size]))
  np.testing.assert_array_equal(p1, out["an0"]["add_pred"][i1])


def test_hidden_labels_of_the_additional_set_do_not_leak(tmp_path, monkeypatch):
  """Permuting the additional set's true labels changes nothing the loop decides;
  changing the labelled set's labels does."""
  cfg = dataclasses.replace(SMOKE, method="image_score", retrain_epochs=1)
  _, plain = _run(tmp_path, "plain", cfg, monkeypatch=monkeypatch)

  def permute_additional(d):
    labels = d.train_labels.copy()
    rows = d.additional
    labels[rows] = np.random.default_rng(1).permutation(labels[rows])
    labels[rows[:5]] = (labels[rows[:5]] + 1) % d.num_classes  # not only a permutation
    assert np.any(labels != d.train_labels)
    return labels

  _, hidden = _run(tmp_path, "hidden", cfg, relabel=permute_additional, monkeypatch=monkeypatch)
  _same(plain, hidden)

  def permute_labelled(d):
    labels = d.train_labels.copy()
    labels[d.labelled] = np.random.default_rng(1).permutation(labels[d.labelled])
    return labels

  _, changed = _run(tmp_path, "labelled", cfg, relabel=permute_labelled, monkeypatch=monkeypatch)
  with pytest.raises(AssertionError):
    _same(plain, changed)
  assert not np.array_equal(plain["an0"]["add_scores"], changed["an0"]["add_scores"])


def test_taps_choose_what_the_loop_scores():
  import optax

  from hpjax.core import configs, training
  cfg = configs.override(SMOKE, ["taps=tap01_conv,tap02_conv"])
  assert cfg.taps == ("tap01_conv", "tap02_conv")
  assert configs.override(cfg, ["taps=none"]).taps is None
  assert configs.from_dict(SemiConfig, {"taps": ["tap02_conv"]}).taps == ("tap02_conv",)
  data = semi.load_data(cfg)
  model = semi.build_model(cfg, data.num_classes)
  state = training.create_train_state(model, optax.adam(1e-3), data.train_images.shape[1:], 0)
  src = data.train_source(data.labelled[:64])
  both = semi.fit_labelled_reference(state.apply_fn, state.variables, src, 10, 32,
                                     taps=cfg.taps)
  assert both.names == ("tap01_conv", "tap02_conv")
  every = semi.fit_labelled_reference(state.apply_fn, state.variables, src, 10, 32)
  assert len(every.names) > 2 and set(both.names) < set(every.names)
  s_both = semi.predict_and_score(state.apply_fn, state.variables, src, 32, both,
                                  taps=cfg.taps)["scores"]
  s_every = semi.predict_and_score(state.apply_fn, state.variables, src, 32, every)["scores"]
  assert s_both.shape == s_every.shape and not np.allclose(s_both, s_every)
  with pytest.raises(ConfigError, match="config field taps: the model has no tap nope; its "
                                        "taps are tap01_conv, "):
    semi.fit_labelled_reference(state.apply_fn, state.variables, src, 10, 32, taps=("nope",))
  with pytest.raises(ConfigError, match="config field taps must name at least one tap"):
    SemiConfig(taps=())
