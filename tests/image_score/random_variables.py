"""Random model variables for the image-score tests, made without compiling Flax's
initializers (they compile slowly on a busy CPU)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def numpy_variables(model, image_shape, seed=0, bias_scale=0.0):
  """He-scaled NumPy-random kernels; 1-D leaves (biases, scales) ``bias_scale`` · N(0, 1)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32))

  def leaf(s):
    if len(s.shape) < 2:  # no draw for zeros: the kernels' draws stay the same
      if not bias_scale:
        return np.zeros(s.shape, np.float32)
      return (bias_scale * rng.standard_normal(s.shape)).astype(np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree.map(leaf, shapes)
