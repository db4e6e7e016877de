r"""Attention pictures, Table 4 and localisation (paper A, docs/papers.md §A6; Figs. 4–6, Table 4).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks":
Fig. 4 (top-3 channel masks per attribute), Fig. 5 (the K×C grid of mean mask
values), Fig. 6 (the C×C channel correlation) and Table 4 (attributes correlated
through their Fig. 5 rows) are read from the shared statistics pass
(:mod:`hpjax.hpnet.statistics`). The claim that attention masks focus on the regions
that matter is *measured* wherever true regions are known (the generated faces' region
masks; the boxes of an attribute table's region columns or of CelebA's landmarks,
:mod:`hpjax.data.regions`): HPNet's attention and Grad-CAM (either model) are scored against them, beside two
image-independent controls (a mean-map prior and a centre prior).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hpjax.core import distributed, io, jit
from hpjax.core.training import images_to_float
from hpjax.data.base import get_batch
from hpjax.data.regions import box_masks
from hpjax.hpnet import model as model_lib
from hpjax.hpnet import runs, statistics


# ---------------------------------------------------------------------------
# Saliency and localisation (docs/papers.md §A6; measured against true regions).

def grad_cam(head_fn: Callable[[jax.Array], jax.Array], f: jax.Array, *,
             attribute_chunk: int | None = None) -> jax.Array:
  r"""Grad-CAM (Selvaraju et al. 2017) of every attribute on the feature map.

  .. math::

     \alpha^k_c = \mathrm{mean}_{h,w}\, \partial z_k / \partial f_{hwc},\qquad
     L^k = \mathrm{ReLU}\big(\textstyle\sum_c \alpha^k_c f_c\big)

  For the GAP + dense baseline this is exactly CAM (Zhou et al. 2016).

  Args:
    head_fn: features ``[B, H, W, C]`` → logits ``[B, K]``, image by image.
    f: features ``[B, H, W, C]``.
    attribute_chunk: attributes back-propagated side by side (None: all at once).

  Returns:
    ``[B, K, H, W]``, non-negative.
  """
  b, k = f.shape[0], jax.eval_shape(head_fn, f).shape[-1]
  a = min(attribute_chunk or k, k)
  # A chunk of `a` attributes is one VJP of the heads on `a` copies of each image, copy i
  # with attribute i's one-hot cotangent (images stay the major axis: a batch split over
  # devices stays split). Not jax.vmap over the cotangents of one VJP: XLA:CPU (jaxlib
  # 0.10.2) miscompiles that program for HPNet's heads (its YNNPACK reduce fusion; every
  # second attribute's gradient came out wrong, by up to its own size); this is right.
  rows = jnp.concatenate([jnp.eye(k, dtype=f.dtype), jnp.zeros(((-k) % a, k), f.dtype)])

  def chunk(onehot):  # [a, K] → d(onehot · logits) / df for each row, [a, B, H, W, C]
    copies = jnp.broadcast_to(f[:, None], (b, a) + f.shape[1:]).reshape((-1,) + f.shape[1:])
    _, vjp = jax.vjp(head_fn, copies)
    return jnp.moveaxis(vjp(jnp.tile(onehot, (b, 1)))[0].reshape((b, a) + f.shape[1:]), 1, 0)

  grads = jax.lax.map(chunk, rows.reshape(-1, a, k)).reshape((-1,) + f.shape)[:k]
  alpha = jnp.mean(grads, axis=(2, 3))  # [K, B, C]
  return nn.relu(jnp.einsum("kbc,bhwc->bkhw", alpha, f))


def attention_map(masks: jax.Array, importance: jax.Array) -> jax.Array:
  r"""HPNet's attention per attribute: :math:`A^k = \sum_c \iota_{kc} M^k_c / \sum_c \iota_{kc}`.

  Args:
    masks: ``[B, H, W, K, C]`` untransformed masks.
    importance: ``[K, C]`` non-negative channel importance (docs/papers.md §A6:
      mean mask × |w_kc|), normalised per attribute here.

  Returns:
    ``[B, K, H, W]`` in [0, 1].

  References:
    docs/papers.md §A6; paper A Figs. 4–6, Table 4.
  """
  imp = importance / jnp.maximum(jnp.sum(importance, axis=-1, keepdims=True), 1e-12)
  return jnp.einsum("bhwkc,kc->bkhw", masks, imp)


def localisation_sums(maps: jax.Array, regions: jax.Array, weight: jax.Array
                      ) -> dict[str, jax.Array]:
  r"""Per-attribute sums of localisation scores over a batch.

  For map :math:`A \ge 0` and region :math:`R` of one image and attribute,

  .. math::

     s = \frac{\sum_R A}{\sum A},\quad a = \frac{|R|}{HW},\quad
     \text{ratio} = s / a,\quad \text{hit} = 1\{\arg\max A \in R\}

  (ratio > 1: attention concentrates on the region; 1: no better than uniform).
  An all-zero map has no location: it counts as ``s = a`` (ratio 1) and a miss.

  Args:
    maps: ``[B, K, H, W]`` non-negative.
    regions: ``bool [B, K, H, W]``.
    weight: ``[B, K]`` 0/1, which (image, attribute) pairs count; pairs with an
      empty region never count.

  Returns:
    ``{"count", "share", "area", "ratio", "hit"}``, each ``[K]`` (sums over the batch).
  """
  b, k, h, w = maps.shape
  r = regions.astype(maps.dtype)
  area = jnp.sum(r, axis=(2, 3)) / (h * w)
  wt = weight.astype(maps.dtype) * (area > 0)
  total = jnp.sum(maps, axis=(2, 3))
  inside = jnp.sum(maps * r, axis=(2, 3))
  has_mass = total > 0
  share = jnp.where(has_mass, inside / jnp.where(has_mass, total, 1.0), area)
  ratio = share / jnp.where(area > 0, area, 1.0)
  arg = jnp.argmax(maps.reshape(b, k, h * w), axis=-1)
  hit = jnp.take_along_axis(r.reshape(b, k, h * w), arg[..., None], axis=-1)[..., 0] * has_mass
  return {"count": jnp.sum(wt, 0), "share": jnp.sum(wt * share, 0), "area": jnp.sum(wt * area, 0),
          "ratio": jnp.sum(wt * ratio, 0), "hit": jnp.sum(wt * hit, 0)}


def localisation_summary(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Means from accumulated :func:`localisation_sums`: ``share``, ``area``, ``ratio``,
  ``pointing`` (hit rate) and ``count``, each ``[..., K]``."""
  n = np.maximum(np.asarray(sums["count"], np.float64), 1.0)
  return {"count": np.asarray(sums["count"]), "share": sums["share"] / n, "area": sums["area"] / n,
          "ratio": sums["ratio"] / n, "pointing": sums["hit"] / n}


def localisation_subsets(maps: dict[str, jax.Array], label: jax.Array, regions: jax.Array,
                         valid: jax.Array) -> dict[str, dict[str, dict[str, jax.Array]]]:
  """:func:`localisation_sums` of each map over two subsets of (image, attribute) pairs.

  Args:
    maps: ``{name: [B, K, H, W]}`` non-negative maps.
    label: ``[B, K]`` 0/1 attribute labels.
    regions: ``bool [B, K, H, W]``.
    valid: ``[B]`` 0/1, the real (not padding) images.

  Returns:
    ``{name: {"all": sums, "present": sums}}``: ``"all"`` counts every valid image,
    ``"present"`` only the valid images whose label is 1 for the attribute.
  """
  v = valid[:, None].astype(jnp.float32)
  weights = {"all": jnp.broadcast_to(v, label.shape), "present": v * (label > 0)}
  return {name: {sub: localisation_sums(m, regions, w) for sub, w in weights.items()}
          for name, m in maps.items()}


# Width of the centre prior, as a fraction of the image side.
CENTRE_PRIOR_STD = 0.25


def centre_prior(height: int, width: int, std: float = CENTRE_PRIOR_STD) -> np.ndarray:
  r"""An image-independent localisation control: a centred Gaussian ``[H, W]``.

  .. math::

     P(y, x) = \exp\big(-\tfrac12 (u^2 + v^2) / s^2\big),\quad
     u = \frac{y - (H - 1)/2}{H},\quad v = \frac{x - (W - 1)/2}{W}

  isotropic in coordinates scaled to the image side (in pixels for square images),
  with ``s = std``. It uses no image, label or region: a map that says "the middle of
  the picture" for every image and attribute. (The mean of the true regions would
  be image-independent too, but it is built from the very regions it would be scored
  against.) On an even side the central pixels tie, and the pointing game takes the
  first of them in row-major order.
  """
  u = (np.arange(height) - (height - 1) / 2) / height
  v = (np.arange(width) - (width - 1) / 2) / width
  return np.exp(-0.5 * (u[:, None] ** 2 + v[None, :] ** 2) / std ** 2)


@functools.partial(jax.jit, static_argnames=("apply_fn", "attribute_chunk"))
def _saliency_batch(apply_fn: jit.ApplyFn, variables: dict[str, Any], image: jax.Array,
                    importance: jax.Array | None, *, attribute_chunk: int | None
                    ) -> dict[str, jax.Array]:
  p = variables["params"]
  hp = model_lib.is_hpnet({"params": p})
  _, aux = jit.call(apply_fn, variables, images_to_float(image), train=False, return_masks=hp)
  f = aux["features"]
  maps = {"grad_cam": grad_cam(lambda ff: model_lib.logits_from_features(p, ff), f,
                               attribute_chunk=attribute_chunk)}
  if hp:
    maps["attention"] = attention_map(aux["masks"], importance)
  return maps


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _masks_batch(apply_fn: jit.ApplyFn, variables: dict[str, Any], image: jax.Array) -> jax.Array:
  """HPNet's untransformed masks ``[B, H, W, K, C]`` (one compiled call, not op by op)."""
  return jit.call(apply_fn, variables, images_to_float(image), train=False,
                return_masks=True)[1]["masks"]


@functools.partial(jax.jit, static_argnames=("apply_fn", "attribute_chunk"))
def _localisation_batch(apply_fn, variables, image, label, regions, valid, importance, *,
                        attribute_chunk):
  """Localisation sums of every map and each map's sum over the valid images ``[K, H, W]``."""
  maps = _saliency_batch(apply_fn, variables, image, importance, attribute_chunk=attribute_chunk)
  v = valid.astype(jnp.float32)
  return (localisation_subsets(maps, label, regions, valid),
          {name: jnp.einsum("bkhw,b->khw", m, v) for name, m in maps.items()})


@jax.jit
def _prior_localisation_batch(priors, label, regions, valid):
  b = label.shape[0]
  maps = {name: jnp.broadcast_to(p, (b,) + p.shape) for name, p in priors.items()}
  return localisation_subsets(maps, label, regions, valid)


def has_regions(batch: dict[str, np.ndarray]) -> bool:
  """Whether a batch (or example) carries ground-truth regions: ``"regions"`` masks (the
  generated faces) or ``"boxes"`` (attribute tables with region columns, CelebA's
  landmarks: :mod:`hpjax.data.regions`)."""
  return "regions" in batch or "boxes" in batch


def _regions(batch: dict[str, np.ndarray]) -> np.ndarray:
  """The batch's ground-truth ``regions bool [B, K, H, W]``, drawn from its ``"boxes"``
  when it has no masks; a source without either cannot be scored."""
  if "regions" in batch:
    return batch["regions"]
  if "boxes" in batch:
    h, w = batch["image"].shape[1:3]
    return box_masks(batch["boxes"], h, w)
  raise ValueError("localisation needs a source with ground-truth 'regions' or 'boxes' "
                   "(the generated faces, an attribute table with region columns, CelebA "
                   "with its landmarks)")


def _with_regions(batch: dict[str, np.ndarray], *keys: str) -> dict[str, np.ndarray]:
  """The fields ``keys`` of a host batch and its ``regions`` (drawn on the host), the
  fields a localisation pass puts on the devices."""
  return {**{k: batch[k] for k in keys}, "regions": _regions(batch)}


def _summaries(total: dict[str, Any]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  return jax.tree.map(localisation_summary, total,
                      is_leaf=lambda d: isinstance(d, dict) and "hit" in d)


def _add(total: Any, part: Any) -> Any:
  part = jax.tree.map(lambda a: np.asarray(a, np.float64), part)
  return part if total is None else jax.tree.map(np.add, total, part)


LOCALISATION_METRICS = ("ratio", "pointing", "share", "area")
PRIORS = ("mean_map_prior", "centre_prior")


def localisation_means(loc: dict[str, dict[str, dict[str, ArrayLike]]]
                       ) -> dict[str, dict[str, dict[str, float]]]:
  """Per map kind and subset, each metric averaged over the attributes that have at least
  one counted pair (an attribute absent from every evaluated image has no "present"
  score; its zeros would pull the mean down).

  Args:
    loc: ``{kind: {"all" | "present": localisation_summary}}``.

  Returns:
    ``{kind: {subset: {"ratio", "pointing", "share", "area": float}}}`` (NaN when no
    attribute counts).
  """
  def means(v):
    counted = np.asarray(v["count"]) > 0
    return {m: float(np.mean(np.asarray(v[m])[counted])) if counted.any() else float("nan")
            for m in LOCALISATION_METRICS}
  return {kind: {sub: means(v) for sub, v in d.items()} for kind, d in loc.items()}


def attention_minus_prior(means: dict[str, dict[str, dict[str, float]]],
                          kind: str = "hpnet_attention", priors: tuple[str, ...] = PRIORS
                          ) -> dict[str, dict[str, float]]:
  """``kind``'s mean ``ratio``, ``pointing`` and ``share`` minus the best of the
  ``priors``' (per subset and metric): > 0 when the map localises better than every
  image-independent control.

  Args:
    means: :func:`localisation_means` output holding ``kind`` and ``priors``.
  """
  return {sub: {m: v[m] - max(means[p][sub][m] for p in priors)
                for m in ("ratio", "pointing", "share")}
          for sub, v in means[kind].items()}


def saliency_maps(apply_fn: jit.ApplyFn, variables: dict[str, Any], images: ArrayLike,
                  importance: ArrayLike | None = None) -> dict[str, np.ndarray]:
  """``{"grad_cam": [B, K, H, W], "attention": [B, K, H, W] (HPNet)}`` for a few images."""
  imp = None if importance is None else jnp.asarray(importance, jnp.float32)
  return jax.device_get(_saliency_batch(jit.static(apply_fn), variables, jnp.asarray(images),
                                        imp, attribute_chunk=2))


def localisation(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any, *,
                 importance: ArrayLike | None = None, batch_size: int = 16,
                 limit: int | None = None, controls: bool = False,
                 mesh: jax.sharding.Mesh | None = None
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """How well attention (HPNet) and Grad-CAM (either model) fall on the true regions.

  Needs a source with ground-truth regions (:func:`has_regions`). Scores
  are averaged over (image, attribute) pairs, once over all images (the region is
  where the evidence *would* be when the attribute is absent) and once over the
  images that have the attribute (``"present"``).

  Args:
    importance: ``[K, C]`` channel importance for HPNet's attention map (required
      for HPNet; see :func:`attention_map`).
    controls: also score maps that use no information from the scored image
      (:func:`prior_localisation`, a second pass over the regions only):
      ``"<map>_mean_map"`` for each map, the mean of that map over the evaluated
      (valid) images, per attribute, the same ``[K, H, W]`` for every image; it is
      computed on the images it is scored on, which can only flatter it; and
      ``"centre_prior"`` (:func:`centre_prior`, the same for every attribute).
    batch_size: images per step over all devices, rounded up to a multiple of the
      devices (:func:`hpjax.core.distributed.pass_batch_size`); each device computes
      the maps of its own images, and only the ``[K]`` and ``[K, H, W]`` sums are
      all-reduced.
    mesh: the device mesh (default :func:`hpjax.core.distributed.make_mesh`).

  Returns:
    ``{map_name: {"all" | "present": localisation_summary}}``.

  References:
    docs/papers.md §A6; paper A Figs. 4–6, Table 4.
  """
  if model_lib.is_hpnet(variables) and importance is None:
    raise ValueError("HPNet localisation needs the channel importance [K, C]")
  imp = None if importance is None else jnp.asarray(importance, jnp.float32)
  mesh = mesh or distributed.make_mesh()
  variables = jax.device_put(variables, distributed.replicated(mesh))
  total, map_sum, images = None, None, 0
  with jax.set_mesh(mesh):
    for batch in distributed.eval_batches(
        source, batch_size=batch_size, mesh=mesh, limit=limit,
        fields=lambda b: _with_regions(b, "image", "label", "valid")):
      # Two attributes per backward pass: memory of two HPNet head passes, and faster
      # than one at a time (lax.map with batch_size=1 does not vectorise).
      s, m = _localisation_batch(jit.static(apply_fn), variables, batch["image"],
                                 batch["label"], batch["regions"], batch["valid"], imp,
                                 attribute_chunk=2)
      total, map_sum = _add(total, s), _add(map_sum, m)
      images += int(jnp.sum(batch["valid"]))
      shape = batch["regions"].shape[1:]
  out = _summaries(total)
  if controls:
    priors = {f"{name}_mean_map": m / max(images, 1) for name, m in map_sum.items()}
    priors["centre_prior"] = np.broadcast_to(centre_prior(*shape[1:]), shape)
    out.update(prior_localisation(priors, source, batch_size=batch_size, limit=limit,
                                  mesh=mesh))
  return out


def prior_localisation(priors: dict[str, ArrayLike], source: Any, *, batch_size: int = 16,
                       limit: int | None = None, mesh: jax.sharding.Mesh | None = None
                       ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """Scores fixed maps ``{name: [K, H, W]}``, the same map for every image, with the
  metrics and subsets of :func:`localisation` (controls for it: a saliency map that
  beats these knows more than where attributes usually are). Data-parallel as
  :func:`localisation` (``batch_size``, ``mesh``).

  Returns:
    ``{name: {"all" | "present": localisation_summary}}``.
  """
  p = {name: jnp.asarray(m, jnp.float32) for name, m in priors.items()}
  mesh = mesh or distributed.make_mesh()
  total = None
  with jax.set_mesh(mesh):
    for batch in distributed.eval_batches(source, batch_size=batch_size, mesh=mesh, limit=limit,
                                          fields=lambda b: _with_regions(b, "label", "valid")):
      total = _add(total, _prior_localisation_batch(p, batch["label"], batch["regions"],
                                                    batch["valid"]))
  return _summaries(total)


# ---------------------------------------------------------------------------
# The analysis (Figs. 4–6, Table 4, localisation).

# Attributes shown in Fig. 4 when present (the paper shows Smiling and
# Mouth_Slightly_Open; the others have compact, known regions on the generated faces).
FIG4_ATTRIBUTES = ("Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Black_Hair",
                   "Heavy_Makeup", "Wearing_Hat")


def run(trained: runs.TrainedRun, *, baseline: runs.TrainedRun | None = None,
        stats_limit: int | None = 1024, limit: int | None = 256, batch_size: int = 16,
        top: int = 3) -> dict[str, Any]:
  """``python -m evaluate.attention``: Figs. 4–6, Table 4 and measured localisation.

  Writes ``WORKDIR/analysis/attention.json`` and ``fig4_attention.png``,
  ``fig5_mean_masks.png``, ``fig6_channel_correlation.png``,
  ``attribute_correlation.png``, ``localisation.png``.

  On sources with regions, ``localisation`` (per attribute) and ``localisation_mean``
  (:func:`localisation_means`) hold, for ``"all"`` images and the ``"present"`` ones
  (label 1): ``hpnet_attention``, ``hpnet_grad_cam``, ``baseline_grad_cam`` (with a
  baseline) and two controls that use no information from the scored image,
  ``mean_map_prior`` (HPNet's attention map averaged over the evaluated images) and
  ``centre_prior`` (:func:`centre_prior`); ``localisation_attention_minus_prior``
  is :func:`attention_minus_prior`.

  Raises:
    ConfigError: ``trained`` is not HPNet.

  References:
    docs/papers.md §A6; paper A Figs. 4–6, Table 4.
  """
  from hpjax.hpnet import plots
  runs.require_hpnet(trained, "attention analyses need HPNet")
  names = list(trained.label_names)
  stats = runs.run_statistics(trained, limit=stats_limit)
  params = trained.variables["params"]
  importance = statistics.channel_importance(stats["mask_mean"], model_lib.head_weights(params))
  top_channels = np.argsort(-importance, axis=1, kind="stable")[:, :top]
  corr_c = statistics.channel_correlation(stats, "position")
  corr_k = statistics.attribute_correlation(stats["mask_mean"])
  out = runs.output_dir(trained.workdir)
  figs = {}

  # Fig. 4: for each shown attribute, the first test image that has it.
  test = trained.split("test")
  pool = get_batch(test, np.arange(min(len(test), 512)))
  shown = [a for a in FIG4_ATTRIBUTES if a in names] or names[:6]
  rows, ids = [], []
  for a in shown:
    k = names.index(a)
    hits = np.flatnonzero(pool["label"][:, k] > 0)
    ids.append(int(hits[0]) if len(hits) else 0)
    rows.append((a, ids[-1], [int(c) for c in top_channels[k]]))
  images = pool["image"][ids]
  m = np.asarray(_masks_batch(jit.static(trained.apply_fn), trained.variables, images))
  att = m[np.arange(len(rows)), :, :, [names.index(a) for a, _, _ in rows]]  # [R, H, W, C]
  sel = np.take_along_axis(att, np.asarray([ch for _, _, ch in rows])[:, None, None, :], axis=-1)
  sel = np.moveaxis(sel, -1, 1)  # [R, top, H, W]
  figs["fig4"] = plots.attention_examples(images, sel, rows,
                                          os.path.join(out, "fig4_attention.png"))
  c = importance.shape[1]
  figs["fig5"] = plots.heatmap(
      stats["mask_mean"], os.path.join(out, "fig5_mean_masks.png"),
      title="Fig. 5: mean attention mask per attribute and channel", xlabel="channel",
      yticklabels=names, size=(min(12.0, 3.0 + 0.09 * c), 0.22 * len(names) + 1.2))
  figs["fig6"] = plots.heatmap(
      corr_c, os.path.join(out, "fig6_channel_correlation.png"),
      title="Fig. 6: channel correlation (Pearson over image × position)", xlabel="channel",
      ylabel="channel", cmap="RdBu_r", vmin=-1, vmax=1, size=(5.6, 4.6))
  figs["attribute_correlation"] = plots.heatmap(
      corr_k, os.path.join(out, "attribute_correlation.png"),
      title="Table 4 input: correlation of attributes' Fig. 5 rows", yticklabels=names,
      xticklabels=names, cmap="RdBu_r", vmin=-1, vmax=1, size=(6.2, 5.2))

  result: dict[str, Any] = {
      "run": runs.run_info(trained), "label_names": names,
      "stats_images": int(stats["num_images"]),
      "mask_mean": stats["mask_mean"], "importance": importance,
      "top_channels": {n: top_channels[k] for k, n in enumerate(names)},
      "table4": statistics.top_correlated(corr_k, names, 5), "attribute_correlation": corr_k,
      "channel_correlation_offdiag_mean": float(corr_c[~np.eye(c, dtype=bool)].mean()),
      "fig4_rows": [{"attribute": a, "test_image": i, "channels": ch} for a, i, ch in rows]}

  if has_regions(pool):
    loc = {}
    s = localisation(trained.apply_fn, trained.variables, test, importance=importance,
                     batch_size=batch_size, limit=limit, controls=True)
    loc["hpnet_attention"], loc["hpnet_grad_cam"] = s["attention"], s["grad_cam"]
    if baseline is not None:
      loc["baseline_grad_cam"] = localisation(baseline.apply_fn, baseline.variables,
                                              baseline.split("test"), batch_size=batch_size,
                                              limit=limit)["grad_cam"]
      result["baseline_run"] = runs.run_info(baseline)
    loc["mean_map_prior"], loc["centre_prior"] = s["attention_mean_map"], s["centre_prior"]
    result["localisation"] = loc
    result["localisation_mean"] = localisation_means(loc)
    result["localisation_controls"] = {
        "mean_map_prior": "HPNet's attention map averaged over the evaluated test images, "
                          "per attribute; the same map for every image",
        "centre_prior": {"kind": "centred Gaussian", "std_fraction_of_side": CENTRE_PRIOR_STD,
                         "note": "the same map for every image and attribute"}}
    result["localisation_attention_minus_prior"] = attention_minus_prior(
        result["localisation_mean"])
    figs["localisation"] = plots.localisation(
        names, {k: v["all"] for k, v in loc.items()}, os.path.join(out, "localisation.png"))
  result["figures"] = figs
  io.write_json(os.path.join(out, "attention.json"), result)
  return result
