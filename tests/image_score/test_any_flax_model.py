"""Image score for any Flax model: :mod:`hpjax.image_score.intermediates` (issue 14, item 5)."""
from __future__ import annotations

import functools
import math
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from random_variables import numpy_variables
from hpjax.image_score import (ReferenceAccumulator, fit_reference, make_fused_scorer, score,
                               tap_names, tapped_apply)
from hpjax.image_score.models import SmallCNN

ROOT = pathlib.Path(__file__).resolve().parents[2]
N, C = 24, 3


class _Residual(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    y = nn.relu(nn.Conv(self.features, (3, 3), name="conv1")(x))
    y = nn.Conv(self.features, (3, 3), name="conv2")(y)
    return nn.relu(x + y)


class TinyResNet(nn.Module):
  """A researcher's own model: conv stem, two residual blocks, global pool, dense."""

  num_classes: int = C

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
    x = _Residual(4, name="block1")(x)
    x = _Residual(4, name="block2")(x)
    return nn.Dense(self.num_classes, name="head")(jnp.mean(x, axis=(1, 2)))




@pytest.fixture(scope="module")
def resnet():
  model = TinyResNet()
  variables = numpy_variables(model, (8, 8, 1), bias_scale=0.1)
  images = np.random.default_rng(1).random((N, 8, 8, 1), np.float32)
  labels = np.arange(N) % C
  return model, variables, images, labels


def _by_hand(ref_taps, labels, taps, assigned, num_classes, eps=1.0):
  """Reference and recall score in NumPy, straight from paper B's formulas (§B2, §B3)."""
  out = np.zeros(len(assigned))
  for name, x_ref in ref_taps.items():
    x_ref = np.asarray(x_ref, np.float64).reshape(len(labels), -1)
    x = np.asarray(taps[name], np.float64).reshape(len(assigned), -1)
    for c in range(num_classes):
      mean = x_ref[labels == c].mean(axis=0)
      t = 0.5 * mean.max()
      mask = mean >= t
      rows = assigned == c
      inter = ((x[rows] >= t) & mask).sum(axis=1)
      out[rows] += np.log((inter + eps) / (mask.sum() + eps))
  return out


def test_taps_found_have_the_expected_names_and_shapes(resnet):
  model, variables, images, _ = resnet
  block = (N, 8, 8, 4)
  assert tap_names(model, variables, images) == {
      "stem": block, "block1/conv1": block, "block1/conv2": block, "block1": block,
      "block2/conv1": block, "block2/conv2": block, "block2": block, "head": (N, C)}
  # Default: the model's children, the logits (the head) left out.
  assert tap_names(model, variables, images, taps=None, exclude_logits=True) == {
      "stem": block, "block1": block, "block2": block}
  logits, aux = jax.jit(tapped_apply(model))(variables, images)
  assert logits.shape == (N, C)
  assert {k: v.shape for k, v in aux["taps"].items()} == {
      "stem": block, "block1": block, "block2": block}
  _, aux = tapped_apply(model, taps=r"block\d/conv\d")(variables, images)
  assert list(aux["taps"]) == ["block1/conv1", "block1/conv2", "block2/conv1", "block2/conv2"]
  _, aux = tapped_apply(model, taps=lambda m, name: isinstance(m, nn.Dense),
                        exclude_logits=False)(variables, images)
  assert list(aux["taps"]) == ["head"]


def test_scores_equal_the_scores_by_hand_from_capture_intermediates(resnet):
  model, variables, images, labels = resnet
  apply = jax.jit(tapped_apply(model))
  logits, aux = apply(variables, images)
  reference = fit_reference(aux["taps"], labels, C)
  predicted = np.asarray(jnp.argmax(logits, -1))
  got = score(reference, aux["taps"], predicted)

  _, state = model.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
  inter = state["intermediates"]
  hand = {k: inter[k]["__call__"][0] for k in ("stem", "block1", "block2")}
  for k in hand:
    np.testing.assert_allclose(np.asarray(aux["taps"][k]), np.asarray(hand[k]), atol=1e-6)
  want = _by_hand(hand, labels, hand, predicted, C)
  assert np.all(np.isfinite(want)) and np.ptp(want) > 0  # not a degenerate comparison
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("single_program", [False, True])
def test_fused_scorer_equals_the_unfused_path(resnet, single_program):
  model, variables, images, labels = resnet
  apply = tapped_apply(model)
  logits, aux = jax.jit(apply)(variables, images)
  reference = fit_reference(aux["taps"], labels, C)
  want = score(reference, aux["taps"], np.asarray(jnp.argmax(logits, -1)))
  fused_logits, got = make_fused_scorer(apply, reference, single_program=single_program)(
      variables, images)
  np.testing.assert_allclose(np.asarray(fused_logits), np.asarray(logits), atol=1e-6)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)


def test_reference_accumulator_takes_the_streamed_taps(resnet):
  model, variables, images, labels = resnet
  apply = jax.jit(tapped_apply(model))
  _, first = apply(variables, images[:8])
  acc = ReferenceAccumulator.for_taps(first["taps"], C)
  state = acc.init()
  for start in range(0, N, 8):
    _, aux = apply(variables, images[start:start + 8])
    state = acc.update(state, aux["taps"], labels[start:start + 8])
  streamed = acc.finalize(state)
  whole = fit_reference(apply(variables, images)[1]["taps"], labels, C)
  assert streamed.names == whole.names
  for a, b in zip(streamed.masks, whole.masks):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def small_cnn():
  model = SmallCNN(num_classes=4, width=0.25)
  variables = numpy_variables(model, (16, 16, 1), bias_scale=0.1)
  images = np.random.default_rng(2).random((16, 16, 16, 1), np.float32)
  return model, variables, images, np.arange(16) % 4


def test_small_cnn_own_taps_equal_the_new_path(small_cnn):
  """SmallCNN's taps are its blocks' outputs (ConvBlock/DenseBlock/classifier, named
  ``tapNN_kind``): the same modules through capture_intermediates give the same arrays."""
  model, variables, images, labels = small_cnn
  logits, aux = jax.jit(functools.partial(model.apply, train=False))(variables, images)
  own = aux["taps"]
  assigned = np.asarray(jnp.argmax(logits, -1))
  own_scores = score(fit_reference(own, labels, 4), own, assigned)

  every = tapped_apply(model, taps=list(own), exclude_logits=False, train=False)
  new_logits, new = jax.jit(every)(variables, images)
  np.testing.assert_array_equal(np.asarray(new_logits), np.asarray(logits))
  assert sorted(new["taps"]) == sorted(own)
  for k in own:
    np.testing.assert_array_equal(np.asarray(new["taps"][k]), np.asarray(own[k]))
  np.testing.assert_allclose(score(fit_reference(new["taps"], labels, 4), new["taps"], assigned),
                             own_scores, rtol=0, atol=1e-6)

  # The default selection: the same blocks less the logits (tap04_classifier).
  assert list(tap_names(model, variables, images, taps=None, exclude_logits=True,
                        train=False)) == ["tap01_conv", "tap02_conv", "tap03_dense"]


@pytest.mark.parametrize("taps, match", [
    ("nope/.*", r"tapped_apply: taps filter 'nope/\.\*' matched none of the model's taps"),
    (["stem", "nope"], r"tapped_apply: taps filter \['stem', 'nope'\] names \['nope'\]"),
    (lambda m, name: False, r"tapped_apply: taps filter <lambda> matched none"),
    (["head"], r"tapped_apply: expected taps other than the model's logits, got \['head'\]"),
    (3, r"tapped_apply: expected taps as None, a list of tap names, a regular expression"),
])
def test_a_bad_filter_raises_one_line_naming_it(resnet, taps, match):
  model, variables, images, _ = resnet
  with pytest.raises(ValueError, match=match) as e:
    tapped_apply(model, taps=taps)(variables, images)
  assert "\n" not in str(e.value)


def test_tap_names_and_the_fused_scorer_name_a_bad_filter_too(resnet):
  model, variables, images, labels = resnet
  with pytest.raises(ValueError, match=r"^tap_names: taps filter 'x' matched none"):
    tap_names(model, variables, images, taps="x")
  reference = fit_reference({"stem": np.ones((3, 8, 8, 4))}, np.arange(3), 3)
  with pytest.raises(ValueError, match=r"tapped_apply: taps filter 'x' matched none"):
    make_fused_scorer(tapped_apply(model, taps="x"), reference)(variables, images)
  with pytest.raises(ValueError, match=r"^tapped_apply: expected apply arguments without "
                                       r"\['mutable'\]"):
    tapped_apply(model, mutable=["batch_stats"])


class _NnxNet(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.blocks = nnx.List([nnx.Conv(4, 4, (3, 3), rngs=rngs) for _ in range(2)])
    self.head = nnx.Linear(4, C, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem(x))
    for block in self.blocks:
      x = nnx.relu(x + block(x))
    self.sow(nnx.Intermediate, "features", x)
    return self.head(jnp.mean(x, axis=(1, 2)))


def test_nnx_model_taps_and_fused_score(resnet):
  *_, images, labels = resnet
  graphdef, shapes = nnx.split(nnx.eval_shape(lambda: _NnxNet(nnx.Rngs(0))))
  rng = np.random.default_rng(3)  # NumPy-random state: nnx's initializers compile slowly
  model = nnx.merge(graphdef, jax.tree.map(
      lambda s: (0.5 * rng.standard_normal(s.shape)).astype(np.float32), shapes))
  variables = nnx.state(model)
  block = (N, 8, 8, 4)
  assert tap_names(model, variables, images) == {
      "blocks/0": block, "blocks/1": block, "features": block, "head": (N, C), "stem": block}
  apply = tapped_apply(model)
  logits, aux = jax.jit(apply)(variables, images)
  assert sorted(aux["taps"]) == ["blocks/0", "blocks/1", "features", "stem"]
  want_logits, inter = nnx.capture(model, nnx.Intermediate,
                                   method_outputs=nnx.Intermediate)(jnp.asarray(images))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(want_logits), atol=1e-6)
  np.testing.assert_allclose(np.asarray(aux["taps"]["features"]),
                             np.asarray(inter["features"].get_value()[0]), atol=1e-6)
  reference = fit_reference(aux["taps"], labels, C)
  want = score(reference, aux["taps"], np.asarray(jnp.argmax(logits, -1)))
  _, got = make_fused_scorer(apply, reference)(variables, images)
  np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)


def test_eps_on_a_one_unit_logits_mask():
  """docs/papers.md §B3: with ε = 1 a 1-unit mask scores each image 0 or log ½ (recall)."""
  ref_logits = np.full((4, 10), -1.0, np.float32)
  ref_logits[:, 0], ref_logits[:, 1] = 4.0, 1.0  # class mean: max 4, t = 2, mask {0}
  reference = fit_reference({"logits": ref_logits}, np.zeros(4, np.int32), 1)
  assert float(reference.mask_sizes[0, 0]) == 1.0
  images = np.full((3, 10), -1.0, np.float32)
  images[0, 0] = 5.0                        # hits the unit
  images[1, 0] = 1.9                        # just below t: misses it
  images[2, 0], images[2, 1] = 5.0, 3.0     # hits it, plus one unit outside the mask
  zeros = np.zeros(3, np.int32)
  np.testing.assert_allclose(score(reference, {"logits": images}, zeros),
                             [0.0, math.log(1 / 2), 0.0], atol=1e-6)
  np.testing.assert_allclose(score(reference, {"logits": images}, zeros, similarity="jaccard"),
                             [0.0, math.log(1 / 2), math.log(2 / 3)], atol=1e-6)


def _doc_blocks():
  text = (ROOT / "docs" / "image_score.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, re.S)


def _run(blocks):
  namespace = {"__name__": "docs_image_score"}
  for block in blocks:
    exec(compile(block, "docs/image_score.md", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def test_docs_ten_line_example_runs():
  """The setup, the ten lines and the streamed reference of docs/image_score.md, as written."""
  blocks = _doc_blocks()
  assert len(blocks) == 4 and "nnx" in blocks[3]
  assert len(blocks[1].strip().splitlines()) == 10
  namespace = _run(blocks[:3])
  scores, chosen = np.asarray(namespace["scores"]), namespace["chosen"]
  assert scores.shape == (100,) and np.all(scores <= 0) and np.ptp(scores) > 0
  assert chosen.shape == (100,) and 0 < chosen.sum() < 100


def test_docs_nnx_example_runs():
  blocks = _doc_blocks()
  namespace = _run([blocks[0], blocks[3]])
  assert sorted(namespace["nnx_aux"]["taps"]) == ["conv", "features"]
  assert np.asarray(namespace["nnx_scores"]).shape == (100,)
