"""Paper B: image score, sample selection and the semi-supervised loop.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334).

The modules, from the score outwards:

* :mod:`~hpjax.image_score.taps`: taps as arguments, the shared input checks.
* :mod:`~hpjax.image_score.reference`: each class's "correct" activation mask
  (:func:`fit_reference`, the streamed :class:`ReferenceAccumulator`).
* :mod:`~hpjax.image_score.scoring`: the image score (:func:`score`,
  :func:`score_taps`, the NumPy oracle :func:`score_numpy_loop`).
* :mod:`~hpjax.image_score.fused`: the score behind the jitted forward pass.
* :mod:`~hpjax.image_score.stored`: taps on disk and their score.
* :mod:`~hpjax.image_score.intermediates`: taps of any Flax model (:func:`tapped_apply`,
  :func:`tap_names`).
* :mod:`~hpjax.image_score.selection`: top-α per predicted class.
* :mod:`~hpjax.image_score.models`: the tapped classifiers (SmallCNN, VGG16, ResNet18).
* :mod:`~hpjax.image_score.config`: the semi-supervised run's config and presets.
* :mod:`~hpjax.image_score.semisupervised`: the loop (``python -m train.semisupervised``).
* :mod:`~hpjax.image_score.runs`, :mod:`~hpjax.image_score.tables`,
  :mod:`~hpjax.image_score.assembly`, :mod:`~hpjax.image_score.plots` and
  :mod:`~hpjax.image_score.results`: the tables, the assembly and the figures of
  finished runs (``python -m evaluate.semisupervised``).

The scoring and selection API is importable from this package.
"""
from hpjax.image_score.fused import make_fused_scorer
from hpjax.image_score.intermediates import tap_names, tapped_apply
from hpjax.image_score.reference import (Reference, ReferenceAccumulator, fit_dataset_reference,
                                         fit_reference)
from hpjax.image_score.scoring import (DEFAULT_EPS, SIMILARITIES, score, score_numpy_loop,
                                       score_taps)
from hpjax.image_score.selection import (RESNET18_FRACTIONS, VGG16_FRACTIONS, select_per_class,
                                         select_random, select_top, selection_counts,
                                         softmax_confidence)
from hpjax.image_score.stored import TapWriter, load_taps, save_taps, score_stored

__all__ = [
    "DEFAULT_EPS", "RESNET18_FRACTIONS", "Reference", "ReferenceAccumulator", "SIMILARITIES",
    "TapWriter", "VGG16_FRACTIONS", "fit_dataset_reference", "fit_reference", "load_taps",
    "make_fused_scorer", "save_taps", "score", "score_numpy_loop", "score_stored", "score_taps",
    "select_per_class", "select_random", "select_top", "selection_counts", "softmax_confidence",
    "tap_names", "tapped_apply",
]
