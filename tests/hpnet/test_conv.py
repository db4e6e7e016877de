"""The extractor's dilated convolution (hpjax/hpnet/conv.py): nn.Conv's parameter and values,
and a GEMM weight gradient equal to XLA's."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.hpnet.conv import DilatedConv, dilated_conv3x3


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_same_parameter_and_output_as_nn_conv(dilation):
  x = jax.random.normal(jax.random.key(0), (2, 9, 7, 3))
  ours = DilatedConv(5, dilation)
  ref = nn.Conv(5, (3, 3), kernel_dilation=dilation, padding="SAME", use_bias=False)
  v_ours = ours.init(jax.random.key(1), x)
  v_ref = ref.init(jax.random.key(1), x)
  # Same tree and same initial values: checkpoints of the nn.Conv extractor still load.
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
  np.testing.assert_array_equal(v_ours["params"]["kernel"], v_ref["params"]["kernel"])
  np.testing.assert_allclose(ours.apply(v_ours, x), ref.apply(v_ref, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dilation,shape,cout", [(1, (2, 8, 8, 3), 4), (2, (3, 10, 7, 6), 5),
                                                 (3, (1, 12, 12, 4), 8)])
def test_gemm_weight_gradient_equals_xla(dilation, shape, cout):
  kx, kk, kc = jax.random.split(jax.random.key(dilation), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kk, (3, 3, shape[-1], cout))
  cot = jax.random.normal(kc, shape[:3] + (cout,))

  def loss(x, k, weight_grad):
    return jnp.sum(jnp.tanh(dilated_conv3x3(x, k, dilation, weight_grad=weight_grad)) * cot)

  gx_g, gk_g = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(x, kernel, "gemm")
  gx_x, gk_x = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(x, kernel, "xla")
  np.testing.assert_allclose(gk_g, gk_x, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(gk_x))))
  np.testing.assert_allclose(gx_g, gx_x, rtol=1e-5, atol=1e-6)
  # A weight gradient that ignored the dilation (or a tap) would be far off.
  assert float(jnp.max(jnp.abs(gk_g))) > 1.0


def test_gemm_weight_gradient_under_vmap_and_bad_arguments():
  x = jax.random.normal(jax.random.key(0), (4, 2, 6, 6, 2))
  k = jax.random.normal(jax.random.key(1), (3, 3, 2, 3))
  per = jax.vmap(jax.grad(lambda x: jnp.sum(dilated_conv3x3(x, k, 2, weight_grad="gemm") ** 2),
                          ))(x)
  ref = jax.vmap(jax.grad(lambda x: jnp.sum(dilated_conv3x3(x, k, 2, weight_grad="xla") ** 2)))(x)
  np.testing.assert_allclose(per, ref, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="weight_grad must be one of auto, gemm, xla, got 'fast'"):
    dilated_conv3x3(x[0], k, 1, weight_grad="fast")
  with pytest.raises(ValueError, match=r"expected a \[3, 3, Cin, Cout\] kernel"):
    dilated_conv3x3(x[0], k[:2], 1)
