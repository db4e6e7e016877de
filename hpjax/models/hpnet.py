r"""HPNet: a multi-attribute classifier with per-channel spatial attention (paper A).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks",
Tables 1–2 and Eq. 8–9 (see ``shared/SPEC.md`` A1–A2).

.. math::

   f = f_f(x) \in \mathbb{R}^{H \times W \times C}, \qquad
   M^k = \sigma(f W^k + b^k) \in [0, 1]^{H \times W \times C}, \qquad
   \hat y_k = \sigma\big(w_k \cdot \mathrm{GAP}(g(M^k; n, \beta) \odot f) + b_k\big)

The K heads are one set of stacked parameters (``mask_kernel [K, C, C]`` …) computed
by einsum, never a Python loop over attributes.

Memory: the mask tensor is ``[batch, H, W, K, C]`` (2.7 GB in float32 at 64×64,
K=40, C=128, batch 32). During training the heads run over chunks of
``head_chunk`` images with :func:`jax.checkpoint`, so only one chunk's masks exist at
a time in the forward pass and they are recomputed in the backward pass.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hpjax.mask_transformation import mask_transform


class FeatureExtractor(nn.Module):
  """The dilation network f_f (paper Table 1): stride 1, so H×W is kept.

  Attributes:
    features: output channels of each conv layer; the last one is C.
    dilations: dilation of each 3×3 conv (padding SAME = dilation).
  """

  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps ``[batch, H, W, channels]`` images to ``[batch, H, W, C]`` features."""
    if len(self.features) != len(self.dilations):
      raise ValueError(
          f"features and dilations must have the same length, got {len(self.features)} "
          f"and {len(self.dilations)}")
    for i, (width, dilation) in enumerate(zip(self.features, self.dilations)):
      # No conv bias: the BatchNorm right after removes it (its gradient is only noise).
      x = nn.Conv(width, (3, 3), kernel_dilation=dilation, padding="SAME", use_bias=False,
                  name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i}")(x)
      x = nn.leaky_relu(x, negative_slope=0.01)
    return x


def head_logits(params: dict[str, jax.Array], f: jax.Array, n: ArrayLike, beta: ArrayLike,
                return_masks: bool = False) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """All K attention heads on features ``f [batch, H, W, C]`` (pure function).

  Args:
    params: ``mask_kernel [K, C, C]``, ``mask_bias [K, C]``, ``kernel [K, C]``, ``bias [K]``.
    f: feature map ``[batch, H, W, C]``.
    n, beta: mask transform parameters (scalars, may be traced).
    return_masks: also return the untransformed masks ``[batch, H, W, K, C]``.

  Returns:
    ``(logits [batch, K], mask_l1 [batch], masks or None)`` where ``mask_l1`` is the
    L1 norm of each image's (untransformed) masks, summed over H, W, K and C.
  """
  # One GEMM [b*H*W, C] x [C, K*C] for all heads.
  pre = jnp.einsum("bhwc,kcd->bhwkd", f, params["mask_kernel"]) + params["mask_bias"]
  masks = nn.sigmoid(pre)
  # Training and plain inference use the identity transform: skip its pow/where work.
  identity = isinstance(n, (int, float)) and isinstance(beta, (int, float)) and n == 1 and beta == 0
  g = masks if identity else mask_transform(masks, n=n, beta=beta)
  # GAP(g ⊙ f) as one elementwise-multiply-and-reduce that XLA fuses with the sigmoid,
  # so the [b, H, W, K, C] tensor is streamed once instead of written and re-read.
  hw = f.shape[1] * f.shape[2]
  pooled = jnp.sum(g * f[:, :, :, None, :], axis=(1, 2)) / hw
  logits = jnp.einsum("bkd,kd->bk", pooled, params["kernel"]) + params["bias"]
  mask_l1 = jnp.sum(masks, axis=(1, 2, 3, 4))  # sigmoid >= 0, so |M| = M.
  return logits, mask_l1, (masks if return_masks else None)


class AttentionHeads(nn.Module):
  """K binary classifiers with channel attention (paper Table 2, Eq. 8–9).

  Attributes:
    num_attributes: K.
    head_chunk: images per chunk in the memory-saving (rematerialised) path; 0
      computes the whole batch at once (fastest for small tensors).
  """

  num_attributes: int
  head_chunk: int = 1

  @nn.compact
  def __call__(self, f: jax.Array, *, n: ArrayLike = 1.0, beta: ArrayLike = 0.0,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    k, c = self.num_attributes, f.shape[-1]
    params = {
        # The mask branch is a 1×1 conv C→C per attribute (SPEC A2 reading).
        "mask_kernel": self.param("mask_kernel", _stacked_lecun_normal, (k, c, c)),
        "mask_bias": self.param("mask_bias", nn.initializers.zeros, (k, c)),
        "kernel": self.param("kernel", nn.initializers.normal(1.0 / c ** 0.5), (k, c)),
        "bias": self.param("bias", nn.initializers.zeros, (k,)),
    }
    b = f.shape[0]
    if return_masks or self.head_chunk <= 0 or b <= self.head_chunk:
      logits, mask_l1, masks = head_logits(params, f, n, beta, return_masks)
    else:
      logits, mask_l1 = _chunked_heads(params, f, n, beta, self.head_chunk)
      masks = None
    aux = {"mask_l1": mask_l1}
    if return_masks:
      aux["masks"] = masks
    return logits, aux


def _stacked_lecun_normal(key, shape, dtype=jnp.float32):
  """LeCun-normal init of K independent [C_in, C_out] kernels stacked as [K, C_in, C_out]."""
  return jax.vmap(lambda kk: nn.initializers.lecun_normal()(kk, shape[1:], dtype))(
      jax.random.split(key, shape[0]))


def _chunked_heads(params, f, n, beta, chunk):
  """Heads over image chunks with rematerialisation: peak memory of one chunk's masks."""
  b = f.shape[0]
  pad = (-b) % chunk
  fp = jnp.pad(f, ((0, pad), (0, 0), (0, 0), (0, 0))) if pad else f
  fp = fp.reshape((-1, chunk) + f.shape[1:])

  @jax.checkpoint
  def one(fc):
    logits, l1, _ = head_logits(params, fc, n, beta)
    return logits, l1

  logits, l1 = jax.lax.map(one, fp)
  logits = logits.reshape((-1,) + logits.shape[2:])[:b]
  l1 = l1.reshape(-1)[:b]
  return logits, l1


class HPNet(nn.Module):
  """Feature extractor + K attention heads.

  Call: ``logits, aux = model.apply(variables, images, train=..., n=..., beta=...,
  channel_mask=..., return_masks=...)`` with images ``[batch, H, W, channels]`` in
  [0, 1]. ``aux`` has ``"features" [batch, H, W, C]``, ``"mask_l1" [batch]`` and, when
  ``return_masks``, ``"masks" [batch, H, W, K, C]``.

  ``channel_mask [C]`` (1 = keep, 0 = prune) zeroes feature channels: the masking
  form of semantic channel pruning (paper A, Fig. 3).
  """

  num_attributes: int
  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)
  head_chunk: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, n: ArrayLike = 1.0,
               beta: ArrayLike = 0.0, channel_mask: jax.Array | None = None,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    f = FeatureExtractor(self.features, self.dilations, name="extractor")(x, train=train)
    if channel_mask is not None:
      f = f * channel_mask.astype(f.dtype)
    logits, aux = AttentionHeads(self.num_attributes, self.head_chunk, name="heads")(
        f, n=n, beta=beta, return_masks=return_masks)
    return logits, {"features": f, **aux}


class BaselineNet(nn.Module):
  """The same extractor with ordinary heads: GAP + one dense layer for all K (no attention).

  Accepts (and ignores) ``n``, ``beta`` and ``return_masks`` so that analyses call
  both models the same way; ``channel_mask`` prunes feature channels as in HPNet.
  """

  num_attributes: int
  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, n: ArrayLike = 1.0,
               beta: ArrayLike = 0.0, channel_mask: jax.Array | None = None,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    del n, beta, return_masks
    f = FeatureExtractor(self.features, self.dilations, name="extractor")(x, train=train)
    if channel_mask is not None:
      f = f * channel_mask.astype(f.dtype)
    logits = nn.Dense(self.num_attributes, name="classifier")(jnp.mean(f, axis=(1, 2)))
    return logits, {"features": f, "mask_l1": jnp.zeros(x.shape[:1], f.dtype)}
