"""The fused scorer (paper B, docs/papers.md §B3) equals the stored and in-memory paths and the
NumPy oracle on a tiny SmallCNN."""
from __future__ import annotations

import numpy as np

from hpjax.image_score import fused, scoring, stored


def test_fused_equals_stored_equals_numpy_loop(cnn, tmp_path):
  ref = cnn["reference"]
  two_programs = fused.make_fused_scorer(cnn["apply"], ref)
  logits, fused_scores = two_programs(cnn["variables"], cnn["images"])  # assigned = argmax
  np.testing.assert_allclose(logits, cnn["logits"], rtol=1e-5, atol=1e-5)
  paths = stored.save_taps(tmp_path, cnn["taps"])
  assert [p.name for p in paths.values()] == [f"{k}.npy" for k in cnn["taps"]]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [f"{k}.npy" for k in cnn["taps"]] + ["taps.json"])  # no temp files left
  from_disk = stored.score_stored(ref, tmp_path, cnn["predicted"], chunk_size=16)
  oracle = scoring.score_numpy_loop(ref, cnn["taps"], cnn["predicted"])
  in_memory = scoring.score(ref, cnn["taps"], cnn["predicted"])
  assert np.all(oracle <= 0) and np.ptp(oracle) > 0  # a non-trivial spread of scores
  np.testing.assert_allclose(from_disk, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused_scores, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(in_memory, oracle, rtol=1e-5, atol=1e-6)
  # Explicit assignment overrides the prediction; the one-program form agrees.
  forced = np.zeros(48, np.int32)
  one_program = fused.make_fused_scorer(cnn["apply"], ref, single_program=True)
  for scorer in (two_programs, one_program):
    _, fused_forced = scorer(cnn["variables"], cnn["images"], forced)
    np.testing.assert_allclose(fused_forced, scoring.score_numpy_loop(ref, cnn["taps"], forced),
                               rtol=1e-5, atol=1e-6)
