"""The fused scorer is data-parallel: on N devices each device runs the forward pass and
scores its own images (docs/papers.md §B3).

Read from the compiled per-device programs (the conftest forces 4 CPU devices): no
collective at all (every score is per image), no tensor whose first dimension is the
global batch, 1/N of the one-device FLOPs, and the score's blocks cover the device's own
rows (a loop's body is counted once in XLA's FLOPs: the trip counts show its share).
Before, the scorer ran every image on one device whatever the mesh.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import sharding_fixtures as sf

from hpjax.image_score import fused, scoring

B, N = 384, 4  # 96 images per device: the largest tap is still scored in blocks


@pytest.fixture(scope="module")
def images():
  return np.asarray(jax.random.uniform(jax.random.key(1), (B, 28, 28, 1)))


def _expected_blocks(ref, batch):
  """Trip counts of the score's block loops for ``batch`` rows per device."""
  counts = []
  for shape in ref.tap_shapes:
    rows = scoring._rows_per_block(batch, int(np.prod(shape)))
    if rows < batch:
      counts.append(batch // rows)
  return sorted(counts)


@pytest.mark.parametrize("single_program", [False, True])
def test_fused_scorer_runs_per_device(cnn, images, single_program):
  ref = cnn["reference"]
  programs = {}
  for n in (1, N):
    scorer = fused.make_fused_scorer(cnn["apply"], ref, single_program=single_program,
                                     mesh=sf.mesh(n))
    programs[n] = scorer.compiled(cnn["variables"], images)
  blocks = []
  for one, many in zip(programs[1], programs[N]):
    t1, t = sf.hlo(one), sf.hlo(many)
    assert B in sf.leading_dims(t1) and B not in sf.leading_dims(t)
    assert not sf.all_gathers(t) and not sf.all_reduces(t)
    if not sf.trip_counts(t1):  # XLA counts a loop body once: compare loop-free programs
      assert sf.flops(many) <= 1.1 * sf.flops(one) / N, (sf.flops(many), sf.flops(one))
    blocks += sf.trip_counts(t)
  # The blocks loop over each device's 96 rows (the 1-device program over all 384).
  assert sorted(blocks) == _expected_blocks(ref, B // N) != _expected_blocks(ref, B)
  assert blocks, "the largest tap should still be scored in blocks"


@pytest.mark.parametrize("single_program", [False, True])
def test_values_equal_one_device(cnn, images, single_program):
  ref = cnn["reference"]
  n = 46  # does not split over 4 devices: padded to 48, the padding cut
  forced = (np.arange(n) % 4).astype(np.int32)
  out = {}
  for devices in (1, N):
    scorer = fused.make_fused_scorer(cnn["apply"], ref, single_program=single_program,
                                     mesh=sf.mesh(devices))
    out[devices] = [scorer(cnn["variables"], images[:n]),
                    scorer(cnn["variables"], images[:n], forced)]
  for (l1, s1), (l4, s4) in zip(out[1], out[N]):
    assert l4.shape == (n, 4) and s4.shape == (n,)
    np.testing.assert_allclose(l4, l1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s4, s1, rtol=1e-5, atol=1e-6)
  taps = jax.tree.map(np.asarray, jax.jit(cnn["apply"])(cnn["variables"], images[:n])[1]["taps"])
  np.testing.assert_allclose(out[N][1][1], scoring.score_numpy_loop(ref, taps, forced),
                             rtol=1e-5, atol=1e-6)
