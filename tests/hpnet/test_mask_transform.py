import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hpjax import mask_transform
from hpjax.hpnet.transform import tone_curve

M = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)


@pytest.mark.parametrize("n,beta,expected", [
    # h(0.25; 2) = 0.5 * 0.5^2 = 0.125; h(0.75; 2) = 1 - 0.125.
    (2.0, 0.0, [0.0, 0.125, 0.5, 0.875, 1.0]),
    # n = 3: 0.5 * 0.5^3 = 0.0625.
    (3.0, 0.0, [0.0, 0.0625, 0.5, 0.9375, 1.0]),
    # g = 1.5 h - 0.5 with n = 2.
    (2.0, 0.5, [-0.5, -0.3125, 0.25, 0.8125, 1.0]),
    # n = 1, beta = 0.25: g = 1.25 M - 0.25.
    (1.0, 0.25, [-0.25, 0.0625, 0.375, 0.6875, 1.0]),
])
def test_golden_values(n, beta, expected):
  np.testing.assert_allclose(mask_transform(M, n=n, beta=beta), expected, atol=1e-6)


def test_identity_at_n1_beta0():
  m = np.random.default_rng(0).uniform(size=(3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(mask_transform(m, n=1.0, beta=0.0), m, atol=1e-7)


@settings(max_examples=60, deadline=None)
@given(m=st.floats(0.0, 1.0), n=st.floats(0.5, 6.0))
def test_h_point_symmetric_and_monotone(m, n):
  h = lambda v: float(mask_transform(np.float32(v), n=n))
  assert h(m) + h(1.0 - m) == pytest.approx(1.0, abs=1e-5)
  assert h(min(m + 0.01, 1.0)) >= h(m) - 1e-6
  assert 0.0 <= h(m) <= 1.0


def test_traced_parameters_vmap_and_grad():
  m = jnp.linspace(0.01, 0.99, 7)
  grid_n = jnp.array([1.0, 2.0, 3.0])
  grid_b = jnp.array([0.0, 0.1, 0.5])
  out = jax.jit(jax.vmap(lambda n, b: mask_transform(m, n=n, beta=b)))(grid_n, grid_b)
  for i in range(3):
    np.testing.assert_allclose(out[i], mask_transform(m, n=float(grid_n[i]), beta=float(grid_b[i])),
                               atol=1e-6)
  # d/dM at 0.25 for n=2: M^... h = 2 M^2 → 4 M = 1.0; finite at both ends.
  g = jax.grad(lambda v: mask_transform(v, n=2.0))
  assert float(g(0.25)) == pytest.approx(1.0, abs=1e-6)
  assert np.isfinite(float(g(0.0))) and np.isfinite(float(g(1.0)))


def test_equals_the_power_form_of_eq_12():
  """g is computed as e^{n log u} (one log shared by a grid of n); it must equal the
  paper's power form h = ½(2M)^n below ½ and 1 − ½(2 − 2M)^n above, evaluated in float64."""
  m = jnp.array([0.0, 1e-7, 0.1, 0.25, 0.4999, 0.5, 0.5001, 0.75, 0.9, 1.0 - 1e-7, 1.0],
                jnp.float32)
  m64 = np.asarray(m, np.float64)  # the float32 inputs themselves
  for n in (0.5, 1.0, 2.0, 3.7):
    h = np.where(m64 < 0.5, 0.5 * (2 * m64) ** n, 1.0 - 0.5 * (2.0 - 2.0 * m64) ** n)
    np.testing.assert_allclose(tone_curve(m, n), h, atol=2e-6)
    for beta in (0.0, 0.3):
      np.testing.assert_allclose(mask_transform(m, n=n, beta=beta), (1 + beta) * h - beta,
                                 atol=3e-6)
