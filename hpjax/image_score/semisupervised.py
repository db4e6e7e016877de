r"""The semi-supervised loop of paper B (Sec. 3.1): pre-train, then re-train on the
labelled set plus pseudo-labelled images chosen per predicted class by image score,
softmax confidence, or at random (library side of ``python -m train.semisupervised``).

Paper B: "Image Score: how to select useful samples" (ICLR 2019 submission,
arXiv 1812.00334); ``shared/SPEC.md`` B4.

**Split.** The training split (optionally subsampled to ``num_train``) is permuted
with ``default_rng(seed)``; the first ``labelled_fraction`` of it is the labelled
"training set", the rest the "additional set" whose labels are hidden from the
loop (they are read only to *report* pseudo-label precision). Fashion-MNIST:
36,000 / 24,000 of 60,000; CIFAR-10: 30,000 / 20,000 of 50,000 (the paper's).

**Schedule.** Pre-train ``pretrain_epochs`` (E1) on the labelled set; then
``retrain_epochs`` (E2) epochs, each of which

1. labels the whole additional set with the current model;
2. selects, per predicted class :math:`c`, the top
   :math:`\lfloor \alpha_c |I_{a,c}| \rfloor` images by the method's score
   (:func:`hpjax.selection.select_per_class`): the image score against
   references fitted on the labelled set's *true* class-c images (streamed with
   :class:`~hpjax.image_score.ReferenceAccumulator`; taps are never stored),
   the softmax confidence, or a random draw; ``mode="per_class"`` keeps only the
   images predicted as ``target_class`` (the paper's "class-by-class" runs);
3. trains one epoch on the labelled set plus the selection, labelled with the
   *predicted* labels. ``method="baseline"`` selects nothing.

The selection is redone from the whole additional set every epoch (it is not
cumulative): the paper says "the training set is updated once every epoch",
and re-labelling with the improving model is the point of updating it.
Optimizer: Adam with a constant learning rate (the paper's), its state carried
across all phases; an "epoch" is ``len(train set) // batch_size`` steps.

**Workdir layout** (each phase is one :func:`hpjax.training.fit` run, so
checkpoints, sharding and metrics are the shared ones)::

  W/config.json            the SemiConfig (a re-run must match it)
  W/split.npz              labelled / additional indices into the train split
  W/pretrain/ or CACHE/<key>/   E1 epochs (shared across methods via pretrain_cache)
  W/epoch_001/selection.npz     the epoch's selection, written before its training
  W/epoch_001/checkpoints/      one fit() run
  W/epoch_001/analysis.npz      predictions, confidences, scores of the trained model
  W/records/epoch_001.json      the epoch's "semi" record (marks the epoch done)
  W/metrics.jsonl          the "semi" records (rebuilt from W/records), epoch 0 = pre-trained
  W/scores.npz             Figs. 2–4 data: scores and correctness of train/test images

Re-running the same command continues where it stopped: finished epochs (with a
record) are skipped, a saved selection is reused, and an interrupted ``fit``
resumes from its checkpoint; the result equals an uninterrupted run (tested).

**Analysis of a model** (after the pre-training and after each epoch): one
forward pass over the labelled set fits the references; one over the
additional and test sets gives predictions, softmax confidence, and image
scores under all three similarities (so one run's data compare them). Scores
are computed only where they are used (every epoch for ``image_score``, at the
pre-trained and the final model otherwise; NaN elsewhere).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpjax.core import distributed, training
from hpjax.image_score import scoring, selection
from hpjax.core.errors import ConfigError
from hpjax.core.configs import from_dict

METHODS = ("baseline", "softmax", "image_score", "random")
MODES = ("all", "per_class")
MODELS = ("small_cnn", "vgg16", "resnet18")
_NEEDS_PATH = ("cifar10", "cifar10_tfds", "mnist", "celeba")


@dataclasses.dataclass(frozen=True)
class SemiConfig:
  """One semi-supervised run (SPEC B4)."""

  name: str = "custom"                  # preset name, recorded with the run
  dataset: str = "fashion_mnist"        # source for hpjax.data.sources.open_source
  data_path: str | None = None          # data set root (None: the source's default)
  num_train: int | None = None          # subsample of the train split before splitting (None: all)
  labelled_fraction: float = 0.6        # labelled share; the rest is the additional set
  model: str = "small_cnn"              # "small_cnn", "vgg16" or "resnet18"
  width: float = 1.0                    # multiplies every layer width of the model
  dropout_rate: float = 0.0             # dropout of the model (SmallCNN/ResNet18: before dense)
  method: str = "image_score"           # "baseline", "softmax", "image_score" or "random"
  mode: str = "all"                     # "all" classes at once or "per_class" (target_class only)
  target_class: int = 0                 # the class whose pseudo labels are added (per_class)
  fractions: tuple[float, ...] = (0.3,)  # α_c: one for every class, or one per class
  similarity: str = "recall"            # image-score similarity: "recall", "jaccard", "dice"
  pretrain_epochs: int = 2              # E1: epochs on the labelled set
  retrain_epochs: int = 4               # E2: epochs of baseline / selection training
  batch_size: int = 128                 # global training batch
  eval_batch_size: int = 512            # batch of the analysis forward passes
  learning_rate: float = 1e-3           # Adam, constant (the paper's optimizer)
  num_train_scored: int = 10000         # labelled images scored for Figs. 2–4 (0: none)
  pretrain_cache: str | None = None     # dir shared by runs with the same pre-training (None: W/pretrain)
  log_every: int = 50                   # steps between training-metric records (per phase)
  checkpoint_every: int = 1000          # steps between checkpoints within a phase (and at its end)
  max_checkpoints: int = 1              # checkpoints kept per phase
  worker_count: int = 0                 # grain worker processes (0: load in-process)
  seed: int = 0                         # split, initialisation, data order, dropout, random picks

  def __post_init__(self):
    for f in ("batch_size", "eval_batch_size", "log_every", "checkpoint_every", "max_checkpoints"):
      if getattr(self, f) <= 0:
        raise ConfigError(f"config field {f} must be > 0, got {getattr(self, f)}")
    for f in ("retrain_epochs", "num_train_scored", "worker_count"):
      if getattr(self, f) < 0:
        raise ConfigError(f"config field {f} must be >= 0, got {getattr(self, f)}")
    if self.method not in METHODS:
      raise ConfigError(f"config field method must be one of {', '.join(METHODS)}, got "
                       f"{self.method!r}")
    if self.mode not in MODES:
      raise ConfigError(f"config field mode must be one of {', '.join(MODES)}, got {self.mode!r}")
    if self.model not in MODELS:
      raise ConfigError(f"config field model must be one of {', '.join(MODELS)}, got "
                       f"{self.model!r}")
    if self.similarity not in scoring.SIMILARITIES:
      raise ConfigError(f"config field similarity must be one of "
                       f"{', '.join(scoring.SIMILARITIES)}, got {self.similarity!r}")
    if not 0.0 < self.labelled_fraction < 1.0:
      raise ConfigError(f"config field labelled_fraction must be in (0, 1), got "
                       f"{self.labelled_fraction}")
    if not self.fractions or any(not 0.0 <= a <= 1.0 for a in self.fractions):
      raise ConfigError(f"config field fractions must be values in [0, 1], got {self.fractions}")
    if self.target_class < 0:
      raise ConfigError(f"config field target_class must be >= 0, got {self.target_class}")


def method_label(config: SemiConfig) -> str:
  """The run's method as the tables name it: ``image_score`` or ``image_score[jaccard]``."""
  if config.method == "image_score" and config.similarity != "recall":
    return f"image_score[{config.similarity}]"
  return config.method


SEMI_PRESETS: dict[str, SemiConfig] = {
    # python -m train.semisupervised --config fashion_mnist --method image_score --seed 0 \
    #   --workdir runs/semi/fm_is_s0 --set pretrain_cache=runs/semi/cache
    # SmallCNN at width 1/4 trains ~1,200 img/s on 2 shared CPU cores, so one E1+E2
    # run over 36k/24k takes a few minutes: E1 = 2 epochs already reach ~87 % test
    # accuracy (the regime where selection can help but is not saturated), and
    # E2 = 4 re-training epochs give 4 per-epoch samples per run.
    "fashion_mnist": SemiConfig(
        name="fashion_mnist", dataset="fashion_mnist", model="small_cnn", width=0.25,
        fractions=(0.3,), pretrain_epochs=2, retrain_epochs=4, batch_size=128,
        eval_batch_size=1000, learning_rate=1e-3, num_train_scored=10000,
        checkpoint_every=500),
    # python -m train.semisupervised --config digits --method softmax --seed 0 --workdir runs/semi/d
    # sklearn digits: 1,442 train images → 865 labelled / 577 additional; seconds per run.
    "digits": SemiConfig(
        name="digits", dataset="digits", model="small_cnn", width=0.5, fractions=(0.3,),
        pretrain_epochs=6, retrain_epochs=6, batch_size=32, eval_batch_size=512,
        learning_rate=2e-3, num_train_scored=1000, log_every=20, checkpoint_every=200),
    # python -m train.semisupervised --config cifar10 --set data_path=/data/cifar-10-batches-bin \
    #   --method image_score --seed 0 --workdir runs/semi/c10   (GPU; paper sizes)
    "cifar10": SemiConfig(
        name="cifar10", dataset="cifar10", model="vgg16", width=1.0, dropout_rate=0.5,
        fractions=selection.VGG16_FRACTIONS, pretrain_epochs=100, retrain_epochs=100,
        batch_size=128, eval_batch_size=1000, learning_rate=1e-4, num_train_scored=10000,
        checkpoint_every=2000, worker_count=4),
    # The paper's second CIFAR-10 model and its α.
    "cifar10_resnet18": SemiConfig(
        name="cifar10_resnet18", dataset="cifar10", model="resnet18", width=1.0,
        dropout_rate=0.2, fractions=selection.RESNET18_FRACTIONS, pretrain_epochs=100,
        retrain_epochs=100, batch_size=128, eval_batch_size=1000, learning_rate=1e-4,
        num_train_scored=10000, checkpoint_every=2000, worker_count=4),
    # Tests: digits, a tiny model, 1 + 2 epochs; compiles in seconds.
    "smoke": SemiConfig(
        name="smoke", dataset="digits", model="small_cnn", width=0.125, num_train=320,
        fractions=(0.5,), pretrain_epochs=1, retrain_epochs=2, batch_size=32,
        eval_batch_size=128, learning_rate=3e-3, num_train_scored=64, log_every=4,
        checkpoint_every=100),
}


@dataclasses.dataclass(frozen=True)
class PhaseConfig(training.LoopSettings):
  """What :func:`hpjax.training.fit` reads for one phase (saved with its checkpoints):
  the loop settings (``seed``: data order and dropout keys of the phase), plus:"""

  phase: str            # "pretrain" or "epoch_XXX"
  num_examples: int     # size of the phase's training set


# ----------------------------------------------------------------------------
# Data


class ArraySource:
  """An in-memory source over rows of an image array, with its own labels.

  The union of the labelled set and a selection is one of these: its images are
  rows ``index`` of the full train split (no copy of the pixels per epoch) and
  its labels are true labels for the labelled rows, predicted ones for the rest.

  Args:
    images: uint8 ``[N_all, H, W, C]``.
    index: int ``[N]`` rows of ``images``.
    labels: int32 ``[N]``.
    label_names: class names.
  """

  def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray,
               label_names: tuple[str, ...]):
    self.images = images
    self.index = np.asarray(index, np.int64)
    self.labels = np.asarray(labels, np.int32)
    if self.index.shape != self.labels.shape:
      raise ValueError(f"ArraySource: expected index and labels of the same shape, got "
                       f"{self.index.shape} and {self.labels.shape}")
    self.label_names = tuple(label_names)
    self.image_shape = tuple(images.shape[1:])

  def __len__(self) -> int:
    return int(self.index.size)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {"image": self.images[self.index[i]], "label": np.int32(self.labels[i])}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    return {"image": self.images[self.index[indices]], "label": self.labels[indices]}


@dataclasses.dataclass(frozen=True)
class SemiData:
  """The arrays of one run.

  Attributes:
    train_images: uint8 ``[N, H, W, C]``, the (subsampled) train split.
    train_labels: int32 ``[N]`` true labels (hidden from the loop for ``additional``).
    labelled: int ``[N_l]`` rows of the labelled set.
    additional: int ``[N_a]`` rows of the additional set.
    test_images: uint8 ``[N_t, H, W, C]``.
    test_labels: int32 ``[N_t]``.
    label_names: class names.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  labelled: np.ndarray
  additional: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  label_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.label_names)


def split_indices(num_examples: int, labelled_fraction: float, seed: int,
                  num_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic, disjoint labelled / additional rows of a train split.

  A ``default_rng(seed)`` permutation of ``range(num_examples)``; its first
  ``num_train`` rows (all if None) are kept, the first
  ``round(labelled_fraction · kept)`` of them labelled, the rest additional.

  Returns:
    ``(labelled [N_l], additional [N_a])``, each sorted ascending.
  """
  n = num_examples if num_train is None else min(num_train, num_examples)
  order = np.random.default_rng(seed).permutation(num_examples)[:n]
  k = int(round(labelled_fraction * n))
  if k < 1 or k >= n:
    raise ConfigError(f"labelled_fraction {labelled_fraction} of {n} images leaves an empty "
                     "labelled or additional set")
  return np.sort(order[:k]), np.sort(order[k:])


def load_data(config: SemiConfig) -> SemiData:
  """Reads the train and test splits into memory and splits the train split."""
  from hpjax.data.base import get_batch
  from hpjax.data.sources import open_source
  train = open_source(config.dataset, "train", path=config.data_path)
  test = open_source(config.dataset, "test", path=config.data_path)
  tr = get_batch(train, np.arange(len(train)))
  te = get_batch(test, np.arange(len(test)))
  labelled, additional = split_indices(len(train), config.labelled_fraction, config.seed,
                                       config.num_train)
  return SemiData(train_images=np.asarray(tr["image"]), train_labels=np.asarray(tr["label"],
                                                                                np.int32),
                  labelled=labelled, additional=additional, test_images=np.asarray(te["image"]),
                  test_labels=np.asarray(te["label"], np.int32),
                  label_names=tuple(train.label_names))


# ----------------------------------------------------------------------------
# Model, loss, analysis


def build_model(config: SemiConfig, num_classes: int) -> nn.Module:
  from hpjax.image_score.models import VGG16, ResNet18, SmallCNN
  if config.model == "small_cnn":
    return SmallCNN(num_classes, width=config.width, dropout_rate=config.dropout_rate)
  if config.model == "vgg16":
    return VGG16(num_classes, width=config.width, dropout_rate=config.dropout_rate)
  return ResNet18(num_classes, width=config.width, dropout_rate=config.dropout_rate)


def loss_fn(logits: jax.Array, aux: dict[str, Any], batch: dict[str, jax.Array]
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy (the paper's loss) and batch accuracy; ``logits [B, C]``."""
  del aux
  labels = batch["label"]
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _forward(apply_fn, variables, images):
  logits, aux = apply_fn(variables, training.images_to_float(images), train=False)
  return logits, aux["taps"]


@jax.jit
def _score_all(reference, taps, logits):
  """Predictions, softmax confidence, and scores ``[3, B]`` under every similarity."""
  pred = jnp.argmax(logits, -1).astype(jnp.int32)
  scores = jnp.stack([scoring.score_taps(reference, taps, logits, pred, similarity=s)
                      for s in scoring.SIMILARITIES])
  return pred, selection.softmax_confidence(logits), scores


@jax.jit
def _predict(logits):
  return jnp.argmax(logits, -1).astype(jnp.int32), selection.softmax_confidence(logits)


def _batches(images: np.ndarray, batch_size: int):
  """Fixed-size batches (the last one zero-padded, so one compile) and their valid rows."""
  n = images.shape[0]
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    valid = chunk.shape[0]
    if valid < batch_size:
      pad = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
      chunk = np.concatenate([chunk, pad])
    yield chunk, valid


def fit_labelled_reference(apply_fn, variables, images: np.ndarray, labels: np.ndarray,
                           num_classes: int, batch_size: int) -> scoring.Reference:
  """Streams the labelled images through the model into per-class references (SPEC B2).

  Args:
    apply_fn: ``model.apply``.
    variables: the model's variables.
    images: uint8 ``[N, H, W, C]``.
    labels: int ``[N]`` true classes.
    num_classes: C.
    batch_size: images per forward pass.

  Returns:
    The :class:`~hpjax.image_score.Reference`; a class without labelled images
    gets an empty mask (its images score NaN and are never selected).
  """
  acc, state = None, None
  for start, (chunk, valid) in zip(range(0, images.shape[0], batch_size),
                                   _batches(images, batch_size)):
    _, taps = _forward(apply_fn, variables, chunk)
    if acc is None:
      acc = scoring.ReferenceAccumulator.for_taps(taps, num_classes)
      state = acc.init()
    lab = np.full((batch_size,), -1, np.int32)  # -1: padding rows are skipped
    lab[:valid] = labels[start:start + valid]
    state = acc.update(state, taps, lab)
  return acc.finalize(state, allow_empty_classes=True)


def predict_and_score(apply_fn, variables, images: np.ndarray, batch_size: int,
                      reference: scoring.Reference | None) -> dict[str, np.ndarray]:
  """Predictions, softmax confidence and (with a reference) image scores of ``images``.

  The taps pass from the forward program to the scoring program as device
  buffers and are dropped once scored (the fused scorer's two-program form,
  here with all three similarities from one forward pass).

  Returns:
    ``{"pred": int32 [N], "conf": float32 [N], "scores": float32 [3, N]}``,
    scores in the order of :data:`hpjax.image_score.SIMILARITIES` (NaN without a
    reference).
  """
  preds, confs, scores = [], [], []
  for chunk, valid in _batches(images, batch_size):
    logits, taps = _forward(apply_fn, variables, chunk)
    if reference is None:
      p, c = _predict(logits)
      s = np.full((len(scoring.SIMILARITIES), batch_size), np.nan, np.float32)
    else:
      p, c, s = _score_all(reference, taps, logits)
    preds.append(np.asarray(p)[:valid])
    confs.append(np.asarray(c)[:valid])
    scores.append(np.asarray(s)[:, :valid])
  return {"pred": np.concatenate(preds), "conf": np.concatenate(confs),
          "scores": np.concatenate(scores, axis=1)}


def analyse(state: training.TrainState, data: SemiData, config: SemiConfig, *,
            with_scores: bool, with_train: bool) -> dict[str, np.ndarray]:
  """What the loop and the figures need to know about one trained model.

  Returns:
    ``add_pred/add_conf [N_a]``, ``add_scores [3, N_a]``, ``test_pred/test_conf``,
    ``test_scores [3, N_t]``, ``test_labels``; with ``with_train`` also
    ``train_pred/train_scores/train_labels`` for the first ``num_train_scored``
    labelled images.
  """
  apply_fn, variables = state.apply_fn, state.variables
  b = config.eval_batch_size
  reference = None
  if with_scores:
    reference = fit_labelled_reference(apply_fn, variables, data.train_images[data.labelled],
                                       data.train_labels[data.labelled], data.num_classes, b)
  add = predict_and_score(apply_fn, variables, data.train_images[data.additional], b, reference)
  test = predict_and_score(apply_fn, variables, data.test_images, b, reference)
  out = {"add_pred": add["pred"], "add_conf": add["conf"], "add_scores": add["scores"],
         "test_pred": test["pred"], "test_conf": test["conf"], "test_scores": test["scores"],
         "test_labels": data.test_labels}
  if with_train and reference is not None and config.num_train_scored > 0:
    rows = data.labelled[:config.num_train_scored]
    tr = predict_and_score(apply_fn, variables, data.train_images[rows], b, reference)
    out.update(train_pred=tr["pred"], train_conf=tr["conf"], train_scores=tr["scores"],
               train_labels=data.train_labels[rows])
  return out


# ----------------------------------------------------------------------------
# Selection and records


def class_fractions(config: SemiConfig, num_classes: int) -> np.ndarray:
  """α per class ``[C]``; ``mode="per_class"`` zeroes every class but ``target_class``."""
  a = np.asarray(config.fractions, np.float64)
  if a.size == 1:
    a = np.full((num_classes,), float(a[0]))
  if a.size != num_classes:
    raise ConfigError(f"config field fractions: expected 1 or {num_classes} values, got {a.size}")
  if config.mode == "per_class":
    if config.target_class >= num_classes:
      raise ConfigError(f"config field target_class must be < {num_classes}, got "
                       f"{config.target_class}")
    keep = np.zeros_like(a)
    keep[config.target_class] = a[config.target_class]
    a = keep
  return a


def select(config: SemiConfig, analysis: dict[str, np.ndarray], num_classes: int,
           epoch: int) -> np.ndarray:
  """The epoch's selection: ``[N_a]`` bool over the additional set (SPEC B4)."""
  pred = analysis["add_pred"]
  alphas = class_fractions(config, num_classes)
  if config.method == "baseline":
    return np.zeros(pred.shape, bool)
  if config.method == "random":
    key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    return selection.select_random(pred, alphas, key, num_classes)
  if config.method == "softmax":
    return selection.select_per_class(analysis["add_conf"], pred, alphas, num_classes)
  s = analysis["add_scores"][scoring.SIMILARITIES.index(config.similarity)]
  return selection.select_per_class(s, pred, alphas, num_classes)


def pseudo_label_precision(pseudo: np.ndarray, true: np.ndarray, num_classes: int
                           ) -> tuple[float, np.ndarray, np.ndarray]:
  """Accuracy of pseudo labels, overall and per pseudo-labelled class.

  Args:
    pseudo: int ``[K]`` predicted labels of the selected images.
    true: int ``[K]`` their hidden true labels.
    num_classes: C.

  Returns:
    ``(precision, per_class [C], counts [C])``: the share of correct pseudo
    labels (NaN if nothing is selected), the same per predicted class (NaN
    where a class has no selected image), and the selected count per class.
  """
  pseudo, true = np.asarray(pseudo, np.int64), np.asarray(true, np.int64)
  counts = np.bincount(pseudo, minlength=num_classes)
  correct = np.bincount(pseudo, weights=(pseudo == true).astype(np.float64),
                        minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)
  overall = float(correct.sum() / counts.sum()) if counts.sum() else float("nan")
  return overall, per_class, counts


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Recall of each true class ``[C]`` (the tables' "class c accuracy")."""
  totals = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels, weights=(pred == labels).astype(np.float64), minlength=num_classes)
  return hits / np.maximum(totals, 1)


def _nan_to_none(x: Any) -> Any:
  a = np.asarray(x, np.float64)
  if a.ndim == 0:
    return None if np.isnan(a) else float(a)
  return [None if np.isnan(v) else float(v) for v in a]


def epoch_record(epoch: int, analysis: dict[str, np.ndarray], data: SemiData,
                 selected: dict[str, np.ndarray] | None, seconds: dict[str, float]
                 ) -> dict[str, Any]:
  """The "semi" record of the model after ``epoch`` (0: the pre-trained model).

  Args:
    epoch: 0 for the pre-trained model, else the re-training epoch.
    analysis: :func:`analyse` of the model after the epoch.
    data: the run's data (true labels of the additional set are read here only).
    selected: the selection the epoch trained with, ``{"index": [K] rows of the
      additional set, "pseudo": [K] their predicted labels}``; None for epoch 0.
    seconds: wall times of the epoch's parts.
  """
  c = data.num_classes
  add_true = data.train_labels[data.additional]
  rec: dict[str, Any] = {
      "epoch": epoch,
      "test_accuracy": float(np.mean(analysis["test_pred"] == data.test_labels)),
      "test_accuracy_per_class": per_class_accuracy(analysis["test_pred"], data.test_labels,
                                                    c).tolist(),
      # How well the model labels the whole additional set (Fig. 5's "labelling accuracy").
      "additional_accuracy": float(np.mean(analysis["add_pred"] == add_true)),
      "additional_accuracy_per_class": per_class_accuracy(analysis["add_pred"], add_true,
                                                          c).tolist(),
      "seconds": seconds,
  }
  if selected is not None:
    prec, prec_c, counts = pseudo_label_precision(selected["pseudo"],
                                                  add_true[selected["index"]], c)
    rec.update(num_selected=int(counts.sum()), num_selected_per_class=counts.tolist(),
               precision=_nan_to_none(prec), precision_per_class=_nan_to_none(prec_c))
  return rec


# ----------------------------------------------------------------------------
# The loop


def write_npz_atomic(path: str, **arrays: Any) -> None:
  """``np.savez`` via a temp file + rename (a resumed run never reads half a file)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
  os.replace(tmp, path)


def _write_json_atomic(path: str, obj: Any) -> None:
  from hpjax.core.io import write_text
  write_text(path, json.dumps(obj, indent=1))


def _load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


# Fields that do not change the pre-training, so runs differing only in them share it.
_NOT_PRETRAIN = ("name", "method", "mode", "target_class", "fractions", "similarity",
                 "retrain_epochs", "pretrain_cache", "log_every", "worker_count")


def pretrain_key(config: SemiConfig) -> str:
  """Content address of the pre-training (a hash of the fields that determine it)."""
  fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_PRETRAIN}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def pretrain_dir(config: SemiConfig, workdir: str) -> str:
  """``W/pretrain``, or ``CACHE/<key>`` when ``pretrain_cache`` is set."""
  if config.pretrain_cache:
    return os.path.join(config.pretrain_cache, f"{config.dataset}_{pretrain_key(config)}")
  return os.path.join(workdir, "pretrain")


def phase_dir(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, f"epoch_{epoch:03d}")


def record_path(workdir: str, epoch: int) -> str:
  return os.path.join(workdir, "records", f"epoch_{epoch:03d}.json")


def _phase_config(config: SemiConfig, phase: str, num_examples: int, epochs: int,
                  seed: int) -> PhaseConfig:
  steps = epochs * max(1, num_examples // config.batch_size)
  return PhaseConfig(phase=phase, num_examples=num_examples, batch_size=config.batch_size,
                     num_steps=steps, log_every=config.log_every, eval_every=0,
                     checkpoint_every=config.checkpoint_every,
                     max_checkpoints=config.max_checkpoints, worker_count=config.worker_count,
                     seed=seed)


def _check_config(config: SemiConfig, workdir: str) -> None:
  """Writes ``W/config.json``, or checks that a re-run uses the same config."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != current:
      diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
      raise ConfigError(f"--workdir {workdir} holds a run with a different config (fields "
                       f"{', '.join(diff)}); use a new workdir or the same settings")
  else:
    _write_json_atomic(path, current)


def read_run_config(workdir: str) -> SemiConfig:
  """The :class:`SemiConfig` of a run directory."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{workdir}: no config.json there; is it a train.semisupervised workdir?")
  with open(path) as f:
    return from_dict(SemiConfig, json.load(f))


def _write_metrics(workdir: str) -> list[dict[str, Any]]:
  """Regenerates ``W/metrics.jsonl`` from the per-epoch records (idempotent on resume)."""
  rdir = os.path.join(workdir, "records")
  records = []
  for name in sorted(os.listdir(rdir)):
    if name.endswith(".json"):
      with open(os.path.join(rdir, name)) as f:
        records.append(json.load(f))
  lines = [json.dumps({"step": r["epoch"], "kind": "semi", **r}) for r in records]
  from hpjax.core.io import write_text
  write_text(os.path.join(workdir, "metrics.jsonl"), "".join(l + "\n" for l in lines))
  return records


def train(config: SemiConfig, workdir: str, *, progress: bool = True,
          max_epochs: int | None = None) -> dict[str, Any]:
  """Runs (or resumes) the semi-supervised loop of SPEC B4 in ``workdir``.

  Args:
    config: the run.
    workdir: run directory (see the module docstring for its layout).
    progress: tqdm bars for the training phases.
    max_epochs: stop after this many re-training epochs (an interruption, for
      tests); None runs all ``retrain_epochs``.

  Returns:
    The last "semi" record written.
  """
  if config.pretrain_epochs < 1:
    raise ConfigError("config field pretrain_epochs must be >= 1 (the loop labels the "
                     "additional set with the pre-trained model)")
  if config.dataset in _NEEDS_PATH and not config.data_path:
    raise ConfigError(f"dataset {config.dataset!r} needs its files: pass --set data_path=DIR")
  data = load_data(config)
  # Validated before the workdir is written, so a corrected re-run is not refused.
  if config.mode == "per_class" and config.target_class >= data.num_classes:
    raise ConfigError(f"--target-class {config.target_class}: {config.dataset} has "
                     f"{data.num_classes} classes")
  class_fractions(config, data.num_classes)
  os.makedirs(workdir, exist_ok=True)
  _check_config(config, workdir)
  split_path = os.path.join(workdir, "split.npz")
  if not os.path.exists(split_path):
    write_npz_atomic(split_path, labelled=data.labelled, additional=data.additional)

  model = build_model(config, data.num_classes)
  template = training.create_train_state(model, optax.adam(config.learning_rate),
                                         data.train_images.shape[1:], config.seed)
  mesh = distributed.make_mesh()
  repl = distributed.replicated(mesh)

  def phase_state(prev_dir: str) -> training.TrainState:
    return training.restore_state(prev_dir, template, repl)

  # Pre-training (shared through the cache when set).
  pdir = pretrain_dir(config, workdir)
  labelled_src = ArraySource(data.train_images, data.labelled, data.train_labels[data.labelled],
                             data.label_names)
  analysis_path = os.path.join(pdir, "analysis.npz")
  if not os.path.exists(analysis_path):
    t0 = time.perf_counter()
    state = training.fit(pdir, config=_phase_config(config, "pretrain", len(labelled_src),
                                                    config.pretrain_epochs, config.seed),
                         state=template, loss_fn=loss_fn, train_source=labelled_src, mesh=mesh,
                         progress=progress)
    t1 = time.perf_counter()
    analysis = analyse(state, data, config, with_scores=True, with_train=True)
    write_npz_atomic(analysis_path, **analysis)
    _write_json_atomic(os.path.join(pdir, "seconds.json"),
                       {"train": t1 - t0, "analyse": time.perf_counter() - t1})
  pretrain_analysis = _load_npz(analysis_path)
  if not os.path.exists(record_path(workdir, 0)):
    with open(os.path.join(pdir, "seconds.json")) as f:
      seconds = json.load(f)
    _write_json_atomic(record_path(workdir, 0),
                       epoch_record(0, pretrain_analysis, data, None, seconds))

  prev_dir, analysis = pdir, pretrain_analysis
  last = config.retrain_epochs if max_epochs is None else min(max_epochs, config.retrain_epochs)
  for epoch in range(1, last + 1):
    edir = phase_dir(workdir, epoch)
    done = os.path.exists(record_path(workdir, epoch))
    if done:
      prev_dir = edir
      analysis = None  # loaded only if a later epoch needs it
      continue
    if analysis is None:
      analysis = _load_npz(os.path.join(prev_dir, "analysis.npz"))
    t0 = time.perf_counter()
    sel_path = os.path.join(edir, "selection.npz")
    if not os.path.exists(sel_path):
      mask = select(config, analysis, data.num_classes, epoch)
      index = np.flatnonzero(mask)
      write_npz_atomic(sel_path, index=index, pseudo=analysis["add_pred"][index].astype(np.int32))
    selected = _load_npz(sel_path)
    union = ArraySource(
        data.train_images,
        np.concatenate([data.labelled, data.additional[selected["index"]]]),
        np.concatenate([data.train_labels[data.labelled], selected["pseudo"]]),
        data.label_names)
    t1 = time.perf_counter()
    state = training.fit(edir, config=_phase_config(config, f"epoch_{epoch:03d}", len(union), 1,
                                                    config.seed + 1000 * epoch),
                         state=phase_state(prev_dir), loss_fn=loss_fn, train_source=union,
                         mesh=mesh, progress=progress)
    t2 = time.perf_counter()
    final = epoch == config.retrain_epochs
    analysis = analyse(state, data, config,
                       with_scores=config.method == "image_score" or final, with_train=final)
    write_npz_atomic(os.path.join(edir, "analysis.npz"), **analysis)
    t3 = time.perf_counter()
    _write_json_atomic(record_path(workdir, epoch), epoch_record(
        epoch, analysis, data, selected, {"select": t1 - t0, "train": t2 - t1,
                                          "analyse": t3 - t2}))
    _write_metrics(workdir)  # so partial runs can be inspected while they train
    prev_dir = edir
  records = _write_metrics(workdir)

  if last == config.retrain_epochs and not os.path.exists(os.path.join(workdir, "scores.npz")):
    final_dir = phase_dir(workdir, last) if last else pdir
    fin = _load_npz(os.path.join(final_dir, "analysis.npz"))
    arrays = {f"pretrain_{k}": v for k, v in pretrain_analysis.items()
              if k.startswith(("train_", "test_"))}
    arrays.update({f"final_{k}": v for k, v in fin.items() if k.startswith(("train_", "test_"))})
    write_npz_atomic(os.path.join(workdir, "scores.npz"),
                     similarities=np.asarray(scoring.SIMILARITIES), **arrays)
  return records[-1]


def load_final_state(workdir: str) -> tuple[SemiConfig, training.TrainState]:
  """The config and the latest trained state of a run (its last finished phase)."""
  config = read_run_config(workdir)
  data_shape, num_classes = _data_meta(config)
  model = build_model(config, num_classes)
  template = training.create_train_state(model, optax.adam(config.learning_rate), data_shape,
                                         config.seed)
  epochs = [e for e in range(config.retrain_epochs, 0, -1)
            if os.path.isdir(os.path.join(phase_dir(workdir, e), "checkpoints"))]
  d = phase_dir(workdir, epochs[0]) if epochs else pretrain_dir(config, workdir)
  return config, training.restore_state(d, template,
                                        distributed.replicated(distributed.make_mesh()))


def _data_meta(config: SemiConfig) -> tuple[tuple[int, ...], int]:
  from hpjax.data.sources import open_source
  src = open_source(config.dataset, "test", path=config.data_path)
  return tuple(src.image_shape), len(src.label_names)
