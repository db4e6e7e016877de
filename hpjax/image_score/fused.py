"""Image score fused with the forward pass: taps stay on the device, never stored
(docs/papers.md §B3).

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334), Sec. 2.2.
The score itself is :func:`hpjax.image_score.scoring.score_taps`; this module
only places it right behind a model's jitted forward pass, data-parallel: the images
are split over the ``data`` axis of the device mesh, and each device runs the forward
pass and scores its own images (nothing is gathered; the scores need no collective).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from hpjax.core import distributed
from hpjax.image_score.reference import Reference
from hpjax.image_score.scoring import DEFAULT_EPS, check_similarity, score_taps
from hpjax.image_score.taps import check_labels


def make_fused_scorer(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
                      reference: Reference, *, similarity: str = "recall",
                      eps: float = DEFAULT_EPS,
                      single_program: bool = False, mesh: jax.sharding.Mesh | None = None
                      ) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Forward pass and image score with the taps kept on the device, never stored.

  By default the forward pass and the score are two jitted programs dispatched
  back to back: the taps pass between them as device buffers (never copied to
  the host, never written anywhere) and are freed once scored. On CPU one program
  holding both can run slower than the plain forward (XLA re-fuses the forward
  around the score and loses its whole-network fusions); ``benchmarks/image_score.py``
  times both forms against the forward, see benchmarks/NOTES.md.
  ``single_program=True`` gives the one-program form.

  Both run data-parallel over ``mesh``: the images (and ``assigned``) are placed as a
  batch sharded over its ``data`` axis, the variables and reference replicated, and
  the programs run under ``jax.set_mesh(mesh)``, so the score's blocks cover each
  device's own rows (:func:`hpjax.image_score.scoring.score_taps`). Images may be
  host arrays or arrays on one device (with several processes: each process passes
  its own slice of the batch, as :func:`hpjax.core.distributed.global_batch` takes
  it, and gets global arrays back), or global arrays already sharded over ``data``.
  With one process a batch that does not divide by the devices is zero-padded and the
  padding cut from the results; with several, each slice must divide by the
  process's devices.

  Args:
    apply_fn: ``apply_fn(variables, images) -> (logits [B, C], {"taps": {...}})``,
      e.g. ``functools.partial(model.apply, train=False)``.
    reference: from :func:`~hpjax.image_score.reference.fit_reference`; its tap
      names must be among the model's.
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.
    single_program: jit forward and score together.
    mesh: the device mesh (default :func:`hpjax.core.distributed.make_mesh`).

  Returns:
    ``fn(variables, images, assigned=None) -> (logits [B, C], scores [B])``;
    with ``assigned=None`` images are scored against their predicted class
    (argmax of the logits), or the dataset-level mask. ``fn.compiled(variables,
    images, assigned=None)`` gives the compiled program(s) such a call runs (to read
    the partitioned HLO: tests/image_score/test_fused_sharding.py).

  References:
    docs/papers.md §B3.
  """
  check_similarity(similarity, "make_fused_scorer")
  score_fn = functools.partial(score_taps, similarity=similarity, eps=float(eps))
  if single_program:
    @jax.jit
    def one(variables, reference, images, assigned):
      logits, aux = apply_fn(variables, images)
      return logits, score_fn(reference, aux["taps"], logits, assigned)
  else:
    forward = jax.jit(apply_fn)
    scorer = jax.jit(score_fn)

  mesh = mesh or distributed.make_mesh()
  reference = jax.device_put(reference, distributed.replicated(mesh))

  def run(variables, images, assigned, *, lower: bool = False):
    if single_program:
      args = (variables, reference, images, assigned)
      return (one.lower(*args).compile(),) if lower else one(*args)
    logits, aux = forward(variables, images)
    if lower:
      return (forward.lower(variables, images).compile(),
              scorer.lower(reference, aux["taps"], logits, assigned).compile())
    return logits, scorer(reference, aux["taps"], logits, assigned)

  def placed(variables, images, assigned, **kw):
    chex.assert_rank(images, 4)
    if assigned is not None:
      assigned = check_labels(assigned, images.shape[0], reference.num_classes,
                               "fused scorer", "assigned")
    if isinstance(images, jax.core.Tracer):  # inside the caller's own jit
      return run(variables, images, assigned, **kw), 0
    images, assigned, pad = _on_mesh(images, assigned, mesh)
    with jax.set_mesh(mesh):
      return run(jax.device_put(variables, distributed.replicated(mesh)), images, assigned,
                 **kw), pad

  def fn(variables: Any, images: jax.Array, assigned: Any = None):
    (logits, scores), pad = placed(variables, images, assigned)
    return (logits[:-pad], scores[:-pad]) if pad else (logits, scores)

  def compiled(variables: Any, images: jax.Array, assigned: Any = None) -> tuple[Any, ...]:
    """The compiled programs a call with these arguments runs, placed as it places them:
    ``(forward, score)`` (the forward pass runs once, to place the taps), or
    ``(one program,)``."""
    return placed(variables, images, assigned, lower=True)[0]

  fn.compiled = compiled
  return fn


def _on_mesh(images: Any, assigned: Any, mesh: jax.sharding.Mesh
             ) -> tuple[jax.Array, Any, int]:
  """``(images, assigned, pad)``: ``images [B, ...]`` and ``assigned [B]`` (or None) as
  global arrays sharded over ``data``; with one process zero-padded by ``pad`` rows to
  a multiple of the devices."""
  sharding = distributed.data_sharded(mesh)
  local = {"images": images} if assigned is None else {"images": images, "assigned": assigned}
  pad = 0
  if isinstance(images, jax.Array) and images.sharding.is_equivalent_to(sharding, images.ndim):
    out = jax.device_put(local, sharding)  # already global: a no-op for the images
  elif jax.process_count() > 1:
    if images.shape[0] % jax.local_device_count():
      raise ValueError(f"fused scorer: expected this process's images to split over its "
                       f"{jax.local_device_count()} devices, got {images.shape[0]}")
    out = distributed.global_batch({k: np.asarray(v) for k, v in local.items()}, mesh)
  else:
    pad = (-images.shape[0]) % mesh.devices.size
    if pad:
      local = {k: jnp.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1)) for k, v in local.items()}
    out = jax.device_put(local, sharding)
  return out["images"], out.get("assigned"), pad
