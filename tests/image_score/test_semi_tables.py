"""Tables 1–2 of paper B (docs/papers.md §B5) on synthetic run directories with known numbers:
the exact sign-flip p and its floor, no bootstrap p from fewer than 5 values, per-epoch
samples labelled not independent, paired columns on the shared seeds, the per-class and the
dataset modes, and the report of ``results.evaluate``."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from semi_fake_runs import accuracy_run
from hpjax.core import stats
from hpjax.core.errors import ConfigError
from hpjax.image_score import config as semi_config
from hpjax.image_score import results, tables
from hpjax.image_score.config import SEMI_PRESETS
from hpjax.image_score.runs import load_runs

SMOKE = SEMI_PRESETS["smoke"]
EPOCH_PHRASE = ("per-epoch samples of one run are serially correlated, not independent; "
                "p-values are optimistic")


def _fake_run(root, name, method, seed, accs, mode="all", target=0):
  """A workdir with config.json and 'semi' records; accs [epochs + 1, C] in [0, 1]."""
  w = os.path.join(root, name)
  os.makedirs(w)
  cfg = dataclasses.replace(SMOKE, method=method, seed=seed, mode=mode, target_class=target)
  with open(os.path.join(w, "config.json"), "w") as f:
    json.dump(dataclasses.asdict(cfg), f)
  with open(os.path.join(w, "metrics.jsonl"), "w") as f:
    for e, a in enumerate(accs):
      f.write(json.dumps({"step": e, "kind": "semi", "epoch": e, "test_accuracy": float(a.mean()),
                          "test_accuracy_per_class": a.tolist(),
                          "seconds": {"train": 1.0}}) + "\n")
  return w


def test_tables_on_synthetic_records_find_a_known_difference(tmp_path):
  rng = np.random.default_rng(0)
  dirs, epochs = [], {}
  for seed in range(6):
    base = 0.80 + 0.002 * rng.standard_normal((7, 2))
    is_ = base.copy()
    is_[1:, 0] += 0.05                    # class 0 gains 5 points in every re-training epoch
    sm = base + 0.002 * rng.standard_normal((7, 2))
    epochs[seed] = (is_[1:, 0], base[1:, 0])
    dirs += [_fake_run(tmp_path, f"b{seed}", "baseline", seed, base),
             _fake_run(tmp_path, f"i{seed}", "image_score", seed, is_),
             _fake_run(tmp_path, f"s{seed}", "softmax", seed, sm)]
  runs = load_runs(dirs)
  for sample in ("seed", "seed_mean", "epoch"):
    t = tables.comparison_table(runs, sample=sample, num_resamples=2000)
    rows = {r["class"]: r for r in t["rows"]}
    assert rows[0]["diff_image_score"] == pytest.approx(5.0, abs=0.01)
    assert rows[0]["p_image_score"] < 0.05
    assert abs(rows[1]["diff_image_score"]) < 1e-9 and rows[1]["p_image_score"] > 0.3
    assert rows[0]["p_softmax"] > 0.05
    assert rows[0]["n_image_score"] == 6  # 6 seeds, or the 6 re-training epochs of seed 0
    assert t["seed"] == (0 if sample == "epoch" else None)
    assert rows["all"]["diff_image_score"] == pytest.approx(2.5, abs=0.01)
    if sample == "epoch":  # the variance-corrected unpaired bootstrap is the p
      assert t["test"] == "bootstrap" and "p_floor_image_score" not in rows[0]
      assert rows[0]["p_image_score"] == stats.bootstrap_pvalue(
          *epochs[0], num_resamples=2000, seed=0, alternative="greater",
          unbiased_variance=True)
    else:  # the exact sign-flip test is the p; 6 positive pairs reach its floor 2^-6
      assert t["test"] == "sign_flip"
      assert rows[0]["p_image_score"] == rows[0]["p_floor_image_score"] == 1 / 64
      assert rows[1]["p_image_score"] == 1.0  # all differences 0
      assert rows[0]["p_bootstrap_image_score"] < 0.05  # n = 6 >= 5: printed
  md = tables.markdown_comparison(t)
  assert "per-epoch accuracies" in md and "| 0 |" in md


def _shared_seed_runs(tmp_path):
  """Class 0 correct counts (of 20) after epochs 0..2; classes 1, 2 stay at 10.

  baseline seeds 0-3: 10+s, 12+s; image_score seeds 0-2: 13+s, 15+s (+15 points);
  softmax seeds 1, 2 (+5 and -5 points) and seed 3, which finished epoch 1 only (+10).
  """
  def run(name, method, seed, class0):
    return accuracy_run(tmp_path, name, method=method, seed=seed,
                        correct=[[10, 10, 10]] + [[k, 10, 10] for k in class0])

  dirs = [run(f"b{s}", "baseline", s, [10 + s, 12 + s]) for s in range(4)]
  dirs += [run(f"i{s}", "image_score", s, [13 + s, 15 + s]) for s in range(3)]
  dirs += [run("s1", "softmax", 1, [12, 14]), run("s2", "softmax", 2, [11, 13]),
           run("s3", "softmax", 3, [15])]
  return load_runs(dirs)


def test_paired_columns_use_only_the_shared_seeds(tmp_path):
  runs = _shared_seed_runs(tmp_path)
  t = tables.comparison_table(runs, sample="seed_mean", num_resamples=500)
  assert t["paired"] and t["independent"] and t["seeds"] == [0, 1, 2, 3]
  r = t["rows"][0]
  # image score on seeds 0-2 only: 70, 75, 80 vs the baseline's 55, 60, 65 (not seed 3's 70).
  assert r["seeds_image_score"] == [0, 1, 2] and r["n_image_score"] == 3
  assert r["image_score"] == pytest.approx(75.0)
  assert r["baseline_image_score"] == pytest.approx(60.0)
  assert r["diff_image_score"] == r["image_score"] - r["baseline_image_score"]
  assert r["diff_image_score"] == pytest.approx(15.0)
  assert r["p_image_score"] == 0.125 and r["p_floor_image_score"] == 0.125
  assert r["p_bootstrap_image_score"] is None  # n = 3 < 5
  # softmax on seeds 1-3; seed 3 compared with the baseline's epoch 1 only (its last):
  # 65, 60, 75 vs 60, 65, 65; differences +5, -5, +10 -> sign-flip p = 3/8.
  assert r["seeds_softmax"] == [1, 2, 3]
  assert r["softmax"] == pytest.approx(200 / 3) and r["baseline_softmax"] == pytest.approx(190 / 3)
  assert r["diff_softmax"] == r["softmax"] - r["baseline_softmax"]
  assert r["p_softmax"] == 0.375 and r["p_floor_softmax"] == 0.125
  # The row's baseline: the seeds any method used (0-3), each over all its epochs.
  assert r["seeds_baseline"] == [0, 1, 2, 3] and r["baseline"] == pytest.approx(62.5)
  # image score − softmax over the seeds both ran (1, 2): 75 − 65 and 80 − 60.
  assert r["seeds_image_score_softmax"] == [1, 2]
  assert r["diff_image_score_softmax"] == pytest.approx(15.0)
  assert t["rows"][1]["diff_image_score"] == 0.0 and t["rows"][1]["p_image_score"] == 1.0

  final = tables.comparison_table(runs, sample="seed", num_resamples=500)["rows"][0]
  # Final accuracy: softmax seed 3 (epoch 1, 75) against the baseline's epoch 1 (65), not its
  # final 75; seeds 1, 2 at epoch 2: 70, 65 vs 65, 70.
  assert final["baseline_softmax"] == pytest.approx((65 + 70 + 65) / 3)
  assert final["softmax"] == pytest.approx((70 + 65 + 75) / 3)
  assert final["diff_image_score"] == pytest.approx(15.0)

  md = tables.markdown_comparison(t)
  lines = md.splitlines()
  # Different seed sets: each method gets its own baseline and seeds columns.
  assert lines[2] == ("| class | baseline | image_score | diff | p | p floor | p boot | seeds "
                      "| baseline | softmax | diff | p | p floor | p boot | seeds | is − sm |")
  assert lines[4] == ("| 0 | 60.00 | 75.00 | 15.00 | 0.1250 | 0.1250 | n too small (n=3) | 0,1,2 "
                      "| 63.33 | 66.67 | 3.33 | 0.3750 | 0.1250 | n too small (n=3) | 1,2,3 "
                      "| 15.00 |")


def test_one_baseline_column_when_every_method_uses_its_seeds(tmp_path):
  dirs = [accuracy_run(tmp_path, f"{m}{s}", method=m, seed=s,
                       correct=[[10, 10, 10], [10 + s + k, 10, 10], [10 + s + k, 10, 10]])
          for s in range(3) for m, k in (("baseline", 0), ("image_score", 2), ("softmax", 1))]
  t = tables.comparison_table(load_runs(dirs), sample="seed_mean", num_resamples=500)
  md = tables.markdown_comparison(t)
  assert "Seeds [0, 1, 2] (n = 3 pairs) in every column." in md
  lines = md.splitlines()
  assert lines[2] == ("| class | baseline | image_score | diff | p | p floor | p boot | softmax "
                      "| diff | p | p floor | p boot | is − sm |")
  assert lines[4] == ("| 0 | 55.00 | 65.00 | 10.00 | 0.1250 | 0.1250 | n too small (n=3) "
                      "| 60.00 | 5.00 | 0.1250 | 0.1250 | n too small (n=3) | 5.00 |")


def test_epoch_samples_are_labelled_not_independent(tmp_path):
  runs = _shared_seed_runs(tmp_path)
  t = tables.comparison_table(runs, sample="epoch", num_resamples=500)
  assert t["independent"] is False and t["paired"] is False and t["seed"] == 0
  assert EPOCH_PHRASE in t["note"] and "(n-1)/n" in t["note"]
  r = t["rows"][0]
  # Seed 0, epochs 1-2: image score 65, 75 vs baseline 50, 60.
  assert r["image_score"] == pytest.approx(70.0) and r["baseline"] == pytest.approx(55.0)
  assert r["diff_image_score"] == r["image_score"] - r["baseline"]
  assert r["n_image_score"] == 2 and r["n_baseline"] == 2
  assert r["p_image_score"] is None  # 2 epochs: no bootstrap p
  assert "softmax" not in r          # softmax did not run seed 0
  md = tables.markdown_comparison(t)
  assert EPOCH_PHRASE in md and "NOT INDEPENDENT" in md
  assert "| 0 | 55.00 | 70.00 | 15.00 | n too small (n=2) |" in md


def test_per_class_mode_compares_the_boosted_class(tmp_path):
  def run(name, method, seed, correct, **kw):
    return accuracy_run(tmp_path, name, method=method, seed=seed,
                        correct=[[10, 10, 10], correct, correct], **kw)

  dirs = [run(f"b{s}", "baseline", s, [10 + s, 12, 14]) for s in range(2)]
  # Boosted for class 0: +20 points on class 0, and classes 1, 2 collapse (not in row 1).
  dirs += [run(f"i0_{s}", "image_score", s, [14 + s, 4, 4], mode="per_class", target=0)
           for s in range(2)]
  # Boosted for class 1, seeds 0-2 (seed 2 has no baseline): +20 points on class 1.
  dirs += [run(f"i1_{s}", "image_score", s, [2, 16, 4], mode="per_class", target=1)
           for s in range(3)]
  dirs += [run("s0_0", "softmax", 0, [12, 0, 0], mode="per_class", target=0)]
  dirs += [run("all0", "image_score", 0, [20, 20, 20])]  # mode "all": not in this table
  t = tables.comparison_table(load_runs(dirs), mode="per_class", sample="seed_mean",
                              num_resamples=500)
  assert [r["class"] for r in t["rows"]] == [0, 1]  # no run was boosted for class 2
  r0, r1 = t["rows"]
  assert r0["seeds_image_score"] == [0, 1]
  assert r0["image_score"] == pytest.approx(72.5)
  assert r0["baseline_image_score"] == pytest.approx(52.5)
  assert r0["diff_image_score"] == pytest.approx(20.0)
  assert r0["p_image_score"] == 0.25 and r0["p_floor_image_score"] == 0.25
  assert r0["seeds_softmax"] == [0] and r0["softmax"] == pytest.approx(60.0)
  assert r0["baseline_softmax"] == pytest.approx(50.0) and r0["p_softmax"] == 0.5
  assert r0["seeds_image_score_softmax"] == [0]
  assert r0["diff_image_score_softmax"] == pytest.approx(10.0)
  assert r1["seeds_image_score"] == [0, 1] and r1["n_image_score"] == 2
  assert r1["image_score"] == pytest.approx(80.0)
  assert r1["baseline_image_score"] == pytest.approx(60.0)
  assert "softmax" not in r1


@pytest.fixture
def dataset_mode(monkeypatch):
  """Lets SemiConfig read mode "dataset" where config.py does not accept it (yet)."""
  if "dataset" not in semi_config.MODES:
    monkeypatch.setattr(semi_config, "MODES", semi_config.MODES + ("dataset",))


def _scores(num_classes=3, n=30):
  """A scores.npz of Figs. 2–4: the final model's scores lower than the pre-trained one's."""
  rng = np.random.default_rng(0)
  out = {"similarities": np.asarray(("recall", "jaccard", "dice"))}
  for stage, scale in (("pretrain", 1.0), ("final", 2.0)):
    for split in ("train", "test"):
      labels = np.arange(n) % num_classes
      out.update({f"{stage}_{split}_labels": labels,
                  f"{stage}_{split}_pred": np.where(np.arange(n) % 3 == 0, 0, labels),
                  f"{stage}_{split}_scores": -scale * rng.random((3, n)),
                  f"{stage}_{split}_conf": rng.random(n)})
  return out


def _dataset_runs(tmp_path):
  def run(name, method, seed, correct, mode="all", **kw):
    return accuracy_run(tmp_path, name, method=method, seed=seed, mode=mode,
                        correct=[[10, 10, 10], correct, correct], **kw)

  dirs = []
  for s in range(3):
    dirs += [run(f"b{s}", "baseline", s, [10 + s, 10, 10], scores=_scores() if s == 0 else None),
             run(f"di{s}", "image_score", s, [12 + s, 10, 10], mode="dataset"),  # +10 on class 0
             run(f"ds{s}", "softmax", s, [10 + s, 12, 10], mode="dataset"),      # +10 on class 1
             run(f"ai{s}", "image_score", s, [10 + s, 10, 14])]                  # mode all
  return dirs


def test_dataset_mode_compares_like_mode_all(tmp_path, dataset_mode):
  runs = load_runs(_dataset_runs(tmp_path))
  t = tables.comparison_table(runs, mode="dataset", sample="seed_mean", num_resamples=500)
  assert t["mode"] == "dataset"
  rows = {r["class"]: r for r in t["rows"]}
  assert list(rows) == [0, 1, 2, "all"]
  assert rows[0]["diff_image_score"] == pytest.approx(10.0) and rows[0]["diff_softmax"] == 0.0
  assert rows[1]["diff_softmax"] == pytest.approx(10.0) and rows[1]["diff_image_score"] == 0.0
  assert rows[2]["diff_image_score"] == 0.0  # the mode="all" run's +20 is not here
  assert rows["all"]["diff_image_score"] == pytest.approx(10 / 3)
  assert rows[0]["seeds_image_score"] == [0, 1, 2] and rows[0]["p_image_score"] == 0.125
  every = {r["class"]: r for r in tables.comparison_table(runs, mode="all", sample="seed_mean",
                                                          num_resamples=500)["rows"]}
  assert every[2]["diff_image_score"] == pytest.approx(20.0) and "softmax" not in every[2]
  assert "Mode: dataset." in tables.markdown_comparison(t)


def test_evaluate_reports_dataset_tables_and_no_small_n_bootstrap(tmp_path, dataset_mode):
  out = str(tmp_path / "eval")
  result = results.evaluate(_dataset_runs(tmp_path / "runs"), out, num_resamples=200)
  assert sorted(result["tables"]) == sorted(f"{m}_{s}" for m in ("all", "dataset")
                                            for s in tables.SAMPLES)
  d = result["tables"]["dataset_seed_mean"]["rows"][0]
  assert d["diff_image_score"] == pytest.approx(10.0) and d["p_bootstrap_image_score"] is None
  assert result["tables"]["dataset_epoch"]["independent"] is False
  md = open(os.path.join(out, "semisupervised.md")).read()
  assert md == results.markdown_report(json.load(open(os.path.join(out, "semisupervised.json"))))
  assert "## Table (dataset_seed_mean): per seed (mean over re-training epochs)" in md
  assert "## Table (dataset_epoch): per-epoch samples of seed 0, NOT independent" in md
  assert EPOCH_PHRASE in md
  assert "n too small (n=3)" in md and "n too small (n=2)" in md
  assert os.path.exists(os.path.join(out, "fig5_class0_dataset.png"))
  # Figs. 2–4 from the baseline's scores.npz: one set of edges for both stages.
  fig = result["figures"]["class_0"]
  assert fig["edges"] == fig["pretrain"]["recall"]["edges"] == fig["final"]["dice"]["edges"]
  assert os.path.exists(os.path.join(out, "fig_scores_final_recall.png"))


def test_bad_sample_and_mode(tmp_path):
  runs = _shared_seed_runs(tmp_path)
  with pytest.raises(Exception, match="sample must be one of"):
    tables.comparison_table(runs, sample="run")
  with pytest.raises(Exception, match="mode must be one of"):
    tables.comparison_table(runs, mode="detection")


def test_summary_reproduces_the_tables_without_the_run_directories(tmp_path, dataset_mode):
  import shutil
  out = str(tmp_path / "eval")
  root = tmp_path / "runs"
  full = results.evaluate(_dataset_runs(root), out, num_resamples=200)
  summary = os.path.join(out, "runs_summary.json")
  saved = json.load(open(summary))
  assert saved["kind"] == "semisupervised_runs" and len(saved["runs"]) == full["num_runs"]
  assert not any(os.path.isabs(r["workdir"]) for r in saved["runs"])
  shutil.rmtree(root)  # the tables come from the summary alone
  again = results.evaluate(None, str(tmp_path / "again"), summary=summary, num_resamples=200)
  assert again["tables"] == full["tables"]
  assert again["precision"] == full["precision"]
  assert again["assembly"]["image_score"]["rows"] == []
  assert {(r["mode"], r["method"]) for r in full["precision"]["rows"]} == {
      (r["config"]["mode"], r["config"]["method"]) for r in saved["runs"]
      if r["config"]["method"] != "baseline"}
  bad = tmp_path / "bad.json"
  bad.write_text('{"runs": []}')
  with pytest.raises(ConfigError, match="expected a runs summary"):
    results.evaluate(None, str(tmp_path / "x"), summary=str(bad))
