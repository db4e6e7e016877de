"""The heads scale with devices: on N devices each one streams only its own images.

Measured from the compiled program, not from equal values: before the heads ran under
``shard_map``, the 4-device train step all-gathered the whole batch's feature map
(``f32[32,1,256,32] all-gather``) and every device ran the heads' loop for all 32
chunks. The conftest forces 4 CPU devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sharding_fixtures import all_gathers as _all_gathers
from sharding_fixtures import mesh as _mesh
from sharding_fixtures import trip_counts as _trip_counts

from hpjax.core import distributed, training
from hpjax.hpnet import experiment
from hpjax.hpnet.config import AttributesConfig
from hpjax.hpnet.model import HPNet

K, HW, BATCH = 8, 16, 32
CONFIG = AttributesConfig(features=(8, 16, 16, 32), image_size=HW, batch_size=BATCH)


@pytest.fixture(scope="module")
def setup():
  model = HPNet(K, CONFIG.features, CONFIG.dilations)
  tx = training.make_optimizer(1e-3, 1, 10)
  state = training.create_train_state(model, tx, (HW, HW, 3), 0)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (BATCH, HW, HW, 3)).astype(np.uint8),
           "label": rng.integers(0, 2, (BATCH, K)).astype(np.int32)}
  return model, state, batch, experiment.make_loss_fn(CONFIG, (HW, HW, 3), K)


def _train_step(setup, n):
  _, state, batch, loss_fn = setup
  mesh = _mesh(n)
  state = jax.device_put(state, distributed.replicated(mesh))
  gbatch = distributed.global_batch(batch, mesh)
  step = training.compiled_step(loss_fn, mesh)
  seed = jnp.int32(0)
  with jax.set_mesh(mesh):
    hlo = step.jitted.lower(state, gbatch, seed=seed).compile().as_text()
  return hlo, step(state, gbatch, seed)


@pytest.mark.parametrize("n", [2, 4])
def test_train_step_heads_run_per_device(setup, n):
  hlo1, (state1, metrics1) = _train_step(setup, 1)
  hlo, (state, metrics) = _train_step(setup, n)
  # 16x16 = 256 positions = one streamed chunk per image: the forward and backward loops
  # cover the device's BATCH / n images, not the whole batch.
  assert _trip_counts(hlo1) == [BATCH, BATCH]
  assert _trip_counts(hlo) == [BATCH // n, BATCH // n]
  assert not _all_gathers(hlo), _all_gathers(hlo)
  np.testing.assert_allclose(metrics["loss"], metrics1["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state.params, state1.params)


def test_gradients_equal_one_device_including_n_and_beta():
  """Adam hides a gradient scale error (its step is scale-free): compare gradients."""
  model = HPNet(K, (8, 16), (1, 2), head_stream_rows=64)
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(16, 12, 12, 3)), jnp.float32)
  v = model.init(jax.random.key(0), x[:1])

  def loss(params, x, n, beta):
    logits, aux = model.apply({**v, "params": params}, x, n=n, beta=beta)
    return jnp.sum(jnp.sin(logits)) + 1e-3 * jnp.sum(aux["mask_l1"])

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 2, 3)))
  ref = grad(v["params"], x, 2.0, 0.1)
  mesh = _mesh(4)
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, distributed.data_sharded(mesh))
    out = grad(jax.device_put(v["params"], distributed.replicated(mesh)), xs, 2.0, 0.1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ref, out)


def test_inference_heads_run_per_device(setup):
  model, state, batch, _ = setup
  mesh = _mesh(4)
  images = distributed.global_batch({"image": batch["image"]}, mesh)["image"]
  variables = jax.device_put(state.variables, distributed.replicated(mesh))
  with jax.set_mesh(mesh):
    hlo = experiment._logits.lower(model.apply, variables, images).compile().as_text()
    logits = experiment._logits(model.apply, variables, images)
  assert _trip_counts(hlo) == [BATCH // 4]
  assert not _all_gathers(hlo)
  ref = experiment._logits(model.apply, state.variables, jnp.asarray(batch["image"]))
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
