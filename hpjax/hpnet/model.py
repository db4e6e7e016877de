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
K=40, C=128, batch 32). With ``head_chunk > 0`` (the default) it never exists: the
heads stream over chunks of feature-map positions, forward and backward
(:func:`streamed_heads`, a custom VJP), holding one chunk's masks at a time.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hpjax.hpnet.transform import mask_transform


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


def _matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
  """``a @ b``; with ``dtype`` (e.g. bfloat16) the operands are cast to it and the
  products accumulated in float32 (on CPUs with AMX-BF16 or on GPU/TPU matrix units
  this runs at several times the float32 rate)."""
  if dtype is None:
    return a @ b
  return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def head_logits(params: dict[str, jax.Array], f: jax.Array, n: ArrayLike, beta: ArrayLike,
                return_masks: bool = False, matmul_dtype: Any = None
                ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """All K attention heads on features ``f [batch, H, W, C]`` (pure function).

  Args:
    params: ``mask_kernel [K, C, C]``, ``mask_bias [K, C]``, ``kernel [K, C]``, ``bias [K]``.
    f: feature map ``[batch, H, W, C]``.
    n, beta: mask transform parameters (scalars, may be traced).
    return_masks: also return the untransformed masks ``[batch, H, W, K, C]``.
    matmul_dtype: None (float32) or e.g. ``jnp.bfloat16`` for the mask GEMM's operands
      (float32 accumulation; everything else stays float32).

  Returns:
    ``(logits [batch, K], mask_l1 [batch], masks or None)`` where ``mask_l1`` is the
    L1 norm of each image's (untransformed) masks, summed over H, W, K and C.
  """
  # One GEMM [b*H*W, C] x [C, K*C] for all heads.
  b, h, w, c = f.shape
  w2, b2 = _flat_heads(params["mask_kernel"], params["mask_bias"])
  pre = (_matmul(f.reshape(-1, c), w2, matmul_dtype) + b2).reshape(b, h, w, -1, c)
  masks = nn.sigmoid(pre)
  # Training and plain inference use the identity transform: skip its pow/where work.
  g = masks if _is_identity(n, beta) else mask_transform(masks, n=n, beta=beta)
  # GAP(g ⊙ f) as one elementwise-multiply-and-reduce that XLA fuses with the sigmoid,
  # so the [b, H, W, K, C] tensor is streamed once instead of written and re-read.
  pooled = jnp.sum(g * f[:, :, :, None, :], axis=(1, 2)) / (h * w)
  logits = jnp.einsum("bkd,kd->bk", pooled, params["kernel"]) + params["bias"]
  mask_l1 = jnp.sum(masks, axis=(1, 2, 3, 4))  # sigmoid >= 0, so |M| = M.
  return logits, mask_l1, (masks if return_masks else None)


class AttentionHeads(nn.Module):
  """K binary classifiers with channel attention (paper Table 2, Eq. 8–9).

  Attributes:
    num_attributes: K.
    head_chunk: 0 computes the whole batch at once with every mask materialised
      (``[batch, H, W, K, C]``; simplest, fine for tiny tensors). Any positive value
      streams the heads over chunks of about ``STREAM_ROWS`` feature-map positions
      with an analytic backward pass (:func:`streamed_heads`), so memory does not
      grow with batch·H·W·K·C. (It used to be the images per rematerialised chunk;
      positive values keep working.)
    mask_bias_init: initial value of the mask branch's bias (0: every mask starts at
      σ(f W) around 0.5; a positive value starts the masks open, so a sparsity
      penalty has to close them against the classification signal).
    stream_rows: feature-map positions per streamed chunk (``STREAM_ROWS`` by default;
      the demo's small heads, K·C = 448, run 12% faster per step with 2048).
    matmul_dtype: None (float32, the default) or a dtype such as ``"bfloat16"`` for
      the operands of the heads' mask GEMMs (forward and backward), accumulated in
      float32. Opt-in speed for hardware with bfloat16 matrix units (1.3× per training
      step on an AMX CPU, benchmarks/NOTES.md); logits move by < 1e-2 relative
      (tests/test_hpnet.py measures it).
  """

  num_attributes: int
  head_chunk: int = 1
  matmul_dtype: Any = None
  stream_rows: int | None = None
  mask_bias_init: float = 0.0

  @nn.compact
  def __call__(self, f: jax.Array, *, n: ArrayLike = 1.0, beta: ArrayLike = 0.0,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    k, c = self.num_attributes, f.shape[-1]
    params = {
        # The mask branch is a 1×1 conv C→C per attribute (SPEC A2 reading).
        "mask_kernel": self.param("mask_kernel", _stacked_lecun_normal, (k, c, c)),
        "mask_bias": self.param("mask_bias", nn.initializers.constant(self.mask_bias_init), (k, c)),
        "kernel": self.param("kernel", nn.initializers.normal(1.0 / c ** 0.5), (k, c)),
        "bias": self.param("bias", nn.initializers.zeros, (k,)),
    }
    dtype = None if self.matmul_dtype is None else jnp.dtype(self.matmul_dtype)
    if return_masks or self.head_chunk <= 0:
      logits, mask_l1, masks = head_logits(params, f, n, beta, return_masks, dtype)
    else:
      logits, mask_l1 = streamed_heads(params, f, n, beta, self.stream_rows, dtype)
      masks = None
    aux = {"mask_l1": mask_l1}
    if return_masks:
      aux["masks"] = masks
    return logits, aux


def _stacked_lecun_normal(key, shape, dtype=jnp.float32):
  """LeCun-normal init of K independent [C_in, C_out] kernels stacked as [K, C_in, C_out]."""
  return jax.vmap(lambda kk: nn.initializers.lecun_normal()(kk, shape[1:], dtype))(
      jax.random.split(key, shape[0]))


# Feature-map positions per streamed head chunk. 256 keeps a chunk's [rows, K·C]
# pre-activations (5 MB at K·C = 40·128) in cache between the GEMM that writes them and
# the sigmoid/multiply/sum that read them; it also measured 2-5x faster than 128 or 512
# rows, at C = 128 and at a pruned C = 32 alike, because of how XLA fuses the sigmoid
# into the sums at those sizes (benchmarks/NOTES.md).
STREAM_ROWS = 256


def _is_identity(n: ArrayLike, beta: ArrayLike) -> bool:
  """True when (n, beta) are static Python numbers equal to (1, 0): no transform work."""
  return (isinstance(n, (int, float)) and isinstance(beta, (int, float)) and n == 1
          and beta == 0)


def _chunk_layout(batch: int, hw: int, rows: int) -> tuple[int, int]:
  """``(images, positions)`` per chunk: one image's positions split, or whole images grouped."""
  if hw >= rows:
    positions = max(d for d in range(1, rows + 1) if hw % d == 0)
    # An awkward H·W (e.g. a prime) has no useful divisor: take whole images.
    return (1, positions) if positions * 4 >= rows else (1, hw)
  return min(batch, max(1, rows // hw)), hw


def streamed_heads(params: dict[str, jax.Array], f: jax.Array, n: ArrayLike, beta: ArrayLike,
                   rows: int | None = None, matmul_dtype: Any = None
                   ) -> tuple[jax.Array, jax.Array]:
  """:func:`head_logits` without materialising the masks, forward and backward.

  The heads run as a :func:`jax.lax.scan` over chunks of about ``rows`` feature-map
  positions; each chunk's masks live only inside one loop iteration. The backward
  pass (a :func:`jax.custom_vjp`) recomputes the chunk's pre-activations with one
  GEMM and uses σ' = σ(1 − σ) directly, instead of differentiating through a
  rematerialised forward pass: four GEMMs of ``[rows, C] × [C, K·C]`` size per chunk
  over forward + backward, and no ``[batch, H, W, K, C]`` tensor anywhere.

  Args:
    params: as in :func:`head_logits`.
    f: feature map ``[batch, H, W, C]``.
    n, beta: mask transform parameters; Python ``(1, 0)`` skips the transform; traced
      values get exact gradients.
    rows: positions per chunk (default ``STREAM_ROWS``).
    matmul_dtype: operand dtype of the three GEMM kinds (None: float32), as in
      :func:`head_logits`.

  Returns:
    ``(logits [batch, K], mask_l1 [batch])``, equal to :func:`head_logits`'s.
  """
  identity = _is_identity(n, beta)
  nb = jnp.zeros((2,), f.dtype) if identity else jnp.stack(
      [jnp.asarray(n, f.dtype), jnp.asarray(beta, f.dtype)])
  pooled, mask_l1 = _streamed_pool(params["mask_kernel"], params["mask_bias"], f, nb,
                                   identity, rows or STREAM_ROWS, matmul_dtype)
  logits = jnp.einsum("bkd,kd->bk", pooled, params["kernel"]) + params["bias"]
  return logits, mask_l1


def _chunks(f: jax.Array, images: int, positions: int) -> jax.Array:
  """``[batch, H, W, C]`` → ``[steps, images, positions, C]`` (batch zero-padded)."""
  b, c = f.shape[0], f.shape[-1]
  pad = (-b) % images
  x = f.reshape(b, -1, c)
  if pad:
    x = jnp.pad(x, ((0, pad), (0, 0), (0, 0)))
  # Either images == 1 or positions == H·W, so a plain reshape keeps each chunk inside
  # one image group and the steps in (image group, position block) order.
  return x.reshape(-1, images, positions, c)


def _from_chunks(y: jax.Array, batch: int, hw: int) -> jax.Array:
  """Inverse of :func:`_chunks`: ``[steps, images, positions, C]`` → ``[batch, H·W, C]``."""
  return y.reshape(-1, hw, y.shape[-1])[:batch]


def _flat_heads(mask_kernel: jax.Array, mask_bias: jax.Array) -> tuple[jax.Array, jax.Array]:
  """All K mask convs as one ``[C, K·C]`` matrix and ``[K·C]`` bias (one GEMM per chunk)."""
  k, c, d = mask_kernel.shape
  return mask_kernel.transpose(1, 0, 2).reshape(c, k * d), mask_bias.reshape(k * d)


def _transform(m: jax.Array, nb: jax.Array, identity: bool) -> jax.Array:
  return m if identity else mask_transform(m, n=nb[0], beta=nb[1])


def _pairwise_sum(a: jax.Array, axis: int) -> jax.Array:
  """``jnp.sum(a, axis)`` as a halving tree of adds (exact same math, pairwise order).

  Why not ``jnp.sum``: XLA:CPU hands single-output add-reductions to YNNPACK, and
  inside the heads' scan those reduce fusions cost 3–4× a plain fused loop
  (benchmarks/NOTES.md); slices and adds stay in XLA's own loop fusions. Pairwise
  summation is also the more accurate order. Other backends use ``jnp.sum``.
  """
  if jax.default_backend() != "cpu":
    return jnp.sum(a, axis=axis)
  # Halve along ``axis`` itself: moving it to the front first would cost a transpose.
  while a.shape[axis] > 1:
    n = a.shape[axis]
    half = n // 2
    pair = (jax.lax.slice_in_dim(a, 0, half, axis=axis)
            + jax.lax.slice_in_dim(a, half, 2 * half, axis=axis))
    a = (jnp.concatenate([pair, jax.lax.slice_in_dim(a, 2 * half, n, axis=axis)], axis=axis)
         if n % 2 else pair)
  return jnp.squeeze(a, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _streamed_pool(mask_kernel, mask_bias, f, nb, identity, rows, dtype):
  """``(GAP(g(M) ⊙ f) [batch, K, C], Σ M [batch])`` streamed over position chunks."""
  return _streamed_pool_fwd(mask_kernel, mask_bias, f, nb, identity, rows, dtype)[0]


def _streamed_pool_fwd(mask_kernel, mask_bias, f, nb, identity, rows, dtype):
  b, h, w, c = f.shape
  k, hw = mask_kernel.shape[0], h * w
  images, positions = _chunk_layout(b, hw, rows)
  w2, b2 = _flat_heads(mask_kernel, mask_bias)
  w2 = w2 if dtype is None else w2.astype(dtype)  # cast once, not per chunk

  def body(_, x):  # x [images, positions, C]
    m = nn.sigmoid(_matmul(x.reshape(-1, c), w2, dtype) + b2).reshape(images, positions, k, c)
    g = _transform(m, nb, identity)
    pooled = _pairwise_sum(g * x[:, :, None, :], 1)
    l1 = jnp.sum(_pairwise_sum(m, 1), axis=(1, 2))
    return None, (pooled, l1)

  _, (pooled, l1) = jax.lax.scan(body, None, _chunks(f, images, positions))
  blocks = hw // positions
  pooled = jnp.sum(pooled.reshape(-1, blocks, images, k, c), axis=1).reshape(-1, k, c)[:b]
  l1 = jnp.sum(l1.reshape(-1, blocks, images), axis=1).reshape(-1)[:b]
  return (pooled / hw, l1), (mask_kernel, mask_bias, f, nb)


def _streamed_pool_bwd(identity, rows, dtype, res, cotangents):
  mask_kernel, mask_bias, f, nb = res
  g_pooled, g_l1 = cotangents
  b, h, w, c = f.shape
  k, hw = mask_kernel.shape[0], h * w
  images, positions = _chunk_layout(b, hw, rows)
  blocks = hw // positions
  w2, b2 = _flat_heads(mask_kernel, mask_bias)
  w2 = w2 if dtype is None else w2.astype(dtype)  # cast once, not per chunk
  # (A row-major copy of w2.T for the input-gradient GEMM measured no faster.)
  xs = _chunks(f, images, positions)
  pad = (-b) % images

  def per_step(a):  # [batch, ...] → [steps, images, ...], repeated over position blocks
    a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1)) if pad else a
    a = a.reshape((-1, 1, images) + a.shape[1:])
    return jnp.broadcast_to(a, (a.shape[0], blocks) + a.shape[2:]).reshape(
        (-1, images) + a.shape[3:])

  # Each chunk's x^T with a row of ones appended: one GEMM then gives the mask kernel's
  # gradient and, in its last row, the bias gradient Σ_p dpre. A separate reduce over
  # dpre made XLA compute dpre twice (once per consumer) and cost a pass of its own.
  xts = jnp.concatenate([jnp.swapaxes(xs.reshape(xs.shape[0], -1, c), 1, 2),
                         jnp.ones((xs.shape[0], 1, images * positions), f.dtype)], axis=1)

  def body(carry, inp):
    dwb, dnb = carry  # [C + 1, K·C]: kernel gradient rows, then the bias gradient
    x, xt, gp, gl = inp  # [images, positions, C], [C + 1, rows], [images, K, C], [images]
    x2 = x.reshape(-1, c)
    m = nn.sigmoid(_matmul(x2, w2, dtype) + b2).reshape(images, positions, k, c)
    dg = gp[:, None] * x[:, :, None, :]
    if identity:
      g, dm = m, dg
    else:
      g, vjp = jax.vjp(lambda m_, nb_: mask_transform(m_, n=nb_[0], beta=nb_[1]), m, nb)
      dm, dnb_chunk = vjp(dg)
      dnb = dnb + dnb_chunk
    # σ'(z) = σ(1 − σ): the L1 term's gradient (g_l1 per image) enters before it.
    dpre = ((dm + gl[:, None, None, None]) * m * (1.0 - m)).reshape(-1, k * c)
    dwb = dwb + _matmul(xt, dpre, dtype)
    dx = _matmul(dpre, w2.T, dtype) + _pairwise_sum(gp[:, None] * g, 2).reshape(-1, c)
    return (dwb, dnb), dx.reshape(images, positions, c)

  init = (jnp.zeros((c + 1, k * c), f.dtype), jnp.zeros_like(nb))
  (dwb, dnb), dx = jax.lax.scan(body, init, (xs, xts, per_step(g_pooled / hw), per_step(g_l1)))
  dw, db = dwb[:c], dwb[c]
  d_kernel = dw.reshape(c, k, c).transpose(1, 0, 2)
  return d_kernel, db.reshape(k, c), _from_chunks(dx, b, hw).reshape(f.shape), dnb


_streamed_pool.defvjp(_streamed_pool_fwd, _streamed_pool_bwd)


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
  head_matmul_dtype: Any = None  # see AttentionHeads.matmul_dtype
  head_stream_rows: int | None = None  # see AttentionHeads.stream_rows
  mask_bias_init: float = 0.0  # see AttentionHeads.mask_bias_init

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, n: ArrayLike = 1.0,
               beta: ArrayLike = 0.0, channel_mask: jax.Array | None = None,
               return_masks: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    f = FeatureExtractor(self.features, self.dilations, name="extractor")(x, train=train)
    if channel_mask is not None:
      f = f * channel_mask.astype(f.dtype)
    logits, aux = AttentionHeads(self.num_attributes, self.head_chunk, self.head_matmul_dtype,
                                 self.head_stream_rows, self.mask_bias_init, name="heads")(
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
