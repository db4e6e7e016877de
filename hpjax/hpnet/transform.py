r"""Intentional attention mask transformation g(M; n, β) (paper A, Eq. 11–13).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks".

.. math::

   h(M; n) = \begin{cases}
     \tfrac12 (M / 0.5)^n & M < 0.5 \\
     1 - \tfrac12 ((1 - M) / 0.5)^n & M \ge 0.5
   \end{cases}
   \qquad
   g(M; n, \beta) = (1 + \beta)\, h(M; n) - \beta

``n = 1, β = 0`` is the identity. ``h`` is point-symmetric about (0.5, 0.5): an
S-shaped tone curve for ``n > 1`` that pushes weak mask values down and strong ones
up; ``β > 0`` lets weak values go negative, i.e. actively suppresses them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def mask_transform(mask: ArrayLike, *, n: ArrayLike = 1.0, beta: ArrayLike = 0.0) -> jax.Array:
  """Applies g(M; n, β) element-wise.

  Args:
    mask: attention mask values in [0, 1], any shape (NumPy or JAX).
    n: tone-curve exponent, ``n > 0`` (``n = 1`` leaves ``h`` the identity). May be
      a traced scalar, so a grid of ``(n, beta)`` can be vmapped without recompiling.
    beta: suppression strength, ``beta >= 0``; also traceable.

  Returns:
    ``g(mask; n, beta)`` with the shape of ``mask``, in ``[-beta, 1]``.

  >>> import numpy as np
  >>> np.round(np.asarray(mask_transform(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), n=2.0)), 4)
  array([0.   , 0.125, 0.5  , 0.875, 1.   ], dtype=float32)
  """
  m = jnp.asarray(mask, dtype=jnp.result_type(float, mask))
  n = jnp.asarray(n, dtype=m.dtype)
  beta = jnp.asarray(beta, dtype=m.dtype)
  # Both branches are written as 1/2 * (distance / 0.5)^n around the nearer end;
  # clipping the distance at 0 keeps the power's gradient finite in the branch
  # that jnp.where discards (a NaN there would still poison the backward pass).
  low = 0.5 * jnp.power(jnp.clip(2.0 * m, 0.0, None), n)
  high = 1.0 - 0.5 * jnp.power(jnp.clip(2.0 * (1.0 - m), 0.0, None), n)
  h = jnp.where(m < 0.5, low, high)
  return (1.0 + beta) * h - beta
