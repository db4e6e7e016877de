r"""The K attention heads as pure functions: the one implementation of paper A Eq. 8–9.

.. math::

   M^k = \sigma(f W^k + b^k), \qquad
   \mathrm{logit}_k = w_k \cdot \mathrm{GAP}(g(M^k; n, \beta) \odot f) + b_k

``heads`` is the heads' parameter dict (``mask_kernel [K, C, C]``, ``mask_bias [K, C]``,
``kernel [K, C]``, ``bias [K]``), as :class:`hpjax.hpnet.model.AttentionHeads` creates
it. Three callers compose the same pieces (:func:`head_masks`, :func:`pool`,
:func:`logits_from_pooled`):

- :func:`head_logits`, the materialised form (``[batch, H, W, K, C]`` masks exist);
- :func:`streamed_heads`, the training form: a scan over chunks of feature-map
  positions with an analytic backward pass (a custom VJP), holding one chunk's masks
  at a time;
- the analyses (:mod:`hpjax.hpnet.perturbation`), which call :func:`head_masks` once and
  then :func:`logits_from_masks` for many ``(n, β)``.

g is :func:`hpjax.hpnet.transform.mask_transform` (h alone:
:func:`~hpjax.hpnet.transform.tone_curve`). Tests check every form against the others.

References: docs/papers.md §A2 (heads), §A4 (g); paper A Eq. 8–12.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from hpjax.core import chunking, distributed
from hpjax.hpnet.transform import mask_transform, tone_curve

Heads = dict[str, jax.Array]


def _matmul(a: jax.Array, b: jax.Array, dtype: Any) -> jax.Array:
  """``a @ b``; with ``dtype`` (e.g. bfloat16) the operands are cast to it and the
  products accumulated in float32 (on CPUs with AMX-BF16 or on GPU/TPU matrix units
  this runs at several times the float32 rate)."""
  if dtype is None:
    return a @ b
  return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def head_masks(heads: Heads, f: jax.Array, matmul_dtype: Any = None) -> jax.Array:
  r"""Untransformed attention masks :math:`M^k = \sigma(f W^k + b^k)` (paper Eq. 8).

  Args:
    heads: the heads' params.
    f: features ``[batch, H, W, C]``.
    matmul_dtype: None (float32) or e.g. ``jnp.bfloat16`` for the GEMM's operands
      (float32 accumulation).

  Returns:
    ``[batch, H, W, K, C]`` in [0, 1].

  References:
    docs/papers.md §A2, §A4; paper A Eq. 8–9, 11–13.
  """
  b, h, w, c = f.shape
  # One [BHW, C] x [C, K*C] GEMM for all heads: faster on CPU than the 5-index einsum
  # (see benchmarks/NOTES.md).
  w2, b2 = _flat_heads(heads["mask_kernel"], heads["mask_bias"])
  return nn.sigmoid(_matmul(f.reshape(-1, c), w2, matmul_dtype) + b2).reshape(b, h, w, -1, c)


def pool(g: jax.Array, f: jax.Array) -> jax.Array:
  """mean_hw(g ⊙ f): ``[B, H, W, K, C] x [B, H, W, C] -> [B, K, C]``.

  Written as multiply + reduce, which XLA fuses with whatever produced ``g``.
  """
  # The equivalent einsum lowers to a dot with batch dims (b, c): several times slower
  # on CPU (benchmarks/NOTES.md).
  return jnp.mean(g * f[:, :, :, None, :], axis=(1, 2))


def logits_from_pooled(heads: Heads, ph: jax.Array, f: jax.Array,
                       beta: ArrayLike = 0.0) -> jax.Array:
  """Logits from ``ph = GAP(h ⊙ f) [B, K, C]``; ``beta`` scalar or ``[T]`` (→ ``[T, B, K]``).

  A Python ``beta = 0`` (training, plain inference) skips the β term entirely.
  """
  if not (isinstance(beta, (int, float)) and beta == 0):
    b = jnp.asarray(beta, f.dtype)[..., None, None, None]
    ph = (1.0 + b) * ph - b * jnp.mean(f, axis=(1, 2))[:, None, :]
  return jnp.einsum("...bkd,kd->...bk", ph, heads["kernel"]) + heads["bias"]


def logits_from_masks(heads: Heads, masks: jax.Array, f: jax.Array,
                      n: ArrayLike | None = None, beta: ArrayLike = 0.0) -> jax.Array:
  r"""HPNet logits from given masks: :math:`w_k \cdot \mathrm{GAP}(g(M^k; n, \beta) \odot f) + b_k`.

  Since :math:`g = (1+\beta) h - \beta`, the pooled features are
  :math:`(1+\beta)\,\mathrm{GAP}(h \odot f) - \beta\,\mathrm{GAP}(f)`: β costs nothing
  once h is pooled, so ``beta`` may be a vector ``[T]`` (then the result is ``[T, B, K]``).

  Args:
    heads: HPNet head params.
    masks: ``[batch, H, W, K, C]`` untransformed masks.
    f: features ``[batch, H, W, C]``.
    n: tone-curve exponent (scalar, may be traced); ``None`` is h = identity
      (skips the tone curve: the fast path, and the one to differentiate).
    beta: suppression, a scalar or a vector ``[T]``.

  Returns:
    logits ``[batch, K]`` (``[T, batch, K]`` for a vector ``beta``).

  References:
    docs/papers.md §A2, §A4; paper A Eq. 8–9, 11–13.
  """
  ph = pool(masks if n is None else tone_curve(masks, n), f)
  return logits_from_pooled(heads, ph, f, beta)


def head_logits(heads: Heads, f: jax.Array, n: ArrayLike, beta: ArrayLike,
                return_masks: bool = False, matmul_dtype: Any = None
                ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """All K heads on features ``f [batch, H, W, C]`` with every mask materialised.

  Args:
    heads: the heads' params.
    f: feature map ``[batch, H, W, C]``.
    n, beta: mask transform parameters (scalars, may be traced); Python ``(1, 0)``
      skips the transform.
    return_masks: also return the untransformed masks ``[batch, H, W, K, C]``.
    matmul_dtype: None (float32) or e.g. ``jnp.bfloat16`` for the mask GEMM's operands
      (float32 accumulation; everything else stays float32).

  Returns:
    ``(logits [batch, K], mask_l1 [batch], masks or None)`` where ``mask_l1`` is the
    L1 norm of each image's (untransformed) masks, summed over H, W, K and C.

  References:
    docs/papers.md §A2, §A4; paper A Eq. 8–9, 11–13.
  """
  masks = head_masks(heads, f, matmul_dtype)
  # Training and plain inference use the identity transform: skip its pow/where work.
  identity = _is_identity(n, beta)
  logits = logits_from_masks(heads, masks, f, None if identity else n, 0.0 if identity else beta)
  mask_l1 = jnp.sum(masks, axis=(1, 2, 3, 4))  # sigmoid >= 0, so |M| = M.
  return logits, mask_l1, (masks if return_masks else None)


# Feature-map positions per streamed head chunk on CPU. 256 keeps a chunk's [rows, K·C]
# pre-activations (5 MB at K·C = 40·128) in cache between the GEMM that writes them and
# the sigmoid/multiply/sum that read them; it also ran faster than 128 or 512 rows, at
# C = 128 and at a pruned C = 32 alike, because of how XLA fuses the sigmoid into the
# sums at those sizes (see benchmarks/NOTES.md). Other backends size chunks from device
# memory (stream_rows).
STREAM_ROWS = 256

# [rows, K·C] float32 tensors one chunk keeps live at once: in the backward body σ, the
# transformed mask's cotangent, the pre-activation gradient and the K-sum's product.
_LIVE_CHUNK_TENSORS = 4


def stream_rows(num_attributes: int, channels: int) -> int:
  """Feature-map positions per streamed chunk when none is given: the chunking rule
  (:func:`hpjax.core.chunking.rows_per_chunk`) for rows of ``_LIVE_CHUNK_TENSORS``
  float32 ``[K·C]`` tensors; :data:`STREAM_ROWS` on CPU."""
  row_bytes = _LIVE_CHUNK_TENSORS * 4 * num_attributes * channels
  return chunking.rows_per_chunk(row_bytes, cpu_rows=STREAM_ROWS)


def _is_identity(n: ArrayLike, beta: ArrayLike) -> bool:
  """True when (n, beta) are static Python numbers equal to (1, 0): no transform work."""
  return (isinstance(n, (int, float)) and isinstance(beta, (int, float)) and n == 1
          and beta == 0)


def _chunk_layout(batch: int, hw: int, rows: int) -> tuple[int, int]:
  """``(images, positions)`` per chunk of at most about ``rows`` positions: one image's
  positions split, or whole images grouped (as few chunks as fit, of equal size, so
  that the zero-padded last group is as small as it can be)."""
  if hw >= rows:
    positions = max(d for d in range(1, rows + 1) if hw % d == 0)
    # An awkward H·W (e.g. a prime) has no useful divisor: take whole images.
    return (1, positions) if positions * 4 >= rows else (1, hw)
  steps = -(-batch // min(batch, rows // hw))
  return -(-batch // steps), hw


def streamed_heads(heads: Heads, f: jax.Array, n: ArrayLike, beta: ArrayLike,
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
    heads: the heads' params.
    f: feature map ``[batch, H, W, C]``.
    n, beta: mask transform parameters; Python ``(1, 0)`` skips the transform; traced
      values get exact gradients.
    rows: positions per chunk (None: :func:`stream_rows`, by backend and device
      memory).
    matmul_dtype: operand dtype of the three GEMM kinds (None: float32), as in
      :func:`head_logits`.

  Returns:
    ``(logits [batch, K], mask_l1 [batch])``, equal to :func:`head_logits`'s.

  References:
    docs/papers.md §A2, §A4; paper A Eq. 8–9, 11–13.
  """
  identity = _is_identity(n, beta)
  nb = jnp.zeros((2,), f.dtype) if identity else jnp.stack(
      [jnp.asarray(n, f.dtype), jnp.asarray(beta, f.dtype)])
  rows = rows or stream_rows(*heads["kernel"].shape)

  def pool_fn(mask_kernel, mask_bias, f, nb):
    return _streamed_pool(mask_kernel, mask_bias, f, nb, identity, rows, matmul_dtype)

  axis = distributed.data_axis(f.shape[0])
  if axis is not None:
    # Each device streams the heads over its own images only; the replicated kernels'
    # gradients are summed over devices once, after the loop (shard_map's transpose).
    pool_fn = jax.shard_map(pool_fn, in_specs=(P(), P(), P(axis), P()),
                            out_specs=(P(axis), P(axis)), check_vma=False)
  pooled, mask_l1 = pool_fn(heads["mask_kernel"], heads["mask_bias"], f, nb)
  return logits_from_pooled(heads, pooled, f), mask_l1


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
  inside the heads' scan those reduce fusions cost several times a plain fused loop
  (see benchmarks/NOTES.md); slices and adds stay in XLA's own loop fusions. Pairwise
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
