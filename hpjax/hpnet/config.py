"""HPNet's training config and its presets (paper A).

Each preset names the command that runs it. Override any field from the command
line: ``python -m train.attributes --config demo --set batch_size=64 --set
features=16,32,32,64``.
"""
from __future__ import annotations

import dataclasses

from hpjax.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AttributesConfig:
  """HPNet (or its baseline) trained on a multi-attribute data set."""

  name: str = "custom"                  # preset name, recorded with the run
  dataset: str = "synthetic"            # source for hpjax.data.sources.open_source
  data_path: str | None = None          # data set root (None: the source's default);
                                        # attribute_table: ROOT or its table file
  image_size: int = 32                  # images are resized/drawn at image_size²
  num_train: int | None = None          # synthetic only: train-split size (None: default)
  num_eval: int | None = None           # cap on val/test examples evaluated (None: all)
  model: str = "hpnet"                  # "hpnet" (attention heads) or "baseline" (GAP+dense)
  features: tuple[int, ...] = (32, 64, 64, 128)  # extractor widths; the last is C
  dilations: tuple[int, ...] = (1, 2, 3, 2)      # extractor dilations (paper Table 1)
  stream_heads: bool = True             # False: heads on the whole batch, masks materialised;
                                        # True: heads streamed over position chunks (low memory)
  head_stream_rows: int | None = None   # feature-map positions per streamed head chunk
                                        # (None: by backend and memory, hpjax.core.chunking;
                                        # 256 on CPU)
  head_matmul_dtype: str = "float32"    # "bfloat16": the heads' GEMM operands in bfloat16,
                                        # float32 accumulation (opt-in speed on AMX/GPU/TPU)
  mask_bias_init: float = 0.0           # initial mask-branch bias (σ(0) = 0.5: masks half open)
  batch_size: int = 32                  # global batch, split over all devices
  num_steps: int = 1000                 # training steps
  learning_rate: float = 1e-3           # Adam peak learning rate (cosine decay after warmup)
  warmup_steps: int = 100               # linear warmup steps
  l1_lambda: float = 1e-5               # λ of the mask L1 term (paper: 1e-5)
  l1_reduction: str = "mean"            # "mean": ‖M‖₁ / (H·W·K·C) per image (default);
                                        # "sum": the paper's literal ‖M‖₁, which closed
                                        # most masks and left 9 of 14 heads dead in the
                                        # demo (docs/training.md)
  log_every: int = 50                   # steps between training-metric records
  eval_every: int = 500                 # steps between validation evaluations (0: only at end)
  checkpoint_every: int = 500           # steps between checkpoints (and at the end)
  max_checkpoints: int = 2              # checkpoints kept in the workdir
  worker_count: int = 0                 # grain worker processes (0: load in-process)
  seed: int = 0                         # data order, initialisation and dropout
  data_seed: int = 0                    # synthetic: which generated data set; attribute_table
                                        # without a split column: the seeded split; kept
                                        # apart from seed so training seeds share a test set

  def __post_init__(self):
    positive = ("image_size", "batch_size", "num_steps", "log_every", "checkpoint_every",
                "max_checkpoints", "head_stream_rows")
    for f in positive:
      if getattr(self, f) is not None and getattr(self, f) <= 0:
        raise ConfigError(f"config field {f} must be > 0, got {getattr(self, f)}")
    if self.model not in ("hpnet", "baseline"):
      raise ConfigError(f"config field model must be 'hpnet' or 'baseline', got {self.model!r}")
    if self.l1_reduction not in ("sum", "mean"):
      raise ConfigError(f"config field l1_reduction must be 'sum' or 'mean', got "
                       f"{self.l1_reduction!r}")
    if self.head_matmul_dtype not in ("float32", "bfloat16"):
      raise ConfigError(f"config field head_matmul_dtype must be 'float32' or 'bfloat16', got "
                       f"{self.head_matmul_dtype!r}")
    if len(self.features) != len(self.dilations):
      raise ConfigError(f"config fields features {self.features} and dilations "
                       f"{self.dilations} must have the same length")


ATTRIBUTE_PRESETS: dict[str, AttributesConfig] = {
    # python -m train.attributes --config demo --workdir runs/demo
    # C = 32 keeps the heads' K·H·W·C² cost at the extractor's; 1800 steps ≈ 2.9 epochs
    # (900 left the baseline too at chance on 3 attributes; docs/training.md).
    # Streamed heads in 2048-position chunks: faster per step than materialised masks
    # at this size (see benchmarks/NOTES.md).
    "demo": AttributesConfig(
        name="demo", image_size=32, num_train=20000, num_eval=2000, features=(16, 32, 32, 32),
        head_stream_rows=2048, batch_size=32, num_steps=1800, learning_rate=3e-3,
        warmup_steps=100, log_every=50, eval_every=900, checkpoint_every=900),
    # python -m train.attributes --config celeba --set data_path=/data/celeba --workdir runs/celeba
    # Paper sizes: 40 attributes, C=128, for one GPU. The streamed heads never hold the
    # [B, H, W, K, C] masks: a step needs the extractor's activations (~50-70 MB per image at
    # 128², predicted) plus one chunk sized by hpjax/core/chunking.py, so batch 64 needs a few
    # GB, not 80; `python -m benchmarks.gpu` measures the peak per batch size.
    "celeba": AttributesConfig(
        name="celeba", dataset="celeba", image_size=128, features=(32, 64, 64, 128),
        batch_size=64, num_steps=50000, learning_rate=1e-3, warmup_steps=1000,
        log_every=100, eval_every=5000, checkpoint_every=2000, worker_count=8),
    # Tests: compiles in seconds.
    "smoke": AttributesConfig(
        name="smoke", image_size=16, num_train=256, num_eval=64, features=(4, 8, 8, 8),
        batch_size=8, num_steps=6, learning_rate=1e-3, warmup_steps=2,
        log_every=2, eval_every=3, checkpoint_every=3),
}
