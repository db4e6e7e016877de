r"""HPNet: a multi-attribute classifier with per-channel spatial attention (paper A).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks",
Tables 1–2 and Eq. 8–9 (see docs/papers.md §A1–A2).

.. math::

   f = f_f(x) \in \mathbb{R}^{H \times W \times C}, \qquad
   M^k = \sigma(f W^k + b^k) \in [0, 1]^{H \times W \times C}, \qquad
   \hat y_k = \sigma\big(w_k \cdot \mathrm{GAP}(g(M^k; n, \beta) \odot f) + b_k\big)

The K heads are one set of stacked parameters (``mask_kernel [K, C, C]`` …) computed
by einsum, never a Python loop over attributes.

Memory: the mask tensor is ``[batch, H, W, K, C]`` (2.7 GB in float32 at 64×64,
K=40, C=128, batch 32). With ``stream_heads=True`` (the default) it never exists: the
heads stream over chunks of feature-map positions, forward and backward
(:func:`hpjax.hpnet.heads.streamed_heads`, a custom VJP), holding one chunk's masks at a time.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet.conv import DilatedConv


class FeatureExtractor(nn.Module):
  """The dilation network f_f (paper Table 1): stride 1, so H×W is kept.

  Attributes:
    features: output channels of each conv layer; the last one is C.
    dilations: dilation of each 3×3 conv (padding SAME = dilation).

  References:
    docs/papers.md §A1; paper A Table 1.
  """

  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)
  conv_weight_grad: str = "auto"  # hpjax.hpnet.conv.dilated_conv3x3's weight_grad

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """Maps ``[batch, H, W, channels]`` images to ``[batch, H, W, C]`` features."""
    if len(self.features) != len(self.dilations):
      raise ValueError(
          f"features and dilations must have the same length, got {len(self.features)} "
          f"and {len(self.dilations)}")
    for i, (width, dilation) in enumerate(zip(self.features, self.dilations)):
      # No conv bias: the BatchNorm right after removes it (its gradient is only noise).
      x = DilatedConv(width, dilation, self.conv_weight_grad, name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i}")(x)
      x = nn.leaky_relu(x, negative_slope=0.01)
    return x


class AttentionHeads(nn.Module):
  """K binary classifiers with channel attention (paper Table 2, Eq. 8–9).

  Attributes:
    num_attributes: K.
    stream: True (the default) streams the heads over chunks of ``stream_rows``
      feature-map positions with an analytic backward pass
      (:func:`hpjax.hpnet.heads.streamed_heads`), so memory does not grow with
      batch·H·W·K·C; False computes the whole batch at once with every mask
      materialised (``[batch, H, W, K, C]``: the plain-autodiff reference, fine for
      tiny tensors).
    mask_bias_init: initial value of the mask branch's bias (0: every mask starts at
      σ(f W) around 0.5; a positive value starts the masks open, so a sparsity
      penalty has to close them against the classification signal).
    stream_rows: feature-map positions per streamed chunk (None: ``heads.stream_rows``,
      by backend and device memory, :mod:`hpjax.core.chunking`; small heads run faster
      on CPU with larger chunks, see benchmarks/NOTES.md).
    matmul_dtype: None (float32, the default) or a dtype such as ``"bfloat16"`` for
      the operands of the heads' mask GEMMs (forward and backward), accumulated in
      float32. Opt-in speed for hardware with bfloat16 matrix units (measured in
      benchmarks/NOTES.md); logits move by < 1e-2 relative
      (tests/hpnet/test_hpnet.py checks it).

  References:
    docs/papers.md §A2; paper A Table 2, Eq. 8–9.
  """

  num_attributes: int
  stream: bool = True
  matmul_dtype: Any = None
  stream_rows: int | None = None
  mask_bias_init: float = 0.0

  @nn.compact
  def __call__(self, f: jax.Array, *, n: ArrayLike = 1.0, beta: ArrayLike = 0.0,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    k, c = self.num_attributes, f.shape[-1]
    params = {
        # The mask branch is a 1×1 conv C→C per attribute (docs/papers.md §A2 reading).
        "mask_kernel": self.param("mask_kernel", _stacked_lecun_normal, (k, c, c)),
        "mask_bias": self.param("mask_bias", nn.initializers.constant(self.mask_bias_init), (k, c)),
        "kernel": self.param("kernel", nn.initializers.normal(1.0 / c ** 0.5), (k, c)),
        "bias": self.param("bias", nn.initializers.zeros, (k,)),
    }
    dtype = None if self.matmul_dtype is None else jnp.dtype(self.matmul_dtype)
    if return_masks or not self.stream:
      logits, mask_l1, masks = heads_lib.head_logits(params, f, n, beta, return_masks, dtype)
    else:
      logits, mask_l1 = heads_lib.streamed_heads(params, f, n, beta, self.stream_rows, dtype)
      masks = None
    aux = {"mask_l1": mask_l1}
    if return_masks:
      aux["masks"] = masks
    return logits, aux


def _stacked_lecun_normal(key, shape, dtype=jnp.float32):
  """LeCun-normal init of K independent [C_in, C_out] kernels stacked as [K, C_in, C_out]."""
  return jax.vmap(lambda kk: nn.initializers.lecun_normal()(kk, shape[1:], dtype))(
      jax.random.split(key, shape[0]))


class HPNet(nn.Module):
  """Feature extractor + K attention heads.

  Call: ``logits, aux = model.apply(variables, images, train=..., n=..., beta=...,
  channel_mask=..., return_masks=...)`` with images ``[batch, H, W, channels]`` in
  [0, 1]. ``aux`` has ``"features" [batch, H, W, C]``, ``"mask_l1" [batch]`` and, when
  ``return_masks``, ``"masks" [batch, H, W, K, C]``.

  ``channel_mask [C]`` (1 = keep, 0 = prune) zeroes feature channels: the masking
  form of semantic channel pruning (paper A, Fig. 3).

  References:
    docs/papers.md §A1–A2, §A4 (n, β), §A5 (channel_mask); paper A Eq. 8–9, 13.
  """

  num_attributes: int
  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)
  stream_heads: bool = True  # see AttentionHeads.stream
  head_matmul_dtype: Any = None  # see AttentionHeads.matmul_dtype
  head_stream_rows: int | None = None  # see AttentionHeads.stream_rows
  mask_bias_init: float = 0.0  # see AttentionHeads.mask_bias_init
  conv_weight_grad: str = "auto"  # see FeatureExtractor.conv_weight_grad

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, n: ArrayLike = 1.0,
               beta: ArrayLike = 0.0, channel_mask: jax.Array | None = None,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    f = FeatureExtractor(self.features, self.dilations, self.conv_weight_grad,
                         name="extractor")(x, train=train)
    if channel_mask is not None:
      f = f * channel_mask.astype(f.dtype)
    logits, aux = AttentionHeads(self.num_attributes, self.stream_heads, self.head_matmul_dtype,
                                 self.head_stream_rows, self.mask_bias_init, name="heads")(
        f, n=n, beta=beta, return_masks=return_masks)
    return logits, {"features": f, **aux}


class BaselineNet(nn.Module):
  """The same extractor with ordinary heads: GAP + one dense layer for all K (no attention).

  Accepts (and ignores) ``n``, ``beta`` and ``return_masks`` so that analyses call
  both models the same way; ``channel_mask`` prunes feature channels as in HPNet.

  References:
    docs/papers.md §A2 (the baseline).
  """

  num_attributes: int
  features: Sequence[int] = (32, 64, 64, 128)
  dilations: Sequence[int] = (1, 2, 3, 2)
  conv_weight_grad: str = "auto"  # see FeatureExtractor.conv_weight_grad

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, n: ArrayLike = 1.0,
               beta: ArrayLike = 0.0, channel_mask: jax.Array | None = None,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    del n, beta, return_masks
    f = FeatureExtractor(self.features, self.dilations, self.conv_weight_grad,
                         name="extractor")(x, train=train)
    if channel_mask is not None:
      f = f * channel_mask.astype(f.dtype)
    logits = nn.Dense(self.num_attributes, name="classifier")(jnp.mean(f, axis=(1, 2)))
    return logits, {"features": f, "mask_l1": jnp.zeros(x.shape[:1], f.dtype)}


# ---------------------------------------------------------------------------
# Accessors: the only code outside the modules that knows the parameter tree's names
# (``extractor/conv{i}``, ``extractor/bn{i}``, ``heads``, ``classifier``).

def is_hpnet(variables: dict[str, Any]) -> bool:
  """True for HPNet variables (attention heads), False for the GAP + dense baseline."""
  return "heads" in variables["params"]


def head_params(params: dict[str, Any]) -> dict[str, jax.Array] | None:
  """HPNet's heads' params (``mask_kernel``, ``mask_bias``, ``kernel``, ``bias``); None for the baseline."""
  return params.get("heads")



def head_weights(params: dict[str, Any]) -> np.ndarray:
  """Per-attribute weights on the pooled channels, ``[K, C]`` (w_k of Eq. 9, or the
  baseline's dense kernel transposed)."""
  heads = head_params(params)
  if heads is not None:
    return np.asarray(heads["kernel"])
  return np.asarray(params["classifier"]["kernel"]).T


def last_layer_index(params: dict[str, Any]) -> int:
  """Index ``i`` of the extractor's last ``conv{i}`` (the producer of f)."""
  convs = [int(k[4:]) for k in params["extractor"] if k.startswith("conv")]
  if not convs:
    raise ValueError(f"expected extractor/conv{{i}} params, found {sorted(params['extractor'])}")
  return max(convs)


def filter_l1_norms(variables: dict[str, Any]) -> np.ndarray:
  r"""L1 norm of each filter of the last conv, ``[C]``: :math:`\sum_{u,v,c'} |K_{u,v,c',c}|`.

  References:
    docs/papers.md §A5; paper A Fig. 3.
  """
  p = variables["params"]["extractor"][f"conv{last_layer_index(variables['params'])}"]
  return np.abs(np.asarray(p["kernel"], np.float64)).sum(axis=(0, 1, 2))



def logits_from_features(params: dict[str, Any], f: jax.Array, n: ArrayLike | None = None,
                         beta: ArrayLike = 0.0) -> jax.Array:
  """Logits ``[batch, K]`` of HPNet or the baseline from features ``[batch, H, W, C]``.

  The baseline ignores ``n`` and ``beta`` (it has no masks), as its ``apply`` does.
  """
  h = head_params(params)
  if h is not None:
    return heads_lib.logits_from_masks(h, heads_lib.head_masks(h, f), f, n, beta)
  c = params["classifier"]
  return jnp.mean(f, axis=(1, 2)) @ c["kernel"] + c["bias"]


def logit_terms(params: dict[str, Any], f: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Each channel's additive term of each logit (identity transform).

  HPNet: :math:`t_{kc} = w_{kc}\,\mathrm{GAP}(M^k_c f_c)`; the baseline:
  :math:`t_{kc} = w_{kc}\,\mathrm{GAP}(f_c)` (its dense kernel transposed). The logits
  are :math:`\sum_c t_{kc} + b_k`.

  Args:
    params: HPNet or baseline params.
    f: features ``[batch, H, W, C]``.

  Returns:
    ``(terms [batch, K, C], bias [K])``.

  References:
    docs/papers.md §A7.
  """
  h = head_params(params)
  if h is not None:
    return heads_lib.pool(heads_lib.head_masks(h, f), f) * h["kernel"], h["bias"]
  c = params["classifier"]
  return jnp.mean(f, axis=(1, 2))[:, None, :] * c["kernel"].T, c["bias"]



def prune_params(variables: dict[str, Any], kept: ArrayLike) -> dict[str, Any]:
  """New variables with only the ``kept`` feature channels (the input is untouched).

  Slices the extractor's last conv (output channels), its BatchNorm (scale, bias,
  running mean and var), and for HPNet every head's ``mask_kernel`` on both C axes,
  ``mask_bias`` and ``kernel``; for the baseline the classifier's input rows. Run it
  with :func:`pruned_model`.

  Args:
    variables: ``{"params", "batch_stats"}`` of HPNet or the baseline.
    kept: ``int [C']`` channel indices to keep (in the order they should appear).

  Returns:
    Variables of the same structure with C' channels.

  References:
    docs/papers.md §A5; paper A Fig. 3.
  """
  kept = np.asarray(kept, np.int64)
  params = variables["params"]
  last = last_layer_index(params)
  c = head_weights(params).shape[1]
  if kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= c:
    raise ValueError(f"expected kept to be a non-empty 1-D array of channel ids in [0, {c}), "
                     f"got {kept!r}")
  ext = dict(params["extractor"])
  conv = dict(ext[f"conv{last}"])
  conv["kernel"] = conv["kernel"][..., kept]
  if "bias" in conv:
    conv["bias"] = conv["bias"][kept]
  ext[f"conv{last}"] = conv
  ext[f"bn{last}"] = {name: v[kept] for name, v in ext[f"bn{last}"].items()}
  new_params = {**params, "extractor": ext}
  h = head_params(params)
  if h is not None:
    new_params["heads"] = {**h, "mask_kernel": h["mask_kernel"][:, kept][:, :, kept],
                           "mask_bias": h["mask_bias"][:, kept], "kernel": h["kernel"][:, kept]}
  else:
    cl = params["classifier"]
    new_params["classifier"] = {**cl, "kernel": cl["kernel"][kept]}
  out = {**variables, "params": new_params}
  if "batch_stats" in variables:
    bs = dict(variables["batch_stats"])
    bs_ext = dict(bs["extractor"])
    bs_ext[f"bn{last}"] = {name: v[kept] for name, v in bs_ext[f"bn{last}"].items()}
    bs["extractor"] = bs_ext
    out["batch_stats"] = bs
  return out


def pruned_model(model: nn.Module, num_kept: int) -> nn.Module:
  """The same architecture with ``features[-1] = num_kept`` (runs :func:`prune_params` output).

  References:
    docs/papers.md §A5; paper A Fig. 3.
  """
  return model.clone(features=tuple(model.features[:-1]) + (int(num_kept),))
