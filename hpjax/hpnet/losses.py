r"""Losses and metrics for multi-attribute classification (paper A, Eq. 10).

.. math::

   L = L_b + \lambda \lVert M \rVert_1, \qquad
   L_b = -\frac1N \sum_i \sum_k \big[y_{ik}\log\hat y_{ik} + (1-y_{ik})\log(1-\hat y_{ik})\big]

Reading (docs/papers.md §A3): ``L_b`` sums over attributes and averages over images, computed
from logits with the numerically stable ``max(z,0) - z y + log(1 + e^{-|z|})``.
``‖M‖₁`` is, per image, the sum of all mask values (H·W·K·C of them; masks are
sigmoids, so |M| = M), averaged over the batch.

Two reductions:

* ``l1_reduction="sum"`` is the paper's literal norm. Its gradient on every mask
  element is λ, while the classification signal reaches an element through the
  global average pool, divided by H·W; on a mask bias the pull grows with H·W and
  points the same way on every image, and Adam turns a consistent gradient into
  full-size steps whatever its magnitude. In the 32×32 demo it closed the masks
  (mean mask 0.5 → 0.04 within 300 steps) before the subtler attributes were
  learned, and 9 of the 14 heads ended constant (docs/training.md).
* ``l1_reduction="mean"`` (the configs' default) divides by the element count: the
  term is λ times the mean mask value, independent of image size, K and C. At the
  paper's λ = 1e-5 it barely moves the masks (their mean stays near 0.5); raise λ
  for sparser masks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def attribute_loss(logits: jax.Array, labels: jax.Array, mask_l1: jax.Array, *,
                   l1_lambda: float = 1e-5, mask_elements: int = 1,
                   l1_reduction: str = "sum") -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. 10 from logits.

  Args:
    logits: ``[batch, K]``.
    labels: ``[batch, K]`` in {0, 1}.
    mask_l1: ``[batch]`` per-image sum of mask values (model ``aux["mask_l1"]``).
    l1_lambda: λ.
    mask_elements: mask values per image (H·W·K·C), used by ``l1_reduction="mean"``.
    l1_reduction: ``"sum"`` (paper) or ``"mean"``, see the module docstring.

  Returns:
    ``(loss, {"bce": L_b, "mask_l1": ‖M‖₁ term before λ})``.

  References:
    docs/papers.md §A3; paper A Eq. 10.
  """
  if l1_reduction not in ("sum", "mean"):
    raise ValueError(f"l1_reduction must be 'sum' or 'mean', got {l1_reduction!r}")
  bce = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype)),
                         axis=-1))
  l1 = jnp.mean(mask_l1)
  if l1_reduction == "mean":
    l1 = l1 / mask_elements
  return bce + l1_lambda * l1, {"bce": bce, "mask_l1": l1}


def attribute_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-attribute correct counts' mean over the batch: ``[K]`` in [0, 1]."""
  return jnp.mean(((logits > 0) == (labels > 0)).astype(jnp.float32), axis=0)
