r"""Attention statistics, channel correlations, localisation and saliency (paper A, SPEC A4–A6).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks":
Fig. 4 (top-3 channel masks per attribute), Fig. 5 (the K×C grid of mean mask
values), Fig. 6 (the C×C channel correlation that drives semantic pruning),
Table 4 (attributes correlated through their Fig. 5 rows) and Fig. 8 (accuracy under
input noise for a grid of mask transforms).

Everything that reads a data set is a *streamed, jitted reduction*: one compiled
update per batch folds the batch into running sums, so memory does not grow with
the number of images. Channel covariances use the pairwise (Chan, Golub & LeVeque
1979) merge of per-batch centred moments, which stays accurate in float32 where
raw sums of squares over millions of positions would cancel catastrophically:

.. math::

   n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
   \bar x = \bar x_a + \delta\, n_b / n,\quad
   M_2 = M_{2,a} + M_{2,b} + \delta\delta^\top n_a n_b / n .

The heads are re-expressed here as two small pure functions
(:func:`head_masks`, :func:`logits_from_masks`) so that perturbation passes can
share work the model's single ``apply`` would repeat: the extractor runs once per
noise level, the mask branch once per channel mask, and only the cheap transform
and pooling once per ``(n, β)``. ``tests/test_analysis.py`` checks they equal
``model.apply``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from hpjax.data import pipeline
from hpjax.core.training import images_to_float

ApplyFn = Callable[..., Any]

# Channel-correlation readings (SPEC A5 step 2): Pearson over (sample, position)
# responses, over per-sample GAP responses, or over the K-long profiles of mean
# attention (the columns of the Fig. 5 grid; HPNet only).
READINGS = ("position", "gap", "attention")


def _static(apply_fn: ApplyFn) -> Any:
  """A value-comparing stand-in for ``apply_fn`` as a jit static argument.

  Bound methods compare by the identity of their object, so two loads of the same
  model (or the report after the analyses) would each compile again; a Flax module
  compares by its fields, so ``module.apply`` is replaced by the module.
  """
  owner = getattr(apply_fn, "__self__", None)
  return owner if isinstance(owner, nn.Module) else apply_fn


def _apply(static: Any, *args, **kwargs) -> Any:
  return static.apply(*args, **kwargs) if isinstance(static, nn.Module) else static(*args, **kwargs)


# ---------------------------------------------------------------------------
# Heads as pure functions of the feature map.

def is_hpnet(variables: dict[str, Any]) -> bool:
  """True for HPNet variables (attention heads), False for the GAP + dense baseline."""
  return "heads" in variables["params"]


def head_masks(heads: dict[str, jax.Array], f: jax.Array) -> jax.Array:
  r"""Untransformed attention masks :math:`M^k = \sigma(f W^k + b^k)` (paper Eq. 8).

  Args:
    heads: HPNet head params (``mask_kernel [K, C, C]``, ``mask_bias [K, C]``, ...).
    f: features ``[batch, H, W, C]``.

  Returns:
    ``[batch, H, W, K, C]`` in [0, 1].
  """
  b, h, w, c = f.shape
  k = heads["mask_kernel"].shape[0]
  # One [BHW, C] x [C, K*C] GEMM: measured 1.5x faster on CPU than the 5-index einsum.
  kernel = jnp.transpose(heads["mask_kernel"], (1, 0, 2)).reshape(c, k * c)
  pre = (f.reshape(-1, c) @ kernel).reshape(b, h, w, k, c)
  return nn.sigmoid(pre + heads["mask_bias"])


def _tone_parts(m: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(M < 0.5, log u)`` with :math:`u = 2\\min(M, 1 - M)`: what h(M; n) needs for any n."""
  low = m < 0.5
  # u = 0 (a saturated sigmoid) would give log 0 = -inf and NaN gradients; the floor
  # changes u^n by less than float32 resolution for any n >= 0.05.
  return low, jnp.log(jnp.maximum(jnp.where(low, 2.0 * m, 2.0 - 2.0 * m), 1e-30))


def _tone_from_parts(low: jax.Array, log_u: jax.Array, n: ArrayLike) -> jax.Array:
  p = 0.5 * jnp.exp(n * log_u)
  return jnp.where(low, p, 1.0 - p)


def tone_curve(m: jax.Array, n: ArrayLike) -> jax.Array:
  r"""h(M; n) of Eq. 12 as :math:`p = \tfrac12 e^{n \log u}`, :math:`u = 2\min(M, 1-M)`,
  :math:`h = p` below 0.5 and :math:`1 - p` above.

  Equal to :func:`hpjax.mask_transform` with β = 0 (tested); written
  so that a grid of n shares one logarithm per element and pays one exponential
  per n, a quarter of the cost of two ``power`` calls per n.
  """
  return _tone_from_parts(*_tone_parts(m), n)


def _pool(g: jax.Array, f: jax.Array) -> jax.Array:
  """mean_hw(g ⊙ f): ``[B, H, W, K, C] x [B, H, W, C] -> [B, K, C]``.

  Written as multiply + reduce, which XLA fuses with whatever produced ``g``; the
  equivalent einsum lowers to a dot with batch dims (b, c), measured 8x slower on CPU.
  """
  return jnp.mean(g * f[:, :, :, None, :], axis=(1, 2))


def _logits_from_pooled(heads: dict[str, jax.Array], ph: jax.Array, f: jax.Array,
                        beta: ArrayLike) -> jax.Array:
  """Logits from ``ph = GAP(h ⊙ f) [B, K, C]``; ``beta`` scalar or ``[T]`` (→ ``[T, B, K]``)."""
  beta = jnp.asarray(beta, f.dtype)
  b = beta[..., None, None, None]
  pooled = (1.0 + b) * ph - b * jnp.mean(f, axis=(1, 2))[:, None, :]
  return jnp.einsum("...bkd,kd->...bk", pooled, heads["kernel"]) + heads["bias"]


def logits_from_masks(heads: dict[str, jax.Array], masks: jax.Array, f: jax.Array,
                      n: ArrayLike | None = None, beta: ArrayLike = 0.0) -> jax.Array:
  r"""HPNet logits from given masks: :math:`w_k \cdot \mathrm{GAP}(g(M^k; n, \beta) \odot f) + b_k`.

  Since :math:`g = (1+\beta) h - \beta`, the pooled features are
  :math:`(1+\beta)\,\mathrm{GAP}(h \odot f) - \beta\,\mathrm{GAP}(f)`: β costs nothing
  once h is pooled, so ``beta`` may be a vector ``[T]`` (then the result is ``[T, B, K]``).

  Args:
    heads: HPNet head params.
    masks: ``[batch, H, W, K, C]`` untransformed masks.
    f: features ``[batch, H, W, C]``.
    n: tone-curve exponent (scalar, may be traced); ``None`` is h = identity
      (skips the tone curve: the fast path, and the one to differentiate).
    beta: suppression, a scalar or a vector ``[T]``.

  Returns:
    logits ``[batch, K]`` (``[T, batch, K]`` for a vector ``beta``).
  """
  ph = _pool(masks if n is None else tone_curve(masks, n), f)
  return _logits_from_pooled(heads, ph, f, beta)


def logits_from_features(params: dict[str, Any], f: jax.Array, n: ArrayLike | None = None,
                         beta: ArrayLike = 0.0) -> jax.Array:
  """Logits ``[batch, K]`` of HPNet or the baseline from features ``[batch, H, W, C]``.

  The baseline ignores ``n`` and ``beta`` (it has no masks), as its ``apply`` does.
  """
  if "heads" in params:
    h = params["heads"]
    return logits_from_masks(h, head_masks(h, f), f, n, beta)
  c = params["classifier"]
  return jnp.mean(f, axis=(1, 2)) @ c["kernel"] + c["bias"]


def logit_terms(params: dict[str, Any], f: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Each channel's additive term of each logit (identity transform).

  HPNet: :math:`t_{kc} = w_{kc}\,\mathrm{GAP}(M^k_c f_c)`; the baseline:
  :math:`t_{kc} = w_{kc}\,\mathrm{GAP}(f_c)` (its dense kernel transposed). The logits
  are :math:`\sum_c t_{kc} + b_k`.

  Args:
    params: HPNet or baseline params.
    f: features ``[batch, H, W, C]``.

  Returns:
    ``(terms [batch, K, C], bias [K])``.
  """
  if "heads" in params:
    h = params["heads"]
    return _pool(head_masks(h, f), f) * h["kernel"], h["bias"]
  c = params["classifier"]
  return jnp.mean(f, axis=(1, 2))[:, None, :] * c["kernel"].T, c["bias"]


def head_weights(params: dict[str, Any]) -> np.ndarray:
  """Per-attribute weights on the pooled channels, ``[K, C]`` (w_k of Eq. 9, or the
  baseline's dense kernel transposed)."""
  if "heads" in params:
    return np.asarray(params["heads"]["kernel"])
  return np.asarray(params["classifier"]["kernel"]).T


def last_layer_index(params: dict[str, Any]) -> int:
  """Index ``i`` of the extractor's last ``conv{i}`` (the producer of f)."""
  convs = [int(k[4:]) for k in params["extractor"] if k.startswith("conv")]
  if not convs:
    raise ValueError(f"expected extractor/conv{{i}} params, found {sorted(params['extractor'])}")
  return max(convs)


def filter_l1_norms(variables: dict[str, Any]) -> np.ndarray:
  r"""L1 norm of each filter of the last conv, ``[C]``: :math:`\sum_{u,v,c'} |K_{u,v,c',c}|`."""
  p = variables["params"]["extractor"][f"conv{last_layer_index(variables['params'])}"]
  return np.abs(np.asarray(p["kernel"], np.float64)).sum(axis=(0, 1, 2))


# ---------------------------------------------------------------------------
# Streamed moments and correlations.

class Moments(NamedTuple):
  """Running count, mean ``[C]`` and centred cross-product sum ``[C, C]``."""
  count: jax.Array
  mean: jax.Array
  m2: jax.Array


def moments_init(num_channels: int) -> Moments:
  z = jnp.zeros((num_channels,), jnp.float32)
  return Moments(jnp.zeros((), jnp.float32), z, jnp.zeros((num_channels,) * 2, jnp.float32))


def moments_update(m: Moments, x: jax.Array, weight: jax.Array) -> Moments:
  """Folds observations ``x [N, C]`` with 0/1 ``weight [N]`` into ``m`` (Chan's merge).

  The batch is centred at its own mean before the cross products, so float32 keeps
  the covariance accurate even when the channel means dwarf their spread.
  """
  w = weight.astype(jnp.float32)
  nb = jnp.sum(w)
  mean_b = jnp.sum(w[:, None] * x, axis=0) / jnp.maximum(nb, 1.0)
  d = x - mean_b
  m2_b = jnp.einsum("ni,nj->ij", d * w[:, None], d)
  n = m.count + nb
  frac = nb / jnp.maximum(n, 1.0)
  delta = mean_b - m.mean
  return Moments(n, m.mean + delta * frac, m.m2 + m2_b + jnp.outer(delta, delta) * m.count * frac)


def correlation_from_covariance(cov: ArrayLike) -> np.ndarray:
  """Pearson correlation ``[C, C]`` from a covariance (or M2) matrix.

  A channel with (numerically) zero variance — dead after pruning, or constant —
  has no defined correlation; it gets 0 off the diagonal and 1 on it, so it is
  never taken for a near-duplicate of another channel.
  """
  cov = np.asarray(cov, np.float64)
  var = np.clip(np.diag(cov), 0.0, None)
  alive = var > 1e-12 * max(var.max(initial=0.0), 1e-30)
  std = np.sqrt(np.where(alive, var, 1.0))
  corr = cov / np.outer(std, std)
  corr[~alive, :] = 0.0
  corr[:, ~alive] = 0.0
  np.fill_diagonal(corr, 1.0)
  return np.clip(corr, -1.0, 1.0)


def profile_correlation(rows: ArrayLike) -> np.ndarray:
  """Pearson correlation between the columns of ``rows [N, D]`` → ``[D, D]``."""
  x = np.asarray(rows, np.float64)
  d = x - x.mean(axis=0)
  return correlation_from_covariance(d.T @ d)


# ---------------------------------------------------------------------------
# One streamed pass: every statistic the analyses need.

def eval_batches(source: Any, batch_size: int, limit: int | None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Ordered, padded batches (see :func:`pipeline.eval_batches`) plus ``"index" [batch]``,
  the example's position in the source (noise keys are derived from it, so an
  image's noise does not depend on the batch it falls in)."""
  start = 0
  for batch in pipeline.eval_batches(source, global_batch_size=batch_size, limit=limit):
    batch["index"] = np.arange(start, start + batch_size, dtype=np.int32)
    start += batch_size
    yield batch


def _stats_init(variables: dict[str, Any], num_bins: int) -> dict[str, Any]:
  p = variables["params"]
  k, c = head_weights(p).shape
  state = {"position": moments_init(c), "gap": moments_init(c), "gap_abs": jnp.zeros((c,)),
           "logit_sum": jnp.zeros((k,)), "logit_sq": jnp.zeros((k,)), "images": jnp.zeros(())}
  if "heads" in p:
    state.update(mask_sum=jnp.zeros((k, c)), contribution=jnp.zeros((k, c)),
                 contribution_abs=jnp.zeros((k, c)), binned=jnp.zeros((k, c, num_bins)))
  return state


@functools.partial(jax.jit, static_argnames=("apply_fn", "num_bins"))
def _stats_update(apply_fn: ApplyFn, state: dict[str, Any], variables: dict[str, Any],
                  image: jax.Array, valid: jax.Array, *, num_bins: int) -> dict[str, Any]:
  p = variables["params"]
  hp = "mask_sum" in state
  f = _apply(apply_fn, variables, images_to_float(image), train=False)[1]["features"]
  b, h, w, c = f.shape
  v = valid.astype(jnp.float32)
  vpos = jnp.broadcast_to(v[:, None], (b, h * w)).reshape(-1)
  gap = jnp.mean(f, axis=(1, 2))
  new = {"position": moments_update(state["position"], f.reshape(-1, c), vpos),
         "gap": moments_update(state["gap"], gap, v),
         "gap_abs": state["gap_abs"] + v @ jnp.abs(gap),
         "images": state["images"] + jnp.sum(v)}
  if hp:
    heads = p["heads"]
    m = head_masks(heads, f)  # [B, H, W, K, C]
    k = m.shape[3]
    contrib = _pool(m, f)  # mean_hw(M^k_c f_c) per image, [B, K, C]
    logits = jnp.einsum("bkc,kc->bk", contrib, heads["kernel"]) + heads["bias"]
    # Binned attention: E_b mean_hw(f_c · 1{M^k_c ∈ bin j}). With it, the effect of
    # any transform g on the mean logit is read off without running the network
    # (hpjax.predictability). One segment-sum instead of a [.., K, C, bins] one-hot.
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
    logits = logits_from_features(p, f)
  new.update(logit_sum=state["logit_sum"] + v @ logits,
             logit_sq=state["logit_sq"] + v @ jnp.square(logits))
  return new


def collect_statistics(apply_fn: ApplyFn, variables: dict[str, Any], source: Any, *,
                       batch_size: int = 32, limit: int | None = None, num_bins: int = 32
                       ) -> dict[str, np.ndarray]:
  """Streams ``source`` once through the frozen model and returns its statistics.

  Args:
    apply_fn: ``model.apply`` of HPNet or the baseline.
    variables: ``{"params", "batch_stats"}``.
    source: random-access source (usually the training split, SPEC A5 step 2).
    batch_size: images per jitted update (memory: the mask tensor of one batch).
    limit: use only the first ``limit`` images.
    num_bins: bins of the attention histogram (HPNet).

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
  """
  state = _stats_init(variables, num_bins)
  for batch in eval_batches(source, batch_size, limit):
    state = _stats_update(_static(apply_fn), state, variables, batch["image"], batch["valid"],
                          num_bins=num_bins)
  state = jax.device_get(state)
  n = max(float(state["images"]), 1.0)
  out = {"num_images": np.asarray(int(state["images"])), "num_bins": np.asarray(num_bins)}
  for name in ("position", "gap"):
    m = state[name]
    out[f"{name}_count"] = np.asarray(m.count, np.float64)
    out[f"{name}_mean"] = np.asarray(m.mean, np.float64)
    out[f"{name}_cov"] = np.asarray(m.m2, np.float64) / max(float(m.count) - 1.0, 1.0)
  mean = np.asarray(state["logit_sum"], np.float64) / n
  out["gap_abs_mean"] = np.asarray(state["gap_abs"], np.float64) / n
  out["logit_mean"] = mean
  out["logit_std"] = np.sqrt(np.clip(np.asarray(state["logit_sq"], np.float64) / n - mean ** 2,
                                     0.0, None))
  if "mask_sum" in state:
    for name in ("mask_sum", "contribution", "contribution_abs", "binned"):
      out[name.replace("_sum", "_mean")] = np.asarray(state[name], np.float64) / n
  return out


def channel_correlation(stats: dict[str, np.ndarray], reading: str = "position") -> np.ndarray:
  """The C×C channel correlation (Fig. 6, the pruning input) under ``reading``.

  Args:
    stats: from :func:`collect_statistics`.
    reading: ``"position"`` (Pearson over image × position, default), ``"gap"``
      (over per-image GAP responses) or ``"attention"`` (over the K-long columns
      of the mean-mask grid; HPNet only).
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
  """Table 4 reading: Pearson correlation between the attributes' Fig. 5 rows, ``[K, K]``."""
  return profile_correlation(np.asarray(mask_mean).T)


def top_correlated(corr: ArrayLike, names: tuple[str, ...] | list[str], top: int = 5
                   ) -> dict[str, list[tuple[str, float]]]:
  """For each target attribute, the ``top`` others with the highest correlation.

  Ties keep attribute order (a stable sort), so the table is deterministic.
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
  r"""Importance of channel c for attribute k (SPEC A6), ``[K, C]``:
  :math:`\bar M^k_c\,|w_{kc}|` (mean mask value times the classifier weight's size)."""
  return np.asarray(mask_mean) * np.abs(np.asarray(weights))


# ---------------------------------------------------------------------------
# Perturbation passes: channel masks × (n, β) × input noise, one compilation.

def noise_fields(seed: ArrayLike, index: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Standard-normal noise ``[len(index), *shape]``; image i's field is
  ``normal(fold_in(key(seed), i))``, whatever batch it is evaluated in.

  Common random numbers: each σ scales the same field, so accuracy-vs-σ curves
  differ by σ only, not by a new draw per level.
  """
  key = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape))(index)


@functools.partial(jax.jit, static_argnames=("apply_fn", "mask_chunk", "clip", "transform"))
def _perturbation_sums(apply_fn: ApplyFn, variables: dict[str, Any], image: jax.Array,
                       label: jax.Array, valid: jax.Array, index: jax.Array,
                       channel_masks: jax.Array, ns: jax.Array, betas: jax.Array,
                       sigmas: jax.Array, seed: jax.Array, *, mask_chunk: int, clip: bool,
                       transform: bool) -> tuple[jax.Array, jax.Array]:
  x = images_to_float(image)
  eps = noise_fields(seed, index, x.shape[1:])
  params = variables["params"]
  hp = "heads" in params
  shape = (ns.shape[0], betas.shape[0], x.shape[0], label.shape[-1])

  def per_sigma(s):
    xs = x + s * eps
    if clip:
      xs = jnp.clip(xs, 0.0, 1.0)
    # Only the features are used: XLA drops the model's own heads as dead code.
    f = _apply(apply_fn, variables, xs, train=False)[1]["features"]

    def per_mask(m):
      fm = f * m
      if not hp or not transform:
        # Identity transform: mask branch, sigmoid and pooling fuse into one pass.
        return jnp.broadcast_to(logits_from_features(params, fm), shape)
      # The mask branch and log u run once per channel mask, one exponential per n,
      # and every β is a linear combination (logits_from_masks).
      heads = params["heads"]
      low, log_u = _tone_parts(head_masks(heads, fm))
      return jax.lax.map(
          lambda n: _logits_from_pooled(heads, _pool(_tone_from_parts(low, log_u, n), fm), fm,
                                        betas), ns)

    return jax.lax.map(per_mask, channel_masks, batch_size=mask_chunk)  # [M, N, Bt, B, K]

  logits = jax.lax.map(per_sigma, sigmas)  # [S, M, N, Bt, B, K]
  v = valid.astype(jnp.float32)
  correct = ((logits > 0) == (label > 0)).astype(jnp.float32)
  return (jnp.einsum("smnjbk,b->smnjk", correct, v), jnp.einsum("smnjbk,b->smnjk", logits, v))


def evaluate_perturbations(apply_fn: ApplyFn, variables: dict[str, Any], source: Any, *,
                           channel_masks: ArrayLike | None = None, ns: ArrayLike = (1.0,),
                           betas: ArrayLike = (0.0,), sigmas: ArrayLike = (0.0,),
                           batch_size: int = 32, limit: int | None = None, seed: int = 0,
                           clip: bool = True, mask_group: int = 16, mask_chunk: int = 1
                           ) -> dict[str, Any]:
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
    batch_size, limit: images per step; how many images.
    seed: noise seed; image i's noise is ``normal(fold_in(key(seed), i))``.
    clip: clip noisy images back to [0, 1] (they stay valid images; the paper does
      not say which it did).
    mask_group: channel masks per compiled call. Masks are padded to whole groups,
      so any M ≥ ``mask_group`` reuses one compilation (pruning curves and the
      predictability families share it); the extractor reruns once per group.
    mask_chunk: masks of a group evaluated side by side (vmapped); more is faster
      and uses proportionally more memory.

  Returns:
    ``{"accuracy": [S, M, N, Bt, K], "mean_logit": [S, M, N, Bt, K], "num_images": int}``.
  """
  p = variables["params"]
  c = head_weights(p).shape[1]
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
  static = _static(apply_fn)
  correct, logit_sum, total = 0.0, 0.0, 0
  for batch in eval_batches(source, batch_size, limit):
    parts = [_perturbation_sums(static, variables, batch["image"], batch["label"],
                                batch["valid"], batch["index"], g, *args, np.uint32(seed),
                                mask_chunk=chunk, clip=clip, transform=transform)
             for g in groups]
    k = np.concatenate([np.asarray(a, np.float64) for a, _ in parts], axis=1)[:, :m]
    s = np.concatenate([np.asarray(b, np.float64) for _, b in parts], axis=1)[:, :m]
    correct, logit_sum = correct + k, logit_sum + s
    total += int(batch["valid"].sum())
  return {"accuracy": correct / max(total, 1), "mean_logit": logit_sum / max(total, 1),
          "num_images": total}


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _direct_path_sums(apply_fn: ApplyFn, variables: dict[str, Any], image: jax.Array,
                      label: jax.Array, valid: jax.Array, removed: jax.Array) -> jax.Array:
  f = _apply(apply_fn, variables, images_to_float(image), train=False)[1]["features"]
  terms, bias = logit_terms(variables["params"], f)  # [B, K, C], [K]
  z = jnp.sum(terms, axis=-1) + bias
  zm = z[None] - jnp.einsum("mc,bkc->mbk", removed, terms)  # [M, B, K]
  correct = ((zm > 0) == (label > 0)).astype(jnp.float32)
  return jnp.einsum("mbk,b->mk", correct, valid.astype(jnp.float32))


def direct_path_accuracy(apply_fn: ApplyFn, variables: dict[str, Any], source: Any,
                         channel_masks: ArrayLike, *, batch_size: int = 32,
                         limit: int | None = None) -> dict[str, Any]:
  r"""Per-attribute accuracy after removing channel sets, *simulated* from the unperturbed
  model's per-image logit terms (:func:`logit_terms`), without running the perturbation.

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
    batch_size, limit: images per step; how many images.

  Returns:
    ``{"accuracy": [M, K], "base_accuracy": [K], "num_images": int}``.
  """
  removed = 1.0 - np.asarray(channel_masks, np.float32)
  c = head_weights(variables["params"]).shape[1]
  if removed.ndim != 2 or removed.shape[1] != c:
    raise ValueError(f"expected channel_masks of shape [M, {c}], got {removed.shape}")
  removed = np.concatenate([np.zeros((1, c), np.float32), removed])  # row 0: nothing removed
  correct, total = 0.0, 0
  for batch in eval_batches(source, batch_size, limit):
    correct = correct + np.asarray(
        _direct_path_sums(_static(apply_fn), variables, batch["image"], batch["label"],
                          batch["valid"], removed), np.float64)
    total += int(batch["valid"].sum())
  acc = correct / max(total, 1)
  return {"accuracy": acc[1:], "base_accuracy": acc[0], "num_images": total}


# ---------------------------------------------------------------------------
# Robustness to input noise under the mask transformation (SPEC A4, Fig. 8).

ROBUSTNESS_NS = (1.0, 2.0, 3.0, 4.0)
ROBUSTNESS_BETAS = (0.0, 0.1, 0.25, 0.5)
ROBUSTNESS_SIGMAS = tuple(round(0.05 * i, 2) for i in range(11))


def _identity_cell(ns: np.ndarray, betas: np.ndarray) -> tuple[int, int]:
  """Grid index of the identity transform (n, β) = (1, 0) (the nearest cell)."""
  return int(np.argmin(np.abs(ns - 1.0))), int(np.argmin(np.abs(betas)))


def _best_cell(mean: np.ndarray) -> tuple[int, int]:
  """Index ``(i, j)`` of the highest mean accuracy in ``[N, Bt]``; ties go to the first
  cell in n-major order, which starts with the identity."""
  i, j = np.unravel_index(int(np.argmax(mean)), mean.shape)
  return int(i), int(j)


def robustness_grid(apply_fn: ApplyFn, variables: dict[str, Any], source: Any, *,
                    ns=ROBUSTNESS_NS, betas=ROBUSTNESS_BETAS, sigmas=ROBUSTNESS_SIGMAS,
                    batch_size: int = 32, limit: int | None = None, seed: int = 0,
                    clip: bool = True) -> dict[str, Any]:
  """Mean accuracy for every (n, β) at every noise level σ (Fig. 8).

  Returns:
    ``{"ns", "betas", "sigmas", "accuracy": [S, len(ns), len(betas), K],
    "mean_accuracy": [S, len(ns), len(betas)], "mean_logit": [S, len(ns), len(betas), K],
    "best": [...], "identity_beaten": bool,
    "num_images", "clip", "seed"}``; ``best[s]`` names the (n, β) with the highest mean
    accuracy at σ_s *on this same source* and its margin over the identity (n=1, β=0):
    an oracle choice, biased upwards (see :func:`validation_selection`).
  """
  ns, betas, sigmas = (np.asarray(a, np.float64) for a in (ns, betas, sigmas))
  out = evaluate_perturbations(apply_fn, variables, source, ns=ns, betas=betas, sigmas=sigmas,
                               batch_size=batch_size, limit=limit, seed=seed, clip=clip)
  acc = out["accuracy"][:, 0]  # [S, N, Bt, K]
  mean = acc.mean(axis=-1)
  ident = _identity_cell(ns, betas)
  best = []
  for s, sigma in enumerate(sigmas):
    i, j = _best_cell(mean[s])
    best.append({"sigma": float(sigma), "n": float(ns[i]), "beta": float(betas[j]),
                 "mean_accuracy": float(mean[s, i, j]),
                 "identity_accuracy": float(mean[s][ident]),
                 "gain_over_identity": float(mean[s, i, j] - mean[s][ident])})
  return {"ns": ns.tolist(), "betas": betas.tolist(), "sigmas": sigmas.tolist(),
          "accuracy": acc, "mean_accuracy": mean, "mean_logit": out["mean_logit"][:, 0],
          "best": best,
          "identity_beaten": bool(any(b["gain_over_identity"] > 0 for b in best)),
          "num_images": out["num_images"], "clip": clip, "seed": seed}


def validation_selection(val: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
  """Fig. 8 with the (n, β) chosen on one split and reported on another.

  ``robustness_grid(...)["best"]`` picks, per σ, the best of the grid's cells on the
  very images it reports: the maximum of 16 noisy estimates, which beats the
  identity by chance alone. Here the choice is made on the validation grid and its
  accuracy is read off the test grid; beside it, the test-split oracle gain.

  Args:
    val: :func:`robustness_grid` on the validation split.
    test: :func:`robustness_grid` on the test split (same ``ns``, ``betas``, ``sigmas``).

  Returns:
    ``{"best_val_selected": [...], "val_selection_summary": {...}}``.
    ``best_val_selected[s]``: ``sigma``, the selected ``n`` and ``beta`` (the validation
    argmax, ties to the first cell in n-major order), ``val_accuracy``,
    ``val_identity_accuracy``, ``val_gain_over_identity``, ``test_accuracy`` (the
    test grid's cell of the selected (n, β)), ``test_identity_accuracy``,
    ``test_gain_over_identity``, ``oracle_test_gain`` (= ``test["best"][s]
    ["gain_over_identity"]``, ≥ 0) and ``is_oracle`` (the validation choice is the
    test argmax). The summary is over the noise levels σ > 0: ``sigmas``,
    ``num_levels``, ``oracle_gain_mean`` and ``selected_gain_mean`` (mean test gains
    over the identity, in accuracy units), ``retained_fraction`` = selected / oracle
    (None when the oracle gains nothing; negative when the selection does worse than
    the identity), ``levels_oracle_beats_identity``, ``levels_selected_beats_identity``
    (test gain > 0), ``levels_selected_is_oracle`` and ``identity_beaten`` (some
    validation-selected (n, β) beats the identity on test).
  """
  for key in ("ns", "betas", "sigmas"):
    if not np.array_equal(np.asarray(val[key]), np.asarray(test[key])):
      raise ValueError(f"validation and test grids differ in {key}: {val[key]} vs {test[key]}")
  ns, betas = np.asarray(test["ns"], np.float64), np.asarray(test["betas"], np.float64)
  vm = np.asarray(val["mean_accuracy"], np.float64)
  tm = np.asarray(test["mean_accuracy"], np.float64)
  ident = _identity_cell(ns, betas)
  rows = []
  for s, sigma in enumerate(test["sigmas"]):
    cell, oracle = _best_cell(vm[s]), _best_cell(tm[s])
    rows.append({"sigma": float(sigma), "n": float(ns[cell[0]]), "beta": float(betas[cell[1]]),
                 "val_accuracy": float(vm[s][cell]), "val_identity_accuracy": float(vm[s][ident]),
                 "val_gain_over_identity": float(vm[s][cell] - vm[s][ident]),
                 "test_accuracy": float(tm[s][cell]), "test_identity_accuracy": float(tm[s][ident]),
                 "test_gain_over_identity": float(tm[s][cell] - tm[s][ident]),
                 "oracle_test_gain": float(tm[s][oracle] - tm[s][ident]),
                 "is_oracle": cell == oracle})
  noisy = [r for r in rows if r["sigma"] > 0]
  mean = lambda key: float(np.mean([r[key] for r in noisy])) if noisy else float("nan")
  oracle_gain, selected_gain = mean("oracle_test_gain"), mean("test_gain_over_identity")
  beaten = sum(r["test_gain_over_identity"] > 0 for r in noisy)
  summary = {"sigmas": [r["sigma"] for r in noisy], "num_levels": len(noisy),
             "oracle_gain_mean": oracle_gain, "selected_gain_mean": selected_gain,
             "retained_fraction": selected_gain / oracle_gain if oracle_gain > 0 else None,
             "levels_oracle_beats_identity": sum(r["oracle_test_gain"] > 0 for r in noisy),
             "levels_selected_beats_identity": beaten,
             "levels_selected_is_oracle": sum(r["is_oracle"] for r in noisy),
             "identity_beaten": beaten > 0}
  return {"best_val_selected": rows, "val_selection_summary": summary}


# ---------------------------------------------------------------------------
# Saliency and localisation (SPEC A6; measured on the generated faces).

def grad_cam(head_fn: Callable[[jax.Array], jax.Array], f: jax.Array, *,
             attribute_chunk: int | None = None) -> jax.Array:
  r"""Grad-CAM (Selvaraju et al. 2017) of every attribute on the feature map.

  .. math::

     \alpha^k_c = \mathrm{mean}_{h,w}\, \partial z_k / \partial f_{hwc},\qquad
     L^k = \mathrm{ReLU}\big(\textstyle\sum_c \alpha^k_c f_c\big)

  For the GAP + dense baseline this is exactly CAM (Zhou et al. 2016).

  Args:
    head_fn: features ``[B, H, W, C]`` → logits ``[B, K]``.
    f: features ``[B, H, W, C]``.
    attribute_chunk: attributes back-propagated side by side (None: all at once).

  Returns:
    ``[B, K, H, W]``, non-negative.
  """
  logits, vjp = jax.vjp(head_fn, f)
  k = logits.shape[-1]
  cot = jnp.broadcast_to(jnp.eye(k, dtype=logits.dtype)[:, None, :], (k,) + logits.shape)
  grads = jax.lax.map(lambda ct: vjp(ct)[0], cot, batch_size=attribute_chunk or k)
  alpha = jnp.mean(grads, axis=(2, 3))  # [K, B, C]
  return nn.relu(jnp.einsum("kbc,bhwc->bkhw", alpha, f))


def attention_map(masks: jax.Array, importance: jax.Array) -> jax.Array:
  r"""HPNet's attention per attribute: :math:`A^k = \sum_c \iota_{kc} M^k_c / \sum_c \iota_{kc}`.

  Args:
    masks: ``[B, H, W, K, C]`` untransformed masks.
    importance: ``[K, C]`` non-negative channel importance (SPEC A6:
      mean mask × |w_kc|), normalised per attribute here.

  Returns:
    ``[B, K, H, W]`` in [0, 1].
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
def _saliency_batch(apply_fn: ApplyFn, variables: dict[str, Any], image: jax.Array,
                    importance: jax.Array | None, *, attribute_chunk: int | None
                    ) -> dict[str, jax.Array]:
  p = variables["params"]
  hp = "heads" in p
  _, aux = _apply(apply_fn, variables, images_to_float(image), train=False, return_masks=hp)
  f = aux["features"]
  maps = {"grad_cam": grad_cam(lambda ff: logits_from_features(p, ff), f,
                               attribute_chunk=attribute_chunk)}
  if hp:
    maps["attention"] = attention_map(aux["masks"], importance)
  return maps


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _masks_batch(apply_fn: ApplyFn, variables: dict[str, Any], image: jax.Array) -> jax.Array:
  """HPNet's untransformed masks ``[B, H, W, K, C]`` (one compiled call, not op by op)."""
  return _apply(apply_fn, variables, images_to_float(image), train=False,
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


def _region_batches(source: Any, batch_size: int, limit: int | None
                    ) -> Iterator[dict[str, np.ndarray]]:
  for batch in eval_batches(source, batch_size, limit):
    if "regions" not in batch:
      raise ValueError("localisation needs a source with ground-truth 'regions' "
                       "(the generated faces)")
    yield batch


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


def saliency_maps(apply_fn: ApplyFn, variables: dict[str, Any], images: ArrayLike,
                  importance: ArrayLike | None = None) -> dict[str, np.ndarray]:
  """``{"grad_cam": [B, K, H, W], "attention": [B, K, H, W] (HPNet)}`` for a few images."""
  imp = None if importance is None else jnp.asarray(importance, jnp.float32)
  return jax.device_get(_saliency_batch(_static(apply_fn), variables, jnp.asarray(images), imp,
                                        attribute_chunk=2))


def localisation(apply_fn: ApplyFn, variables: dict[str, Any], source: Any, *,
                 importance: ArrayLike | None = None, batch_size: int = 16,
                 limit: int | None = None, controls: bool = False
                 ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """How well attention (HPNet) and Grad-CAM (either model) fall on the true regions.

  Needs a source with ``"regions" bool [K, H, W]`` (the generated faces). Scores
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

  Returns:
    ``{map_name: {"all" | "present": localisation_summary}}``.
  """
  if is_hpnet(variables) and importance is None:
    raise ValueError("HPNet localisation needs the channel importance [K, C]")
  imp = None if importance is None else jnp.asarray(importance, jnp.float32)
  total, map_sum, images = None, None, 0
  for batch in _region_batches(source, batch_size, limit):
    # Two attributes per backward pass: memory of two HPNet head passes, and measured
    # 3x faster than one at a time (lax.map with batch_size=1 does not vectorise).
    s, m = _localisation_batch(_static(apply_fn), variables, batch["image"], batch["label"],
                               batch["regions"], batch["valid"], imp, attribute_chunk=2)
    total, map_sum = _add(total, s), _add(map_sum, m)
    images += int(batch["valid"].sum())
    shape = batch["regions"].shape[1:]
  out = _summaries(total)
  if controls:
    priors = {f"{name}_mean_map": m / max(images, 1) for name, m in map_sum.items()}
    priors["centre_prior"] = np.broadcast_to(centre_prior(*shape[1:]), shape)
    out.update(prior_localisation(priors, source, batch_size=batch_size, limit=limit))
  return out


def prior_localisation(priors: dict[str, ArrayLike], source: Any, *, batch_size: int = 16,
                       limit: int | None = None) -> dict[str, dict[str, dict[str, np.ndarray]]]:
  """Scores fixed maps ``{name: [K, H, W]}``, the same map for every image, with the
  metrics and subsets of :func:`localisation` (controls for it: a saliency map that
  beats these knows more than where attributes usually are).

  Returns:
    ``{name: {"all" | "present": localisation_summary}}``.
  """
  p = {name: jnp.asarray(m, jnp.float32) for name, m in priors.items()}
  total = None
  for batch in _region_batches(source, batch_size, limit):
    total = _add(total, _prior_localisation_batch(p, batch["label"], batch["regions"],
                                                  batch["valid"]))
  return _summaries(total)


# ---------------------------------------------------------------------------
# Trained runs on disk: loading, cached statistics, outputs.

@dataclasses.dataclass(frozen=True, eq=False)
class TrainedRun:
  """A trained attribute model restored from its workdir."""
  workdir: str
  config: Any
  model: nn.Module
  variables: dict[str, Any]
  label_names: tuple[str, ...]
  step: int

  @property
  def apply_fn(self) -> ApplyFn:
    return self.model.apply

  @property
  def is_hpnet(self) -> bool:
    return is_hpnet(self.variables)

  @functools.cached_property
  def fingerprint(self) -> str:
    """Short hash of the variables: cached analyses are keyed by it, so a run retrained
    into the same workdir (same step, new weights) is never read from a stale cache."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(self.variables):
      h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:12]

  def split(self, name: str) -> Any:
    from hpjax.hpnet import experiment
    return experiment.open_split(self.config, name)


def load_run(workdir: str) -> TrainedRun:
  """Restores the latest checkpoint of ``workdir`` (:func:`hpjax.attributes.load`).

  Raises:
    ConfigError: ``workdir`` has no checkpoints.
  """
  from hpjax.hpnet import experiment
  from hpjax.core.errors import ConfigError
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"--workdir {workdir}: no checkpoints/ there; train first with "
                     "python -m train.attributes")
  config, state, names = experiment.load(workdir)
  model = experiment.build_model(config, len(names))
  return TrainedRun(workdir, config, model, jax.device_get(state.variables), tuple(names),
                    int(state.step))


def eval_majority_rate(workdir: str | None) -> float | None:
  """``mean_majority_rate`` of ``WORKDIR/eval/attributes.json`` (written by
  :func:`hpjax.attributes.evaluate`): the accuracy of always answering each attribute's
  majority class, averaged over attributes, on that evaluation's images. None when
  there is no workdir, no such file, or the file predates the key. Fig. 7 and 8 draw it
  as a dashed line."""
  path = os.path.join(workdir, "eval", "attributes.json") if workdir else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    rate = json.load(f).get("mean_majority_rate")
  return None if rate is None else float(rate)


def default_baseline(workdir: str) -> str | None:
  """``WORKDIR/baseline`` when it holds a trained run, else None."""
  path = os.path.join(workdir, "baseline")
  return path if os.path.isdir(os.path.join(path, "checkpoints")) else None


def output_dir(workdir: str) -> str:
  return os.path.join(workdir, "analysis")


def run_statistics(run: TrainedRun, *, limit: int | None = 1024, batch_size: int = 32,
                   num_bins: int = 32) -> dict[str, np.ndarray]:
  """:func:`collect_statistics` on the training split, cached in
  ``WORKDIR/analysis/stats-<step>-<limit>-<bins>.npz`` (analyses share one pass)."""
  path = os.path.join(output_dir(run.workdir),
                      f"stats-{run.fingerprint}-{limit if limit else 'all'}-{num_bins}.npz")
  if os.path.exists(path):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  stats = collect_statistics(run.apply_fn, run.variables, run.split("train"),
                             batch_size=batch_size, limit=limit, num_bins=num_bins)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, **stats)
  os.replace(tmp, path)
  return stats


def write_json(path: str, result: dict[str, Any]) -> None:
  """JSON (NumPy converted) written atomically."""
  from hpjax.core.io import write_text
  write_text(path, json.dumps(to_json(result), indent=1))


def to_json(x: Any) -> Any:
  """NumPy → JSON-able (arrays to lists, scalars to Python numbers, NaN to None)."""
  if isinstance(x, dict):
    return {str(k): to_json(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v) for v in x]
  if isinstance(x, np.ndarray):
    return to_json(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not np.isfinite(x):
    return None
  return x


def run_info(run: TrainedRun) -> dict[str, Any]:
  return {"workdir": os.path.abspath(run.workdir), "model": run.config.model, "step": run.step,
          "fingerprint": run.fingerprint,
          "preset": run.config.name, "features": list(run.config.features),
          "image_size": run.config.image_size, "dataset": run.config.dataset}


# ---------------------------------------------------------------------------
# Workdir-level experiments: robustness (Fig. 8) and attention (Figs. 4–6, Table 4).

def run_robustness(workdir: str, *, baseline_workdir: str | None = None,
                   limit: int | None = 256, batch_size: int = 32, seed: int = 0,
                   clip: bool = True, ns=ROBUSTNESS_NS, betas=ROBUSTNESS_BETAS,
                   sigmas=ROBUSTNESS_SIGMAS) -> dict[str, Any]:
  """``python -m evaluate.robustness``: the Fig. 8 grid for HPNet (and the baseline's
  accuracy vs σ as a reference), ``WORKDIR/analysis/robustness.{json,png}``.

  The grid is evaluated on the test split (``best``: the test-split oracle choice)
  and, with the same ``limit``, noise seed and grid, on the validation split, where
  the (n, β) of ``best_val_selected`` are chosen (:func:`validation_selection`);
  ``validation`` holds that grid's ``mean_accuracy [S, N, Bt]`` and ``num_images``.
  """
  from hpjax.hpnet import plots
  from hpjax.core.errors import ConfigError
  run = load_run(workdir)
  if not run.is_hpnet:
    raise ConfigError(f"--workdir {workdir}: holds a {run.config.model} model; the mask "
                     "transformation needs HPNet")
  kw = dict(batch_size=batch_size, limit=limit, seed=seed, clip=clip)
  result = robustness_grid(run.apply_fn, run.variables, run.split("test"), ns=ns, betas=betas,
                           sigmas=sigmas, **kw)
  val = robustness_grid(run.apply_fn, run.variables, run.split("val"), ns=ns, betas=betas,
                        sigmas=sigmas, **kw)
  result.update(validation_selection(val, result))
  result["validation"] = {"split": "val", "mean_accuracy": val["mean_accuracy"],
                          "num_images": val["num_images"]}
  result["run"] = run_info(run)
  baseline_workdir = baseline_workdir or default_baseline(workdir)
  if baseline_workdir:
    b = load_run(baseline_workdir)
    acc = evaluate_perturbations(b.apply_fn, b.variables, b.split("test"), sigmas=sigmas, **kw)
    result["baseline_mean_accuracy"] = acc["accuracy"][:, 0, 0, 0].mean(-1)
    result["baseline_run"] = run_info(b)
  out = output_dir(workdir)
  # The dashed majority-class line, and the rate drawn (None: no line) for the report.
  result["figure_majority_rate"] = eval_majority_rate(workdir)
  result["figures"] = {"robustness": plots.robustness(
      result, os.path.join(out, "robustness.png"), majority_rate=result["figure_majority_rate"])}
  write_json(os.path.join(out, "robustness.json"), result)
  return result


# Attributes shown in Fig. 4 when present (the paper shows Smiling and
# Mouth_Slightly_Open; the others have compact, known regions on the generated faces).
FIG4_ATTRIBUTES = ("Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Black_Hair",
                   "Heavy_Makeup", "Wearing_Hat")


def run_attention(workdir: str, *, baseline_workdir: str | None = None,
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
  """
  from hpjax.hpnet import plots
  from hpjax.core.errors import ConfigError
  run = load_run(workdir)
  if not run.is_hpnet:
    raise ConfigError(f"--workdir {workdir}: holds a {run.config.model} model; attention "
                     "analyses need HPNet")
  names = list(run.label_names)
  stats = run_statistics(run, limit=stats_limit)
  params = run.variables["params"]
  importance = channel_importance(stats["mask_mean"], head_weights(params))
  top_channels = np.argsort(-importance, axis=1, kind="stable")[:, :top]
  corr_c = channel_correlation(stats, "position")
  corr_k = attribute_correlation(stats["mask_mean"])
  out = output_dir(workdir)
  figs = {}

  # Fig. 4: for each shown attribute, the first test image that has it.
  test = run.split("test")
  pool = test.get_batch(np.arange(min(len(test), 512)))
  shown = [a for a in FIG4_ATTRIBUTES if a in names] or names[:6]
  rows, ids = [], []
  for a in shown:
    k = names.index(a)
    hits = np.flatnonzero(pool["label"][:, k] > 0)
    ids.append(int(hits[0]) if len(hits) else 0)
    rows.append((a, ids[-1], [int(c) for c in top_channels[k]]))
  images = pool["image"][ids]
  m = np.asarray(_masks_batch(_static(run.apply_fn), run.variables, images))  # [R, H, W, K, C]
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
      "run": run_info(run), "label_names": names, "stats_images": int(stats["num_images"]),
      "mask_mean": stats["mask_mean"], "importance": importance,
      "top_channels": {n: top_channels[k] for k, n in enumerate(names)},
      "table4": top_correlated(corr_k, names, 5), "attribute_correlation": corr_k,
      "channel_correlation_offdiag_mean": float(corr_c[~np.eye(c, dtype=bool)].mean()),
      "fig4_rows": [{"attribute": a, "test_image": i, "channels": ch} for a, i, ch in rows]}

  if "regions" in pool:
    loc = {}
    s = localisation(run.apply_fn, run.variables, test, importance=importance,
                     batch_size=batch_size, limit=limit, controls=True)
    loc["hpnet_attention"], loc["hpnet_grad_cam"] = s["attention"], s["grad_cam"]
    baseline_workdir = baseline_workdir or default_baseline(workdir)
    if baseline_workdir:
      b = load_run(baseline_workdir)
      loc["baseline_grad_cam"] = localisation(b.apply_fn, b.variables, b.split("test"),
                                              batch_size=batch_size, limit=limit)["grad_cam"]
      result["baseline_run"] = run_info(b)
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
  write_json(os.path.join(out, "attention.json"), result)
  return result
