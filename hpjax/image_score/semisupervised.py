r"""The semi-supervised loop of paper B (Sec. 3.1): pre-train, then re-train on the
labelled set plus pseudo-labelled images chosen per predicted class by image score,
softmax confidence, or at random (library side of ``python -m train.semisupervised``).

Paper B: "Image Score: how to select useful samples" (ICLR 2019 submission,
arXiv 1812.00334); docs/papers.md §B4. The run's config and presets are
:mod:`hpjax.image_score.config`.

**Split.** The training split (optionally subsampled to ``num_train``) is permuted
with ``default_rng(seed)``; the first ``labelled_fraction`` of it is the labelled
"training set", the rest the "additional set" whose labels are hidden from the
loop (they are read only to *report* pseudo-label precision). Fashion-MNIST:
36,000 / 24,000 of 60,000; CIFAR-10: 30,000 / 20,000 of 50,000 (the paper's).
A data set with an ``unlabelled`` split (an image folder's ``ROOT/unlabelled/``,
docs/data.md) adds every pool image to the additional set, after the train
split's additional rows: the loop scores and selects from both alike, and
precision and additional accuracy are reported over the images whose label is
known (the train split's). ``labelled_fraction=1`` then trains on every
labelled image and takes pseudo labels from the pool alone (precision NaN).

**Schedule.** Pre-train ``pretrain_epochs`` (E1) on the labelled set; then
``retrain_epochs`` (E2) epochs, each of which

1. labels the whole additional set with the current model;
2. selects, per predicted class :math:`c`, the top
   :math:`\lfloor \alpha_c |I_{a,c}| \rfloor` images by the method's score
   (:func:`hpjax.image_score.selection.select_per_class`): the image score against
   references fitted on the labelled set's *true* class-c images (streamed with
   :class:`~hpjax.image_score.reference.ReferenceAccumulator`; taps are never stored),
   the softmax confidence, or a random draw; ``mode="per_class"`` keeps only the
   images predicted as ``target_class`` (the paper's "class-by-class" runs);
   ``mode="dataset"`` instead takes the top ``fractions[0]`` of the whole set by the
   score against one class-agnostic reference (or by confidence), once, after the
   pre-training, and every epoch trains with that selection (docs/papers.md §B5);
3. trains one epoch on the labelled set plus the selection, labelled with the
   *predicted* labels. ``method="baseline"`` selects nothing.

The selection is redone from the whole additional set every epoch (it is not
cumulative): the paper says "the training set is updated once every epoch",
and re-labelling with the improving model is the point of updating it.
Optimizer: Adam with a constant learning rate (the paper's), its state carried
across all phases; an "epoch" is ``len(train set) // batch_size`` steps.

**Workdir layout** (each phase is one :func:`hpjax.core.training.fit` run, so
checkpoints, sharding and metrics are the shared ones)::

  W/config.json            the SemiConfig (a re-run must match it, but for the fields
                           hpjax.core.workdir.MAY_CHANGE_ON_RESUME lets change)
  W/resume.jsonl           those changes, one "resume" record per re-run that made any
  W/data.json              the data: class names (label_names), image shape, split sizes
  W/split.npz              labelled / additional rows (train split, then the unlabelled pool)
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

from hpjax.core import distributed, io, metrics_writer, training
from hpjax.core import workdir as workdir_lib
from hpjax.core.configs import from_dict
from hpjax.core.errors import CheckpointError, ConfigError, DataError, WorkdirError
from hpjax.data import pipeline
from hpjax.data.base import ArraySource, get_batch
from hpjax.data.sources import NEEDS_PATH, open_source
from hpjax.image_score import selection
from hpjax.image_score.config import SemiConfig, check_num_classes, class_fractions
from hpjax.image_score.reference import Reference, ReferenceAccumulator
from hpjax.image_score.scoring import SIMILARITIES, score_taps


@dataclasses.dataclass(frozen=True)
class PhaseConfig(training.LoopSettings):
  """What :func:`hpjax.core.training.fit` reads for one phase (saved with its checkpoints):
  the loop settings (``seed``: data order and dropout keys of the phase), plus:"""

  phase: str            # "pretrain" or "epoch_XXX"
  num_examples: int     # size of the phase's training set


# ----------------------------------------------------------------------------
# Data


@dataclasses.dataclass(frozen=True)
class SemiData:
  """The arrays of one run.

  Attributes:
    train_images: uint8 ``[N, H, W, C]``, the train split, then the unlabelled
      pool's images (its last ``num_unlabelled`` rows), if the data set has one.
    train_labels: int32 ``[N]`` true labels (hidden from the loop for ``additional``);
      -1 for the pool's images (no label known).
    labelled: int ``[N_l]`` rows of the labelled set.
    additional: int ``[N_a]`` rows of the additional set (pool rows included).
    test_images: uint8 ``[N_t, H, W, C]``.
    test_labels: int32 ``[N_t]``.
    label_names: class names.
    num_unlabelled: images of the unlabelled pool (0: none).
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  labelled: np.ndarray
  additional: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  label_names: tuple[str, ...]
  num_unlabelled: int = 0

  @property
  def num_classes(self) -> int:
    return len(self.label_names)

  def train_source(self, rows: np.ndarray, labels: np.ndarray | None = None) -> ArraySource:
    """Rows of the train split as a source (no copy of the pixels); true labels by default."""
    return ArraySource(self.train_images, rows,
                       self.train_labels[rows] if labels is None else labels, self.label_names)

  def test_source(self) -> ArraySource:
    return ArraySource(self.test_images, np.arange(self.test_labels.size), self.test_labels,
                       self.label_names)


def split_indices(num_examples: int, labelled_fraction: float, seed: int,
                  num_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic, disjoint labelled / additional rows of a train split.

  A ``default_rng(seed)`` permutation of ``range(num_examples)``; its first
  ``num_train`` rows (all if None) are kept, the first
  ``round(labelled_fraction · kept)`` of them labelled, the rest additional
  (none when ``labelled_fraction`` is 1: for a data set with an unlabelled pool).

  Returns:
    ``(labelled [N_l], additional [N_a])``, each sorted ascending.

  References:
    docs/papers.md §B4.
  """
  n = num_examples if num_train is None else min(num_train, num_examples)
  order = np.random.default_rng(seed).permutation(num_examples)[:n]
  k = int(round(labelled_fraction * n))
  if k < 1 or (k >= n and labelled_fraction < 1.0):
    raise ConfigError(f"labelled_fraction {labelled_fraction} of {n} images leaves an empty "
                      "labelled or additional set")
  return np.sort(order[:k]), np.sort(order[k:])


def open_split(config: SemiConfig, split: str) -> Any:
  """One split of the run's data set (:func:`hpjax.data.sources.open_source`)."""
  return open_source(config.dataset, split, path=config.data_path, image_size=config.image_size,
                     test_fraction=config.test_fraction, seed=config.split_seed)


def load_data(config: SemiConfig) -> SemiData:
  """Reads the train and test splits (and an unlabelled pool) into memory and splits the
  train split (module docstring, **Split**)."""
  train = open_split(config, "train")
  test = open_split(config, "test")
  check_num_classes(config, tuple(train.label_names))
  tr = get_batch(train, np.arange(len(train)))
  te = get_batch(test, np.arange(len(test)))
  labelled, additional = split_indices(len(train), config.labelled_fraction, config.seed,
                                       config.num_train)
  images, labels = np.asarray(tr["image"]), np.asarray(tr["label"], np.int32)
  num_pool = 0
  if "unlabelled" in getattr(train, "splits", ()):
    pool = open_split(config, "unlabelled")
    num_pool = len(pool)
    additional = np.concatenate([additional, np.arange(len(train), len(train) + num_pool)])
    images = np.concatenate([images, np.asarray(get_batch(pool, np.arange(num_pool))["image"])])
    labels = np.concatenate([labels, np.full(num_pool, -1, np.int32)])
  if additional.size == 0:
    raise ConfigError(f"config field labelled_fraction {config.labelled_fraction} leaves no "
                      f"additional images: data set {config.dataset!r} has no unlabelled pool")
  return SemiData(train_images=images, train_labels=labels, labelled=labelled,
                  additional=additional, test_images=np.asarray(te["image"]),
                  test_labels=np.asarray(te["label"], np.int32),
                  label_names=tuple(train.label_names), num_unlabelled=num_pool)


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


@functools.partial(jax.jit, static_argnames=("apply_fn", "taps"))
def _forward(apply_fn, variables, images, taps=None):
  logits, aux = apply_fn(variables, training.images_to_float(images), train=False)
  return logits, select_taps(aux["taps"], taps)


def select_taps(taps: dict[str, Any], names: tuple[str, ...] | None) -> dict[str, Any]:
  """The taps named by ``SemiConfig.taps`` (all for None), in the model's order."""
  if names is None:
    return taps
  unknown = [n for n in names if n not in taps]
  if unknown:
    raise ConfigError(f"config field taps: the model has no tap {', '.join(unknown)}; its "
                      f"taps are {', '.join(taps)}")
  return {k: v for k, v in taps.items() if k in names}


@jax.jit
def _score_all(reference, taps, logits):
  """Predictions, softmax confidence, and scores ``[3, B]`` under every similarity."""
  pred = jnp.argmax(logits, -1).astype(jnp.int32)
  scores = jnp.stack([score_taps(reference, taps, logits, pred, similarity=s)
                      for s in SIMILARITIES])
  return pred, selection.softmax_confidence(logits), scores


@jax.jit
def _predict(logits):
  return jnp.argmax(logits, -1).astype(jnp.int32), selection.softmax_confidence(logits)


def fit_labelled_reference(apply_fn, variables, source: ArraySource, num_classes: int,
                           batch_size: int, *, class_agnostic: bool = False,
                           taps: tuple[str, ...] | None = None) -> Reference:
  """Streams the labelled images through the model into per-class references.

  Args:
    apply_fn: ``model.apply``.
    variables: the model's variables.
    source: the labelled images, uint8 ``[N, H, W, C]``, with their true classes.
    num_classes: C.
    batch_size: images per forward pass.
    class_agnostic: one dataset-level reference over all of them (their labels
      are not read; docs/papers.md §B5).
    taps: the taps to use (None: all; :func:`select_taps`).

  Returns:
    The :class:`~hpjax.image_score.reference.Reference`; a class without labelled
    images gets an empty mask (its images score NaN and are never selected).

  References:
    docs/papers.md §B2, §B5.
  """
  acc, state = None, None
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size):
    _, x = _forward(apply_fn, variables, batch["image"], taps)
    if acc is None:
      acc = ReferenceAccumulator.for_taps(x, num_classes, class_agnostic=class_agnostic)
      state = acc.init()
    # -1: the padding rows are skipped.
    labels = 0 if class_agnostic else batch["label"]
    labels = np.where(batch["valid"], labels, -1).astype(np.int32)
    state = acc.update(state, x, labels)
  return acc.finalize(state, allow_empty_classes=True)


def predict_and_score(apply_fn, variables, source: ArraySource, batch_size: int,
                      reference: Reference | None, *, limit: int | None = None,
                      taps: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
  """Predictions, softmax confidence and (with a reference) image scores of a source's images.

  The taps pass from the forward program to the scoring program as device
  buffers and are dropped once scored (the fused scorer's two-program form,
  here with all three similarities from one forward pass). Only the images are
  read, never the labels.

  Args:
    apply_fn: ``model.apply``.
    variables: the model's variables.
    source: the images, uint8 ``[N, H, W, C]``.
    batch_size: images per forward pass.
    reference: the class references, or None (no scores).
    limit: only the first ``limit`` images (None: all).
    taps: the taps to score (None: all; the reference's).

  Returns:
    ``{"pred": int32 [N], "conf": float32 [N], "scores": float32 [3, N]}``,
    scores in the order of :data:`hpjax.image_score.scoring.SIMILARITIES` (NaN
    without a reference).
  """
  preds, confs, scores = [], [], []
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size, limit=limit):
    valid = batch["valid"]
    logits, x = _forward(apply_fn, variables, batch["image"], taps)
    if reference is None:
      p, c = _predict(logits)
      s = np.full((len(SIMILARITIES), batch_size), np.nan, np.float32)
    else:
      p, c, s = _score_all(reference, x, logits)
    preds.append(np.asarray(p)[valid])
    confs.append(np.asarray(c)[valid])
    scores.append(np.asarray(s)[:, valid])
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
  labelled = data.train_source(data.labelled)
  reference = None
  if with_scores:
    reference = fit_labelled_reference(apply_fn, variables, labelled, data.num_classes, b,
                                       taps=config.taps)
  add = predict_and_score(apply_fn, variables, data.train_source(data.additional), b, reference,
                          taps=config.taps)
  test = predict_and_score(apply_fn, variables, data.test_source(), b, reference,
                           taps=config.taps)
  out = {"add_pred": add["pred"], "add_conf": add["conf"], "add_scores": add["scores"],
         "test_pred": test["pred"], "test_conf": test["conf"], "test_scores": test["scores"],
         "test_labels": data.test_labels}
  if with_train and reference is not None and config.num_train_scored > 0:
    tr = predict_and_score(apply_fn, variables, labelled, b, reference,
                           limit=config.num_train_scored, taps=config.taps)
    out.update(train_pred=tr["pred"], train_conf=tr["conf"], train_scores=tr["scores"],
               train_labels=data.train_labels[data.labelled[:config.num_train_scored]])
  return out


# ----------------------------------------------------------------------------
# Selection and records


def dataset_level_scores(state: training.TrainState, data: SemiData, config: SemiConfig
                         ) -> np.ndarray:
  """Scores ``[3, N_a]`` of the additional set against one class-agnostic reference
  fitted on the labelled set (docs/papers.md §B5: the detection protocol's "one mask
  for the whole data set"), under every similarity. Labels are read from neither set."""
  b = config.eval_batch_size
  reference = fit_labelled_reference(state.apply_fn, state.variables,
                                     data.train_source(data.labelled), data.num_classes, b,
                                     class_agnostic=True, taps=config.taps)
  return predict_and_score(state.apply_fn, state.variables,
                           data.train_source(data.additional), b, reference,
                           taps=config.taps)["scores"]


def select(config: SemiConfig, analysis: dict[str, np.ndarray], num_classes: int,
           epoch: int) -> np.ndarray:
  """The epoch's selection: ``[N_a]`` bool over the additional set.

  ``mode="dataset"`` takes the top ``fractions[0]`` of the whole additional set,
  ranked by the class-agnostic score (``analysis["add_scores_dataset"]``, from
  :func:`dataset_level_scores`), the softmax confidence, or at random.

  References:
    docs/papers.md §B4, §B5.
  """
  pred = analysis["add_pred"]
  if config.method == "baseline":
    return np.zeros(pred.shape, bool)
  if config.mode == "dataset":
    alpha = float(config.fractions[0])
    if config.method == "random":
      rng = np.random.default_rng([config.seed, epoch])
      picked = rng.permutation(pred.size)[:int(np.floor(alpha * pred.size))]
      return np.isin(np.arange(pred.size), picked)
    if config.method == "softmax":
      return selection.select_top(analysis["add_conf"], alpha)
    return selection.select_top(
        analysis["add_scores_dataset"][SIMILARITIES.index(config.similarity)], alpha)
  alphas = class_fractions(config, num_classes)
  if config.method == "random":
    key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    return selection.select_random(pred, alphas, key, num_classes)
  if config.method == "softmax":
    return selection.select_per_class(analysis["add_conf"], pred, alphas, num_classes)
  s = analysis["add_scores"][SIMILARITIES.index(config.similarity)]
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
    data: the run's data (true labels of the additional set are read here only;
      the unlabelled pool's images have none and are left out of the accuracies
      and the precision, not of the selection counts).
    selected: the selection the epoch trained with, ``{"index": [K] rows of the
      additional set, "pseudo": [K] their predicted labels}``; None for epoch 0.
    seconds: wall times of the epoch's parts.
  """
  c = data.num_classes
  add_true = data.train_labels[data.additional]
  known = add_true >= 0
  add_pred = analysis["add_pred"][known]
  rec: dict[str, Any] = {
      "epoch": epoch,
      "test_accuracy": float(np.mean(analysis["test_pred"] == data.test_labels)),
      "test_accuracy_per_class": per_class_accuracy(analysis["test_pred"], data.test_labels,
                                                    c).tolist(),
      # How well the model labels the whole additional set (Fig. 5's "labelling accuracy").
      "additional_accuracy": (float(np.mean(add_pred == add_true[known])) if known.any()
                              else None),
      "additional_accuracy_per_class": (per_class_accuracy(add_pred, add_true[known],
                                                           c).tolist() if known.any()
                                        else [None] * c),
      "seconds": seconds,
  }
  if selected is not None:
    pseudo, true = selected["pseudo"], add_true[selected["index"]]
    prec, prec_c, _ = pseudo_label_precision(pseudo[true >= 0], true[true >= 0], c)
    counts = np.bincount(np.asarray(pseudo, np.int64), minlength=c)
    rec.update(num_selected=int(counts.sum()), num_selected_per_class=counts.tolist(),
               precision=_nan_to_none(prec), precision_per_class=_nan_to_none(prec_c))
    if data.num_unlabelled:
      rec["num_selected_unlabelled"] = int(np.sum(true < 0))
  return rec


# ----------------------------------------------------------------------------
# The loop


def load_npz(path: str) -> dict[str, np.ndarray]:
  """Every array of an ``.npz`` file, read into memory (the file is closed)."""
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


# Fields that do not change the pre-training, so runs differing only in them share it.
_NOT_PRETRAIN = ("name", "method", "mode", "target_class", "fractions", "similarity",
                 "retrain_epochs", "pretrain_cache", "log_every", "worker_count", "num_classes")
# Fields added after caches existed: hashed only away from these defaults, so the
# caches of earlier runs keep their keys.
_LATER_FIELDS = {"image_size": None, "test_fraction": 0.2, "split_seed": 0, "taps": None}


def pretrain_key(config: SemiConfig) -> str:
  """Content address of the pre-training (a hash of the fields that determine it)."""
  fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_PRETRAIN
            and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
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


def _read_config_json(workdir: str) -> dict[str, Any]:
  """``W/config.json`` as a dict; one :class:`WorkdirError` line if it does not read."""
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      saved = json.load(f)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path}: not JSON ({e.msg}, line {e.lineno} column {e.colno}); it "
                       "records the run's config: restore it, or use a new --workdir") from None
  except UnicodeDecodeError:
    raise WorkdirError(f"{path}: not JSON (not UTF-8 text); it records the run's config: "
                       "restore it, or use a new --workdir") from None
  if not isinstance(saved, dict):
    raise WorkdirError(f"{path}: expected a JSON object (the run's config), got "
                       f"{type(saved).__name__}")
  return saved


def _check_config(config: SemiConfig, workdir: str) -> None:
  """Writes ``W/config.json``, or compares a re-run's config with it
  (:func:`hpjax.core.workdir.compare_configs`, the one comparison of every workdir).

  Fields that may change on resume update ``W/config.json`` and are recorded in
  ``W/resume.jsonl`` (and so in ``W/metrics.jsonl``) as a ``"resume"`` record at the
  last finished epoch.
  """
  path = os.path.join(workdir, "config.json")
  current = io.to_json(dataclasses.asdict(config))
  if not os.path.exists(path):
    io.write_json(path, current)
    return
  changed = workdir_lib.compare_configs(_read_config_json(workdir), current,
                                        where=f"workdir {workdir}")
  if changed:
    rdir = os.path.join(workdir, "records")
    done = [int(n[6:9]) for n in (os.listdir(rdir) if os.path.isdir(rdir) else [])
            if n.startswith("epoch_") and n.endswith(".json")]
    step = max(done, default=0)
    workdir_lib.warn(f"workdir {workdir}: resuming after epoch {step} with "
                     f"{workdir_lib.describe_changes(changed)} (recorded in metrics.jsonl)")
    if jax.process_index() == 0:  # an append is not idempotent: one process writes it
      io.append_text(os.path.join(workdir, "resume.jsonl"),
                     json.dumps({"step": step, "kind": "resume", "changed": changed}) + "\n")
    io.write_json(path, current)


def read_run_config(workdir: str) -> SemiConfig:
  """The :class:`SemiConfig` of a run directory.

  Raises:
    ConfigError: no ``config.json`` there.
    WorkdirError: it is not JSON, or not a valid config (one line naming the file).
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"{workdir}: no config.json there; is it a train.semisupervised workdir?")
  try:
    return from_dict(SemiConfig, _read_config_json(workdir))
  except (ConfigError, TypeError, ValueError) as e:
    raise WorkdirError(f"{path}: not a valid run config ({e})") from None


def _write_metrics(workdir: str) -> list[dict[str, Any]]:
  """Regenerates ``W/metrics.jsonl`` from the per-epoch records (idempotent on resume)."""
  rdir = os.path.join(workdir, "records")
  records = []
  for name in sorted(os.listdir(rdir)):
    if name.endswith(".json"):
      with open(os.path.join(rdir, name)) as f:
        records.append(json.load(f))
  lines = [(r["epoch"], json.dumps({"step": r["epoch"], "kind": "semi", **r})) for r in records]
  resumes = os.path.join(workdir, "resume.jsonl")  # written by _check_config
  if os.path.exists(resumes):
    lines += [(r["step"], json.dumps(r)) for r in metrics_writer.read_records(resumes)]
  lines.sort(key=lambda x: x[0])  # stable: a resume record follows its epoch's
  io.write_text(os.path.join(workdir, "metrics.jsonl"), "".join(l + "\n" for _, l in lines))
  return records


def train(config: SemiConfig, workdir: str, *, progress: bool = True,
          max_epochs: int | None = None) -> dict[str, Any]:
  """Runs (or resumes) the semi-supervised loop of docs/papers.md §B4 in ``workdir``.

  Args:
    config: the run.
    workdir: run directory (see the module docstring for its layout).
    progress: tqdm bars for the training phases.
    max_epochs: stop after this many re-training epochs (an interruption, for
      tests); None runs all ``retrain_epochs``.

  Returns:
    The last "semi" record written.

  Raises:
    WorkdirError: the workdir is unusable or in use (:func:`hpjax.core.workdir.lock`),
      a write failed, or a finished phase's checkpoint does not restore.
    ConfigError: ``config`` differs from the run's in a field that must match.

  References:
    docs/papers.md §B4.
  """
  with workdir_lib.lock(workdir):
    return _train(config, workdir, progress=progress, max_epochs=max_epochs)


def _train(config: SemiConfig, workdir: str, *, progress: bool, max_epochs: int | None
           ) -> dict[str, Any]:
  """:func:`train` under the workdir's lock."""
  if config.pretrain_epochs < 1:
    raise ConfigError("config field pretrain_epochs must be >= 1 (the loop labels the "
                      "additional set with the pre-trained model)")
  if config.dataset in NEEDS_PATH and not config.data_path:
    raise ConfigError(f"config field data_path: dataset {config.dataset!r} needs the path of "
                      "its files, got none")
  data = load_data(config)
  # Fractions and target class checked before the workdir is written, so a corrected
  # re-run is not refused.
  class_fractions(config, data.num_classes)
  os.makedirs(workdir, exist_ok=True)
  _check_config(config, workdir)
  _check_data(data, config, workdir)
  split_path = os.path.join(workdir, "split.npz")
  if not os.path.exists(split_path):
    io.write_npz(split_path, labelled=data.labelled, additional=data.additional)

  model = build_model(config, data.num_classes)
  template = training.create_train_state(model, optax.adam(config.learning_rate),
                                         data.train_images.shape[1:], config.seed)
  mesh = distributed.make_mesh()
  repl = distributed.replicated(mesh)

  def phase_state(prev_dir: str) -> training.TrainState:
    return finished_phase_state(prev_dir, template, repl)

  # Pre-training (shared through the cache when set).
  pdir = pretrain_dir(config, workdir)
  labelled_src = data.train_source(data.labelled)
  analysis_path = os.path.join(pdir, "analysis.npz")
  if not os.path.exists(analysis_path):
    t0 = time.perf_counter()
    state = training.fit(pdir, config=_phase_config(config, "pretrain", len(labelled_src),
                                                    config.pretrain_epochs, config.seed),
                         state=template, loss_fn=loss_fn, train_source=labelled_src, mesh=mesh,
                         progress=progress)
    t1 = time.perf_counter()
    analysis = analyse(state, data, config, with_scores=True, with_train=True)
    io.write_npz(analysis_path, **analysis)
    io.write_json(os.path.join(pdir, "seconds.json"),
                  {"train": t1 - t0, "analyse": time.perf_counter() - t1})
  pretrain_analysis = load_npz(analysis_path)
  if not os.path.exists(record_path(workdir, 0)):
    with open(os.path.join(pdir, "seconds.json")) as f:
      seconds = json.load(f)
    io.write_json(record_path(workdir, 0),
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
      analysis = load_npz(os.path.join(prev_dir, "analysis.npz"))
    t0 = time.perf_counter()
    sel_path = os.path.join(edir, "selection.npz")
    if not os.path.exists(sel_path) and config.mode == "dataset" and epoch > 1:
      # Selected once, after the pre-training; every epoch trains with that selection.
      io.write_npz(sel_path, **load_npz(os.path.join(phase_dir(workdir, 1), "selection.npz")))
    if not os.path.exists(sel_path):
      if config.mode == "dataset" and config.method == "image_score":
        analysis = dict(analysis, add_scores_dataset=dataset_level_scores(
            phase_state(prev_dir), data, config))
      mask = select(config, analysis, data.num_classes, epoch)
      index = np.flatnonzero(mask)
      io.write_npz(sel_path, index=index, pseudo=analysis["add_pred"][index].astype(np.int32))
    selected = load_npz(sel_path)
    union = data.train_source(
        np.concatenate([data.labelled, data.additional[selected["index"]]]),
        np.concatenate([data.train_labels[data.labelled], selected["pseudo"]]))
    t1 = time.perf_counter()
    state = training.fit(edir, config=_phase_config(config, f"epoch_{epoch:03d}", len(union), 1,
                                                    config.seed + 1000 * epoch),
                         state=phase_state(prev_dir), loss_fn=loss_fn, train_source=union,
                         mesh=mesh, progress=progress)
    t2 = time.perf_counter()
    final = epoch == config.retrain_epochs
    analysis = analyse(state, data, config,
                       with_scores=config.method == "image_score" or final, with_train=final)
    io.write_npz(os.path.join(edir, "analysis.npz"), **analysis)
    t3 = time.perf_counter()
    io.write_json(record_path(workdir, epoch), epoch_record(
        epoch, analysis, data, selected, {"select": t1 - t0, "train": t2 - t1,
                                          "analyse": t3 - t2}))
    _write_metrics(workdir)  # so partial runs can be inspected while they train
    prev_dir = edir
  records = _write_metrics(workdir)

  if last == config.retrain_epochs and not os.path.exists(os.path.join(workdir, "scores.npz")):
    final_dir = phase_dir(workdir, last) if last else pdir
    fin = load_npz(os.path.join(final_dir, "analysis.npz"))
    arrays = {f"pretrain_{k}": v for k, v in pretrain_analysis.items()
              if k.startswith(("train_", "test_"))}
    arrays.update({f"final_{k}": v for k, v in fin.items() if k.startswith(("train_", "test_"))})
    io.write_npz(os.path.join(workdir, "scores.npz"),
                 similarities=np.asarray(SIMILARITIES), **arrays)
  return records[-1]


def finished_phase_state(phase: str, template: training.TrainState,
                         sharding: jax.sharding.Sharding) -> training.TrainState:
  """The trained state of a finished phase: its newest checkpoint, and no other (an
  older one is a state from the middle of the phase).

  Raises:
    CheckpointError: that checkpoint does not restore (one line).
  """
  steps = training.checkpoint_steps(phase)
  if not steps:
    raise CheckpointError(f"{phase}: no checkpoint of this finished phase; use a new --workdir")
  try:
    return training.restore_state(phase, template, sharding, step=steps[0])
  except CheckpointError as e:
    raise CheckpointError(f"{e}; it is the trained state of the finished phase {phase}, "
                          "which the run cannot do without: use a new --workdir") from None


def load_final_state(workdir: str) -> tuple[SemiConfig, training.TrainState]:
  """The config and the trained state of a run's last finished phase (the pre-training,
  or the last re-training epoch with a record)."""
  config = read_run_config(workdir)
  data_shape, num_classes = _data_meta(config)
  model = build_model(config, num_classes)
  template = jax.eval_shape(lambda: training.create_train_state(
      model, optax.adam(config.learning_rate), data_shape, config.seed))
  epochs = [e for e in range(config.retrain_epochs, 0, -1)
            if os.path.exists(record_path(workdir, e))]
  d = phase_dir(workdir, epochs[0]) if epochs else pretrain_dir(config, workdir)
  return config, finished_phase_state(d, template,
                                      distributed.replicated(distributed.make_mesh()))


def _data_meta(config: SemiConfig) -> tuple[tuple[int, ...], int]:
  src = open_split(config, "test")
  return tuple(src.image_shape), len(src.label_names)


def _check_data(data: SemiData, config: SemiConfig, workdir: str) -> None:
  """Writes ``W/data.json`` (the class names, recorded with the run), or checks that a
  re-run reads the same classes and image shape."""
  path = os.path.join(workdir, "data.json")
  current = {"dataset": config.dataset, "label_names": list(data.label_names),
             "image_shape": list(data.train_images.shape[1:]),
             "num_train": int(data.train_images.shape[0] - data.num_unlabelled),
             "num_unlabelled": data.num_unlabelled, "num_test": int(data.test_labels.size)}
  if not os.path.exists(path):
    io.write_json(path, current)
    return
  with open(path) as f:
    saved = json.load(f)
  for key in ("label_names", "image_shape"):
    if saved.get(key) != current[key]:
      raise DataError(f"{path}: the run was trained with {key} {saved.get(key)}, the data set "
                      f"now gives {current[key]}; use a new workdir for the changed data")
