"""Semi-supervised loop (paper B, docs/papers.md §B4): split, selection counts, pseudo-label
precision, resume equality, and both entry points on digits."""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from hpjax.image_score import semisupervised as semi
from hpjax.image_score.config import SEMI_PRESETS

SMOKE = SEMI_PRESETS["smoke"]


# ----------------------------------------------------------------------------
# Pure pieces


def test_split_is_deterministic_disjoint_and_proportional():
  lab, add = semi.split_indices(100, 0.6, seed=3)
  lab2, add2 = semi.split_indices(100, 0.6, seed=3)
  np.testing.assert_array_equal(lab, lab2)
  np.testing.assert_array_equal(add, add2)
  assert lab.size == 60 and add.size == 40
  assert not set(lab) & set(add)
  np.testing.assert_array_equal(np.sort(np.concatenate([lab, add])), np.arange(100))
  other, _ = semi.split_indices(100, 0.6, seed=4)
  assert not np.array_equal(lab, other)
  # Subsampled: 30 of 100 rows kept, 18 / 12, still disjoint and in range.
  lab, add = semi.split_indices(100, 0.6, seed=3, num_train=30)
  assert (lab.size, add.size) == (18, 12) and not set(lab) & set(add)
  assert max(lab.max(), add.max()) < 100


def test_pseudo_label_precision_on_a_constructed_case():
  pseudo = np.array([0, 0, 1, 1, 1, 2])
  true = np.array([0, 1, 1, 1, 2, 2])
  overall, per_class, counts = semi.pseudo_label_precision(pseudo, true, 4)
  assert overall == pytest.approx(4 / 6)
  np.testing.assert_allclose(per_class[:3], [0.5, 2 / 3, 1.0])
  assert np.isnan(per_class[3])
  np.testing.assert_array_equal(counts, [2, 3, 1, 0])
  overall, _, counts = semi.pseudo_label_precision(np.array([], int), np.array([], int), 2)
  assert np.isnan(overall) and counts.tolist() == [0, 0]


def test_select_methods_counts_and_per_class_mode():
  pred = np.array([0] * 10 + [1] * 5 + [2] * 4)
  rng = np.random.default_rng(0)
  analysis = {"add_pred": pred, "add_conf": rng.random(19),
              "add_scores": -rng.random((3, 19))}
  cfg = dataclasses.replace(SMOKE, fractions=(0.5,), method="image_score")
  for method in ("image_score", "softmax", "random"):
    mask = semi.select(dataclasses.replace(cfg, method=method), analysis, 3, epoch=1)
    np.testing.assert_array_equal(np.bincount(pred[mask], minlength=3), [5, 2, 2])
  # Image score picks by the configured similarity's scores: class 0's top 5 by recall.
  mask = semi.select(cfg, analysis, 3, epoch=1)
  top = np.argsort(-analysis["add_scores"][0][:10], kind="stable")[:5]
  np.testing.assert_array_equal(np.flatnonzero(mask[:10]), np.sort(top))
  per = dataclasses.replace(cfg, mode="per_class", target_class=1)
  mask = semi.select(per, analysis, 3, epoch=1)
  np.testing.assert_array_equal(np.bincount(pred[mask], minlength=3), [0, 2, 0])
  assert not semi.select(dataclasses.replace(cfg, method="baseline"), analysis, 3, 1).any()


# ----------------------------------------------------------------------------
# The loop on digits (smoke preset), in-process so compiled functions are shared


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("semi")
  cfg = dataclasses.replace(SMOKE, pretrain_cache=str(root / "cache"))
  whole = str(root / "whole")
  semi.train(cfg, whole, progress=False)
  part = str(root / "part")
  semi.train(cfg, part, progress=False, max_epochs=1)  # "interrupted" after epoch 1
  interrupted = sorted(os.listdir(part))
  semi.train(cfg, part, progress=False)                 # the same command again
  return cfg, whole, part, interrupted


def test_loop_selection_counts_and_precision(smoke_runs):
  cfg, whole, _, _ = smoke_runs
  data = semi.load_data(cfg)
  alpha = cfg.fractions[0]
  records = [json.loads(l) for l in open(os.path.join(whole, "metrics.jsonl"))]
  assert [r["epoch"] for r in records] == [0, 1, 2] and all(r["kind"] == "semi" for r in records)
  prev = os.path.join(semi.pretrain_dir(cfg, whole), "analysis.npz")
  for epoch in (1, 2):
    with np.load(prev) as a:
      pred = a["add_pred"]
    with np.load(os.path.join(semi.phase_dir(whole, epoch), "selection.npz")) as s:
      index, pseudo = s["index"], s["pseudo"]
    expected = np.floor(alpha * np.bincount(pred, minlength=10) + 1e-9).astype(int)
    np.testing.assert_array_equal(np.bincount(pseudo, minlength=10), expected)
    np.testing.assert_array_equal(pseudo, pred[index])   # labelled with the predictions
    rec = records[epoch]
    assert rec["num_selected_per_class"] == expected.tolist()
    true = data.train_labels[data.additional[index]]
    assert rec["precision"] == pytest.approx(np.mean(true == pseudo))
    prev = os.path.join(semi.phase_dir(whole, epoch), "analysis.npz")
  with np.load(os.path.join(whole, "scores.npz")) as z:
    assert z["final_test_scores"].shape == (3, len(data.test_labels))
    assert np.all(z["final_test_scores"][~np.isnan(z["final_test_scores"])] <= 0)
    assert z["pretrain_train_scores"].shape == (3, cfg.num_train_scored)


def test_resumed_run_equals_uninterrupted(smoke_runs):
  cfg, whole, part, interrupted = smoke_runs
  assert "epoch_001" in interrupted and "epoch_002" not in interrupted
  _, a = semi.load_final_state(whole)
  _, b = semi.load_final_state(part)
  assert int(a.step) == int(b.step) > 0
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=0)
  ra = open(os.path.join(whole, "metrics.jsonl")).read()
  rb = open(os.path.join(part, "metrics.jsonl")).read()
  strip = lambda text: [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                        for l in text.splitlines()]
  assert strip(ra) == strip(rb)


def test_entry_points_smoke(smoke_runs, tmp_path, capsys):
  from evaluate import semisupervised as evaluate_entry
  from train import semisupervised as train_entry
  cfg, whole, _, _ = smoke_runs
  cache = ["--set", f"pretrain_cache={cfg.pretrain_cache}"]
  w = str(tmp_path / "base")
  assert train_entry.main(["--config", "smoke", "--method", "baseline", "--seed", "0",
                           "--workdir", w, "--no-progress", "--set", "retrain_epochs=1"]
                          + cache) == 0
  assert "test accuracy" in capsys.readouterr().out
  # A re-run with a different config is refused with one error line.
  assert train_entry.main(["--config", "smoke", "--method", "softmax", "--workdir", w,
                           "--no-progress"] + cache) == 2
  assert capsys.readouterr().err.startswith(f"error: workdir {w} ")
  assert train_entry.main(["--config", "nope", "--workdir", w]) == 2
  out = str(tmp_path / "eval")
  assert evaluate_entry.main(["--workdirs", whole, w, "--out", out,
                              "--num-resamples", "200"]) == 0
  result = json.load(open(os.path.join(out, "semisupervised.json")))
  row0 = result["tables"]["all_epoch"]["rows"][0]
  assert row0["baseline"] is not None and row0["image_score"] is not None
  assert os.path.exists(os.path.join(out, "fig5_class0_all.png"))
  assert os.path.exists(os.path.join(out, "fig_scores_final_recall.png"))
  assert evaluate_entry.main(["--workdirs", str(tmp_path / "missing"), "--out", out]) == 2
