"""The semi-supervised run's config and its presets (paper B, Sec. 3.1; docs/papers.md §B4).

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334). The
loop that runs a :class:`SemiConfig` is :func:`hpjax.image_score.semisupervised.train`.
Each preset names the command that runs it; override any field from the command
line: ``python -m train.semisupervised --config digits --set similarity=jaccard``.
Your own classes (docs/data.md, "Bring your own data"): any preset with
``--set dataset=image_folder --set data_path=ROOT --set image_size=32``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hpjax.core.errors import ConfigError
from hpjax.image_score.scoring import SIMILARITIES
from hpjax.image_score.selection import RESNET18_FRACTIONS, VGG16_FRACTIONS

METHODS = ("baseline", "softmax", "image_score", "random")
MODES = ("all", "per_class", "dataset")
MODELS = ("small_cnn", "vgg16", "resnet18")


@dataclasses.dataclass(frozen=True)
class SemiConfig:
  """One semi-supervised run.

  References:
    docs/papers.md §B4.
  """

  name: str = "custom"                  # preset name, recorded with the run
  dataset: str = "fashion_mnist"        # source for hpjax.data.sources.open_source
  data_path: str | None = None          # data set root (None: the source's default)
  image_size: int | None = None         # side images are resized to (image_folder; None: as they are)
  num_classes: int | None = None        # checked against the data set's classes (None: inferred)
  test_fraction: float = 0.2            # image_folder without split folders: test share of each class
  split_seed: int = 0                   # ...and the seed of that held-out split (same for every run seed)
  num_train: int | None = None          # subsample of the train split before splitting (None: all)
  labelled_fraction: float = 0.6        # labelled share; the rest (+ an unlabelled pool) is additional
  model: str = "small_cnn"              # "small_cnn", "vgg16" or "resnet18"
  width: float = 1.0                    # multiplies every layer width of the model
  dropout_rate: float = 0.0             # dropout of the model (SmallCNN/ResNet18: before dense)
  method: str = "image_score"           # "baseline", "softmax", "image_score" or "random"
  mode: str = "all"                     # "all" classes at once, "per_class" (target_class only),
                                        # or "dataset": top α of the whole set, selected once
  target_class: int = 0                 # the class whose pseudo labels are added (per_class)
  fractions: tuple[float, ...] = (0.3,)  # α_c: one for every class, or one per class
  similarity: str = "recall"            # image-score similarity: "recall", "jaccard", "dice"
  taps: tuple[str, ...] | None = None   # the model's taps the score uses (None: all of them;
                                        # e.g. leave out SmallCNN's logits, tap04_classifier)
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
    if self.similarity not in SIMILARITIES:
      raise ConfigError(f"config field similarity must be one of "
                        f"{', '.join(SIMILARITIES)}, got {self.similarity!r}")
    # 1: every labelled image trains, and the additional set is the unlabelled pool alone.
    if not 0.0 < self.labelled_fraction <= 1.0:
      raise ConfigError(f"config field labelled_fraction must be in (0, 1], got "
                        f"{self.labelled_fraction}")
    if self.image_size is not None and self.image_size < 1:
      raise ConfigError(f"config field image_size must be > 0 or None, got {self.image_size}")
    if self.num_classes is not None and self.num_classes < 2:
      raise ConfigError(f"config field num_classes must be >= 2 or None, got {self.num_classes}")
    if not 0.0 < self.test_fraction < 1.0:
      raise ConfigError(f"config field test_fraction must be in (0, 1), got {self.test_fraction}")
    if self.split_seed < 0:
      raise ConfigError(f"config field split_seed must be >= 0, got {self.split_seed}")
    if not self.fractions or any(not 0.0 <= a <= 1.0 for a in self.fractions):
      raise ConfigError(f"config field fractions must be values in [0, 1], got {self.fractions}")
    if self.taps is not None and not self.taps:
      raise ConfigError("config field taps must name at least one tap, or be None (all)")
    if self.mode == "dataset" and len(self.fractions) != 1:
      raise ConfigError("config field fractions: mode dataset selects one share of the whole "
                        f"additional set, expected 1 value, got {len(self.fractions)}")
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
    # SmallCNN at width 1/4 trains fast enough on 2 shared CPU cores that one E1+E2
    # run over 36k/24k takes a few minutes: E1 = 2 epochs already reach ~87 % test
    # accuracy (the regime where selection can help but is not saturated), and
    # E2 = 4 re-training epochs give 4 per-epoch samples per run.
    "fashion_mnist": SemiConfig(
        name="fashion_mnist", dataset="fashion_mnist", model="small_cnn", width=0.25,
        fractions=(0.3,), pretrain_epochs=2, retrain_epochs=4, batch_size=128,
        eval_batch_size=1000, learning_rate=1e-3, num_train_scored=10000,
        checkpoint_every=500),
    # python -m train.semisupervised --config fashion_mnist_tables --suite tables \
    #   --workdir runs/semi/fm_tables
    # The experiment set of docs/results.md "Paper B" (85 runs, hpjax.image_score.suite):
    # 20,000 of the 60,000 training images (12k labelled / 8k additional) keep one run
    # under a minute on 2 CPU cores; E1 = 2 reaches ~80 % test accuracy.
    "fashion_mnist_tables": SemiConfig(
        name="fashion_mnist_tables", dataset="fashion_mnist", model="small_cnn", width=0.25,
        num_train=20000, fractions=(0.3,), pretrain_epochs=2, retrain_epochs=4,
        batch_size=128, eval_batch_size=1000, learning_rate=1e-3, num_train_scored=4000,
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
        fractions=VGG16_FRACTIONS, pretrain_epochs=100, retrain_epochs=100,
        batch_size=128, eval_batch_size=1000, learning_rate=1e-4, num_train_scored=10000,
        checkpoint_every=2000, worker_count=4),
    # The paper's second CIFAR-10 model and its α.
    "cifar10_resnet18": SemiConfig(
        name="cifar10_resnet18", dataset="cifar10", model="resnet18", width=1.0,
        dropout_rate=0.2, fractions=RESNET18_FRACTIONS, pretrain_epochs=100,
        retrain_epochs=100, batch_size=128, eval_batch_size=1000, learning_rate=1e-4,
        num_train_scored=10000, checkpoint_every=2000, worker_count=4),
    # Tests: digits, a tiny model, 1 + 2 epochs; compiles in seconds.
    "smoke": SemiConfig(
        name="smoke", dataset="digits", model="small_cnn", width=0.125, num_train=320,
        fractions=(0.5,), pretrain_epochs=1, retrain_epochs=2, batch_size=32,
        eval_batch_size=128, learning_rate=3e-3, num_train_scored=64, log_every=4,
        checkpoint_every=100),
}


def check_num_classes(config: SemiConfig, label_names: tuple[str, ...]) -> int:
  """The data set's class count, checked against ``config.num_classes`` when set."""
  if config.num_classes is not None and config.num_classes != len(label_names):
    shown = ", ".join(label_names[:12]) + (", ..." if len(label_names) > 12 else "")
    raise ConfigError(f"config field num_classes is {config.num_classes}, but data set "
                      f"{config.dataset!r} has {len(label_names)} classes ({shown})")
  return len(label_names)


def class_fractions(config: SemiConfig, num_classes: int) -> np.ndarray:
  """α per class ``[C]``; ``mode="per_class"`` zeroes every class but ``target_class``.

  References:
    docs/papers.md §B4.
  """
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
