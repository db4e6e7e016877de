r"""The extractor's dilated 3×3 convolution, with a weight gradient that is fast on CPU.

HPNet's feature extractor (docs/papers.md §A1) is four stride-1 3×3 convolutions with
dilations 1, 2, 3, 2. XLA:CPU computes their forward pass and input gradient as fast
convolutions, but their *weight* gradient as a convolution whose window is the whole
feature map, 4–7× slower than the forward pass for the same FLOPs (measured per layer,
benchmarks/NOTES.md "The extractor's weight gradients"). The weight gradient is a sum
over the nine kernel taps of one matrix product each:

.. math::

   \frac{\partial L}{\partial W_{ij}} = \sum_{b,h,w} x_{b,\,h + (i-1)d,\,w + (j-1)d}^{\top}
   \,\delta_{b,h,w} \qquad (i, j \in \{0, 1, 2\},\ x \text{ zero-padded by } d),

i.e. nine GEMMs ``[Cin, B·H·W] × [B·H·W, Cout]`` on shifted views of the input.
``weight_grad="gemm"`` computes it that way (a custom VJP: the forward pass and the
input gradient stay XLA's convolutions); ``"xla"`` leaves it to XLA; ``"auto"`` picks
``"gemm"`` on CPU and ``"xla"`` elsewhere (cuDNN and the TPU compute weight gradients
well). The values agree to float32 rounding (tests/hpnet/test_conv.py).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

WEIGHT_GRADS = ("auto", "gemm", "xla")
_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", rhs_dilation=(dilation, dilation),
                                  dimension_numbers=_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_gemm_grad(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  return _conv(x, kernel, dilation)


def _fwd(x, kernel, dilation):
  return _conv(x, kernel, dilation), (x, kernel)


def _bwd(dilation, res, dy):
  x, kernel = res
  d = dilation
  _, h, w, cin = x.shape
  xp = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
  dy2 = dy.reshape(-1, dy.shape[-1])
  dk = jnp.stack([
      lax.dot_general(xp[:, i * d:i * d + h, j * d:j * d + w, :].reshape(-1, cin), dy2,
                      (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
      for i in range(3) for j in range(3)]).reshape(kernel.shape).astype(kernel.dtype)
  # The input gradient: the transposed convolution, as XLA computes it.
  _, vjp = jax.vjp(lambda x_: _conv(x_, kernel, dilation), x)
  return vjp(dy)[0], dk


_conv_gemm_grad.defvjp(_fwd, _bwd)


def dilated_conv3x3(x: jax.Array, kernel: jax.Array, dilation: int, *,
                    weight_grad: str = "auto") -> jax.Array:
  """Stride-1 SAME 3×3 convolution, ``x [B, H, W, Cin]``, ``kernel [3, 3, Cin, Cout]``.

  Args:
    x: the input.
    kernel: HWIO weights.
    dilation: the kernel dilation d (the padding is d: H×W is kept).
    weight_grad: how the gradient with respect to ``kernel`` is computed: "gemm",
      "xla", or "auto" (module docstring).

  References:
    docs/papers.md §A1.
  """
  if weight_grad not in WEIGHT_GRADS:
    raise ValueError(f"dilated_conv3x3: weight_grad must be one of {', '.join(WEIGHT_GRADS)}, "
                     f"got {weight_grad!r}")
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f"dilated_conv3x3: expected a [3, 3, Cin, Cout] kernel, got {kernel.shape}")
  if weight_grad == "auto":
    weight_grad = "gemm" if jax.default_backend() == "cpu" else "xla"
  if weight_grad == "xla":
    return _conv(x, kernel, dilation)
  return _conv_gemm_grad(x, kernel, dilation)


class DilatedConv(nn.Module):
  """``nn.Conv(features, (3, 3), kernel_dilation=d, padding="SAME", use_bias=False)`` with the
  same parameter (``kernel``, same initialiser), computed by :func:`dilated_conv3x3`."""

  features: int
  dilation: int = 1
  weight_grad: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel)
    return dilated_conv3x3(x, kernel, self.dilation, weight_grad=self.weight_grad)
