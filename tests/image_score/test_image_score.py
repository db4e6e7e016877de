"""Image score (paper B, SPEC B2–B3): golden values, streaming, and the three scoring paths."""
from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.image_score import scoring as isc
from hpjax.image_score.models import SmallCNN

# ----------------------------------------------------------------------------
# Hand-made activations: 2 classes, tap "a" of 4 units, tap "b" of 2 units.
#   class 0 images: a = [2,0,1,0], [0,0,1,0] -> mean [1,0,1,0], t = 0.5, M = [1,0,1,0]
#                   b = [-1,-3], [-3,-1]     -> mean [-2,-2], t = -1, M = [] (empty)
#   class 1 image:  a = [0,4,0,0]            -> mean [0,4,0,0], t = 2,   M = [0,1,0,0]
#                   b = [1, 0.5]             -> mean [1,0.5],  t = 0.5, M = [1,1] (0.5 >= 0.5)
# Scored images:
#   I0 (class 0): a = [0.5,9,0,0] -> M_I = [1,1,0,0] (0.5 at the threshold counts),
#                 |∧| = 1, |M_I| = 2, |M| = 2;  b = [-1,0] -> M_I = [1,1], |∧| = 0, |M| = 0
#   I1 (class 1): a = [0,2,0,5] -> M_I = [0,1,0,1], |∧| = 1, |M_I| = 2, |M| = 1;
#                 b = [0.5,0.4] -> M_I = [1,0], |∧| = 1, |M_I| = 1, |M| = 2
REF_TAPS = {
    "a": np.array([[2, 0, 1, 0], [0, 0, 1, 0], [0, 4, 0, 0]], np.float32),
    "b": np.array([[-1, -3], [-3, -1], [1, 0.5]], np.float32),
}
REF_LABELS = np.array([0, 0, 1])
SCORED_TAPS = {
    "a": np.array([[0.5, 9, 0, 0], [0, 2, 0, 5]], np.float32),
    "b": np.array([[-1, 0], [0.5, 0.4]], np.float32),
}
ASSIGNED = np.array([0, 1])
# With eps = 1, per image (sum over taps a, b):
GOLDEN_EPS1 = {
    "recall": [math.log(2 / 3) + math.log(1 / 1), math.log(2 / 2) + math.log(2 / 3)],
    "jaccard": [math.log(2 / 4) + math.log(1 / 3), math.log(2 / 3) + math.log(2 / 3)],
    "dice": [math.log(3 / 5) + math.log(1 / 3), math.log(3 / 4) + math.log(3 / 4)],
}


@pytest.fixture(scope="module")
def hand_reference():
  return isc.fit_reference(REF_TAPS, REF_LABELS, 2, batch_size=2)


def test_reference_golden(hand_reference):
  ref = hand_reference
  assert ref.names == ("a", "b") and ref.num_classes == 2
  np.testing.assert_array_equal(ref.counts, [2, 1])
  np.testing.assert_allclose(ref.means[0], [[1, 0, 1, 0], [0, 4, 0, 0]])
  np.testing.assert_allclose(ref.thresholds, [[0.5, -1.0], [2.0, 0.5]])
  np.testing.assert_array_equal(ref.masks[0], [[1, 0, 1, 0], [0, 1, 0, 0]])
  np.testing.assert_array_equal(ref.masks[1], [[0, 0], [1, 1]])  # empty; at-threshold counts
  np.testing.assert_array_equal(ref.mask_sizes, [[2, 0], [1, 2]])


@pytest.mark.parametrize("similarity", isc.SIMILARITIES)
def test_score_golden(hand_reference, similarity):
  expected = GOLDEN_EPS1[similarity]
  got = isc.score(hand_reference, SCORED_TAPS, ASSIGNED, similarity=similarity)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  oracle = isc.score_numpy_loop(hand_reference, SCORED_TAPS, ASSIGNED, similarity=similarity)
  np.testing.assert_allclose(oracle, expected, rtol=1e-6)


def test_score_golden_small_eps_and_per_layer(hand_reference):
  eps = 1e-3
  terms = isc.score(hand_reference, SCORED_TAPS, ASSIGNED, eps=eps, per_layer=True)
  # Tap b of I0 has an empty class mask: log(eps/eps) = 0 whatever eps is.
  np.testing.assert_allclose(
      terms, [[math.log((1 + eps) / (2 + eps)), 0.0], [0.0, math.log((1 + eps) / (2 + eps))]],
      rtol=1e-5, atol=1e-7)


def test_score_accepts_sequence_in_reference_order(hand_reference):
  got = isc.score(hand_reference, [SCORED_TAPS["a"], SCORED_TAPS["b"]], ASSIGNED)
  np.testing.assert_allclose(got, GOLDEN_EPS1["recall"], rtol=1e-6)


def test_one_class_and_dataset_reference():
  taps = {"a": REF_TAPS["a"]}
  per_class = isc.fit_reference(taps, np.zeros(3, int), 1)
  dataset = isc.fit_dataset_reference(taps)
  # mean [2/3, 4/3, 2/3, 0], t = 2/3, M = [1, 1, 1, 0].
  np.testing.assert_array_equal(dataset.masks[0], [[1, 1, 1, 0]])
  np.testing.assert_array_equal(per_class.masks[0], dataset.masks[0])
  assert dataset.class_agnostic and not per_class.class_agnostic
  scored = {"a": np.array([[1, 1, 0, 0], [0, 0, 0, 1]], np.float32)}
  np.testing.assert_allclose(isc.score(dataset, scored), [math.log(3 / 4), math.log(1 / 4)],
                             rtol=1e-6)
  np.testing.assert_allclose(isc.score(per_class, scored, np.zeros(2, int)),
                             isc.score(dataset, scored), rtol=1e-6)


def test_empty_class_raises_or_scores_nan():
  with pytest.raises(ValueError, match=r"none for classes \[2\]"):
    isc.fit_reference(REF_TAPS, REF_LABELS, 3)
  ref = isc.fit_reference(REF_TAPS, REF_LABELS, 3, allow_empty_classes=True)
  assert np.isinf(np.asarray(ref.thresholds[2])).all() and int(ref.mask_sizes[2].sum()) == 0
  assigned = np.array([0, 2])
  got = np.asarray(isc.score(ref, SCORED_TAPS, assigned))
  assert got[0] == pytest.approx(GOLDEN_EPS1["recall"][0]) and np.isnan(got[1])
  assert np.isnan(isc.score_numpy_loop(ref, SCORED_TAPS, assigned)[1])


def test_bad_arguments_name_the_problem(hand_reference):
  with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
    isc.fit_reference(REF_TAPS, np.array([0, 1, 2]), 2)
  with pytest.raises(ValueError, match="expected similarity"):
    isc.score(hand_reference, SCORED_TAPS, ASSIGNED, similarity="cosine")
  with pytest.raises(ValueError, match=r"tap 'a' expected shape \[N, 4\]"):
    isc.score(hand_reference, {"a": np.zeros((2, 5)), "b": SCORED_TAPS["b"]}, ASSIGNED)
  with pytest.raises(ValueError, match=r"expected taps \['b'\]"):
    isc.score(hand_reference, {"a": SCORED_TAPS["a"]}, ASSIGNED)
  with pytest.raises(ValueError, match="expected assigned"):
    isc.score(hand_reference, SCORED_TAPS, None)


# ----------------------------------------------------------------------------
# Streaming


def test_streamed_reference_equals_all_at_once():
  rng = np.random.default_rng(0)
  n, c = 53, 3
  taps = {"x": rng.random((n, 4, 5), dtype=np.float32), "y": rng.random((n, 7), dtype=np.float32)}
  labels = rng.integers(0, c, n)
  whole = isc.fit_reference(taps, labels, c, batch_size=n)
  chunked = isc.fit_reference(taps, labels, c, batch_size=8)  # 7 chunks, the last padded
  # Hand-driven accumulator with uneven batches, straight from "forward passes".
  acc = isc.ReferenceAccumulator.for_taps(taps, c)
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


# ----------------------------------------------------------------------------
# The three paths on a tiny SmallCNN


def _numpy_variables(model, image_shape, seed=0):
  """He-scaled NumPy-random variables (Flax's initializers compile slowly on a busy CPU)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32))

  def leaf(s):
    if len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree.map(leaf, shapes)


@pytest.fixture(scope="module")
def cnn():
  model = SmallCNN(num_classes=4, width=0.25)
  variables = _numpy_variables(model, (28, 28, 1))
  images = jax.random.uniform(jax.random.key(0), (48, 28, 28, 1))
  apply = functools.partial(model.apply, train=False)
  logits, aux = jax.jit(apply)(variables, images)
  taps = {k: np.asarray(v) for k, v in aux["taps"].items()}
  labels = np.arange(48) % 4
  reference = isc.fit_reference(taps, labels, 4, batch_size=16)
  predicted = np.asarray(jnp.argmax(logits, -1)).astype(np.int32)
  return dict(apply=apply, variables=variables, images=images, taps=taps, reference=reference,
              predicted=predicted, logits=logits)


def test_fused_equals_stored_equals_numpy_loop(cnn, tmp_path):
  ref = cnn["reference"]
  fused = isc.make_fused_scorer(cnn["apply"], ref)
  logits, fused_scores = fused(cnn["variables"], cnn["images"])  # assigned = argmax
  np.testing.assert_allclose(logits, cnn["logits"], rtol=1e-5, atol=1e-5)
  paths = isc.save_taps(tmp_path, cnn["taps"])
  assert [p.name for p in paths.values()] == [f"{k}.npy" for k in cnn["taps"]]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      [f"{k}.npy" for k in cnn["taps"]] + ["taps.json"])  # no temp files left
  stored = isc.score_stored(ref, tmp_path, cnn["predicted"], chunk_size=16)
  oracle = isc.score_numpy_loop(ref, cnn["taps"], cnn["predicted"])
  in_memory = isc.score(ref, cnn["taps"], cnn["predicted"])
  assert np.all(oracle <= 0) and np.ptp(oracle) > 0  # a non-trivial spread of scores
  np.testing.assert_allclose(stored, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused_scores, oracle, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(in_memory, oracle, rtol=1e-5, atol=1e-6)
  # Explicit assignment overrides the prediction; the one-program form agrees.
  forced = np.zeros(48, np.int32)
  one_program = isc.make_fused_scorer(cnn["apply"], ref, single_program=True)
  for scorer in (fused, one_program):
    _, fused_forced = scorer(cnn["variables"], cnn["images"], forced)
    np.testing.assert_allclose(fused_forced, isc.score_numpy_loop(ref, cnn["taps"], forced),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity", ["jaccard", "dice"])
def test_stored_equals_numpy_loop_other_similarities(cnn, similarity):
  ref, taps, pred = cnn["reference"], cnn["taps"], cnn["predicted"]
  np.testing.assert_allclose(
      isc.score_stored(ref, taps, pred, chunk_size=32, similarity=similarity),
      isc.score_numpy_loop(ref, taps, pred, similarity=similarity), rtol=1e-5, atol=1e-6)


def test_chunk_scorer_compiles_once(cnn, tmp_path):
  ref, taps, pred = cnn["reference"], cnn["taps"], cnn["predicted"]
  isc.save_taps(tmp_path, taps)
  chex.clear_trace_counter()

  def chunk_scores(reference, xs, assigned):
    return isc._score_arrays(reference, xs, assigned, similarity="recall", eps=isc.DEFAULT_EPS)

  scorer = jax.jit(chex.assert_max_traces(chunk_scores, n=1))
  # 48 images in chunks of 10: five chunks, the last one padded from 8 rows.
  got = isc.score_stored(ref, tmp_path, pred, chunk_size=10, chunk_scorer=scorer)
  again = isc.score_stored(ref, isc.load_taps(tmp_path), pred, chunk_size=10, chunk_scorer=scorer)
  np.testing.assert_allclose(got, isc.score_numpy_loop(ref, taps, pred), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got, again)
  # The module's own jitted scorer also compiles once for a fixed chunk shape.
  before = isc._score_jit._cache_size()
  isc.score_stored(ref, taps, pred, chunk_size=12)
  isc.score_stored(ref, taps, pred, chunk_size=12)
  assert isc._score_jit._cache_size() - before <= 1


def test_tap_writer_streams_and_aborts(tmp_path):
  shapes = {"a": (4,), "b": (2,)}
  with isc.TapWriter(tmp_path / "ok", shapes, 3) as writer:
    writer.write(0, {k: v[:2] for k, v in REF_TAPS.items()})
    writer.write(2, {k: v[2:] for k, v in REF_TAPS.items()})
  loaded = isc.load_taps(tmp_path / "ok")
  assert list(loaded) == ["a", "b"]
  np.testing.assert_array_equal(loaded["b"], REF_TAPS["b"])
  with pytest.raises(RuntimeError):
    with isc.TapWriter(tmp_path / "bad", shapes, 3) as writer:
      writer.write(0, {k: v[:2] for k, v in REF_TAPS.items()})
      raise RuntimeError("forward pass failed")
  assert list((tmp_path / "bad").iterdir()) == []
  with pytest.raises(ValueError, match=r"tap 'a' expected rows of shape \(4,\)"):
    isc.TapWriter(tmp_path / "shape", shapes, 3).write(0, {"a": np.zeros((1, 5)), "b": None})
