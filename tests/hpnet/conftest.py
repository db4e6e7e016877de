"""Fixtures of the paper-A tests: a test source and smoke-shaped HPNet and baseline."""
from __future__ import annotations

import pytest
from hpnet_fixtures import make

from hpjax.data.synthetic import SyntheticFaces


@pytest.fixture(scope="module")
def src():
  return SyntheticFaces("test", image_size=16, num_examples=40, seed=0)


@pytest.fixture(scope="module")
def hp():
  return make("hpnet", 0)


@pytest.fixture(scope="module")
def base():
  return make("baseline", 1)
