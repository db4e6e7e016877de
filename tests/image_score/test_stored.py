"""Stored taps (paper B, docs/papers.md §B3): the chunked scorer equals the oracle and compiles
once; the tap writer streams, renames whole files and leaves nothing behind on an error."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest

from golden_taps import REF_TAPS
from hpjax.image_score import scoring, stored


@pytest.mark.parametrize("similarity", ["jaccard", "dice"])
def test_stored_equals_numpy_loop_other_similarities(cnn, similarity):
  ref, taps, pred = cnn["reference"], cnn["taps"], cnn["predicted"]
  np.testing.assert_allclose(
      stored.score_stored(ref, taps, pred, chunk_size=32, similarity=similarity),
      scoring.score_numpy_loop(ref, taps, pred, similarity=similarity), rtol=1e-5, atol=1e-6)


def test_chunk_scorer_compiles_once(cnn, tmp_path):
  ref, taps, pred = cnn["reference"], cnn["taps"], cnn["predicted"]
  stored.save_taps(tmp_path, taps)
  chex.clear_trace_counter()

  def chunk_scores(reference, xs, assigned):
    return scoring._score_arrays(reference, xs, assigned, similarity="recall", eps=scoring.DEFAULT_EPS)

  scorer = jax.jit(chex.assert_max_traces(chunk_scores, n=1))
  # 48 images in chunks of 10: five chunks, the last one padded from 8 rows.
  got = stored.score_stored(ref, tmp_path, pred, chunk_size=10, chunk_scorer=scorer)
  again = stored.score_stored(ref, stored.load_taps(tmp_path), pred, chunk_size=10, chunk_scorer=scorer)
  np.testing.assert_allclose(got, scoring.score_numpy_loop(ref, taps, pred), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got, again)
  # The module's own jitted scorer also compiles once for a fixed chunk shape.
  before = scoring._score_jit._cache_size()
  stored.score_stored(ref, taps, pred, chunk_size=12)
  stored.score_stored(ref, taps, pred, chunk_size=12)
  assert scoring._score_jit._cache_size() - before <= 1


def test_tap_writer_streams_and_aborts(tmp_path):
  shapes = {"a": (4,), "b": (2,)}
  with stored.TapWriter(tmp_path / "ok", shapes, 3) as writer:
    writer.write(0, {k: v[:2] for k, v in REF_TAPS.items()})
    writer.write(2, {k: v[2:] for k, v in REF_TAPS.items()})
  loaded = stored.load_taps(tmp_path / "ok")
  assert list(loaded) == ["a", "b"]
  np.testing.assert_array_equal(loaded["b"], REF_TAPS["b"])
  with pytest.raises(RuntimeError):
    with stored.TapWriter(tmp_path / "bad", shapes, 3) as writer:
      writer.write(0, {k: v[:2] for k, v in REF_TAPS.items()})
      raise RuntimeError("forward pass failed")
  assert list((tmp_path / "bad").iterdir()) == []
  with pytest.raises(ValueError, match=r"tap 'a' expected rows of shape \(4,\)"):
    stored.TapWriter(tmp_path / "shape", shapes, 3).write(0, {"a": np.zeros((1, 5)), "b": None})
