"""Tap names, tap shapes and parameter counts of the image-score classifiers.

Shapes come from ``jax.eval_shape`` (tracing only), so even full-width VGG16 and
ResNet18 cost no compilation; one tiny SmallCNN runs for real.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.image_score.models import ResNet18, SmallCNN, VGG16


def _shapes(model, image_shape, train=False):
  """(params count, logits shape, {tap: shape}) of ``model`` via eval_shape."""
  x = jax.ShapeDtypeStruct((2,) + image_shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  if train:
    (logits, aux), _ = jax.eval_shape(
        functools.partial(model.apply, train=True, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.key(1)}), variables, x)
  else:
    logits, aux = jax.eval_shape(model.apply, variables, x)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  return count, logits.shape, {k: v.shape for k, v in aux["taps"].items()}


def numpy_variables(model, image_shape, seed=0):
  """He-scaled NumPy-random variables shaped by ``eval_shape(model.init)``.

  Cheaper than ``model.init`` in tests: Flax's truncated-normal initializers take
  seconds to compile on a loaded CPU.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32))

  def leaf(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name or "'var'" in name:
      return np.ones(s.shape, np.float32)
    if len(s.shape) < 2:
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def test_small_cnn_taps_and_values():
  model = SmallCNN(num_classes=10, width=0.25)
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  variables = numpy_variables(model, (28, 28, 1))
  logits, aux = jax.jit(model.apply)(variables, x)
  taps = aux["taps"]
  assert list(taps) == ["tap01_conv", "tap02_conv", "tap03_dense", "tap04_classifier"]
  assert {k: v.shape for k, v in taps.items()} == {
      "tap01_conv": (3, 14, 14, 8), "tap02_conv": (3, 7, 7, 16), "tap03_dense": (3, 32),
      "tap04_classifier": (3, 10)}
  np.testing.assert_array_equal(taps["tap04_classifier"], logits)
  # Blocks end in ReLU (+ pooling): non-negative, and not all zero.
  for k in ("tap01_conv", "tap02_conv", "tap03_dense"):
    assert float(jnp.min(taps[k])) >= 0.0 and float(jnp.max(taps[k])) > 0.0


def test_small_cnn_train_mode_shapes():
  model = SmallCNN(use_batch_norm=True, dropout_rate=0.5)
  _, logits, taps = _shapes(model, (28, 28, 1), train=True)
  assert logits == (2, 10) and taps["tap02_conv"] == (2, 7, 7, 64)


def test_vgg16_taps():
  _, logits, taps = _shapes(VGG16(num_classes=10, width=1 / 16), (32, 32, 3))
  names = list(taps)
  assert names == [f"tap{i:02d}_conv" for i in range(1, 14)] + [
      "tap14_dense", "tap15_dense", "tap16_classifier"]
  # JAX sorts dict keys at jit boundaries: the zero-padded names keep network order.
  assert sorted(names) == names
  spatial = [32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2, 1]  # pools close blocks 2, 4, 7, 10, 13
  widths = [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
  for i, (s, w) in enumerate(zip(spatial, widths)):
    assert taps[names[i]] == (2, s, s, w), names[i]
  assert taps["tap14_dense"] == (2, 32) and taps["tap16_classifier"] == (2, 10) == logits


def test_vgg16_full_width_parameter_count():
  count, _, taps = _shapes(VGG16(num_classes=10), (32, 32, 3))
  # conv kernels 9·Σ c_in·c_out = 14,710,464 (no conv bias under BatchNorm);
  # BN scale+bias 8,448; two 512×512 dense 525,312; classifier 5,130.
  assert count == 15_249_354
  assert taps["tap13_conv"] == (2, 1, 1, 512)


def test_resnet18_taps_and_parameter_count():
  count, logits, taps = _shapes(ResNet18(num_classes=10), (32, 32, 3))
  assert list(taps) == ["tap01_stem"] + [
      f"tap{2 * s + b - 1:02d}_stage{s}_block{b}" for s in range(1, 5) for b in (1, 2)] + [
          "tap10_classifier"]
  assert taps["tap01_stem"] == (2, 32, 32, 64)
  assert taps["tap03_stage1_block2"] == (2, 32, 32, 64)
  assert taps["tap04_stage2_block1"] == (2, 16, 16, 128)
  assert taps["tap09_stage4_block2"] == (2, 4, 4, 512)
  assert logits == (2, 10)
  # The standard CIFAR ResNet18 (e.g. kuangliu/pytorch-cifar) has 11,173,962 parameters.
  assert count == 11_173_962


def test_tiny_resnet_train_mode():
  _, logits, taps = _shapes(ResNet18(num_classes=7, width=1 / 16), (16, 16, 1), train=True)
  assert logits == (2, 7) and taps["tap09_stage4_block2"] == (2, 2, 2, 32)


@pytest.mark.parametrize("model", [SmallCNN(), VGG16(width=1 / 16), ResNet18(width=1 / 16)])
def test_rejects_unbatched_images(model):
  with pytest.raises(ValueError, match="expected images of rank 4"):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((28, 28, 1), jnp.float32))
