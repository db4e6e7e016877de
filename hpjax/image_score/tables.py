r"""Tables 1–2 of paper B, and the similarity and wall-time tables, from finished runs.

Paper B: "Image Score: how to select useful samples" (arXiv 1812.00334),
Tables 1–2; docs/papers.md §B5. The runs come from
:func:`hpjax.image_score.runs.load_runs`; :func:`hpjax.image_score.results.evaluate`
writes every table and figure.

**Tables 1–2** (:func:`comparison_table`). Per class :math:`c`: the class-c test
accuracy of the baseline, image-score and softmax (and random) runs, their
differences, and one-sided p-values of "method > baseline". Three kinds of
samples, and every table says which it uses:

* ``"seed"``: the final accuracy of each independent seed's run.
* ``"seed_mean"``: per seed, the mean accuracy over its re-training epochs (still
  one independent value per seed, with less of the epoch-to-epoch noise of a
  constant learning rate); the one to read.
* ``"epoch"`` (the paper's): the accuracies after each re-training epoch of *one*
  seed's runs. They are serially correlated, **not independent**, so any p-value
  from them is optimistic; the table dict says so (``"independent": False`` and
  ``"note"``) and so does its Markdown.

Per-seed tables (``seed``, ``seed_mean``) are **paired** over the seeds both the
method and the baseline ran (same seed = same split and the same pre-trained
model), and *every* column of a method uses those seeds only (and the epochs both
runs finished), so ``diff == method − baseline`` exactly; the seeds are reported
per comparison. Their p-value is the exact sign-flip test of the paired
differences (:func:`hpjax.core.stats.sign_flip_pvalue`), printed next to its floor
:math:`2^{-n}` (:func:`hpjax.core.stats.sign_flip_floor`): with 3 seeds no data can
give p < 0.125, whereas a bootstrap of three values can print p ≈ 0.0001.

A bootstrap p-value (:func:`hpjax.core.stats.bootstrap_pvalue`, one-sided, with
the variance correction ``unbiased_variance=True``: the plain bootstrap of a mean
understates its variance by :math:`(n-1)/n`) is the p of ``epoch`` tables
(unpaired) and an extra ``p_bootstrap`` of per-seed tables (paired); it is
computed only where every sample has at least :data:`MIN_BOOTSTRAP_N` (5) values
and is None otherwise (the Markdown prints "n too small (n=3)").

Rows come from ``mode="all"`` runs (all classes from the same runs), from
``mode="dataset"`` runs (one class-agnostic reference, all classes at once: the
same rows as ``"all"``) or from ``mode="per_class"`` runs (row c from the runs
boosted for class c, the paper's class-by-class setting); see
:func:`hpjax.image_score.runs.pick`.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from hpjax.core import stats
from hpjax.core.errors import ConfigError
from hpjax.image_score.plots import figure_data
from hpjax.image_score.runs import TABLE_METHODS, WHOLE_MODES, Run, pick
from hpjax.image_score.scoring import SIMILARITIES

# Sample types of Tables 1–2 (see the module docstring).
SAMPLES = ("seed", "seed_mean", "epoch")
# Table modes: WHOLE_MODES ("all", "dataset": every row from the same runs) and "per_class".
TABLE_MODES = WHOLE_MODES + ("per_class",)
# No bootstrap p-value is computed (or printed) from samples smaller than this.
MIN_BOOTSTRAP_N = 5

EPOCH_NOTE = ("per-epoch samples of one run are serially correlated, not independent; "
              "p-values are optimistic. The unpaired one-sided bootstrap scales each group's "
              "deviations by sqrt(n/(n-1)), which corrects the plain bootstrap's (n-1)/n "
              "understatement of the variance of a mean, not the serial correlation.")
SEED_NOTE = ("independent seeds, paired: every column of a method uses only the seeds (and "
             "the epochs) both it and the baseline ran, so diff = method - baseline. "
             "p = exact one-sided sign-flip test of the paired differences; p_floor = 2^-n, "
             "the smallest p that n pairs can give.")


def _seed_value(run: Run, cls: int | None, sample: str, last: int | None = None) -> float:
  """One run's value in a per-seed sample, up to re-training epoch ``last`` (default: its
  last): the accuracy after ``last`` ("seed"), or the mean over epochs 1..last
  ("seed_mean", less noisy under a constant learning rate)."""
  last = run.last_epoch if last is None else last
  if sample == "seed_mean":
    return float(np.mean(run.class_accuracy(cls, range(1, last + 1))))
  return float(run.class_accuracy(cls, [last])[0])


def _pair(x: Run, y: Run, cls: int | None, sample: str) -> tuple[float, float]:
  """The per-seed values of two runs of one seed, over the epochs both finished."""
  last = min(x.last_epoch, y.last_epoch)
  return _seed_value(x, cls, sample, last), _seed_value(y, cls, sample, last)


def _bootstrap(x: np.ndarray, b: np.ndarray, paired: bool, num_resamples: int) -> float | None:
  """One-sided bootstrap p of x > b, or None where a sample has fewer than MIN_BOOTSTRAP_N."""
  if min(x.size, b.size) < MIN_BOOTSTRAP_N:
    return None
  return stats.bootstrap_pvalue(x, b, num_resamples=num_resamples, seed=0,
                                alternative="greater", paired=paired, unbiased_variance=True)


def _paired_row(row: dict[str, Any], runs: Sequence[Run], mode: str, c: int | None,
                sample: str, methods: Sequence[str], num_resamples: int) -> bool:
  """Fills a per-seed row; True if any method has a seed in common with the baseline."""
  base_runs = pick(runs, "baseline", mode, c)
  used: set[int] = set()
  picked_by = {}
  for m in methods:
    picked = pick(runs, m, mode, c)
    common = sorted(set(picked) & set(base_runs))
    if not common:
      continue
    picked_by[m] = picked
    used.update(common)
    x, b = np.asarray([_pair(picked[s], base_runs[s], c, sample) for s in common]).T
    row[m], row[f"baseline_{m}"] = _pct(x), _pct(b)
    row[f"diff_{m}"] = row[m] - row[f"baseline_{m}"]
    row[f"n_{m}"], row[f"seeds_{m}"] = len(common), common
    row[f"p_{m}"] = stats.sign_flip_pvalue(x - b)
    row[f"p_floor_{m}"] = stats.sign_flip_floor(len(common))
    row[f"p_bootstrap_{m}"] = _bootstrap(x, b, True, num_resamples)
  seeds = sorted(used) if used else sorted(base_runs)
  base = np.asarray([_seed_value(base_runs[s], c, sample) for s in seeds])
  row["baseline"], row["n_baseline"], row["seeds_baseline"] = _pct(base), len(seeds), seeds
  if "image_score" in picked_by and "softmax" in picked_by:
    si, ss = row["seeds_image_score"], row["seeds_softmax"]
    shared = sorted(set(si) & set(ss))
    row["seeds_image_score_softmax"] = shared
    if shared and si == ss:
      row["diff_image_score_softmax"] = row["image_score"] - row["softmax"]
    elif shared:  # different seed sets: the paired mean over the seeds both ran
      d = [np.subtract(*_pair(picked_by["image_score"][s], picked_by["softmax"][s], c, sample))
           for s in shared]
      row["diff_image_score_softmax"] = 100.0 * float(np.mean(d))
  return bool(used)


def _epoch_row(row: dict[str, Any], runs: Sequence[Run], mode: str, c: int | None,
               seed: int | None, methods: Sequence[str], num_resamples: int) -> bool:
  """Fills a per-epoch row of seed ``seed``; True if any method ran that seed."""
  def epochs(method: str) -> np.ndarray:
    picked = pick(runs, method, mode, c)
    return picked[seed].class_accuracy(c) if seed in picked else np.zeros((0,))

  b = epochs("baseline")
  row["baseline"], row["n_baseline"] = _pct(b), int(b.size)
  row["seeds_baseline"] = [seed] if b.size else []
  any_method = False
  for m in methods:
    x = epochs(m)
    if x.size == 0:
      continue
    any_method = True
    row[m], row[f"n_{m}"], row[f"seeds_{m}"] = _pct(x), int(x.size), [seed]
    row[f"diff_{m}"] = row[m] - row["baseline"] if b.size else None
    row[f"p_{m}"] = _bootstrap(x, b, False, num_resamples)
  if "image_score" in row and "softmax" in row:
    row["diff_image_score_softmax"] = row["image_score"] - row["softmax"]
  return any_method


def comparison_table(runs: Sequence[Run], *, mode: str = "all", sample: str = "seed",
                     seed: int | None = None, num_resamples: int = 10000,
                     methods: Sequence[str] = TABLE_METHODS) -> dict[str, Any]:
  """Tables 1–2: per class, baseline vs each method, with one-sided p-values.

  Args:
    runs: from :func:`hpjax.image_score.runs.load_runs`.
    mode: rows from ``"all"`` or ``"dataset"`` runs (every class from the same runs,
      plus an overall row) or from class-``c`` ``"per_class"`` runs.
    sample: ``"seed"`` (final accuracy per seed, paired), ``"seed_mean"`` (per seed
      the mean over its re-training epochs, paired) or ``"epoch"`` (the paper's:
      the re-training epochs of seed ``seed``, unpaired, not independent).
    seed: the seed of an ``"epoch"`` table (default: the lowest with a baseline run).
    num_resamples: bootstrap resamples B.
    methods: the method columns.

  Returns:
    ``{"mode", "sample", "seed", "seeds", "methods", "paired", "independent",
    "test", "min_bootstrap_n", "note", "rows"}``; accuracies in percent. ``test``
    names the p of the rows: ``"sign_flip"`` (per-seed samples) or
    ``"bootstrap"`` (``epoch``). Each row: ``"class"``, ``"baseline"``,
    ``"n_baseline"``, ``"seeds_baseline"`` and, per method m that has samples,
    ``"<m>"``, ``"diff_<m>"`` (= ``<m>`` − its baseline), ``"n_<m>"``,
    ``"seeds_<m>"``, ``"p_<m>"``; per-seed tables add ``"baseline_<m>"`` (the
    baseline over the seeds of m; ``diff_<m> == <m> − baseline_<m>``),
    ``"p_floor_<m>"`` (:math:`2^{-n}`) and ``"p_bootstrap_<m>"``. A bootstrap p
    from fewer than ``min_bootstrap_n`` values per sample is None (``n_*`` says
    how many there were). With both image score and softmax:
    ``"diff_image_score_softmax"`` (per-seed tables: over
    ``"seeds_image_score_softmax"``). Modes ``all`` and ``dataset`` end with an
    ``"all"`` row (overall test accuracy); ``per_class`` has rows only for the
    classes some method was boosted for.

  Raises:
    ConfigError: an unknown ``sample`` or ``mode``.

  References:
    docs/papers.md §B5; paper B Tables 1–2.
  """
  if sample not in SAMPLES:
    raise ConfigError(f"sample must be one of {', '.join(SAMPLES)}, got {sample!r}")
  if mode not in TABLE_MODES:
    raise ConfigError(f"mode must be one of {', '.join(TABLE_MODES)}, got {mode!r}")
  num_classes = len(runs[0].records[0]["test_accuracy_per_class"])
  paired = sample != "epoch"
  if not paired and seed is None:
    seeds = sorted({r.seed for r in runs if r.method == "baseline"})
    seed = seeds[0] if seeds else None
  rows = []
  classes: list[int | None] = list(range(num_classes)) + ([None] if mode in WHOLE_MODES else [])
  for c in classes:
    row: dict[str, Any] = {"class": "all" if c is None else c, "baseline": None,
                           "n_baseline": 0, "seeds_baseline": []}
    if paired:
      any_method = _paired_row(row, runs, mode, c, sample, methods, num_resamples)
    else:
      any_method = _epoch_row(row, runs, mode, c, seed, methods, num_resamples)
    if any_method or mode in WHOLE_MODES:
      rows.append(row)
  used = sorted({s for r in rows for k, v in r.items() if k.startswith("seeds_") for s in v})
  return {"mode": mode, "sample": sample, "seed": None if paired else seed, "seeds": used,
          "methods": list(methods), "paired": paired, "independent": paired,
          "test": "sign_flip" if paired else "bootstrap", "min_bootstrap_n": MIN_BOOTSTRAP_N,
          "note": SEED_NOTE if paired else EPOCH_NOTE, "rows": rows}


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


def precision_table(runs: Sequence[Run]) -> dict[str, Any]:
  """Pseudo-label precision per mode and method: the share of added images whose predicted
  label is right, mean over the re-training epochs of each seed, then over seeds; with the
  images added per epoch and, for ``per_class`` runs, one row per target class."""
  groups: dict[tuple[str, str, int | None], list[Run]] = {}
  for r in runs:
    if r.method == "baseline" or r.last_epoch < 1:
      continue
    cls = r.config.target_class if r.config.mode == "per_class" else None
    groups.setdefault((r.config.mode, r.method, cls), []).append(r)
  rows = []
  for (mode, method, cls), rs in sorted(groups.items(), key=lambda kv: (
      kv[0][0], kv[0][1], -1 if kv[0][2] is None else kv[0][2])):
    per_seed = [[x["precision"] for x in r.records[1:] if x.get("precision") is not None]
                for r in rs]
    per_seed = [np.mean(p) for p in per_seed if p]
    added = [x.get("num_selected", 0) for r in rs for x in r.records[1:]]
    rows.append({"mode": mode, "method": method, "target_class": cls,
                 "seeds": sorted(r.seed for r in rs),
                 "precision": float(100 * np.mean(per_seed)) if per_seed else None,
                 "precision_per_seed": [float(100 * p) for p in per_seed],
                 "added_per_epoch": float(np.mean(added)) if added else 0.0})
  return {"rows": rows}


def markdown_precision(table: dict[str, Any]) -> str:
  """:func:`precision_table` as Markdown."""
  lines = ["| mode | method | class | seeds | precision % | per seed | added per epoch |",
           "|---|---|---|---|---|---|---|"]
  for r in table["rows"]:
    lines.append(f"| {r['mode']} | {r['method']} | "
                 f"{'all' if r['target_class'] is None else r['target_class']} | "
                 f"{','.join(map(str, r['seeds']))} | {format_cell(r['precision'])} | "
                 f"{' '.join(format_cell(p, 1) for p in r['precision_per_seed'])} | "
                 f"{r['added_per_epoch']:.0f} |")
  return "\n".join(lines)


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


def _p_str(p: float | None) -> str:
  """A p-value cell: 4 decimals, or 2 significant digits below 0.001 (e.g. a floor 2^-12)."""
  return format_cell(p, 4) if p is None or p >= 1e-3 else f"{p:.1e}"


def _p_cell(p: float | None, n: int | None, min_n: int) -> str:
  """A bootstrap p cell: the value, or why there is none."""
  if p is None and n is not None and n < min_n:
    return f"n too small (n={n})"
  return _p_str(p)


def _seeds_cell(seeds: Sequence[int]) -> str:
  return ",".join(map(str, seeds)) or "–"


def table_heading(table: dict[str, Any]) -> str:
  """A one-line description of a comparison table's samples (Markdown headings, captions)."""
  if table["sample"] == "epoch":
    return (f"per-epoch samples of seed {table['seed']}, NOT independent (serially "
            "correlated; p-values optimistic)")
  what = "final accuracy" if table["sample"] == "seed" else "mean over re-training epochs"
  return f"per seed ({what}), seeds {table['seeds']}, paired, exact sign-flip p"


def markdown_comparison(table: dict[str, Any], label_names: Sequence[str] | None = None) -> str:
  """A Table 1–2 style Markdown table, headed with the sample type and test it uses.

  Per-seed tables print the sign-flip p with its floor and the bootstrap p (or
  "n too small (n=…)"); where every method uses the same seeds as the single
  baseline column the seeds are named once in the heading, otherwise each method
  gets its own baseline and seeds columns. Per-epoch tables are headed as not
  independent.
  """
  rows = table["rows"]
  methods = [m for m in table.get("methods", TABLE_METHODS) if any(m in r for r in rows)]
  min_n = table.get("min_bootstrap_n", MIN_BOOTSTRAP_N)
  paired = table["sample"] != "epoch"
  both = "image_score" in methods and "softmax" in methods
  row_seeds = False  # a "seeds" column after the one baseline column
  if not paired:
    head = (f"Samples: per-epoch accuracies of the re-training epochs of seed {table['seed']} "
            f"(the paper's). NOT INDEPENDENT: {EPOCH_NOTE} p = that bootstrap, printed only "
            f"where both samples have n >= {min_n}.")
    shared = True
  else:
    what = ("final accuracy of each seed" if table["sample"] == "seed"
            else "per seed, the mean accuracy over its re-training epochs")
    # One baseline column serves every method of a row only if each uses exactly its seeds.
    shared = all(r.get(f"baseline_{m}") == r["baseline"]
                 and r.get(f"seeds_{m}") == r["seeds_baseline"]
                 for r in rows for m in methods if m in r)
    seed_sets = {tuple(r["seeds_baseline"]) for r in rows}
    row_seeds = shared and len(seed_sets) > 1
    seeds = (f"Seeds {list(next(iter(seed_sets)))} (n = {len(next(iter(seed_sets)))} pairs) in "
             "every column. " if shared and len(seed_sets) == 1 else "")
    head = (f"Samples: {what} (independent runs), paired: every column of a method uses only "
            f"the seeds it shares with the baseline. {seeds}p = exact one-sided sign-flip test "
            "of the paired differences, p floor = 2^-n (the smallest p n pairs can give); "
            f"p boot = paired one-sided bootstrap, printed only where n >= {min_n}.")
  cols = ["class"] + (["baseline"] if shared else []) + (["seeds"] if row_seeds else [])
  for m in methods:
    cols += ([] if shared else ["baseline"]) + [m, "diff", "p"]
    cols += ["p floor", "p boot"] if paired else []
    cols += [] if shared else ["seeds"]
  if both:
    cols.append("is − sm")
  lines = [f"*{head} Mode: {table['mode']}. Accuracies in %.*", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    name = r["class"]
    if label_names is not None and name != "all":
      name = f"{name} {label_names[name]}"
    cells = [str(name)] + ([format_cell(r["baseline"])] if shared else [])
    cells += [_seeds_cell(r["seeds_baseline"])] if row_seeds else []
    for m in methods:
      if not shared:
        cells.append(format_cell(r.get(f"baseline_{m}")))
      cells += [format_cell(r.get(m)), format_cell(r.get(f"diff_{m}"))]
      if paired:
        cells += [_p_str(r.get(f"p_{m}")), _p_str(r.get(f"p_floor_{m}")),
                  _p_cell(r.get(f"p_bootstrap_{m}"), r.get(f"n_{m}"), min_n)]
      else:
        n = min(r[f"n_{m}"], r["n_baseline"]) if m in r else None
        cells.append(_p_cell(r.get(f"p_{m}"), n, min_n))
      if not shared:
        cells.append(_seeds_cell(r.get(f"seeds_{m}", [])))
    if both:
      cells.append(format_cell(r.get("diff_image_score_softmax")))
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  if paired:
    lines.append("Column heads: `<method>` accuracy and `baseline` accuracy over the same seeds "
                 "and epochs, `diff` = method − baseline, `p` = exact one-sided sign-flip "
                 "p-value of method > baseline, `p floor` = its smallest possible value 2^-n, "
                 "`p boot` = one-sided paired bootstrap p-value (variance-corrected)"
                 + ("; `is − sm` over the seeds both methods ran." if both else "."))
  else:
    lines.append("Column heads: `<method>` accuracy, `diff` = method − baseline, `p` = one-sided "
                 "unpaired bootstrap p-value of method > baseline over the per-epoch samples "
                 "(optimistic: the samples are not independent).")
  return "\n".join(lines) + "\n"
