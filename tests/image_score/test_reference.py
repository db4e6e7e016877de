"""The reference of image score (paper B, docs/papers.md §B2): golden masks, one class and the
dataset level, empty classes, bad labels, and streaming."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from golden_taps import GOLDEN_EPS1, REF_LABELS, REF_TAPS, SCORED_TAPS
from hpjax.image_score import reference as isr
from hpjax.image_score import scoring


def test_reference_golden(hand_reference):
  ref = hand_reference
  assert ref.names == ("a", "b") and ref.num_classes == 2
  np.testing.assert_array_equal(ref.counts, [2, 1])
  np.testing.assert_allclose(ref.means[0], [[1, 0, 1, 0], [0, 4, 0, 0]])
  np.testing.assert_allclose(ref.thresholds, [[0.5, -1.0], [2.0, 0.5]])
  np.testing.assert_array_equal(ref.masks[0], [[1, 0, 1, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(ref.masks[1], [[0, 0], [1, 1]])  # empty; at-threshold counts
  np.testing.assert_array_equal(ref.mask_sizes, [[2, 0], [1, 2]])


def test_one_class_and_dataset_reference():
  taps = {"a": REF_TAPS["a"]}
  per_class = isr.fit_reference(taps, np.zeros(3, int), 1)
  dataset = isr.fit_dataset_reference(taps)
  # mean [2/3, 4/3, 2/3, 0], t = 2/3, M = [1, 1, 1, 0].
  np.testing.assert_array_equal(dataset.masks[0], [[1, 1, 1, 0]])
  np.testing.assert_array_equal(per_class.masks[0], dataset.masks[0])
  assert dataset.class_agnostic and not per_class.class_agnostic
  scored = {"a": np.array([[1, 1, 0, 0], [0, 0, 0, 1]], np.float32)}
  np.testing.assert_allclose(scoring.score(dataset, scored), [math.log(3 / 4), math.log(1 / 4)],
                             rtol=1e-6)
  np.testing.assert_allclose(scoring.score(per_class, scored, np.zeros(2, int)),
                             scoring.score(dataset, scored), rtol=1e-6)


def test_empty_class_raises_or_scores_nan():
  with pytest.raises(ValueError, match=r"none for classes \[2\]"):
    isr.fit_reference(REF_TAPS, REF_LABELS, 3)
  ref = isr.fit_reference(REF_TAPS, REF_LABELS, 3, allow_empty_classes=True)
  assert np.isinf(np.asarray(ref.thresholds[2])).all() and int(ref.mask_sizes[2].sum()) == 0
  assigned = np.array([0, 2])
  got = np.asarray(scoring.score(ref, SCORED_TAPS, assigned))
  assert got[0] == pytest.approx(GOLDEN_EPS1["recall"][0]) and np.isnan(got[1])
  assert np.isnan(scoring.score_numpy_loop(ref, SCORED_TAPS, assigned)[1])


def test_bad_labels_name_the_problem():
  with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
    isr.fit_reference(REF_TAPS, np.array([0, 1, 2]), 2)


# ----------------------------------------------------------------------------
# Streaming


def test_streamed_reference_equals_all_at_once():
  rng = np.random.default_rng(0)
  n, c = 53, 3
  taps = {"x": rng.random((n, 4, 5), dtype=np.float32), "y": rng.random((n, 7), dtype=np.float32)}
  labels = rng.integers(0, c, n)
  whole = isr.fit_reference(taps, labels, c, batch_size=n)
  chunked = isr.fit_reference(taps, labels, c, batch_size=8)  # 7 chunks, the last padded
  # Hand-driven accumulator with uneven batches, straight from "forward passes".
  acc = isr.ReferenceAccumulator.for_taps(taps, c)
  state = acc.init()
  for lo, hi in ((0, 20), (20, 21), (21, n)):
    state = acc.update(state, {k: jnp.asarray(v[lo:hi]) for k, v in taps.items()}, labels[lo:hi])
  streamed = acc.finalize(state)
  for ref in (chunked, streamed):
    for l, k in enumerate(("x", "y")):
      expected = np.stack([taps[k][labels == i].astype(np.float64).mean(0) for i in range(c)])
      np.testing.assert_allclose(ref.means[l], expected, rtol=1e-6)
      np.testing.assert_array_equal(ref.masks[l], whole.masks[l])
    np.testing.assert_allclose(ref.thresholds, whole.thresholds, rtol=1e-6)
    np.testing.assert_array_equal(ref.counts, np.bincount(labels, minlength=c))
