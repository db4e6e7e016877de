"""The grain input pipeline shared by every source.

Order is fixed by the seed and the *global* batch: indices are shuffled once per
epoch over the whole data set, cut into global batches, and each process loads only
its contiguous slice of each global batch. So one process and P processes see the
same global batches (a multi-host run trains to the same parameters as a
single-host one), batch shapes are fixed (``drop_remainder``), and the iterator's
state — the next batch index — is what the checkpoint stores.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import grain
import numpy as np

from hpjax.data.base import get_batch


@dataclasses.dataclass(frozen=True)
class _ProcessSlice:
  """Picklable ``map`` fn (grain worker processes pickle it)."""
  start: int
  stop: int

  def __call__(self, indices: np.ndarray) -> np.ndarray:
    return indices[self.start:self.stop]


@dataclasses.dataclass(frozen=True)
class _Load:
  source: Any

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return get_batch(self.source, indices)


def process_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise ValueError(f"batch_size={global_batch_size} must be divisible by the number of "
                     f"processes ({process_count})")
  per = global_batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def train_dataset(source: Any, *, global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """An endless, per-epoch reshuffled dataset of this process's batch slices."""
  if len(source) < global_batch_size:
    raise ValueError(f"the training set has {len(source)} examples, fewer than one batch "
                     f"(batch_size={global_batch_size})")
  sl = process_slice(global_batch_size, process_index, process_count)
  return (grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(None)
          .batch(global_batch_size, drop_remainder=True)
          .map(_ProcessSlice(sl.start, sl.stop)).map(_Load(source)))


def train_iterator(dataset: grain.MapDataset, *, worker_count: int = 0) -> grain.DatasetIterator:
  """A checkpointable iterator; ``worker_count > 0`` decodes in grain worker processes."""
  ds = dataset.to_iter_dataset()
  if worker_count > 0:
    # grain's worker processes read absl flags, which our argparse entry points never parse.
    from absl import flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    # Workers leave Ctrl-C / SIGTERM to the main process, which stops after a step.
    from hpjax.core.interrupt import ignore_in_worker
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count),
                        worker_init_fn=ignore_in_worker)
  return iter(ds)


def eval_batches(source: Any, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, limit: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass, padded to full batches; ``"valid"`` marks the real examples.

  ``"index"`` is each row's position in the source (past the end for padding rows):
  the global position, also on a process that loads only its slice of the batch, so
  anything keyed by it (the analyses' per-image noise) does not depend on the batch
  size or the number of processes.
  """
  n = len(source) if limit is None else min(limit, len(source))
  sl = process_slice(global_batch_size, process_index, process_count)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start, start + global_batch_size)[sl]
    valid = idx < n
    batch = get_batch(source, np.where(valid, idx, 0))
    batch["valid"] = valid
    batch["index"] = idx.astype(np.int32)
    yield batch
