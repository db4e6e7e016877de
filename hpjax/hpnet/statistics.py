r"""The one statistics pass over a data set and what analyses read from it
(paper A, docs/papers.md §A5–A6).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks":
Fig. 5 (the K×C grid of mean mask values), Fig. 6 (the C×C channel correlation that
drives semantic pruning), Table 4 (attributes correlated through their Fig. 5 rows)
and the channel importance behind Fig. 4 all come from :func:`collect_statistics`.

The pass is a *streamed, jitted reduction*: one compiled update per batch folds the
batch into running sums, so memory does not grow with the number of images. Channel
covariances use the pairwise merge of per-batch centred moments
(:func:`hpjax.core.stats.moments_update`), accurate in float32 where raw sums of
squares over millions of positions would cancel catastrophically.

The pass is data-parallel: each batch is a global array sharded over the ``data`` axis
of the device mesh (each process loads its own slice), the running sums are
replicated, and every device reduces its own images; the batch sums meet in a few
all-reduces of the small ``[C]``, ``[C, C]`` and ``[K, C, bins]`` sums, never a gather
of the feature maps or masks (tests/hpnet/test_passes_sharding.py reads it from the
compiled program).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hpjax.core import distributed, jit
from hpjax.core.stats import (correlation_from_covariance, moments_init, moments_update,
                              profile_correlation)
from hpjax.core.training import images_to_float
from hpjax.hpnet import heads as heads_lib
from hpjax.hpnet import model as model_lib

# Channel-correlation readings (docs/papers.md §A5, step 2): Pearson over (sample, position)
# responses, over per-sample GAP responses, or over the K-long profiles of mean
# attention (the columns of the Fig. 5 grid; HPNet only).
READINGS = ("position", "gap", "attention")


def _stats_init(variables: dict[str, Any], num_bins: int) -> dict[str, Any]:
  p = variables["params"]
  k, c = model_lib.head_weights(p).shape
  state = {"position": moments_init(c), "gap": moments_init(c), "gap_abs": jnp.zeros((c,)),
           "logit": moments_init(k), "images": jnp.zeros(())}
  if model_lib.is_hpnet(variables):
    state.update(mask_sum=jnp.zeros((k, c)), contribution=jnp.zeros((k, c)),
                 contribution_abs=jnp.zeros((k, c)), binned=jnp.zeros((k, c, num_bins)))
  return state


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_bins"))
def _stats_update(apply_fn: jit.ApplyFn, state: dict[str, Any], variables: dict[str, Any],
                  image: jax.Array, valid: jax.Array, *, num_bins: int) -> dict[str, Any]:
  p = variables["params"]
  hp = "mask_sum" in state
  f = jit.call(apply_fn, variables, images_to_float(image), train=False)[1]["features"]
  b, h, w, c = f.shape
  v = valid.astype(jnp.float32)
  vpos = jnp.broadcast_to(v[:, None], (b, h * w)).reshape(-1)
  gap = jnp.mean(f, axis=(1, 2))
  new = {"position": moments_update(state["position"], f.reshape(-1, c), vpos),
         "gap": moments_update(state["gap"], gap, v),
         "gap_abs": state["gap_abs"] + v @ jnp.abs(gap),
         "images": state["images"] + jnp.sum(v)}
  if hp:
    heads = model_lib.head_params(p)
    m = heads_lib.head_masks(heads, f)  # [B, H, W, K, C]
    k = m.shape[3]
    contrib = heads_lib.pool(m, f)  # mean_hw(M^k_c f_c) per image, [B, K, C]
    logits = heads_lib.logits_from_pooled(heads, contrib, f)
    # Binned attention: E_b mean_hw(f_c · 1{M^k_c ∈ bin j}). With it, the effect of
    # any transform g on the mean logit is read off without running the network
    # (hpjax.hpnet.analyses.predictability). One segment-sum instead of a
    # [.., K, C, bins] one-hot.
    bins = jnp.clip((m * num_bins).astype(jnp.int32), 0, num_bins - 1)
    seg = jnp.arange(k * c, dtype=jnp.int32).reshape(k, c) * num_bins + bins
    vals = jnp.broadcast_to((f * v[:, None, None, None])[:, :, :, None, :], m.shape)
    binned = jax.ops.segment_sum(vals.reshape(-1), seg.reshape(-1), num_segments=k * c * num_bins)
    new.update(
        mask_sum=state["mask_sum"] + jnp.einsum("bhwkc,b->kc", m, v) / (h * w),
        contribution=state["contribution"] + jnp.einsum("bkc,b->kc", contrib, v),
        contribution_abs=state["contribution_abs"] + jnp.einsum("bkc,b->kc", jnp.abs(contrib), v),
        binned=state["binned"] + binned.reshape(k, c, num_bins) / (h * w))
  else:
    logits = model_lib.logits_from_features(p, f)
  # Centred moments, not E[z²] − E[z]²: a logit's spread can be 1e-3 of its mean, where
  # float32 raw sums of squares cancel (and any change of summation order shows).
  new["logit"] = moments_update(state["logit"], logits, v)
  return new


def collect_statistics(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any, *,
                       batch_size: int = 32, limit: int | None = None, num_bins: int = 32,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, np.ndarray]:
  """Streams ``source`` once through the frozen model and returns its statistics.

  Args:
    apply_fn: ``model.apply`` of HPNet or the baseline.
    variables: ``{"params", "batch_stats"}``.
    source: random-access source (usually the training split, docs/papers.md §A5, step 2).
    batch_size: images per jitted update, over all devices (memory: the mask tensor of
      ``batch_size / devices`` images per device), rounded up to a multiple of the
      devices (:func:`hpjax.core.distributed.pass_batch_size`).
    limit: use only the first ``limit`` images.
    num_bins: bins of the attention histogram (HPNet).
    mesh: the device mesh (default :func:`hpjax.core.distributed.make_mesh`).

  Returns:
    A dict of NumPy arrays (C channels, K attributes, N images):

    * ``position_count``, ``position_mean [C]``, ``position_cov [C, C]``: moments of
      the feature responses over (image, position);
    * ``gap_count``, ``gap_mean [C]``, ``gap_cov [C, C]``: moments of per-image GAP,
      and ``gap_abs_mean [C]`` = E_b |GAP f_c|;
    * ``logit_mean [K]``, ``logit_std [K]``;
    * HPNet only: ``mask_mean [K, C]`` (Fig. 5: mean over images and positions of
      M^k_c), ``contribution [K, C]`` = E_b mean_hw(M^k_c f_c),
      ``contribution_abs [K, C]`` = E_b |mean_hw(M^k_c f_c)|, and
      ``binned [K, C, num_bins]`` = E_b mean_hw(f_c 1{M^k_c in bin j});
    * ``num_images``.

  References:
    docs/papers.md §A5 (step 2), §A6, §A7.
  """
  mesh = mesh or distributed.make_mesh()
  repl = distributed.replicated(mesh)
  state = jax.device_put(_stats_init(variables, num_bins), repl)
  variables = jax.device_put(variables, repl)
  with jax.set_mesh(mesh):
    for batch in distributed.eval_batches(source, batch_size=batch_size, mesh=mesh, limit=limit,
                                          fields=("image", "valid")):
      state = _stats_update(jit.static(apply_fn), state, variables, batch["image"],
                            batch["valid"], num_bins=num_bins)
  state = jax.device_get(state)
  n = max(float(state["images"]), 1.0)
  out = {"num_images": np.asarray(int(state["images"])), "num_bins": np.asarray(num_bins)}
  for name in ("position", "gap"):
    m = state[name]
    out[f"{name}_count"] = np.asarray(m.count, np.float64)
    out[f"{name}_mean"] = np.asarray(m.mean, np.float64)
    out[f"{name}_cov"] = np.asarray(m.m2, np.float64) / max(float(m.count) - 1.0, 1.0)
  out["gap_abs_mean"] = np.asarray(state["gap_abs"], np.float64) / n
  out["logit_mean"] = np.asarray(state["logit"].mean, np.float64)
  out["logit_std"] = np.sqrt(np.diag(np.asarray(state["logit"].m2, np.float64)) / n)
  if "mask_sum" in state:
    for name in ("mask_sum", "contribution", "contribution_abs", "binned"):
      out[name.replace("_sum", "_mean")] = np.asarray(state[name], np.float64) / n
  return out


# ---------------------------------------------------------------------------
# Readings of the statistics.

def channel_correlation(stats: dict[str, np.ndarray], reading: str = "position") -> np.ndarray:
  """The C×C channel correlation (Fig. 6, the pruning input) under ``reading``.

  Args:
    stats: from :func:`collect_statistics`.
    reading: ``"position"`` (Pearson over image × position, default), ``"gap"``
      (over per-image GAP responses) or ``"attention"`` (over the K-long columns
      of the mean-mask grid; HPNet only).

  References:
    docs/papers.md §A5 (step 2); paper A Fig. 6.
  """
  if reading not in READINGS:
    raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
  if reading == "attention":
    if "mask_mean" not in stats:
      raise ValueError("reading 'attention' needs attention masks; the baseline has none "
                       "(use 'position' or 'gap')")
    return profile_correlation(stats["mask_mean"])
  return correlation_from_covariance(stats[f"{reading}_cov"])


def attribute_correlation(mask_mean: ArrayLike) -> np.ndarray:
  """Table 4 reading: Pearson correlation between the attributes' Fig. 5 rows, ``[K, K]``.

  References:
    docs/papers.md §A6; paper A Fig. 5, Table 4.
  """
  return profile_correlation(np.asarray(mask_mean).T)


def top_correlated(corr: ArrayLike, names: tuple[str, ...] | list[str], top: int = 5
                   ) -> dict[str, list[tuple[str, float]]]:
  """For each target attribute, the ``top`` others with the highest correlation.

  Ties keep attribute order (a stable sort), so the table is deterministic.

  References:
    docs/papers.md §A6; paper A Fig. 5, Table 4.
  """
  corr = np.array(corr, np.float64)
  np.fill_diagonal(corr, -np.inf)  # never list an attribute as its own neighbour
  order = np.argsort(-corr, axis=1, kind="stable")[:, :top]
  return {name: [(names[j], float(corr[k, j])) for j in order[k]] for k, name in enumerate(names)}


def table4_checks(table4: dict[str, Any]) -> list[tuple[str, str, list[str], list[str]]]:
  """The paper's Table 4 expectations as checks on a :func:`top_correlated` table.

  Wearing_Lipstick among Heavy_Makeup's most correlated attributes, and each hair
  colour's list holding the other hair colours (paper A, Table 4).

  Returns:
    ``[(description, target, expected names, the target's top list)]`` for the targets
    the table has.

  References:
    docs/papers.md §A6; paper A Fig. 5, Table 4.
  """
  checks = []
  if "Heavy_Makeup" in table4:
    checks.append(("Wearing_Lipstick in Heavy_Makeup's top 5", "Heavy_Makeup",
                   ["Wearing_Lipstick"], [n for n, _ in table4["Heavy_Makeup"]]))
  hair = [h for h in ("Black_Hair", "Blond_Hair", "Brown_Hair") if h in table4]
  for h in hair:
    checks.append((f"other hair colours in {h}'s top 5", h, [o for o in hair if o != h],
                   [n for n, _ in table4[h]]))
  return checks


def table4_hits(table4: dict[str, Any]) -> tuple[int, int]:
  """``(expected names found, expected names)`` over :func:`table4_checks`."""
  checks = table4_checks(table4)
  return (sum(sum(e in top for e in exp) for _, _, exp, top in checks),
          sum(len(exp) for _, _, exp, _ in checks))


def channel_importance(mask_mean: ArrayLike, weights: ArrayLike) -> np.ndarray:
  r"""Importance of channel c for attribute k, ``[K, C]``:
  :math:`\bar M^k_c\,|w_{kc}|` (mean mask value times the classifier weight's size).

  References:
    docs/papers.md §A6; paper A Fig. 4.
  """
  return np.asarray(mask_mean) * np.abs(np.asarray(weights))
