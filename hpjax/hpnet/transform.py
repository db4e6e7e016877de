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


def tone_parts(m: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(M < 0.5, log u)`` with :math:`u = 2\\min(M, 1 - M)`: what h(M; n) needs for any n."""
  low = m < 0.5
  # u = 0 (a saturated sigmoid) would give log 0 = -inf and NaN gradients; the floor
  # changes u^n by less than float32 resolution for any n >= 0.05.
  return low, jnp.log(jnp.maximum(jnp.where(low, 2.0 * m, 2.0 - 2.0 * m), 1e-30))


def tone_from_parts(low: jax.Array, log_u: jax.Array, n: ArrayLike) -> jax.Array:
  p = 0.5 * jnp.exp(n * log_u)
  return jnp.where(low, p, 1.0 - p)


def tone_curve(m: jax.Array, n: ArrayLike) -> jax.Array:
  r"""h(M; n) of Eq. 12 as :math:`p = \tfrac12 e^{n \log u}`, :math:`u = 2\min(M, 1-M)`,
  :math:`h = p` below 0.5 and :math:`1 - p` above.

  Written so that a grid of n shares one logarithm per element (:func:`tone_parts`)
  and pays one exponential per n (:func:`tone_from_parts`), a quarter of the cost of
  two ``power`` calls per n.

  References:
    docs/papers.md §A4; paper A Eq. 12.
  """
  return tone_from_parts(*tone_parts(m), n)



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

  References:
    docs/papers.md §A4; paper A Eq. 11–12.
  """
  m = jnp.asarray(mask, dtype=jnp.result_type(float, mask))
  n = jnp.asarray(n, dtype=m.dtype)
  beta = jnp.asarray(beta, dtype=m.dtype)
  return (1.0 + beta) * tone_curve(m, n) - beta
