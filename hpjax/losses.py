r"""Losses and metrics for multi-attribute classification (paper A, Eq. 10).

.. math::

   L = L_b + \lambda \lVert M \rVert_1, \qquad
   L_b = -\frac1N \sum_i \sum_k \big[y_{ik}\log\hat y_{ik} + (1-y_{ik})\log(1-\hat y_{ik})\big]

Reading (SPEC A3): ``L_b`` sums over attributes and averages over images, computed
from logits with the numerically stable ``max(z,0) - z y + log(1 + e^{-|z|})``.
``‖M‖₁`` is, per image, the sum of all mask values (H·W·K·C of them; masks are
sigmoids, so |M| = M), averaged over the batch (``l1_reduction="sum"``, the paper's
literal norm). Per mask element its gradient is λ, against a BCE gradient of order
1/(H·W) through the global average pool, so λ = 1e-5 is a real but not dominating
pull towards sparse masks. ``l1_reduction="mean"`` divides by the element count instead.
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
