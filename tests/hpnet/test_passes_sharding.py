"""The analyses' passes are data-parallel: on N devices each device evaluates its own images.

Read from the compiled per-device program (the conftest forces 4 CPU devices): no
all-gather, no tensor whose first dimension is the global batch, a per-device FLOP count
of 1/N of the one-device program's, and no more crossing devices than the sums the pass
returns (all-reduces of the small sums, never the feature maps or masks). Values equal
the one-device pass (``Mesh(devices[:1])``) to 1e-5. Before, every pass ran its batches
as host NumPy arrays on one device: the 4-device FLOPs were the 1-device FLOPs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sharding_fixtures as sf
from hpnet_fixtures import K

from hpjax.core import distributed, jit
from hpjax.data.synthetic import SyntheticFaces
from hpjax.hpnet import perturbation, statistics
from hpjax.hpnet.analyses import attention

B, N = 24, 4  # global batch; devices (local batch 6)
MASKS = np.ones((16, 8), np.float32)
MASKS[np.arange(16), np.arange(16) % 8] = 0.0
IMPORTANCE = np.random.default_rng(0).uniform(0, 1, (K, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def faces():
  return SyntheticFaces("test", image_size=16, num_examples=40, seed=0)


def _compile(name, model_v, faces, n):
  """The pass's jitted batch update, compiled for ``n`` devices as the pass calls it."""
  mesh = sf.mesh(n)
  model, v, _ = model_v
  repl = distributed.replicated(mesh)
  v = jax.device_put(v, repl)
  fields = {"statistics": ("image", "valid"),
            "perturbation": ("image", "label", "valid", "index"),
            "direct_path": ("image", "label", "valid"),
            "localisation": lambda b: attention._with_regions(b, "image", "label", "valid"),
            "prior_localisation": lambda b: attention._with_regions(b, "label", "valid")}[name]
  g = next(distributed.eval_batches(faces, batch_size=B, mesh=mesh, fields=fields))
  static = jit.static(model.apply)
  with jax.set_mesh(mesh):
    if name == "statistics":
      state = jax.device_put(statistics._stats_init(v, 32), repl)
      lowered = statistics._stats_update.lower(static, state, v, g["image"], g["valid"],
                                               num_bins=32)
    elif name == "perturbation":
      args = [np.asarray(a, np.float32) for a in ((1.0, 2.0), (0.0, 0.3), (0.0, 0.1))]
      lowered = perturbation._perturbation_sums.lower(
          static, v, g["image"], g["label"], g["valid"], g["index"], MASKS, *args,
          np.uint32(0), mask_chunk=2, clip=True, transform=True)
    elif name == "direct_path":
      lowered = perturbation._direct_path_sums.lower(static, v, g["image"], g["label"],
                                                     g["valid"], 1.0 - MASKS)
    elif name == "localisation":
      imp = jnp.asarray(IMPORTANCE) if "mask_kernel" in str(jax.tree.structure(v)) else None
      lowered = attention._localisation_batch.lower(static, v, g["image"], g["label"],
                                                    g["regions"], g["valid"], imp,
                                                    attribute_chunk=2)
    else:
      prior = jnp.asarray(np.broadcast_to(attention.centre_prior(16, 16), (K, 16, 16)))
      lowered = attention._prior_localisation_batch.lower({"c": prior}, g["label"],
                                                          g["regions"], g["valid"])
  out_elements = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(lowered.out_info))
  return lowered.compile(), out_elements


PASSES = [("statistics", "hp"), ("statistics", "base"), ("perturbation", "hp"),
          ("perturbation", "base"), ("direct_path", "hp"), ("localisation", "hp"),
          ("localisation", "base"), ("prior_localisation", "hp")]


@pytest.mark.parametrize("name,kind", PASSES)
def test_pass_runs_per_device(name, kind, faces, request):
  model_v = request.getfixturevalue(kind)
  one, _ = _compile(name, model_v, faces, 1)
  many, out_elements = _compile(name, model_v, faces, N)
  t1, t = sf.hlo(one), sf.hlo(many)
  assert B in sf.leading_dims(t1)  # the check below can fail: one device holds the batch
  assert B not in sf.leading_dims(t), "a global-batch tensor in the per-device program"
  assert not sf.all_gathers(t), sf.all_gathers(t)
  assert sf.flops(many) <= 1.1 * sf.flops(one) / N, (sf.flops(many), sf.flops(one))
  # What crosses devices: the pass's own (small) sums, in a few all-reduces.
  assert sf.all_reduces(t) and sf.all_reduced_elements(t) <= out_elements
  # Loops (over σ, masks, n, attributes) are not over the batch: the same on N devices.
  assert sf.trip_counts(t) == sf.trip_counts(t1)


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_values_equal_one_device(hp, base, faces):
  one, many = sf.mesh(1), sf.mesh(N)
  for model, v, _ in (hp, base):
    kw = dict(batch_size=B, limit=30)  # two batches, the second padded
    _close(statistics.collect_statistics(model.apply, v, faces, mesh=many, **kw),
           statistics.collect_statistics(model.apply, v, faces, mesh=one, **kw))
    pkw = dict(channel_masks=MASKS[:5], ns=(1.0, 2.0), betas=(0.0, 0.3), sigmas=(0.0, 0.1),
               mask_chunk=2, **kw)
    _close(perturbation.evaluate_perturbations(model.apply, v, faces, mesh=many, **pkw),
           perturbation.evaluate_perturbations(model.apply, v, faces, mesh=one, **pkw))
    _close(perturbation.direct_path_accuracy(model.apply, v, faces, MASKS[:5], mesh=many, **kw),
           perturbation.direct_path_accuracy(model.apply, v, faces, MASKS[:5], mesh=one, **kw))
  model, v, _ = hp
  lkw = dict(importance=IMPORTANCE, batch_size=B, limit=30, controls=True)
  _close(attention.localisation(model.apply, v, faces, mesh=many, **lkw),
         attention.localisation(model.apply, v, faces, mesh=one, **lkw))


def test_batch_size_is_rounded_up_to_the_devices(base, faces):
  """A batch size that does not split over the devices is padded (the padding is
  invalid rows): the same numbers as a batch size that does."""
  model, v, _ = base
  assert distributed.pass_batch_size(6, sf.mesh(N)) == 8
  assert distributed.pass_batch_size(8, sf.mesh(N)) == 8
  kw = dict(limit=13, mesh=sf.mesh(N))
  a = statistics.collect_statistics(model.apply, v, faces, batch_size=6, **kw)
  b = statistics.collect_statistics(model.apply, v, faces, batch_size=8, **kw)
  assert int(a["num_images"]) == 13
  _close(a, b)
