"""Flax Linen models. Every model returns ``(logits, aux)``; ``aux`` names what analyses need."""
from hpjax.models.hpnet import AttentionHeads, BaselineNet, FeatureExtractor, HPNet

__all__ = ["AttentionHeads", "BaselineNet", "FeatureExtractor", "HPNet"]
