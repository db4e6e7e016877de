r"""Tables 1–2 of paper B, and the similarity and wall-time tables, from finished runs.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334),
Tables 1–2; docs/papers.md §B5. The runs come from
:func:`hpjax.image_score.runs.load_runs`; :func:`hpjax.image_score.results.evaluate`
writes every table and figure.

**Tables 1–2** (:func:`comparison_table`). Per class :math:`c`: the class-c test
accuracy of the baseline, image-score and softmax (and random) runs, their
differences, and one-sided bootstrap p-values of "method > baseline"
(:func:`hpjax.core.stats.bootstrap_pvalue`, ``alternative="greater"``). Two kinds of
samples, and every table says which it uses:

* ``"epoch"`` (the paper's): the accuracies after each re-training epoch of *one*
  seed's runs (the ``E2`` values are serially correlated, so these p-values are
  optimistic); unpaired test.
* ``"seed"`` (the sounder one): the final accuracy of each independent seed's run;
  paired test over the seeds both methods ran (same seed = same split and the
  same pre-trained model).
* ``"seed_mean"``: per seed, the mean accuracy over its re-training epochs (still
  one independent value per seed, with less of the epoch-to-epoch noise of a
  constant learning rate); paired test.

Per-seed tables also give the exact sign-flip p-value
(:func:`hpjax.core.stats.sign_flip_pvalue`): a bootstrap of 2–3 paired values has
too few distinct resamples to be trusted.

Rows come from ``mode="all"`` runs (all classes from the same runs) or from
``mode="per_class"`` runs (row c from the runs boosted for class c, the paper's
class-by-class setting); see :func:`hpjax.image_score.runs.pick`.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from hpjax.core import stats
from hpjax.core.errors import ConfigError
from hpjax.image_score.plots import figure_data
from hpjax.image_score.runs import TABLE_METHODS, Run, pick
from hpjax.image_score.scoring import SIMILARITIES

# Sample types of Tables 1–2 (see the module docstring).
SAMPLES = ("seed", "seed_mean", "epoch")


def _samples(picked: dict[int, Run], cls: int | None, sample: str, seed: int | None
             ) -> tuple[np.ndarray, list[int]]:
  if sample == "epoch":
    if seed not in picked:
      return np.zeros((0,)), []
    return picked[seed].class_accuracy(cls), [seed]
  seeds = sorted(picked)
  return np.asarray([_seed_value(picked[s], cls, sample) for s in seeds]), seeds


def _seed_value(run: Run, cls: int | None, sample: str) -> float:
  """One run's value in a per-seed sample: its final accuracy ("seed"), or the mean over
  its re-training epochs ("seed_mean", less noisy under a constant learning rate)."""
  if sample == "seed_mean":
    return float(np.mean(run.class_accuracy(cls)))
  return float(run.class_accuracy(cls, [run.last_epoch])[0])


def comparison_table(runs: Sequence[Run], *, mode: str = "all", sample: str = "seed",
                     seed: int | None = None, num_resamples: int = 10000,
                     methods: Sequence[str] = TABLE_METHODS) -> dict[str, Any]:
  """Tables 1–2: per class, baseline vs each method, with one-sided bootstrap p-values.

  Args:
    runs: from :func:`hpjax.image_score.runs.load_runs`.
    mode: rows from ``"all"`` runs or from class-``c`` ``"per_class"`` runs.
    sample: ``"seed"`` (final accuracy per seed, paired test), ``"seed_mean"``
      (per seed the mean over its re-training epochs, paired test) or ``"epoch"``
      (the paper's: the re-training epochs of seed ``seed``, unpaired test).
    seed: the seed of an ``"epoch"`` table (default: the lowest with a baseline run).
    num_resamples: bootstrap resamples B.
    methods: the method columns.

  Returns:
    ``{"mode", "sample", "seed", "rows": [{"class", "baseline", "<m>",
    "diff_<m>", "p_<m>", "n_<m>", ...}]}``; accuracies in percent; a row with
    fewer than two samples on a side has ``p`` None. Mode ``all`` ends with an
    ``"all"`` row (overall test accuracy).

  References:
    docs/papers.md §B5; paper B Tables 1–2.
  """
  if sample not in SAMPLES:
    raise ConfigError(f"sample must be one of {', '.join(SAMPLES)}, got {sample!r}")
  num_classes = len(runs[0].records[0]["test_accuracy_per_class"])
  if sample == "epoch" and seed is None:
    seeds = sorted({r.seed for r in runs if r.method == "baseline"})
    seed = seeds[0] if seeds else None
  rows = []
  classes: list[int | None] = list(range(num_classes)) + ([None] if mode == "all" else [])
  for c in classes:
    base_runs = pick(runs, "baseline", mode, c if c is not None else 0)
    base, base_seeds = _samples(base_runs, c, sample, seed)
    row: dict[str, Any] = {"class": "all" if c is None else c,
                           "baseline": _pct(base), "n_baseline": int(base.size)}
    any_method = False
    for m in methods:
      picked = pick(runs, m, mode, c if c is not None else 0)
      paired = sample != "epoch"
      if paired:  # over the seeds both sides ran
        common = sorted(set(picked) & set(base_runs))
        picked = {s: picked[s] for s in common}
        b = np.asarray([_seed_value(base_runs[s], c, sample) for s in common])
      else:
        b = base
      x, _ = _samples(picked, c, sample, seed)
      if x.size == 0:
        continue
      any_method = True
      row[m] = _pct(x)
      row[f"n_{m}"] = int(x.size)
      row[f"diff_{m}"] = _pct(x) - _pct(b) if b.size else None
      ok = x.size >= 2 and b.size >= 2
      row[f"p_{m}"] = (stats.bootstrap_pvalue(x, b, num_resamples=num_resamples, seed=0,
                                              alternative="greater", paired=paired)
                       if ok else None)
      if paired and x.size:
        row[f"p_signflip_{m}"] = stats.sign_flip_pvalue(x - b)
    if "image_score" in row and "softmax" in row:
      row["diff_image_score_softmax"] = row["image_score"] - row["softmax"]
    if any_method or mode == "all":
      rows.append(row)
  return {"mode": mode, "sample": sample, "seed": seed if sample == "epoch" else None,
          "seeds": None if sample == "epoch" else sorted({r.seed for r in runs}),
          "rows": rows}


def _pct(x: np.ndarray) -> float | None:
  return float(100.0 * np.mean(x)) if np.size(x) else None


# ----------------------------------------------------------------------------
# Similarities, wall times, Markdown


def similarity_table(runs: Sequence[Run]) -> dict[str, Any]:
  """Image-score similarities compared: final accuracy and pseudo-label precision of their
  ``mode="all"`` runs, and (from every run's pre-trained model) the AUROC of the score
  for "the test image is labelled correctly", next to the softmax confidence's."""
  rows = []
  for sim in SIMILARITIES:
    label = "image_score" if sim == "recall" else f"image_score[{sim}]"
    rs = [r for r in runs if r.method == label and r.config.mode == "all" and r.last_epoch >= 1]
    if not rs:
      continue
    final = [100 * r.records[-1]["test_accuracy"] for r in rs]
    prec = [100 * np.mean([x["precision"] for x in r.records[1:] if x.get("precision") is not None])
            for r in rs]
    rows.append({"similarity": sim, "seeds": sorted(r.seed for r in rs),
                 "final_accuracy": float(np.mean(final)), "precision": float(np.mean(prec))})
  auc: dict[str, list[float]] = {s: [] for s in SIMILARITIES + ("softmax",)}
  seen = set()
  for r in runs:
    path = os.path.join(r.workdir, "scores.npz")
    if not os.path.exists(path) or r.seed in seen:
      continue
    seen.add(r.seed)  # the pre-trained model is shared by a seed's runs: count it once
    d = figure_data(path, cls=None)["pretrain"]
    for s in SIMILARITIES:
      if d[s]["auroc_test"] is not None:
        auc[s].append(d[s]["auroc_test"])
    if d["softmax_auroc_test"] is not None:
      auc["softmax"].append(d["softmax_auroc_test"])
  return {"runs": rows, "auroc_test_pretrained": {k: (float(np.mean(v)) if v else None)
                                                  for k, v in auc.items()},
          "auroc_seeds": sorted(seen)}


def wall_times(runs: Sequence[Run]) -> dict[str, Any]:
  """Mean seconds per re-training epoch (select/train/analyse) per method, and pre-training."""
  out: dict[str, Any] = {}
  for m in sorted({r.method for r in runs}):
    parts = [x["seconds"] for r in runs if r.method == m for x in r.records[1:]]
    if parts:
      out[m] = {k: float(np.mean([p.get(k, 0.0) for p in parts]))
                for k in ("select", "train", "analyse")}
  pre = [r.records[0]["seconds"] for r in runs]
  out["pretrain"] = {k: float(np.mean([p.get(k, 0.0) for p in pre])) for k in ("train", "analyse")}
  return out


def format_cell(v: Any, digits: int = 2) -> str:
  """A Markdown cell: None as "–", floats with ``digits`` decimals."""
  if v is None:
    return "–"
  if isinstance(v, float):
    return f"{v:.{digits}f}"
  return str(v)


def markdown_comparison(table: dict[str, Any], label_names: Sequence[str] | None = None) -> str:
  """A Table 1–2 style Markdown table, headed with the sample type it uses."""
  methods = [m for m in TABLE_METHODS if any(m in r for r in table["rows"])]
  if table["sample"] == "epoch":
    head = (f"Samples: per-epoch accuracies of the re-training phase of seed {table['seed']} "
            "(the paper's; serially correlated), unpaired one-sided bootstrap.")
  elif table["sample"] == "seed":
    head = (f"Samples: final accuracy of each seed {table['seeds']} (independent runs), "
            "paired one-sided bootstrap over common seeds.")
  else:
    head = (f"Samples: per seed {table['seeds']}, the mean accuracy over its re-training "
            "epochs (independent runs), paired one-sided bootstrap over common seeds.")
  seed_table = table["sample"] != "epoch"
  cols = ["class", "baseline"]
  for m in methods:
    cols += [m, "diff", "p"] + (["p flip"] if seed_table else [])
  if "image_score" in methods and "softmax" in methods:
    cols.append("is − sm")
  lines = [f"*{head} Mode: {table['mode']}. Accuracies in %.*", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in table["rows"]:
    name = r["class"]
    if label_names is not None and name != "all":
      name = f"{name} {label_names[name]}"
    cells = [str(name), format_cell(r["baseline"])]
    for m in methods:
      p = r.get(f"p_{m}")
      cells += [format_cell(r.get(m)), format_cell(r.get(f"diff_{m}")), format_cell(p, 4)]
      if seed_table:
        cells.append(format_cell(r.get(f"p_signflip_{m}"), 3))
    if "image_score" in methods and "softmax" in methods:
      cells.append(format_cell(r.get("diff_image_score_softmax")))
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("Column heads: `<method>` accuracy, `diff` = method − baseline, `p` = one-sided "
               "bootstrap p-value of method > baseline" + (
                   "; `p flip` = exact one-sided sign-flip p-value of the paired per-seed "
                   "differences (floor 1/2^seeds: 0.125 with 3 seeds); diff and p use the seeds "
                   "both the method and the baseline ran." if seed_table else "."))
  return "\n".join(lines) + "\n"
