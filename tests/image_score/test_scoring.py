"""Image score (paper B, docs/papers.md §B3): golden values for every similarity and ε, tap order,
and errors that name the problem."""
from __future__ import annotations

import math

import numpy as np
import pytest

from golden_taps import ASSIGNED, GOLDEN_EPS1, SCORED_TAPS
from hpjax.image_score import scoring


@pytest.mark.parametrize("similarity", scoring.SIMILARITIES)
def test_score_golden(hand_reference, similarity):
  expected = GOLDEN_EPS1[similarity]
  got = scoring.score(hand_reference, SCORED_TAPS, ASSIGNED, similarity=similarity)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  oracle = scoring.score_numpy_loop(hand_reference, SCORED_TAPS, ASSIGNED, similarity=similarity)
  np.testing.assert_allclose(oracle, expected, rtol=1e-6)


def test_score_golden_small_eps_and_per_layer(hand_reference):
  eps = 1e-3
  terms = scoring.score(hand_reference, SCORED_TAPS, ASSIGNED, eps=eps, per_layer=True)
  # Tap b of I0 has an empty class mask: log(eps/eps) = 0 whatever eps is.
  np.testing.assert_allclose(
      terms, [[math.log((1 + eps) / (2 + eps)), 0.0], [0.0, math.log((1 + eps) / (2 + eps))]],
      rtol=1e-5, atol=1e-7)


def test_score_accepts_sequence_in_reference_order(hand_reference):
  got = scoring.score(hand_reference, [SCORED_TAPS["a"], SCORED_TAPS["b"]], ASSIGNED)
  np.testing.assert_allclose(got, GOLDEN_EPS1["recall"], rtol=1e-6)


def test_bad_arguments_name_the_problem(hand_reference):
  with pytest.raises(ValueError, match="expected similarity"):
    scoring.score(hand_reference, SCORED_TAPS, ASSIGNED, similarity="cosine")
  with pytest.raises(ValueError, match=r"tap 'a' expected shape \[N, 4\]"):
    scoring.score(hand_reference, {"a": np.zeros((2, 5)), "b": SCORED_TAPS["b"]}, ASSIGNED)
  with pytest.raises(ValueError, match=r"expected taps \['b'\]"):
    scoring.score(hand_reference, {"a": SCORED_TAPS["a"]}, ASSIGNED)
  with pytest.raises(ValueError, match="expected assigned"):
    scoring.score(hand_reference, SCORED_TAPS, None)
