"""Robustness to input noise under the mask transformation (paper A, docs/papers.md §A4, Fig. 8).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks",
claim that some intentional transformation g(M; n, β) ≠ identity of the attention
masks degrades less under input noise than the untransformed network. The grid of
(n, β) is evaluated at every noise level σ in one compiled pass
(:func:`hpjax.hpnet.perturbation.evaluate_perturbations`); the (n, β) reported per σ is
chosen on the validation split and measured on test (:func:`validation_selection`),
beside the test-split oracle.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from hpjax.core import io, jit
from hpjax.hpnet import perturbation, runs

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


def robustness_grid(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any, *,
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

  References:
    docs/papers.md §A4; paper A Fig. 8.
  """
  ns, betas, sigmas = (np.asarray(a, np.float64) for a in (ns, betas, sigmas))
  out = perturbation.evaluate_perturbations(apply_fn, variables, source, ns=ns, betas=betas,
                                            sigmas=sigmas, batch_size=batch_size, limit=limit,
                                            seed=seed, clip=clip)
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

  References:
    docs/papers.md §A4; paper A Fig. 8.
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


def run(trained: runs.TrainedRun, *, baseline: runs.TrainedRun | None = None,
        limit: int | None = 256, batch_size: int = 32, seed: int = 0, clip: bool = True,
        ns=ROBUSTNESS_NS, betas=ROBUSTNESS_BETAS, sigmas=ROBUSTNESS_SIGMAS) -> dict[str, Any]:
  """``python -m evaluate.robustness``: the Fig. 8 grid for HPNet (and the baseline's
  accuracy vs σ as a reference), ``WORKDIR/analysis/robustness.{json,png}``.

  The grid is evaluated on the test split (``best``: the test-split oracle choice)
  and, with the same ``limit``, noise seed and grid, on the validation split, where
  the (n, β) of ``best_val_selected`` are chosen (:func:`validation_selection`);
  ``validation`` holds that grid's ``mean_accuracy [S, N, Bt]`` and ``num_images``.

  Raises:
    ConfigError: ``trained`` is not HPNet.

  References:
    docs/papers.md §A4; paper A Fig. 8.
  """
  from hpjax.hpnet import plots
  runs.require_hpnet(trained, "the mask transformation needs HPNet")
  kw = dict(batch_size=batch_size, limit=limit, seed=seed, clip=clip)
  result = robustness_grid(trained.apply_fn, trained.variables, trained.split("test"), ns=ns,
                           betas=betas, sigmas=sigmas, **kw)
  val = robustness_grid(trained.apply_fn, trained.variables, trained.split("val"), ns=ns,
                        betas=betas, sigmas=sigmas, **kw)
  result.update(validation_selection(val, result))
  result["validation"] = {"split": "val", "mean_accuracy": val["mean_accuracy"],
                          "num_images": val["num_images"]}
  result["run"] = runs.run_info(trained)
  if baseline is not None:
    acc = perturbation.evaluate_perturbations(baseline.apply_fn, baseline.variables,
                                              baseline.split("test"), sigmas=sigmas, **kw)
    result["baseline_mean_accuracy"] = acc["accuracy"][:, 0, 0, 0].mean(-1)
    result["baseline_run"] = runs.run_info(baseline)
  out = runs.output_dir(trained.workdir)
  # The dashed majority-class line, and the rate drawn (None: no line) for the report.
  result["figure_majority_rate"] = runs.eval_majority_rate(trained.workdir)
  result["figures"] = {"robustness": plots.robustness(
      result, os.path.join(out, "robustness.png"), majority_rate=result["figure_majority_rate"])}
  io.write_json(os.path.join(out, "robustness.json"), result)
  return result
