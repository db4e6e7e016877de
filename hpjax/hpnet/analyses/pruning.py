r"""Semantic channel pruning (paper A, Fig. 3 and Fig. 7; docs/papers.md §A5).

Kimura & Tanaka 2019, "New Perspective of Interpretability of Deep Neural Networks":
channels of the feature map f whose responses are highly correlated play the same
role, so one of each such pair can go.

1. Correlate the C channels of the frozen extractor on training data
   (:func:`hpjax.hpnet.statistics.channel_correlation`: over image × position by default).
2. Scan channel pairs by descending correlation; for a pair where neither channel
   is pruned yet, prune the one whose producing filter (the extractor's last conv)
   has the lower L1 norm :math:`\|K_{\cdot,\cdot,\cdot,c}\|_1`.

The paper states the rule both ways (Sec. "Semantic Channel Pruning": "prune the
channel with the lower L1-norm"; Sec. "Channel Pruning Experiment": "the channel
with the higher L1-norm is pruned"); docs/papers.md §A5 reads it as *lower*, the usual
magnitude criterion, and ``prune="higher"`` gives the other reading.

Selection is scores → order → apply, as separate small functions: an *order* is a
permutation of the C channels in the sequence they are pruned, so "prune k" is its
first k entries and every k shares one scan. Pruning exists in two forms with the
same outputs (tested): a keep mask fed to the model's ``channel_mask`` (one
compilation for every count), and physical removal
(:func:`hpjax.hpnet.model.prune_params`, a smaller model that really runs faster).

The experiment (Fig. 7, :func:`run`): accuracy vs number of pruned channels for the
semantic, L1 and random orders, on HPNet and the baseline, and a physical check that
removal reproduces the mask's accuracy.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from jax.typing import ArrayLike

from hpjax.core import io, jit
from hpjax.hpnet import model as model_lib
from hpjax.hpnet import perturbation, runs, statistics

METHODS = ("semantic", "l1", "random")


# ---------------------------------------------------------------------------
# Orders (scores → permutation).

def semantic_order(corr: ArrayLike, filter_l1: ArrayLike, *, prune: str = "lower",
                   absolute: bool = False) -> np.ndarray:
  """The semantic pruning order of the C channels (paper Fig. 3).

  Pairs ``(i, j), i < j`` are scanned by descending correlation; ties in
  correlation keep ``(i, j)`` lexicographic order. For a pair where neither
  channel is pruned, the channel whose filter has the lower L1 norm is pruned (the
  higher with ``prune="higher"``); on equal norms the lower index is pruned. One
  full scan prunes all channels but one (two survivors would form an unscanned
  pair), so the order is complete; the survivor comes last.

  Args:
    corr: ``[C, C]`` channel correlation (symmetric).
    filter_l1: ``[C]`` L1 norms of the producing filters.
    prune: ``"lower"`` (docs/papers.md §A5) or ``"higher"`` L1 norm is pruned within a pair.
    absolute: rank pairs by ``|corr|`` (anti-correlated channels are redundant too).

  Returns:
    ``int [C]``: channels in pruning order.

  >>> corr = np.array([[1, .9, .5, .1], [.9, 1, .1, .1], [.5, .1, 1, .9], [.1, .1, .9, 1]])
  >>> semantic_order(corr, np.array([1., 2., 3., 3.])).tolist()
  [0, 2, 1, 3]

  References:
    docs/papers.md §A5; paper A Fig. 3.
  """
  corr = np.asarray(corr, np.float64)
  l1 = np.asarray(filter_l1, np.float64)
  c = len(l1)
  if corr.shape != (c, c):
    raise ValueError(f"expected corr of shape [{c}, {c}] to match filter_l1 [{c}], "
                     f"got {corr.shape}")
  if prune not in ("lower", "higher"):
    raise ValueError(f"prune must be 'lower' or 'higher', got {prune!r}")
  score = np.abs(corr) if absolute else corr
  i, j = np.triu_indices(c, 1)
  s = np.nan_to_num(score[i, j], nan=-np.inf)
  scan = np.lexsort((j, i, -s))  # last key is primary: descending score, then (i, j)
  key = l1 if prune == "lower" else -l1
  pruned = np.zeros(c, bool)
  order = []
  # A greedy scan is inherently sequential (each decision depends on the previous
  # ones); it touches C(C-1)/2 pairs of NumPy scalars, milliseconds for C = 128.
  for a, b in zip(i[scan], j[scan]):
    if pruned[a] or pruned[b]:
      continue
    victim = a if key[a] <= key[b] else b  # a < b: ties prune the lower index
    pruned[victim] = True
    order.append(victim)
    if len(order) == c - 1:
      break
  order.extend(np.flatnonzero(~pruned).tolist())
  return np.asarray(order, np.int64)


def l1_order(filter_l1: ArrayLike) -> np.ndarray:
  """Smallest filters first (Li et al. 2017); ties by lower index (stable sort).

  References:
    docs/papers.md §A5; paper A Fig. 7.
  """
  return np.argsort(np.asarray(filter_l1, np.float64), kind="stable")


def random_orders(num_channels: int, draws: int, seed: int = 0) -> np.ndarray:
  """``[draws, C]`` uniformly random pruning orders (argsort of i.i.d. uniforms, seeded).

  References:
    docs/papers.md §A5; paper A Fig. 7.
  """
  return np.argsort(np.random.default_rng(seed).random((draws, num_channels)), axis=1,
                    kind="stable").astype(np.int64)


def keep_masks(order: ArrayLike, counts: Sequence[int]) -> np.ndarray:
  """Keep masks ``[len(counts), C]`` (1 keep, 0 prune): count k prunes ``order[:k]``."""
  order = np.asarray(order)
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  return (rank[None, :] >= np.asarray(counts)[:, None]).astype(np.float32)


def kept_channels(order: ArrayLike, num_pruned: int) -> np.ndarray:
  """Channels that survive pruning ``order[:num_pruned]``, ascending (original order kept)."""
  order = np.asarray(order)
  if not 0 <= num_pruned < len(order):
    raise ValueError(f"num_pruned must be in [0, {len(order) - 1}] (at least one channel "
                     f"stays), got {num_pruned}")
  return np.sort(order[num_pruned:])


# ---------------------------------------------------------------------------
# Physical removal.


def prune(variables: dict[str, Any], order: ArrayLike, num_pruned: int
          ) -> tuple[dict[str, Any], np.ndarray]:
  """Physically prunes the first ``num_pruned`` channels of ``order``.

  Returns:
    ``(new_variables, kept)`` with ``kept`` the surviving channel ids (ascending).
  """
  kept = kept_channels(order, num_pruned)
  return model_lib.prune_params(variables, kept), kept


# ---------------------------------------------------------------------------
# The experiment (Fig. 7).

def default_counts(num_channels: int, num_counts: int = 8) -> list[int]:
  """``num_counts`` evenly spaced pruned-channel counts in ``[0, C - 1]``, starting at 0."""
  return sorted({int(round(x)) for x in np.linspace(0, num_channels - num_channels / num_counts,
                                                    num_counts)})


def orders_for(variables: dict[str, Any], stats: dict[str, np.ndarray], *,
               reading: str = "position", draws: int = 5, seed: int = 0,
               prune: str = "lower") -> dict[str, np.ndarray]:
  """``{"semantic": [C], "l1": [C], "random": [draws, C]}`` for a trained model."""
  l1 = model_lib.filter_l1_norms(variables)
  corr = statistics.channel_correlation(stats, reading)
  return {"semantic": semantic_order(corr, l1, prune=prune), "l1": l1_order(l1),
          "random": random_orders(len(l1), draws, seed)}


def accuracy_curves(apply_fn: jit.ApplyFn, variables: dict[str, Any], source: Any,
                    orders: dict[str, np.ndarray], counts: Sequence[int], *,
                    batch_size: int = 32, limit: int | None = None, mask_chunk: int = 2
                    ) -> dict[str, Any]:
  """Mean accuracy vs number of pruned channels for each order (masking form).

  Every (order, count) keep mask is evaluated in one streamed pass of one compiled
  function; identical masks (count 0 of every order, say) are evaluated once.

  Returns:
    ``{"counts", "semantic": [n], "l1": [n], "random_mean": [n], "random_std": [n],
    "random": [draws, n], "per_attribute": {method: [n, K] (random: mean over draws)},
    "num_images"}`` (accuracies in [0, 1]).

  References:
    docs/papers.md §A5; paper A Fig. 7.
  """
  counts = list(counts)
  names, blocks = [], []
  for name in ("semantic", "l1"):
    names.append(name)
    blocks.append(keep_masks(orders[name], counts)[None])
  rnd = np.stack([keep_masks(o, counts) for o in orders["random"]])  # [draws, n, C]
  all_masks = np.concatenate(blocks + [rnd], axis=0)  # [2 + draws, n, C]
  flat = all_masks.reshape(-1, all_masks.shape[-1])
  unique, inverse = np.unique(flat, axis=0, return_inverse=True)
  out = perturbation.evaluate_perturbations(apply_fn, variables, source, channel_masks=unique,
                                            batch_size=batch_size, limit=limit,
                                            mask_chunk=mask_chunk)
  acc = out["accuracy"][0, :, 0, 0][inverse.reshape(-1)].reshape(all_masks.shape[:2] + (-1,))
  mean = acc.mean(axis=-1)  # [2 + draws, n]
  return {"counts": counts, "semantic": mean[0], "l1": mean[1],
          "random": mean[2:], "random_mean": mean[2:].mean(0),
          "random_std": mean[2:].std(0, ddof=1) if len(mean) > 3 else np.zeros(len(counts)),
          "per_attribute": {"semantic": acc[0], "l1": acc[1], "random": acc[2:].mean(0)},
          "num_images": out["num_images"], "masks_evaluated": int(len(unique))}


def _pruned(curves: dict[str, Any]) -> np.ndarray:
  """``bool [n]``: the counts that prune something (> 0)."""
  return np.asarray(curves["counts"]) > 0


def area_gap(curves: dict[str, Any], method: str = "semantic") -> float:
  """Mean over the counts > 0 of (method − random mean) accuracy: > 0 when ``method``
  hurts less.

  Count 0 is left out: nothing is pruned there, every method is the same model and
  the difference is 0 by construction, which would only dilute the gap. NaN when no
  count is > 0.

  References:
    docs/papers.md §A5; paper A Fig. 7.
  """
  keep = _pruned(curves)
  if not keep.any():
    return float("nan")
  return float(np.mean((np.asarray(curves[method]) - np.asarray(curves["random_mean"]))[keep]))


def random_spread(curves: dict[str, Any]) -> dict[str, Any]:
  """How much random pruning varies from draw to draw, over the counts > 0 (the counts
  :func:`area_gap` averages), to set a gap against.

  Returns:
    ``{"random_draws": int, "random_std_mean": mean over counts > 0 of the std across
    draws of the mean accuracy (``random_std``), "random_sem_mean": the same divided by
    sqrt(draws), the standard error of ``random_mean``, "gap_counts": the counts > 0}``
    (NaN means when no count is > 0).
  """
  keep = _pruned(curves)
  draws = int(np.shape(curves["random"])[0])
  std = float(np.mean(np.asarray(curves["random_std"])[keep])) if keep.any() else float("nan")
  return {"random_draws": draws, "random_std_mean": std,
          "random_sem_mean": float(std / np.sqrt(max(draws, 1))),
          "gap_counts": [int(k) for k in np.asarray(curves["counts"])[keep]]}


def run_model(apply_fn, variables, stats, source, *, counts=None, draws: int = 5, seed: int = 0,
              reading: str = "position", prune: str = "lower", batch_size: int = 32,
              limit: int | None = None) -> dict[str, Any]:
  """Orders + curves for one model; the baseline (no masks) falls back to ``position``.

  Returns:
    :func:`accuracy_curves` plus the settings, the orders, ``semantic_minus_random``
    and ``l1_minus_random`` (:func:`area_gap`: means over the counts > 0) and
    :func:`random_spread` (``random_draws``, ``random_std_mean``, ``random_sem_mean``,
    ``gap_counts``).
  """
  if reading == "attention" and not model_lib.is_hpnet(variables):
    reading = "position"
  orders = orders_for(variables, stats, reading=reading, draws=draws, seed=seed, prune=prune)
  c = len(orders["l1"])
  counts = default_counts(c) if counts is None else [int(k) for k in counts if 0 <= k < c]
  curves = accuracy_curves(apply_fn, variables, source, orders, counts, batch_size=batch_size,
                           limit=limit)
  return {**curves, "reading": reading, "prune": prune, "draws": draws, "seed": seed,
          "semantic_order": orders["semantic"], "l1_order": orders["l1"],
          "semantic_minus_random": area_gap(curves, "semantic"),
          "l1_minus_random": area_gap(curves, "l1"), **random_spread(curves)}


def run(trained: runs.TrainedRun, *, baseline: runs.TrainedRun | None = None,
        counts: Sequence[int] | None = None, draws: int = 5, seed: int = 0,
        reading: str = "position", prune: str = "lower", limit: int | None = 256,
        stats_limit: int | None = 1024, batch_size: int = 32,
        time_physical: bool = True) -> dict[str, Any]:
  """``python -m evaluate.prune``: Fig. 7 for HPNet and (when given) the baseline;
  ``WORKDIR/analysis/pruning.{json,png}`` of ``trained``'s workdir.

  Args:
    trained: the HPNet run.
    baseline: the baseline run, or None.
    counts: numbers of pruned channels (default: 8 evenly spaced in [0, C)).
    draws: random orders (≥ 5 for a meaningful spread).
    reading: channel-correlation reading (``statistics.READINGS``).
    prune: within a pair prune the ``"lower"`` (the default, docs/papers.md §A5) or
      ``"higher"`` L1 filter.
    limit: test images evaluated; stats_limit: training images correlated.
    time_physical: also time the physically pruned model against the full one.

  ``figure_majority_rate`` ``{model: rate or None}`` records the dashed majority-class
  line drawn in each panel of ``pruning.png`` (:func:`hpjax.hpnet.runs.eval_majority_rate`
  of that model's run: its ``eval/attributes.json`` when this runs).

  References:
    docs/papers.md §A5; paper A Fig. 7.
  """
  from hpjax.hpnet import plots
  models = {"hpnet": trained}
  if baseline is not None:
    models["baseline"] = baseline
  result: dict[str, Any] = {"models": {}}
  # The dashed majority-class line per panel, and the rates drawn (None: no line).
  result["figure_majority_rate"] = {name: runs.eval_majority_rate(r.workdir)
                                    for name, r in models.items()}
  for name, r in models.items():
    stats = runs.run_statistics(r, limit=stats_limit, batch_size=batch_size)
    res = run_model(r.apply_fn, r.variables, stats, r.split("test"), counts=counts, draws=draws,
                    seed=seed, reading=reading, prune=prune, batch_size=batch_size, limit=limit)
    res["run"] = runs.run_info(r)
    res["stats_images"] = int(stats["num_images"])
    # Physical removal at the largest count: same accuracy as the mask, fewer FLOPs.
    res["physical_check"] = physical_check(r, res, batch_size=batch_size, limit=limit,
                                          timing=time_physical)
    result["models"][name] = res
  out = runs.output_dir(trained.workdir)
  result["figures"] = {"pruning": plots.pruning_curves(
      result["models"], os.path.join(out, "pruning.png"),
      majority_rate=result["figure_majority_rate"])}
  io.write_json(os.path.join(out, "pruning.json"), result)
  return result


def physical_check(run: runs.TrainedRun, res: dict[str, Any], *, batch_size: int,
                   limit: int | None, timing: bool = True) -> dict[str, Any]:
  """Accuracy of the physically pruned model at the largest semantic count, beside the
  masked model's (the curve's last semantic point, same images); with ``timing``, the
  forward time of one batch for the full and the pruned model (jitted, warm, best of 5)."""
  import time

  import jax
  import jax.numpy as jnp

  from hpjax.hpnet import experiment
  k = int(res["counts"][-1])
  new_vars, kept = prune(run.variables, res["semantic_order"], k)
  small = model_lib.pruned_model(run.model, len(kept))
  src = run.split("test")
  phys = experiment.evaluate_accuracy(small.apply, new_vars, src, batch_size=batch_size,
                                      limit=limit)
  out = {"num_pruned": k, "channels_kept": int(len(kept)), "images": res["num_images"],
         "physical_mean_accuracy": float(phys.mean()),
         "masked_mean_accuracy": float(res["semantic"][-1])}
  if timing:
    x = jnp.asarray(src.get_batch(np.arange(min(batch_size, len(src))))["image"],
                    jnp.float32) / 255.0

    def best_of(fn, v):
      jax.block_until_ready(fn(v, x))
      times = []
      for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(v, x))
        times.append(time.perf_counter() - t0)
      return min(times)

    full_t = best_of(jax.jit(lambda v, x: run.model.apply(v, x)[0]), run.variables)
    small_t = best_of(jax.jit(lambda v, x: small.apply(v, x)[0]), new_vars)
    out.update(full_batch_seconds=full_t, pruned_batch_seconds=small_t,
               speedup=full_t / max(small_t, 1e-12), timing_batch=int(x.shape[0]))
  return out
