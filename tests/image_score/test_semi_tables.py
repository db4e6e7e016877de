"""Tables 1–2 of paper B (docs/papers.md §B5) on synthetic run directories with a known
difference."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from hpjax.image_score import tables
from hpjax.image_score.runs import load_runs
from hpjax.image_score.config import SEMI_PRESETS

SMOKE = SEMI_PRESETS["smoke"]


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
  dirs = []
  for seed in range(4):
    base = 0.80 + 0.002 * rng.standard_normal((5, 2))
    is_ = base.copy()
    is_[1:, 0] += 0.05                    # class 0 gains 5 points in every re-training epoch
    sm = base + 0.002 * rng.standard_normal((5, 2))
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
    assert rows[0]["n_image_score"] == 4  # 4 seeds, or the 4 re-training epochs of seed 0
    assert t["seed"] == (0 if sample == "epoch" else None)
    assert rows["all"]["diff_image_score"] == pytest.approx(2.5, abs=0.01)
  md = tables.markdown_comparison(t)
  assert "per-epoch accuracies" in md and "| 0 |" in md
