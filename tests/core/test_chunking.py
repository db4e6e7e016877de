"""The one chunking rule (hpjax.core.chunking) and the two loops that follow it: the HPNet
heads' streamed chunks and the image score's blocks.

The backend and the device's memory are injected (monkeypatched lookups), and the loops'
chunk counts are read from the compiled program's trip counts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sharding_fixtures as sf

from hpjax.core import chunking
from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet.config import AttributesConfig
from hpjax.image_score import scoring
from hpjax.image_score.reference import fit_reference

GIB = 1 << 30


def _force(monkeypatch, backend, stats):
  monkeypatch.setattr(chunking, "backend", lambda: backend)
  monkeypatch.setattr(chunking, "memory_stats", lambda: stats)


def test_cpu_keeps_the_measured_sizes(monkeypatch):
  _force(monkeypatch, "cpu", None)
  assert chunking.rows_per_chunk(16 * 40 * 128, cpu_rows=256) == 256
  assert chunking.rows_per_chunk(16 * 8 * 32, cpu_rows=256) == 256  # rows, not bytes
  assert chunking.rows_per_chunk(4 * 6272, cpu_bytes=1 << 19) == 20
  assert chunking.rows_per_chunk(1 << 20, cpu_bytes=1 << 19) == 1


@pytest.mark.parametrize("backend,stats,memory", [
    ("gpu", {"bytes_limit": 80 * GIB, "bytes_in_use": 3 * GIB}, 80 * GIB),
    ("tpu", {"bytes_limit": 16 * GIB}, 16 * GIB),
    ("gpu", None, chunking.DEFAULT_DEVICE_MEMORY),  # no memory_stats()
    ("tpu", {"bytes_in_use": 0}, chunking.DEFAULT_DEVICE_MEMORY),  # no bytes_limit
])
def test_accelerators_take_a_sixteenth_of_device_memory(monkeypatch, backend, stats, memory):
  _force(monkeypatch, backend, stats)
  assert chunking.device_memory() == memory
  row = 16 * 40 * 128  # the heads' row at paper size: 80 KiB
  assert chunking.rows_per_chunk(row, cpu_rows=256) == memory // 16 // row
  assert chunking.rows_per_chunk(row, cpu_bytes=1 << 19) == memory // 16 // row
  assert chunking.rows_per_chunk(memory, cpu_rows=256) == 1
  if memory == 80 * GIB:  # 64 Ki positions: four 128×128 images per chunk
    assert heads_lib.stream_rows(40, 128) == 65536


def test_bad_arguments_name_what_was_expected():
  with pytest.raises(ValueError, match="expected exactly one of cpu_rows and cpu_bytes"):
    chunking.rows_per_chunk(4, cpu_rows=1, cpu_bytes=8)
  with pytest.raises(ValueError, match="expected exactly one of cpu_rows and cpu_bytes"):
    chunking.rows_per_chunk(4)
  with pytest.raises(ValueError, match="expected row_bytes >= 1, got 0"):
    chunking.rows_per_chunk(0, cpu_rows=1)


def test_heads_layout_groups_images_in_equal_chunks():
  assert heads_lib._chunk_layout(32, 64, 256) == (4, 64)  # CPU: 256 positions, as before
  assert heads_lib._chunk_layout(2, 4096, 256) == (1, 256)
  assert heads_lib._chunk_layout(8, 256, 1 << 20) == (8, 256)  # it fits: one chunk
  assert heads_lib._chunk_layout(7, 64, 320) == (4, 64)  # 2 chunks of 4, not 5 + 2 padded to 5


# K = 8, C = 16: a row is 4 · 4 · 8 · 16 = 2 KiB; 16×16 images are 256 positions.
K, C, B, HW = 8, 16, 16, 16


def _heads_trip_counts(rows=None):
  rng = np.random.default_rng(0)
  heads = {"mask_kernel": jnp.asarray(rng.normal(size=(K, C, C)) / 4, jnp.float32),
           "mask_bias": jnp.zeros((K, C)), "kernel": jnp.asarray(rng.normal(size=(K, C))),
           "bias": jnp.zeros((K,))}
  f = jnp.asarray(rng.uniform(size=(B, HW, HW, C)), jnp.float32)

  def loss(heads, f):  # a fresh function: traced again under the forced backend
    logits, l1 = heads_lib.streamed_heads(heads, f, 1, 0, rows)
    return jnp.sum(logits) + jnp.sum(l1)

  return sf.trip_counts(sf.hlo(jax.jit(jax.grad(loss)).lower(heads, f).compile()))


def test_heads_use_the_rule(monkeypatch):
  assert AttributesConfig().head_stream_rows is None  # the rule, unless a config says
  assert _heads_trip_counts() == [B, B]  # CPU: 256 positions = one image per chunk
  # 32 MiB of device memory: 2 MiB per chunk = 1024 positions = 4 images per chunk.
  _force(monkeypatch, "gpu", {"bytes_limit": 32 << 20})
  assert _heads_trip_counts() == [B // 4, B // 4]
  assert _heads_trip_counts(rows=512) == [B // 2, B // 2]  # an explicit size wins
  _force(monkeypatch, "gpu", {"bytes_limit": 80 * GIB})  # it all fits: no loop of 16
  assert all(n == 1 for n in _heads_trip_counts())


def _score_trip_counts(n=128, units=4096):
  rng = np.random.default_rng(0)
  taps = {"x": rng.uniform(size=(n, units)).astype(np.float32)}
  ref = fit_reference(taps, np.arange(n) % 2, 2, batch_size=n)
  fn = jax.jit(lambda r, x, a: scoring._score_arrays(r, (x,), a, similarity="jaccard", eps=1.0))
  assigned = np.arange(n, dtype=np.int32) % 2
  return sf.trip_counts(sf.hlo(fn.lower(ref, taps["x"], assigned).compile()))


def test_image_score_blocks_use_the_rule(monkeypatch):
  # CPU: 512 KiB of float32 compares = 32 rows of 4096 units: 4 blocks of the 128 images.
  assert _score_trip_counts() == [4]
  _force(monkeypatch, "gpu", {"bytes_limit": 16 * 16 * 4096 * 4})  # 16 rows per block
  assert _score_trip_counts() == [8]
  _force(monkeypatch, "tpu", None)  # 1 GiB per block: the batch is one block, no loop
  assert _score_trip_counts() == []
