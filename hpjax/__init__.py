"""hpjax: human-predictable multi-attribute networks and image-score sample selection in JAX.

Paper A: Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural
Networks" (HPNet, semantic channel pruning, intentional attention mask transformation).
Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334).

Public names are imported lazily, so ``import hpjax.data...`` (e.g. in grain worker
processes) does not pay for importing JAX.
"""
import importlib

_EXPORTS = {
    "mask_transform": "hpjax.hpnet.transform",
    **{name: "hpjax.image_score.reference" for name in (
        "Reference", "ReferenceAccumulator", "fit_reference", "fit_dataset_reference")},
    **{name: "hpjax.image_score.scoring" for name in ("score", "score_taps", "score_numpy_loop")},
    "make_fused_scorer": "hpjax.image_score.fused",
    **{name: "hpjax.image_score.stored" for name in (
        "score_stored", "save_taps", "load_taps", "TapWriter")},
    **{name: "hpjax.image_score.selection" for name in (
        "select_per_class", "select_top", "select_random", "softmax_confidence",
        "VGG16_FRACTIONS", "RESNET18_FRACTIONS")},
    **{name: "hpjax.core.stats" for name in ("bootstrap_pvalue", "bootstrap_ci")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'hpjax' has no attribute {name!r}")
