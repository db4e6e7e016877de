"""Flax Linen models. Every model returns ``(logits, aux)``; ``aux`` names what analyses need."""
from hpjax.models.classifiers import ResNet18, SmallCNN, VGG16
from hpjax.models.hpnet import AttentionHeads, BaselineNet, FeatureExtractor, HPNet

__all__ = ["AttentionHeads", "BaselineNet", "FeatureExtractor", "HPNet", "ResNet18", "SmallCNN",
           "VGG16"]
