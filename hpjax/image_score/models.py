r"""Image classifiers whose every block is a named tap (paper B, "Image Score").

Image score (arXiv 1812.00334, Sec. 2.2; docs/papers.md §B1) compares each
image's activation mask with a class's "correct" mask at every *layer*, where a
layer is a block: conv or dense, optional normalization, activation, optional
pooling. The models here return those block outputs beside the logits:

.. code-block:: python

   logits, aux = model.apply(variables, images, train=False)
   aux["taps"]  # {name: [batch, ...]} in network order

Models:

* :class:`SmallCNN`: a fast default for 28×28 grayscale (Fashion-MNIST, digits).
* :class:`VGG16`: the CIFAR form (13 conv blocks with BatchNorm, 2 dense blocks
  with dropout, a linear classifier).
* :class:`ResNet18`: the CIFAR form (3×3 stem, 4 stages of 2 basic blocks,
  global average pooling, dropout, a linear classifier).

Tap names are ``tapNN_kind`` with a zero-padded position ``NN``: JAX sorts dict
keys whenever a dict crosses a ``jit`` boundary, and the padding makes the sorted
order the network order. The classifier's tap is the logits (pre-softmax); since
logits can be negative, its class mask may be empty, which image score handles
(the layer then contributes 0 with the default "recall" similarity).

Inputs are NHWC float32 in [0, 1]. ``train=True`` uses batch statistics (pass
``mutable=["batch_stats"]``) and dropout (pass ``rngs={"dropout": key}``).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The VGG16 conv widths; "M" marks a 2×2 max-pool closing the previous block.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M")
_RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, first stride)


def tap_name(index: int, kind: str) -> str:
  """The tap name at 1-based ``index`` in the network, e.g. ``tap03_dense``."""
  return f"tap{index:02d}_{kind}"


def scaled_width(features: int, width: float) -> int:
  """``features × width`` rounded, at least 1 (``width`` shrinks models for tests)."""
  return max(1, int(round(features * width)))


def _check_images(x: jax.Array, where: str) -> None:
  if x.ndim != 4:
    raise ValueError(
        f"{where}: expected images of rank 4 [batch, height, width, channels], "
        f"got shape {tuple(x.shape)} instead")


def _max_pool(x: jax.Array) -> jax.Array:
  # SAME padding so that any input size survives five pools (28×28 → 1×1);
  # on 32×32 CIFAR images it equals VALID pooling.
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class ConvBlock(nn.Module):
  """3×3 conv → optional BatchNorm → ReLU → optional 2×2 max-pool (one tap).

  Attributes:
    features: output channels.
    use_batch_norm: insert BatchNorm between conv and ReLU.
    pool: close the block with a 2×2 max-pool.
  """

  features: int
  use_batch_norm: bool = True
  pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=not self.use_batch_norm,
                name="conv")(x)
    if self.use_batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
    x = nn.relu(x)
    return _max_pool(x) if self.pool else x


class DenseBlock(nn.Module):
  """Optional dropout → dense → optional BatchNorm → ReLU (one tap).

  Attributes:
    features: output units.
    dropout_rate: dropout on the block's *input* (the VGG classifier layout).
    use_batch_norm: insert BatchNorm between dense and ReLU.
  """

  features: int
  dropout_rate: float = 0.0
  use_batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.features, use_bias=not self.use_batch_norm, name="dense")(x)
    if self.use_batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
    return nn.relu(x)


class SmallCNN(nn.Module):
  """A small CNN for 28×28 grayscale images (the fast default of the experiments).

  Blocks (one tap each): ``conv_features`` conv blocks with 2×2 max-pooling, then
  ``dense_features`` dense blocks, then the linear classifier. With the defaults
  and 28×28×1 inputs the taps are ``tap01_conv [b, 14, 14, 32]``,
  ``tap02_conv [b, 7, 7, 64]``, ``tap03_dense [b, 128]``,
  ``tap04_classifier [b, num_classes]``.

  Attributes:
    num_classes: number of output classes.
    width: multiplies every conv and dense width (rounded, at least 1).
    conv_features: widths of the conv blocks before ``width`` scaling.
    dense_features: widths of the dense blocks before ``width`` scaling.
    use_batch_norm: BatchNorm in the conv blocks.
    dropout_rate: dropout on the input of each dense block and the classifier.

  References:
    docs/papers.md §B1; paper B Sec. 2.2, 3.1.
  """

  num_classes: int = 10
  width: float = 1.0
  conv_features: Sequence[int] = (32, 64)
  dense_features: Sequence[int] = (128,)
  use_batch_norm: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    """Maps images ``[batch, H, W, C]`` to ``(logits [batch, num_classes], {"taps": ...})``."""
    _check_images(x, "SmallCNN")
    taps = {}
    for f in self.conv_features:
      name = tap_name(len(taps) + 1, "conv")
      x = ConvBlock(scaled_width(f, self.width), self.use_batch_norm, pool=True, name=name)(
          x, train=train)
      taps[name] = x
    x = x.reshape((x.shape[0], -1))
    for f in self.dense_features:
      name = tap_name(len(taps) + 1, "dense")
      x = DenseBlock(scaled_width(f, self.width), self.dropout_rate, name=name)(x, train=train)
      taps[name] = x
    logits = _classifier(x, self.num_classes, self.dropout_rate, train, len(taps) + 1, taps)
    return logits, {"taps": taps}


class VGG16(nn.Module):
  """VGG16 in its CIFAR form: 13 conv blocks (BatchNorm) and 3 dense layers.

  Conv widths 64, 64 | 128, 128 | 256 ×3 | 512 ×3 | 512 ×3 (× ``width``), each
  group closed by a 2×2 max-pool inside its last block; then two dense blocks of
  512 (× ``width``) with dropout on their inputs, and the linear classifier.
  16 taps: ``tap01_conv`` … ``tap13_conv``, ``tap14_dense``, ``tap15_dense``,
  ``tap16_classifier``. On 32×32 inputs the last conv tap is ``[b, 1, 1, 512]``.

  Attributes:
    num_classes: number of output classes.
    width: multiplies every width (``1/16`` gives a tiny test model).
    dense_features: width of the two dense blocks before ``width`` scaling.
    dropout_rate: dropout before each dense layer (the classic VGG-CIFAR head).

  References:
    docs/papers.md §B1; paper B Sec. 2.2, 3.1.
  """

  num_classes: int = 10
  width: float = 1.0
  dense_features: int = 512
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    """Maps images ``[batch, H, W, C]`` to ``(logits [batch, num_classes], {"taps": ...})``."""
    _check_images(x, "VGG16")
    taps = {}
    layout = _VGG16_LAYOUT
    for i, f in enumerate(layout):
      if f == "M":
        continue
      pool = i + 1 < len(layout) and layout[i + 1] == "M"
      name = tap_name(len(taps) + 1, "conv")
      x = ConvBlock(scaled_width(f, self.width), use_batch_norm=True, pool=pool, name=name)(
          x, train=train)
      taps[name] = x
    x = x.reshape((x.shape[0], -1))
    for _ in range(2):
      name = tap_name(len(taps) + 1, "dense")
      x = DenseBlock(scaled_width(self.dense_features, self.width), self.dropout_rate,
                     name=name)(x, train=train)
      taps[name] = x
    logits = _classifier(x, self.num_classes, 0.0, train, len(taps) + 1, taps)
    return logits, {"taps": taps}


class BasicBlock(nn.Module):
  """The ResNet basic block: two 3×3 conv+BN, projection shortcut when needed, ReLU.

  Attributes:
    features: output channels.
    strides: stride of the first conv (and of the 1×1 projection shortcut).
  """

  features: int
  strides: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding="SAME",
                use_bias=False, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, name="conv2")(y)
    y = bn("bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False,
                  name="shortcut_conv")(x)
      x = bn("shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet18 in its CIFAR form (3×3 stem, no stem pooling).

  Stem conv 64 → BN → ReLU; stages of 2 basic blocks with widths 64, 128, 256,
  512 (× ``width``) and first strides 1, 2, 2, 2; global average pooling;
  dropout; linear classifier. 10 taps: ``tap01_stem``, ``tap02_stage1_block1``
  … ``tap09_stage4_block2``, ``tap10_classifier``. The paper trains ResNet18
  "with batch normalization and dropout"; where the dropout sits is not said, and
  here it is on the pooled features before the classifier (``dropout_rate``).

  Attributes:
    num_classes: number of output classes.
    width: multiplies every width (``1/16`` gives a tiny test model).
    dropout_rate: dropout before the classifier.

  References:
    docs/papers.md §B1; paper B Sec. 2.2, 3.1.
  """

  num_classes: int = 10
  width: float = 1.0
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    """Maps images ``[batch, H, W, C]`` to ``(logits [batch, num_classes], {"taps": ...})``."""
    _check_images(x, "ResNet18")
    taps = {}
    name = tap_name(1, "stem")
    x = ConvBlock(scaled_width(64, self.width), use_batch_norm=True, name=name)(x, train=train)
    taps[name] = x
    for s, (features, strides) in enumerate(_RESNET18_STAGES):
      for b in range(2):
        name = tap_name(len(taps) + 1, f"stage{s + 1}_block{b + 1}")
        x = BasicBlock(scaled_width(features, self.width), strides if b == 0 else 1,
                       name=name)(x, train=train)
        taps[name] = x
    x = jnp.mean(x, axis=(1, 2))
    logits = _classifier(x, self.num_classes, self.dropout_rate, train, len(taps) + 1, taps)
    return logits, {"taps": taps}


def _classifier(x: jax.Array, num_classes: int, dropout_rate: float, train: bool, index: int,
                taps: dict[str, jax.Array]) -> jax.Array:
  """The linear classifier as the last tap (its output is the logits)."""
  if dropout_rate > 0:
    x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  name = tap_name(index, "classifier")
  logits = nn.Dense(num_classes, name=name)(x)
  taps[name] = logits
  return logits
