import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax.hpnet.losses import attribute_accuracy, attribute_loss
from hpjax.hpnet.model import BaselineNet, HPNet

K, C = 5, 6
FEAT = (4, C)
DIL = (1, 2)


@pytest.fixture(scope="module")
def setup():
  x = jax.random.uniform(jax.random.key(1), (7, 9, 9, 3))
  model = HPNet(K, FEAT, DIL, stream_heads=False)
  variables = model.init(jax.random.key(0), x)
  return model, variables, x


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def test_vectorised_heads_equal_per_attribute_loop(setup):
  model, variables, x = setup
  logits, aux = model.apply(variables, x, return_masks=True)
  f = np.asarray(aux["features"], np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["heads"])
  for k in range(K):  # the per-attribute computation the einsum replaces
    mask = _sigmoid(f @ p["mask_kernel"][k] + p["mask_bias"][k])  # [B, H, W, C]
    pooled = (mask * f).mean(axis=(1, 2))
    expected = pooled @ p["kernel"][k] + p["bias"][k]
    np.testing.assert_allclose(logits[:, k], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(aux["masks"][..., k, :], mask, rtol=1e-5, atol=1e-6)


def test_chunked_heads_equal_whole_batch_values_and_gradients(setup):
  _, variables, x = setup
  chunked = HPNet(K, FEAT, DIL)  # streamed by default; 7 images: chunks of 3 + a padded one

  def loss(params, model):
    logits, aux = model.apply({**variables, "params": params}, x, n=2.0, beta=0.1)
    return jnp.sum(jnp.sin(logits)) + 1e-3 * jnp.sum(aux["mask_l1"])

  whole = HPNet(K, FEAT, DIL, stream_heads=False)
  v1, g1 = jax.value_and_grad(loss)(variables["params"], whole)
  # Default rows: 9×9 = 81 positions < 256, so chunks of whole images (7 = 3 + 3 + padded);
  # 16 rows: each image split into 9 blocks of 9 positions.
  for streamed in (chunked, HPNet(K, FEAT, DIL, head_stream_rows=16)):
    v2, g2 = jax.value_and_grad(loss)(variables["params"], streamed)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


def test_bfloat16_head_matmuls_close_to_float32(setup):
  """The opt-in bfloat16 GEMM operands change logits and gradients only slightly,
  the same way on the streamed and the whole-batch paths, and really are used."""
  _, variables, x = setup

  def loss(params, model):
    logits, aux = model.apply({**variables, "params": params}, x, n=2.0, beta=0.1)
    return jnp.sum(jnp.sin(logits)) + 1e-3 * jnp.sum(aux["mask_l1"]), logits

  grad = jax.grad(loss, has_aux=True)
  g32, l32 = grad(variables["params"], HPNet(K, FEAT, DIL))
  for stream in (False, True):
    g16, l16 = grad(variables["params"],
                    HPNet(K, FEAT, DIL, stream_heads=stream, head_matmul_dtype="bfloat16"))
    err = float(jnp.max(jnp.abs(l16 - l32)) / jnp.max(jnp.abs(l32)))
    assert 1e-6 < err < 1e-2, (stream, err)
    for a, b in zip(jax.tree.leaves(g16["heads"]), jax.tree.leaves(g32["heads"])):
      rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
      assert rel < 2e-2, (stream, rel)


def test_transform_at_apply_time_and_identity(setup):
  model, variables, x = setup
  base, _ = model.apply(variables, x)
  same, _ = model.apply(variables, x, n=1.0, beta=0.0)
  other, _ = model.apply(variables, x, n=3.0, beta=0.5)
  np.testing.assert_array_equal(base, same)
  assert float(jnp.max(jnp.abs(other - base))) > 1e-4


def test_channel_mask_zeroes_channels(setup):
  model, variables, x = setup
  keep = jnp.array([1, 0, 1, 1, 0, 1], jnp.float32)
  _, aux = model.apply(variables, x, channel_mask=keep)
  assert float(jnp.abs(aux["features"][..., 1]).max()) == 0.0
  assert float(jnp.abs(aux["features"][..., 0]).max()) > 0.0


def test_baseline_shapes():
  x = jnp.zeros((2, 8, 8, 1))
  model = BaselineNet(3, (4, 4), (1, 2))
  logits, aux = model.apply(model.init(jax.random.key(0), x), x)
  assert logits.shape == (2, 3) and aux["features"].shape == (2, 8, 8, 4)


def test_loss_equals_hand_computation():
  logits = jnp.array([[2.0, -1.0], [0.5, 30.0]])
  labels = jnp.array([[1, 0], [0, 0]])
  mask_l1 = jnp.array([10.0, 30.0])
  loss, parts = attribute_loss(logits, labels, mask_l1, l1_lambda=0.01)
  # -log σ(2) - log(1-σ(-1)) ; -log(1-σ(0.5)) - log(1-σ(30)) = softplus(z) terms.
  sp = lambda z: np.log1p(np.exp(z))
  bce = ((sp(-2.0) + sp(-1.0)) + (sp(0.5) + 30.0 + np.log1p(np.exp(-30.0)))) / 2
  assert float(parts["bce"]) == pytest.approx(bce, rel=1e-6)
  assert float(parts["mask_l1"]) == pytest.approx(20.0)
  assert float(loss) == pytest.approx(bce + 0.2, rel=1e-6)
  _, mean_parts = attribute_loss(logits, labels, mask_l1, mask_elements=10, l1_reduction="mean")
  assert float(mean_parts["mask_l1"]) == pytest.approx(2.0)
  np.testing.assert_allclose(attribute_accuracy(logits, labels), [0.5, 0.5])
  # Stable for huge logits (no inf/nan).
  big, _ = attribute_loss(jnp.array([[1e4, -1e4]]), jnp.array([[0, 1]]), jnp.zeros(1))
  assert float(big) == pytest.approx(2e4, rel=1e-6)
