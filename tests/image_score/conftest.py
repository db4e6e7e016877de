"""Fixtures of the image-score tests: the hand-made reference and a tiny SmallCNN."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from golden_taps import REF_LABELS, REF_TAPS
from random_variables import numpy_variables
from hpjax.image_score import reference as isr
from hpjax.image_score.models import SmallCNN


@pytest.fixture(scope="session")
def hand_reference():
  return isr.fit_reference(REF_TAPS, REF_LABELS, 2, batch_size=2)




@pytest.fixture(scope="session")
def cnn():
  model = SmallCNN(num_classes=4, width=0.25)
  variables = numpy_variables(model, (28, 28, 1))
  images = jax.random.uniform(jax.random.key(0), (48, 28, 28, 1))
  apply = functools.partial(model.apply, train=False)
  logits, aux = jax.jit(apply)(variables, images)
  taps = {k: np.asarray(v) for k, v in aux["taps"].items()}
  labels = np.arange(48) % 4
  reference = isr.fit_reference(taps, labels, 4, batch_size=16)
  predicted = np.asarray(jnp.argmax(logits, -1)).astype(np.int32)
  return dict(apply=apply, variables=variables, images=images, taps=taps, reference=reference,
              predicted=predicted, logits=logits)
