"""The padded evaluation batches: order, padding and each row's global index."""
from __future__ import annotations

import numpy as np

from hpjax.data import pipeline


class _Numbers:
  """``n`` examples whose ``x`` is their own position."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def get_batch(self, idx):
    return {"x": np.asarray(idx, np.int64)}


def test_eval_batches_index_is_the_global_position_on_every_process():
  # 10 examples, global batch 8 over 2 processes: each loads 4 rows of each batch.
  per_process = [list(pipeline.eval_batches(_Numbers(10), global_batch_size=8,
                                            process_index=p, process_count=2))
                 for p in range(2)]
  np.testing.assert_array_equal([b["index"] for b in per_process[0]], [[0, 1, 2, 3],
                                                                       [8, 9, 10, 11]])
  np.testing.assert_array_equal([b["index"] for b in per_process[1]], [[4, 5, 6, 7],
                                                                       [12, 13, 14, 15]])
  for batches in per_process:
    for b in batches:
      assert b["index"].dtype == np.int32
      np.testing.assert_array_equal(b["valid"], b["index"] < 10)
      # Real rows hold the example at their index; padding rows repeat example 0.
      np.testing.assert_array_equal(b["x"], np.where(b["valid"], b["index"], 0))
  # One process sees the same indices, in one slice per batch.
  whole = list(pipeline.eval_batches(_Numbers(10), global_batch_size=8, limit=9))
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in whole]), np.arange(16))
  assert int(sum(b["valid"].sum() for b in whole)) == 9
