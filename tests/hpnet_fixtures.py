"""Smoke-shaped paper-A models with non-trivial random variables, shared by the tests.

Models use the ``smoke`` preset's shapes (16×16 images, features (4, 8, 8, 8), 14
attributes) and batch size 32, the same as the report test's trained runs, so the
compiled passes are shared across test files.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS

SMOKE = ATTRIBUTE_PRESETS["smoke"]
K = 14
BS = 32


def random_variables(model, seed: int = 0, image_size: int = 16):
  """Random variables of ``model``'s structure, with non-trivial BatchNorm statistics
  and affine params so that channel bookkeeping errors show.

  Shapes come from ``jax.eval_shape`` and values from NumPy: ``model.init`` spends
  ~20 s compiling its random initialisers on a loaded 2-core CPU.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))

  def fill(path, s):
    names = [getattr(p, "key", "") for p in path]
    if names[-1] == "var":
      return rng.uniform(0.5, 2.0, s.shape).astype(np.float32)
    if names[-1] == "scale":
      return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
    if names[-1] in ("bias", "mean", "mask_bias"):
      return rng.normal(0, 0.3, s.shape).astype(np.float32)
    fan_in = int(np.prod(s.shape[:-1])) if names[-1] != "mask_kernel" else s.shape[1]
    if names[-1] == "kernel" and names[-2] == "heads":
      fan_in = s.shape[1]
    return (rng.normal(0, 1, s.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def make(kind: str, seed: int):
  """A smoke-shaped model, its (non-trivial) variables and a jitted apply (op-by-op
  dispatch would compile every primitive separately)."""
  model = experiment.build_model(SMOKE, K, kind)
  v = random_variables(model, seed)
  return model, v, jax.jit(model.apply, static_argnames=("train", "return_masks"))


def float_images(src, n=6):
  """The first ``n`` images of ``src`` as floats in [0, 1]."""
  return jnp.asarray(src.get_batch(np.arange(n))["image"], jnp.float32) / 255.0
