"""The public API: every name of ``hpjax.__all__`` and ``hpjax.image_score.__all__`` resolves."""
from __future__ import annotations

import importlib

import pytest

import hpjax
import hpjax.image_score


@pytest.mark.parametrize("name", hpjax.__all__)
def test_top_level_name_resolves_to_its_module(name):
  obj = getattr(hpjax, name)
  assert obj is getattr(importlib.import_module(hpjax._EXPORTS[name]), name)


def test_image_score_names_resolve_and_match_the_top_level():
  for name in hpjax.image_score.__all__:
    assert getattr(hpjax.image_score, name) is not None
  for name in ("fit_reference", "score", "score_stored", "make_fused_scorer", "TapWriter",
               "select_per_class"):
    assert getattr(hpjax, name) is getattr(hpjax.image_score, name)
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    hpjax.nope
