"""Image score fused with the forward pass: taps stay on the device, never stored
(docs/papers.md §B3).

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334), Sec. 2.2.
The score itself is :func:`hpjax.image_score.scoring.score_taps`; this module
only places it right behind a model's jitted forward pass.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax

from hpjax.image_score.reference import Reference
from hpjax.image_score.scoring import DEFAULT_EPS, check_similarity, score_taps
from hpjax.image_score.taps import check_labels


def make_fused_scorer(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]],
                      reference: Reference, *, similarity: str = "recall",
                      eps: float = DEFAULT_EPS,
                      single_program: bool = False) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """Forward pass and image score with the taps kept on the device, never stored.

  By default the forward pass and the score are two jitted programs dispatched
  back to back: the taps pass between them as device buffers (never copied to
  the host, never written anywhere) and are freed once scored. On CPU one program
  holding both can run slower than the plain forward (XLA re-fuses the forward
  around the score and loses its whole-network fusions); ``benchmarks/image_score.py``
  times both forms against the forward, see benchmarks/NOTES.md.
  ``single_program=True`` gives the one-program form.

  Args:
    apply_fn: ``apply_fn(variables, images) -> (logits [B, C], {"taps": {...}})``,
      e.g. ``functools.partial(model.apply, train=False)``.
    reference: from :func:`~hpjax.image_score.reference.fit_reference`; its tap
      names must be among the model's.
    similarity: "recall", "jaccard" or "dice".
    eps: ε, the smoothing of the counts.
    single_program: jit forward and score together.

  Returns:
    ``fn(variables, images, assigned=None) -> (logits [B, C], scores [B])``;
    with ``assigned=None`` images are scored against their predicted class
    (argmax of the logits), or the dataset-level mask.

  References:
    docs/papers.md §B3.
  """
  check_similarity(similarity, "make_fused_scorer")
  score_fn = functools.partial(score_taps, similarity=similarity, eps=float(eps))
  if single_program:
    @jax.jit
    def run(variables, reference, images, assigned):
      logits, aux = apply_fn(variables, images)
      return logits, score_fn(reference, aux["taps"], logits, assigned)
  else:
    forward = jax.jit(apply_fn)
    scorer = jax.jit(score_fn)

    def run(variables, reference, images, assigned):
      logits, aux = forward(variables, images)
      return logits, scorer(reference, aux["taps"], logits, assigned)

  def fn(variables: Any, images: jax.Array, assigned: Any = None):
    chex.assert_rank(images, 4)
    if assigned is not None:
      assigned = check_labels(assigned, images.shape[0], reference.num_classes,
                               "fused scorer", "assigned")
    return run(variables, reference, images, assigned)

  return fn
