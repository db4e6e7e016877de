"""Per-attribute metrics against hand-computed values (ties and constant heads included)."""
import numpy as np
import pytest

from hpjax.core import classification_metrics as cm


def test_auroc_hand_computed_with_ties():
  # positives score 0.8, 0.4, 0.4; negatives 0.4, 0.1.
  # Pairs (pos, neg): (0.8>0.4)=1 (0.8>0.1)=1 (0.4=0.4)=½ (0.4>0.1)=1 (0.4=0.4)=½ (0.4>0.1)=1
  # → 5/6.
  s = np.array([0.8, 0.4, 0.4, 0.4, 0.1])
  y = np.array([1, 1, 1, 0, 0])
  assert cm.auroc(s, y)[0] == pytest.approx(5 / 6)


def test_auroc_perfect_reversed_constant_and_one_class():
  y = np.array([0, 0, 1, 1])
  s = np.stack([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [7.0] * 4], axis=1)
  got = cm.auroc(s, np.stack([y] * 3, axis=1))
  np.testing.assert_allclose(got, [1.0, 0.0, 0.5])
  assert np.isnan(cm.auroc([0.1, 0.2], [1, 1])[0])


def test_binary_metrics_hand_computed():
  # Column 0: 10 examples, 3 positive. Predictions (> 0): TP = 2, FN = 1, TN = 6, FP = 1.
  y0 = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
  s0 = np.array([2., 1., -1., 3., -2., -2., -2., -2., -2., -2.])
  # Column 1: a constant head (always negative) on the same labels.
  s1 = np.full(10, -5.0)
  m = cm.binary_metrics(np.stack([s0, s1], 1), np.stack([y0, y0], 1))
  np.testing.assert_allclose(m["accuracy"], [0.8, 0.7])
  np.testing.assert_allclose(m["prevalence"], [0.3, 0.3])
  np.testing.assert_allclose(m["majority_rate"], [0.7, 0.7])
  np.testing.assert_allclose(m["balanced_accuracy"], [(2 / 3 + 6 / 7) / 2, 0.5])
  # AUROC column 0: positives 2, 1, -1; negatives 3 and six -2's.
  # 2: beats 6 → 6; 1: beats 6 → 6; -1: beats 6 → 6; of 3·7 = 21 pairs: 18/21.
  np.testing.assert_allclose(m["auroc"], [18 / 21, 0.5])
  np.testing.assert_array_equal(m["constant"], [False, True])
  np.testing.assert_array_equal(m["dead"], [False, True])


def test_dead_flag_for_non_constant_but_chance_head():
  rng = np.random.default_rng(0)
  y = rng.random(4000) < 0.4
  s = rng.standard_normal(4000)  # predictions vary, but carry no information
  m = cm.binary_metrics(s, y)
  assert not m["constant"][0]
  assert abs(m["balanced_accuracy"][0] - 0.5) < 0.03
  assert m["dead"][0]
  assert cm.dead_attributes(m, ["A"]) == ["A"]


def test_minus_one_labels_and_json_ready():
  m = cm.binary_metrics(np.array([[1.0], [-1.0]]), np.array([[1], [-1]]))
  per = cm.per_attribute(m, ["X"])
  assert per["X"]["balanced_accuracy"] == 1.0 and per["X"]["dead"] is False
  one_class = cm.per_attribute(cm.binary_metrics([[1.0]], [[1]]), ["Y"])
  assert one_class["Y"]["auroc"] is None


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="must both be"):
    cm.binary_metrics(np.zeros((3, 2)), np.zeros((3, 1)))
