"""Paper A's figures (Kimura & Tanaka 2019, Figs. 4–8) and the project's extra plots.

Every function takes plain NumPy results (the JSON the analyses write), draws with
matplotlib's headless Agg backend, and writes a PNG atomically (temp file +
rename), so a report never embeds a half-written image. Figures are kept small
(≈100 dpi): they are committed under ``docs/figures/``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hpjax.core import io  # noqa: E402

DPI = 100


def save(fig: plt.Figure, path: str) -> str:
  """Writes ``fig`` to ``path`` (PNG) atomically and closes it."""
  return io.save_figure(fig, path, dpi=DPI, bbox_inches="tight")


MAJORITY_LABEL = "majority class"


def majority_line(ax: plt.Axes, rate: float | None, label: str = MAJORITY_LABEL, *,
                  color: str = "k", lw: float = 1.0) -> matplotlib.lines.Line2D | None:
  """A dashed horizontal line at ``100 * rate`` % (the accuracy of always answering
  each attribute's majority class, averaged over attributes); None draws nothing."""
  if rate is None:
    return None
  return ax.axhline(100 * float(rate), color=color, lw=lw, ls="--", alpha=0.8, label=label,
                    zorder=1)


def pruning_curves(results: dict[str, dict[str, Any]], path: str, *,
                   majority_rate: float | Mapping[str, float | None] | None = None,
                   majority_label: str = MAJORITY_LABEL) -> str:
  """Fig. 7: mean accuracy vs number of pruned channels, one panel per model.

  Args:
    results: ``{model_name: hpjax.hpnet.analyses.pruning.run_model(...) output}``.
    majority_rate: the mean majority-class rate (one number, or one per model name;
      a missing or None entry draws no line): a dashed line labelled
      ``majority_label``, the accuracy of a model that always answers the majority.
  """
  fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 3.4), squeeze=False)
  for ax, (name, r) in zip(axes[0], results.items()):
    x = np.asarray(r["counts"])
    m, s = np.asarray(r["random_mean"]), np.asarray(r["random_std"])
    ax.plot(x, 100 * np.asarray(r["semantic"]), "o-", color="C3", label="semantic")
    ax.plot(x, 100 * np.asarray(r["l1"]), "s--", color="C0", label="L1 norm")
    ax.plot(x, 100 * m, "^-", color="0.4", label=f"random (mean ± std, {r['draws']} draws)")
    ax.fill_between(x, 100 * (m - s), 100 * (m + s), color="0.6", alpha=0.3)
    rate = (majority_rate.get(name) if isinstance(majority_rate, Mapping) else majority_rate)
    majority_line(ax, rate, majority_label)
    ax.set_title(f"{name} ({r['reading']} correlation)")
    ax.set_xlabel("pruned channels")
    ax.set_ylabel("mean accuracy [%]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return save(fig, path)


def robustness(result: dict[str, Any], path: str, *, majority_rate: float | None = None,
               majority_label: str = MAJORITY_LABEL) -> str:
  """Fig. 8: mean accuracy vs input-noise σ, one line per (n, β); identity in black.

  Args:
    result: :func:`hpjax.hpnet.analyses.robustness.robustness_grid` output (or its JSON).
    majority_rate: the mean majority-class rate; drawn as a dashed line labelled
      ``majority_label`` (None: no line).
  """
  sig = np.asarray(result["sigmas"])
  acc = np.asarray(result["mean_accuracy"])  # [S, N, Bt]
  fig, ax = plt.subplots(figsize=(7.6, 4.0))
  cmap = plt.get_cmap("viridis")
  nn_ = len(result["ns"])
  for i, n in enumerate(result["ns"]):
    for j, b in enumerate(result["betas"]):
      ident = n == 1.0 and b == 0.0
      ax.plot(sig, 100 * acc[:, i, j], color="k" if ident else cmap(i / max(nn_ - 1, 1)),
              lw=2.2 if ident else 1.0, ls=["-", "--", "-.", ":"][j % 4],
              label=f"n={n:g}, β={b:g}" + (" (identity)" if ident else ""),
              zorder=3 if ident else 2)
  if result.get("baseline_mean_accuracy") is not None:
    ax.plot(sig, 100 * np.asarray(result["baseline_mean_accuracy"]), color="C3", lw=1.6, ls=":",
            label="baseline CNN (no masks)")
  # Orange: the (n, β) lines already use black and dashes.
  majority_line(ax, majority_rate, majority_label, color="C1", lw=1.6)
  ax.set_xlabel("Gaussian noise σ (images in [0, 1])")
  ax.set_ylabel("mean accuracy [%]")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: 17 lines
  return save(fig, path)


def attention_examples(images: np.ndarray, masks: np.ndarray,
                       rows: Sequence[tuple[str, int, Sequence[int]]], path: str) -> str:
  """Fig. 4: per attribute, an image and its top-3 channel masks overlaid.

  Each mask is shown on its own scale [0, max] (the max is in the panel title): with
  the L1 sparsity term most mask values are small, and a common [0, 1] scale would
  show them as uniformly blank.

  Args:
    images: ``uint8 [R, H, W, 3]``, one image per row.
    masks: ``[R, 3, H, W]`` the masks of the row's top channels.
    rows: ``(attribute name, image id, channel ids)`` per row.
  """
  r = len(rows)
  fig, axes = plt.subplots(r, 4, figsize=(6.4, 1.75 * r + 0.3), squeeze=False)
  for i, (name, img_id, chans) in enumerate(rows):
    axes[i, 0].imshow(images[i])
    axes[i, 0].set_title(f"{name}\n(test #{img_id})", fontsize=7)
    for j, c in enumerate(chans):
      ax = axes[i, j + 1]
      top = float(max(masks[i, j].max(), 1e-6))
      ax.imshow(images[i])
      ax.imshow(masks[i, j], cmap="jet", alpha=0.55, vmin=0.0, vmax=top,
                extent=(-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5))
      ax.set_title(f"channel {c}\n(max {top:.2f})", fontsize=7)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.subplots_adjust(hspace=0.45)
  return save(fig, path)


def heatmap(matrix: np.ndarray, path: str, *, title: str, xlabel: str = "", ylabel: str = "",
            yticklabels: Sequence[str] | None = None, xticklabels: Sequence[str] | None = None,
            cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
            size: tuple[float, float] = (7.0, 4.0)) -> str:
  """Fig. 5 (K×C mean masks), Fig. 6 (C×C channel correlation), attribute correlations."""
  fig, ax = plt.subplots(figsize=size)
  im = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
  fig.colorbar(im, ax=ax, fraction=0.04)
  ax.set_title(title, fontsize=9)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if yticklabels is not None:
    ax.set_yticks(range(len(yticklabels)), yticklabels, fontsize=6.5)
  if xticklabels is not None:
    ax.set_xticks(range(len(xticklabels)), xticklabels, fontsize=6.5, rotation=90)
  return save(fig, path)


def localisation(names: Sequence[str], scores: dict[str, dict[str, Any]], path: str) -> str:
  """Energy ratio (left) and pointing-game hit rate (right) per attribute and map kind."""
  fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6))
  k = len(names)
  width = 0.8 / max(len(scores), 1)
  for i, (label, s) in enumerate(scores.items()):
    x = np.arange(k) + (i - (len(scores) - 1) / 2) * width
    axes[0].bar(x, s["ratio"], width, label=label)
    axes[1].bar(x, 100 * np.asarray(s["pointing"]), width, label=label)
  axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
  axes[0].set_ylabel("energy share in region / area share")
  axes[1].set_ylabel("pointing game hit rate [%]")
  for ax in axes:
    ax.set_xticks(range(k), names, rotation=75, fontsize=7)
    ax.grid(axis="y", alpha=0.3)
  axes[0].legend(fontsize=7)
  return save(fig, path)


def predictability(panels: list[dict[str, Any]], path: str) -> str:
  """Predicted vs observed change of mean logit, one panel per (model, family)."""
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.1), squeeze=False)
  for ax, p in zip(axes[0], panels):
    ax.scatter(p["predicted"], p["observed"], s=6, alpha=0.6)
    lo = float(min(np.min(p["predicted"]), np.min(p["observed"])))
    hi = float(max(np.max(p["predicted"]), np.max(p["observed"])))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.7, ls="--")
    rho = p["spearman"]
    ax.set_title(f"{p['model']}: {p['family']}\nSpearman ρ = "
                 f"{'n/a' if rho is None else f'{rho:.3f}'}", fontsize=8)
    ax.set_xlabel("predicted Δ mean logit", fontsize=8)
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("observed Δ mean logit", fontsize=8)
  fig.subplots_adjust(wspace=0.3)
  return save(fig, path)


def regression_leakage(example: dict[str, Any], path: str) -> str:
  """The paper's regression example: fits, the change from perturbing one coefficient,
  and the leakage of each coefficient onto the other basis directions."""
  bases = list(example["bases"])
  fig, axes = plt.subplots(2, len(bases), figsize=(3.6 * len(bases), 5.6), squeeze=False)
  top = max(1.0, max(max(b["leakage"]) for b in example["bases"].values()) * 1.1)
  x = np.asarray(example["x"])
  for i, name in enumerate(bases):
    b = example["bases"][name]
    ax = axes[0, i]
    ax.scatter(example["x_data"], example["y_data"], s=4, color="0.6")
    ax.plot(x, b["fit"], color="C0", label="fit")
    ax.plot(x, b["perturbed"], color="C3", label=f"coefficient {example['perturbed_index']} + "
            f"{example['delta']:g}")
    ax.set_title(f"{name}: mean leakage {b['mean_leakage']:.3f}", fontsize=9)
    ax.set_xlabel("x")
    ax.legend(fontsize=7)
    ax = axes[1, i]
    ax.bar(range(len(b["leakage"])), b["leakage"], color="C2")
    ax.set_xlabel("coefficient index")
    if i == 0:
      ax.set_ylabel("leakage: Σ cos² with other basis fns")
    ax.set_ylim(0, top)  # one scale, so zero leakage reads as zero
  fig.subplots_adjust(hspace=0.35)
  return save(fig, path)
