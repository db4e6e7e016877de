r"""Human predictability as a measured number (paper A; docs/papers.md §A7).

Kimura & Tanaka 2019 define the human predictability of a model as "the easiness for
the human to predict the change of the inference when perturbing the model", only
in words. Here it becomes a rank correlation: for a family of perturbations,
*predict* each attribute's change from statistics the model exposes, computed on
training images **before** any perturbation is run; then run the perturbations on
test images and report Spearman's ρ between predicted and observed changes.

Predictors (``stats`` from :func:`hpjax.hpnet.statistics.collect_statistics`; ``prune_accuracy``
makes its own pass over the same training images):

* **Pruning a channel set S** (``prune_one``: each of the C channels;
  ``prune_random``: random sets). The mean logit of attribute k is
  :math:`\bar z_k = \sum_c w_{kc}\, \mathbb{E}[\mathrm{GAP}(M^k_c f_c)] + b_k` for HPNet
  and :math:`\sum_c w_{kc}\,\mathbb{E}[\mathrm{GAP} f_c] + b_k` for the baseline, so

  .. math::

     \widehat{\Delta \bar z_k}(S) = -\sum_{c \in S} w_{kc}\,
     \mathbb{E}[\mathrm{GAP}(M^k_c f_c)]

  (baseline: ``M = 1``). For the baseline this is exact up to the train/test shift;
  for HPNet it is the *direct path* only: zeroing f_c also changes the other
  channels' masks through the 1×1 mask conv, which the predictor ignores.
  The accuracy-damage predictor is the expected size of the per-image logit shift
  relative to the logit's spread: :math:`\sum_{c\in S} |w_{kc}|\,
  \mathbb{E}|\mathrm{GAP}(M^k_c f_c)| / \mathrm{sd}(z_k)`.

* **Mask transformation** ``transform`` (HPNet only; the baseline has no masks and
  does not change). From the binned attention statistics
  :math:`H_{kcj} = \mathbb{E}[\mathrm{GAP}(f_c\, 1\{M^k_c \in \text{bin } j\})]`,

  .. math::

     \widehat{\Delta \bar z_k}(n, \beta) = \sum_c w_{kc}
     \sum_j (g(m_j; n, \beta) - m_j)\, H_{kcj}

  with :math:`m_j` the bin centres: exact up to binning, because the transform acts
  on the heads only and the logit is linear in g(M) given f.

* **Accuracy under pruning** ``prune_accuracy`` (HPNet and the baseline; the channel
  sets of ``prune_random``, so the observed side is the same runs): each attribute's
  *accuracy* drop is predicted by simulating the pruning on training images with the
  unperturbed model's per-image logit terms (:func:`hpjax.hpnet.model.logit_terms`,
  :func:`hpjax.hpnet.perturbation.direct_path_accuracy`),

  .. math::

     \widehat{\mathrm{acc}}_k(S) = \mathrm{mean}_{x \in \text{train}}\,
     1\{\mathrm{sign}(z_k(x) - \textstyle\sum_{c \in S} t_{kc}(x)) = y_k(x)\},\quad
     t_{kc} = w_{kc}\,\mathrm{GAP}(M^k_c f_c)(x)

  (baseline: :math:`t_{kc} = w_{kc}\,\mathrm{GAP}(f_c)(x)`, its linear GAP head's
  channel contributions), and the predicted damage is
  :math:`\widehat{\mathrm{acc}}_k(\emptyset) - \widehat{\mathrm{acc}}_k(S)`.

Observed changes are of each attribute's mean logit and accuracy on the test
images. Scores: ``spearman_logit`` (predicted vs observed Δ mean logit over all
(perturbation, attribute) pairs) and ``spearman_accuracy`` (predicted damage vs
observed accuracy drop). What each family's score says:

* ``transform`` ``spearman_logit`` is **near 1 by construction**: (n, β) act on the
  masks only, f is unchanged, and the logit is linear in g(M) for fixed f, so the
  predictor is the observed change up to binning (and train/test shift). It checks the
  bookkeeping, not how predictable the model is.
* ``prune_one`` / ``prune_random`` ``spearman_logit``: for the baseline, also exact up
  to the train/test shift (its head is linear in GAP(f)); for HPNet it measures how
  much of the change the direct path explains, i.e. how little pruning one channel
  disturbs the other channels' masks. ``spearman_accuracy`` of these families ranks a
  crude proxy (expected size of the logit shift / logit spread) against the accuracy
  drop.
* ``prune_accuracy`` ``spearman_accuracy``: the answer is not built in. Accuracy is a
  thresholded, label-dependent function of the per-image logits, and the simulation
  runs on other images (training) than the observation (test). For the baseline the
  simulated per-image logits are exact, so its score measures only how well the
  accuracy changes carry over from training to test images; for HPNet it also pays
  for the masks' response to the pruning, which the simulation leaves out. Compare
  the two models on this family. ``spearman_accuracy_within_size`` averages ρ within
  the sets of one size, so "larger sets hurt more" earns nothing.

The module also holds the paper's own illustration (Sec. "Example of Simple
Regression Models"): the same data fitted with monomials, Legendre polynomials and
a Fourier series; perturbing one coefficient changes the function by
:math:`\delta\,\phi_j`, and its *leakage* — how much that change projects onto the
other basis directions in :math:`L^2([-1, 1])` — is
:math:`\sum_{i \ne j} \cos^2(\phi_j, \phi_i)`: 0 for an orthogonal basis, large for
monomials, whose change a reader of the coefficient table cannot attribute to one term.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.typing import ArrayLike

from hpjax.core import io, jit
from hpjax.core.stats import spearman
from hpjax.hpnet import model as model_lib
from hpjax.hpnet import perturbation, runs
from hpjax.hpnet.transform import mask_transform

FAMILIES = ("prune_one", "prune_random", "prune_accuracy", "transform")
TRANSFORM_NS = (0.5, 1.0, 2.0, 3.0, 4.0)
TRANSFORM_BETAS = (0.0, 0.1, 0.25, 0.5)


# ---------------------------------------------------------------------------
# Predictors.

def channel_contributions(stats: dict[str, np.ndarray], params: dict[str, Any]
                          ) -> tuple[np.ndarray, np.ndarray]:
  """``(signed [K, C], damage [K, C])``: each channel's direct share of the mean logit
  (:math:`w_{kc} E[\\mathrm{GAP}(M f_c)]`) and its expected absolute per-image share
  divided by the logit's standard deviation."""
  w = model_lib.head_weights(params)
  scale = np.maximum(np.asarray(stats["logit_std"]), 1e-12)[:, None]
  if model_lib.head_params(params) is not None:
    return w * stats["contribution"], np.abs(w) * stats["contribution_abs"] / scale
  return w * stats["gap_mean"][None, :], np.abs(w) * stats["gap_abs_mean"][None, :] / scale


def predict_pruning(stats: dict[str, np.ndarray], params: dict[str, Any], masks: ArrayLike
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Predicted ``(Δ mean logit [M, K], damage [M, K])`` for keep masks ``[M, C]``.

  References:
    docs/papers.md §A7.
  """
  signed, damage = channel_contributions(stats, params)
  removed = 1.0 - np.asarray(masks, np.float64)
  return -removed @ signed.T, removed @ damage.T


def predict_transform(stats: dict[str, np.ndarray], params: dict[str, Any], ns: ArrayLike,
                      betas: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """Predicted ``(Δ mean logit [N, Bt, K], damage [N, Bt, K])`` of HPNet under (n, β).

  References:
    docs/papers.md §A7.
  """
  binned = np.asarray(stats["binned"], np.float64)  # [K, C, J]
  j = binned.shape[-1]
  centres = (np.arange(j) + 0.5) / j
  ns, betas = np.asarray(ns, np.float64), np.asarray(betas, np.float64)
  g = np.asarray(jax.vmap(jax.vmap(lambda n, b: mask_transform(centres, n=n, beta=b),
                                   (None, 0)), (0, None))(ns, betas), np.float64)  # [N, Bt, J]
  w = model_lib.head_weights(params)
  # Σ_c w_kc Σ_j (g_j - m_j) H_kcj
  delta = np.einsum("kc,kcj,nbj->nbk", w, binned, g - centres)
  scale = np.maximum(np.asarray(stats["logit_std"]), 1e-12)
  return delta, np.abs(delta) / scale


def predict_pruning_accuracy(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any,
                             masks: ArrayLike, *, batch_size: int = 32, limit: int | None = None
                             ) -> tuple[np.ndarray, dict[str, Any]]:
  """Predicted accuracy drop ``[M, K]`` for keep masks ``[M, C]``, simulated on ``source``
  (training images) by :func:`hpjax.hpnet.perturbation.direct_path_accuracy`, and the
  simulation.

  References:
    docs/papers.md §A7.
  """
  sim = perturbation.direct_path_accuracy(apply_fn, variables, source, masks,
                                          batch_size=batch_size, limit=limit)
  return sim["base_accuracy"][None, :] - sim["accuracy"], sim


def random_sets(num_channels: int, draws: int, seed: int = 0,
                fractions: Sequence[float] = (0.125, 0.25, 0.5)) -> np.ndarray:
  """Keep masks ``[draws, C]`` pruning random sets whose sizes cycle through ``fractions`` of C."""
  rng = np.random.default_rng(seed)
  masks = np.ones((draws, num_channels), np.float32)
  for d in range(draws):  # a handful of draws; each needs its own permutation anyway
    size = max(1, int(round(fractions[d % len(fractions)] * num_channels)))
    masks[d, rng.permutation(num_channels)[:size]] = 0.0
  return masks


def spearman_within(predicted: ArrayLike, observed: ArrayLike, groups: ArrayLike
                    ) -> float | None:
  """Mean over groups of Spearman's ρ (:func:`hpjax.core.stats.spearman`) within each
  group (rows of ``[M, K]`` arrays, ``groups [M]``); groups where ρ is undefined are left
  out (None if all are)."""
  p, o, g = np.asarray(predicted), np.asarray(observed), np.asarray(groups)
  rhos = [spearman(p[g == v], o[g == v]) for v in np.unique(g)]
  rhos = [r for r in rhos if r is not None]
  return float(np.mean(rhos)) if rhos else None


def score_model(run: runs.TrainedRun, stats: dict[str, np.ndarray], source: Any, *,
                random_draws: int = 12, seed: int = 0, ns: Sequence[float] = TRANSFORM_NS,
                betas: Sequence[float] = TRANSFORM_BETAS, batch_size: int = 32,
                limit: int | None = None, mask_chunk: int = 2,
                train_limit: int | None = None) -> dict[str, Any]:
  """Predicts, runs and scores every perturbation family for one trained model (the
  ``prune_accuracy`` simulation on the first ``train_limit`` training images)."""
  return score(run.apply_fn, run.variables, stats, source, random_draws=random_draws, seed=seed,
               ns=ns, betas=betas, batch_size=batch_size, limit=limit, mask_chunk=mask_chunk,
               train_source=run.split("train"), train_limit=train_limit)


def score(apply_fn: jit.ApplyFn, variables: dict[str, Any], stats: dict[str, np.ndarray],
          source: Any, *, random_draws: int = 12, seed: int = 0,
          ns: Sequence[float] = TRANSFORM_NS, betas: Sequence[float] = TRANSFORM_BETAS,
          batch_size: int = 32, limit: int | None = None, mask_chunk: int = 2,
          families: Sequence[str] = FAMILIES, train_source: Any | None = None,
          train_limit: int | None = None) -> dict[str, Any]:
  """Predicted vs observed changes and their Spearman ρ, per perturbation family.

  Args:
    apply_fn, variables: the frozen model.
    stats: its :func:`hpjax.hpnet.statistics.collect_statistics` (training images).
    source: where the perturbations are run (test images).
    random_draws: random channel sets of the ``prune_random`` and ``prune_accuracy``
      families (the same sets).
    ns, betas: the ``transform`` grid (the identity is left out).
    families: which of :data:`FAMILIES` to run.
    train_source, train_limit: labelled images (and how many) on which
      ``prune_accuracy`` simulates the pruning; without ``train_source`` that family
      is ``{"applicable": False}``.

  Returns:
    ``{family: {"predicted", "observed", "predicted_damage", "observed_drop",
    "spearman_logit", "spearman_accuracy", "num_perturbations"}, "base_accuracy",
    "num_images"}``; ``transform`` is ``{"applicable": False}`` for the baseline.
    ``prune_accuracy`` has no logit prediction (``spearman_logit`` None, no
    ``predicted``/``observed``): ``predicted_damage`` is the simulated accuracy drop
    ``[M, K]``, ``observed_drop`` the test one, and it adds
    ``spearman_accuracy_within_size``, ``set_sizes [M]``, ``predicted_base_accuracy [K]``
    (the simulation's unpruned accuracy) and ``predictor_images``.

  References:
    docs/papers.md §A7.
  """
  params = variables["params"]
  c = model_lib.head_weights(params).shape[1]
  set_masks = {}
  if "prune_one" in families:
    set_masks["prune_one"] = 1.0 - np.eye(c, dtype=np.float32)
  if "prune_random" in families or "prune_accuracy" in families:
    set_masks["random"] = random_sets(c, random_draws, seed)
  masks = np.concatenate([np.ones((1, c), np.float32)] + list(set_masks.values()))
  out = perturbation.evaluate_perturbations(apply_fn, variables, source, channel_masks=masks,
                                            batch_size=batch_size, limit=limit,
                                            mask_chunk=mask_chunk)
  logit = out["mean_logit"][0, :, 0, 0]  # [M, K]
  acc = out["accuracy"][0, :, 0, 0]
  result: dict[str, Any] = {"base_accuracy": acc[0], "base_mean_logit": logit[0],
                            "num_images": out["num_images"]}
  rows, start = {}, 1
  for name, m in set_masks.items():
    rows[name] = slice(start, start + len(m))
    start += len(m)
  for fam, name in (("prune_one", "prune_one"), ("prune_random", "random")):
    if fam in families:
      sl = rows[name]
      pred, dmg = predict_pruning(stats, params, set_masks[name])
      result[fam] = _family(pred, logit[sl] - logit[0], dmg, acc[0] - acc[sl])
  if "prune_accuracy" in families:
    if train_source is None:
      result["prune_accuracy"] = {"applicable": False,
                                  "why": "needs labelled training images (train_source) for "
                                         "the simulation"}
    else:
      m = set_masks["random"]
      pred, sim = predict_pruning_accuracy(apply_fn, variables, train_source, m,
                                           batch_size=batch_size, limit=train_limit)
      drop = acc[0] - acc[rows["random"]]
      sizes = (c - m.sum(axis=1)).astype(np.int64)
      result["prune_accuracy"] = {
          "applicable": True, "predicted_damage": pred, "observed_drop": drop,
          "spearman_logit": None, "spearman_accuracy": spearman(pred, drop),
          "spearman_accuracy_within_size": spearman_within(pred, drop, sizes),
          "set_sizes": sizes, "predicted_base_accuracy": sim["base_accuracy"],
          "predictor_images": sim["num_images"], "num_perturbations": int(len(m))}
  if "transform" in families:
    if model_lib.head_params(params) is None:
      result["transform"] = {"applicable": False,
                             "why": "the baseline has no attention masks; (n, β) change nothing"}
    else:
      t = perturbation.evaluate_perturbations(apply_fn, variables, source, ns=ns, betas=betas,
                                              batch_size=batch_size, limit=limit)
      tl, ta = t["mean_logit"][0, 0], t["accuracy"][0, 0]  # [N, Bt, K]
      pred, dmg = predict_transform(stats, params, ns, betas)
      keep = ~((np.asarray(ns)[:, None] == 1.0) & (np.asarray(betas)[None, :] == 0.0))
      result["transform"] = _family(pred[keep], tl[keep] - logit[0], dmg[keep],
                                    acc[0] - ta[keep])
      result["transform"]["grid"] = [[float(n), float(b)] for n in ns for b in betas
                                     if not (n == 1.0 and b == 0.0)]
  return result


def _family(pred, obs, dmg, drop) -> dict[str, Any]:
  return {"applicable": True, "predicted": pred, "observed": obs, "predicted_damage": dmg,
          "observed_drop": drop, "spearman_logit": spearman(pred, obs),
          "spearman_accuracy": spearman(dmg, drop), "num_perturbations": int(len(pred))}


# ---------------------------------------------------------------------------
# The paper's regression example: leakage of a coefficient perturbation.

BASES = ("monomial", "legendre", "fourier")


def basis_matrix(name: str, num_terms: int, x: ArrayLike) -> np.ndarray:
  r"""Basis functions at ``x``: ``[len(x), num_terms]``.

  ``monomial``: :math:`x^n`; ``legendre``: :math:`P_n(x)`; ``fourier``:
  :math:`\tfrac12, \cos \pi x, \sin \pi x, \cos 2\pi x, \ldots` (paper Eq. 3, 4, 7).

  References:
    docs/papers.md §A7; paper A Eq. 3–7.
  """
  x = np.asarray(x, np.float64)
  if name == "monomial":
    return x[:, None] ** np.arange(num_terms)
  if name == "legendre":
    return np.polynomial.legendre.legvander(x, num_terms - 1)
  if name == "fourier":
    cols = [np.full_like(x, 0.5)]
    for m in range(1, num_terms // 2 + 1):
      cols += [np.cos(np.pi * m * x), np.sin(np.pi * m * x)]
    return np.stack(cols[:num_terms], axis=1)
  raise ValueError(f"basis must be one of {BASES}, got {name!r}")


def gram_matrix(name: str, num_terms: int, num_nodes: int = 256) -> np.ndarray:
  r""":math:`G_{ij} = \int_{-1}^{1} \phi_i \phi_j\,dx` by Gauss–Legendre quadrature
  (exact for the polynomial bases up to degree ``2 * num_nodes - 1``)."""
  x, w = np.polynomial.legendre.leggauss(num_nodes)
  phi = basis_matrix(name, num_terms, x)
  return phi.T @ (w[:, None] * phi)


def leakage(gram: ArrayLike) -> np.ndarray:
  r"""Per coefficient j: :math:`\sum_{i \ne j} \cos^2(\phi_j, \phi_i)` in the Gram
  matrix's inner product — how much the change :math:`\delta\phi_j` from perturbing
  coefficient j shows up along the other basis directions. 0 iff ``gram`` is diagonal.

  References:
    docs/papers.md §A7; paper A Eq. 3–7.
  """
  g = np.asarray(gram, np.float64)
  d = np.sqrt(np.diag(g))
  cos2 = (g / np.outer(d, d)) ** 2
  return cos2.sum(axis=1) - np.diag(cos2)


def regression_example(num_terms: int = 7, *, num_points: int = 200, noise: float = 0.1,
                       perturbed_index: int = 2, delta: float = 0.5, seed: int = 0
                       ) -> dict[str, Any]:
  """Fits noisy samples of :math:`y = e^{x} \\sin 3x` on [−1, 1] with each basis,
  perturbs coefficient ``perturbed_index`` by ``delta`` and measures the leakage.

  Returns:
    ``{"bases": {name: {"coefficients", "fit", "perturbed", "leakage" [D],
    "mean_leakage", "perturbed_leakage", "rmse"}}, "x", "x_data", "y_data", ...}``.

  References:
    docs/papers.md §A7; paper A Eq. 3–7.
  """
  rng = np.random.default_rng(seed)
  xd = np.sort(rng.uniform(-1.0, 1.0, num_points))
  yd = np.exp(xd) * np.sin(3.0 * xd) + noise * rng.standard_normal(num_points)
  x = np.linspace(-1.0, 1.0, 201)
  out: dict[str, Any] = {"x": x, "x_data": xd, "y_data": yd, "num_terms": num_terms,
                         "perturbed_index": perturbed_index, "delta": delta, "bases": {}}
  for name in BASES:
    coef, *_ = np.linalg.lstsq(basis_matrix(name, num_terms, xd), yd, rcond=None)
    phi = basis_matrix(name, num_terms, x)
    bumped = coef.copy()
    bumped[perturbed_index] += delta
    leak = leakage(gram_matrix(name, num_terms))
    resid = basis_matrix(name, num_terms, xd) @ coef - yd
    out["bases"][name] = {"coefficients": coef, "fit": phi @ coef, "perturbed": phi @ bumped,
                          "leakage": leak, "mean_leakage": float(leak.mean()),
                          "perturbed_leakage": float(leak[perturbed_index]),
                          "rmse": float(np.sqrt(np.mean(resid ** 2)))}
  return out


# ---------------------------------------------------------------------------
# The analysis.

def run(trained: runs.TrainedRun, *, baseline: runs.TrainedRun | None = None,
        limit: int | None = 256, stats_limit: int | None = 1024, random_draws: int = 12,
        seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
  """``python -m evaluate.predictability``: scores for HPNet and (when given) the
  baseline, the regression example, ``WORKDIR/analysis/predictability.{json,png}`` and
  ``regression.png`` of ``trained``'s workdir.

  References:
    docs/papers.md §A7.
  """
  from hpjax.hpnet import plots
  models = {"hpnet": trained}
  if baseline is not None:
    models["baseline"] = baseline
  out_dir = runs.output_dir(trained.workdir)
  result: dict[str, Any] = {"models": {}, "settings": {
      "limit": limit, "stats_limit": stats_limit, "random_draws": random_draws, "seed": seed,
      "transform_ns": list(TRANSFORM_NS), "transform_betas": list(TRANSFORM_BETAS)}}
  panels = []
  for name, r in models.items():
    stats = runs.run_statistics(r, limit=stats_limit, batch_size=batch_size)
    s = score_model(r, stats, r.split("test"), random_draws=random_draws, seed=seed,
                    batch_size=batch_size, limit=limit, train_limit=stats_limit)
    result["models"][name] = {"run": runs.run_info(r), **s}
    for fam in FAMILIES:
      if s[fam].get("applicable") and "predicted" in s[fam]:  # logit panels only
        panels.append({"model": name, "family": fam, "predicted": s[fam]["predicted"],
                       "observed": s[fam]["observed"], "spearman": s[fam]["spearman_logit"]})
  result["figures"] = {"predictability": plots.predictability(
      panels, os.path.join(out_dir, "predictability.png"))}
  example = regression_example()
  result["regression"] = {
      **{k: v for k, v in example.items() if k not in ("x", "x_data", "y_data", "bases")},
      "bases": {name: {k: v for k, v in b.items() if k not in ("fit", "perturbed")}
                for name, b in example["bases"].items()}}
  result["figures"]["regression"] = plots.regression_leakage(
      example, os.path.join(out_dir, "regression.png"))
  io.write_json(os.path.join(out_dir, "predictability.json"), result)
  return result
