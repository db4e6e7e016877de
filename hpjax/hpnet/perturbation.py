r"""Perturbation passes: channel masks × (n, β) × noise in one compilation
(paper A, docs/papers.md §A4–A7).

Fig. 7 (accuracy under channel pruning), Fig. 8 (accuracy under input noise for a grid
of mask transforms g(M; n, β)) and the predictability scores all evaluate one frozen
model under many perturbations. :func:`evaluate_perturbations` takes every
perturbation as a traced argument of one compiled, streamed pass. The heads are
evaluated as pure functions (:func:`hpjax.hpnet.heads.head_masks`,
:func:`~hpjax.hpnet.heads.logits_from_pooled`) so that the pass shares work the
model's single ``apply`` would repeat: the extractor runs once per noise level, the
mask branch once per channel mask, and only the cheap transform and pooling once per
``(n, β)``; ``tests/hpnet/test_perturbation.py`` checks they equal ``model.apply``.

:func:`direct_path_accuracy` *simulates* channel removal from the unperturbed model's
per-image logit terms instead of running it (the ``prune_accuracy`` predictor).

Both passes are data-parallel: each batch is a global array sharded over the ``data``
axis of the device mesh (each process loads its own slice), every device evaluates its
own images, and the per-attribute sums over the batch meet in one all-reduce of the
small ``[..., K]`` sums (tests/hpnet/test_passes_sharding.py reads it from the compiled
program).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hpjax.core import distributed, jit
from hpjax.core.training import images_to_float
from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet import model as model_lib
from hpjax.hpnet.transform import tone_from_parts, tone_parts


def noise_fields(seed: ArrayLike, index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Standard-normal noise ``[len(index), *shape]``; image i's field is
  ``normal(fold_in(key(seed), i))``, whatever batch it is evaluated in.

  Common random numbers: each σ scales the same field, so accuracy-vs-σ curves
  differ by σ only, not by a new draw per level.

  References:
    docs/papers.md §A4; paper A Fig. 8.
  """
  key = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(index)


@functools.partial(jax.jit, static_argnames=("apply_fn", "mask_chunk", "clip", "transform"))
def _perturbation_sums(apply_fn: jit.ApplyFn, variables: dict[str, Any], image: jax.Array,
                       label: jax.Array, valid: jax.Array, index: jax.Array,
                       channel_masks: jax.Array, ns: jax.Array, betas: jax.Array,
                       sigmas: jax.Array, seed: jax.Array, *, mask_chunk: int, clip: bool,
                       transform: bool) -> tuple[jax.Array, jax.Array]:
  x = images_to_float(image)
  eps = noise_fields(seed, index, x.shape[1:])
  params = variables["params"]
  hp = model_lib.is_hpnet({"params": params})
  shape = (ns.shape[0], betas.shape[0], x.shape[0], label.shape[-1])

  def per_sigma(s):
    xs = x + s * eps
    if clip:
      xs = jnp.clip(xs, 0.0, 1.0)
    # Only the features are used: XLA drops the model's own heads as dead code.
    f = jit.call(apply_fn, variables, xs, train=False)[1]["features"]

    def per_mask(m):
      fm = f * m
      if not hp or not transform:
        # Identity transform: mask branch, sigmoid and pooling fuse into one pass.
        return jnp.broadcast_to(model_lib.logits_from_features(params, fm), shape)
      # The mask branch and log u run once per channel mask, one exponential per n,
      # and every β is a linear combination (logits_from_pooled).
      heads = model_lib.head_params(params)
      low, log_u = tone_parts(heads_lib.head_masks(heads, fm))
      return jax.lax.map(
          lambda n: heads_lib.logits_from_pooled(
              heads, heads_lib.pool(tone_from_parts(low, log_u, n), fm), fm, betas), ns)

    return jax.lax.map(per_mask, channel_masks, batch_size=mask_chunk)  # [M, N, Bt, B, K]

  logits = jax.lax.map(per_sigma, sigmas)  # [S, M, N, Bt, B, K]
  v = valid.astype(jnp.float32)
  correct = ((logits > 0) == (label > 0)).astype(jnp.float32)
  return (jnp.einsum("smnjbk,b->smnjk", correct, v), jnp.einsum("smnjbk,b->smnjk", logits, v))


def evaluate_perturbations(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any, *,
                           channel_masks: ArrayLike | None = None, ns: ArrayLike = (1.0,),
                           betas: ArrayLike = (0.0,), sigmas: ArrayLike = (0.0,),
                           batch_size: int = 32, limit: int | None = None, seed: int = 0,
                           clip: bool = True, mask_group: int = 16, mask_chunk: int = 1,
                           mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Per-attribute accuracy and mean logit under every combination of perturbations.

  All perturbations are traced arguments of one compiled function: the extractor
  runs once per noise level σ (and group of channel masks), the mask branch once
  per (σ, channel mask), the tone curve once per (σ, mask, n), and each β is a free
  linear combination.

  Args:
    apply_fn, variables: the frozen model.
    source: evaluation source (``image``, ``label [K]``).
    channel_masks: ``[M, C]`` keep masks (1 keep, 0 prune); default one all-ones mask.
    ns: ``[N]`` tone-curve exponents n (Eq. 12); default ``(1,)``.
    betas: ``[Bt]`` suppression values β (Eq. 11); default ``(0,)``.
    sigmas: ``[S]`` std of Gaussian noise added to the [0, 1] images; default ``(0,)``.
    batch_size, limit: images per step, over all devices (rounded up to a multiple of
      the devices: :func:`hpjax.core.distributed.pass_batch_size`); how many images.
    seed: noise seed; image i's noise is ``normal(fold_in(key(seed), i))``.
    clip: clip noisy images back to [0, 1] (they stay valid images; the paper does
      not say which it did).
    mask_group: channel masks per compiled call. Masks are padded to whole groups,
      so any M ≥ ``mask_group`` reuses one compilation (pruning curves and the
      predictability families share it); the extractor reruns once per group.
    mask_chunk: masks of a group evaluated side by side (vmapped); more is faster
      and uses proportionally more memory.
    mesh: the device mesh (default :func:`hpjax.core.distributed.make_mesh`).

  Returns:
    ``{"accuracy": [S, M, N, Bt, K], "mean_logit": [S, M, N, Bt, K], "num_images": int}``.

  References:
    docs/papers.md §A4, §A5, §A7.
  """
  p = variables["params"]
  c = model_lib.head_weights(p).shape[1]
  cm = np.ones((1, c), np.float32) if channel_masks is None else np.asarray(channel_masks,
                                                                           np.float32)
  if cm.ndim != 2 or cm.shape[1] != c:
    raise ValueError(f"expected channel_masks of shape [M, {c}], got {cm.shape}")
  args = [np.atleast_1d(np.asarray(a, np.float32)) for a in (ns, betas, sigmas)]
  for name, a in zip(("ns", "betas", "sigmas"), args):
    if a.ndim != 1:
      raise ValueError(f"expected {name} to be a 1-D sequence, got shape {a.shape}")
  # The identity (n, β) = (1, 0) alone compiles without the tone curve.
  transform = not (args[0].tolist() == [1.0] and args[1].tolist() == [0.0])
  m = len(cm)
  group = max(1, min(mask_group, m))
  groups = np.concatenate([cm, np.ones(((-m) % group, c), np.float32)]).reshape(-1, group, c)
  chunk = max(1, min(mask_chunk, group))
  static = jit.static(apply_fn)
  mesh = mesh or distributed.make_mesh()
  variables = jax.device_put(variables, distributed.replicated(mesh))
  correct, logit_sum, total = 0.0, 0.0, 0
  with jax.set_mesh(mesh):
    for batch in distributed.eval_batches(source, batch_size=batch_size, mesh=mesh, limit=limit,
                                          fields=("image", "label", "valid", "index")):
      parts = [_perturbation_sums(static, variables, batch["image"], batch["label"],
                                  batch["valid"], batch["index"], g, *args, np.uint32(seed),
                                  mask_chunk=chunk, clip=clip, transform=transform)
               for g in groups]
      k = np.concatenate([np.asarray(a, np.float64) for a, _ in parts], axis=1)[:, :m]
      s = np.concatenate([np.asarray(b, np.float64) for _, b in parts], axis=1)[:, :m]
      correct, logit_sum = correct + k, logit_sum + s
      total += int(jnp.sum(batch["valid"]))
  return {"accuracy": correct / max(total, 1), "mean_logit": logit_sum / max(total, 1),
          "num_images": total}


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _direct_path_sums(apply_fn: jit.ApplyFn, variables: dict[str, Any], image: jax.Array,
                      label: jax.Array, valid: jax.Array, removed: jax.Array) -> jax.Array:
  f = jit.call(apply_fn, variables, images_to_float(image), train=False)[1]["features"]
  terms, bias = model_lib.logit_terms(variables["params"], f)  # [B, K, C], [K]
  z = jnp.sum(terms, axis=-1) + bias
  zm = z[None] - jnp.einsum("mc,bkc->mbk", removed, terms)  # [M, B, K]
  correct = ((zm > 0) == (label > 0)).astype(jnp.float32)
  return jnp.einsum("mbk,b->mk", correct, valid.astype(jnp.float32))


def direct_path_accuracy(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any,
                         channel_masks: ArrayLike, *, batch_size: int = 32,
                         limit: int | None = None, mesh: jax.sharding.Mesh | None = None
                         ) -> dict[str, Any]:
  r"""Per-attribute accuracy after removing channel sets, *simulated* from the unperturbed
  model's per-image logit terms (:func:`hpjax.hpnet.model.logit_terms`), without running
  the perturbation.

  For each image the logit without the channels S is taken to be
  :math:`z_k - \sum_{c \in S} t_{kc}`: exact for the baseline (a linear head on
  GAP(f)); for HPNet the direct path only, since removing f_c also changes the other
  channels' masks through the 1×1 mask conv, and here they keep their unpruned values.
  One forward pass of the unperturbed model whatever the number of sets.

  Args:
    apply_fn, variables: the frozen model.
    source: labelled images (usually training images: the prediction must not see
      the images it is checked on).
    channel_masks: ``[M, C]`` keep masks (1 keep, 0 remove).
    batch_size, limit: images per step, over all devices (rounded up to a multiple of
      the devices); how many images.
    mesh: the device mesh (default :func:`hpjax.core.distributed.make_mesh`).

  Returns:
    ``{"accuracy": [M, K], "base_accuracy": [K], "num_images": int}``.

  References:
    docs/papers.md §A7.
  """
  removed = 1.0 - np.asarray(channel_masks, np.float32)
  c = model_lib.head_weights(variables["params"]).shape[1]
  if removed.ndim != 2 or removed.shape[1] != c:
    raise ValueError(f"expected channel_masks of shape [M, {c}], got {removed.shape}")
  removed = np.concatenate([np.zeros((1, c), np.float32), removed])  # row 0: nothing removed
  mesh = mesh or distributed.make_mesh()
  variables = jax.device_put(variables, distributed.replicated(mesh))
  correct, total = 0.0, 0
  with jax.set_mesh(mesh):
    for batch in distributed.eval_batches(source, batch_size=batch_size, mesh=mesh, limit=limit,
                                          fields=("image", "label", "valid")):
      correct = correct + np.asarray(
          _direct_path_sums(jit.static(apply_fn), variables, batch["image"], batch["label"],
                            batch["valid"], removed), np.float64)
      total += int(jnp.sum(batch["valid"]))
  acc = correct / max(total, 1)
  return {"accuracy": acc[1:], "base_accuracy": acc[0], "num_images": total}
