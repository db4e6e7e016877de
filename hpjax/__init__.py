"""hpjax: human-predictable multi-attribute networks and image-score sample selection in JAX.

Paper A: Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural
Networks" (HPNet, semantic channel pruning, intentional attention mask transformation).
Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334).

Public names are imported lazily, so ``import hpjax.data...`` (e.g. in grain worker
processes) does not pay for importing JAX.
"""
import importlib

_EXPORTS = {
    "mask_transform": "hpjax.mask_transform",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'hpjax' has no attribute {name!r}")
