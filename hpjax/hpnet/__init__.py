"""Paper A: HPNet, the intentional mask transformation g(M; n, β), semantic pruning and analyses.

Modules: ``model`` (extractor, heads, HPNet, baseline, parameter accessors), ``heads``
(the heads as pure functions), ``transform`` (g), ``losses``, ``config`` (presets),
``experiment`` (train / evaluate a workdir), ``runs``, ``statistics``, ``perturbation``,
``analyses`` (one module per paper claim, behind one registry), ``claims`` (their
verdicts), ``plots``, ``report``, ``summary``, ``demo``. The model names below are imported lazily.
"""
import importlib

_EXPORTS = {
    **{name: "hpjax.hpnet.model" for name in ("HPNet", "BaselineNet", "FeatureExtractor",
                                                "AttentionHeads")},
    "mask_transform": "hpjax.hpnet.transform",
    "AttributesConfig": "hpjax.hpnet.config",
    "ATTRIBUTE_PRESETS": "hpjax.hpnet.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'hpjax.hpnet' has no attribute {name!r}")
