"""One table over several evaluated attribute runs (ablations, seeds).

Reads each workdir's ``eval/attributes.json`` (written by
:func:`hpjax.hpnet.experiment.evaluate`) and puts the numbers that tell a healthy model
from one with dead heads side by side:
mean accuracy beside the majority-class rate, mean and worst balanced accuracy,
mean AUROC, and the dead heads.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from hpjax.core.errors import DataError


def read_eval(workdir: str) -> dict[str, Any]:
  """``WORKDIR/eval/attributes.json``; a missing or old-format file is a one-line error."""
  path = os.path.join(workdir, "eval", "attributes.json")
  result = _load_json(path, f"run python -m evaluate.attributes --workdir {workdir} first")
  if "attributes" not in result:
    raise DataError(f"{path}: written before per-attribute balanced accuracy existed; "
                    f"re-run python -m evaluate.attributes --workdir {workdir}")
  return result


def _load_json(path: str, hint: str) -> dict[str, Any]:
  """A JSON file; missing or malformed is a one-line :class:`DataError` (``hint``: what to do)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: not found; {hint}") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def row(workdir: str) -> dict[str, Any]:
  """The summary numbers of one evaluated run."""
  r = read_eval(workdir)
  per = r["attributes"]
  worst = min(per, key=lambda n: per[n]["balanced_accuracy"])
  return {"run": workdir, "model": r["model"], "step": r["step"],
          "mean_accuracy": r["mean_accuracy"], "mean_majority_rate": r["mean_majority_rate"],
          "mean_balanced_accuracy": r["mean_balanced_accuracy"], "mean_auroc": r["mean_auroc"],
          "min_balanced_accuracy": per[worst]["balanced_accuracy"], "worst_attribute": worst,
          "dead_heads": r["dead_heads"],
          "balanced_accuracy": {n: m["balanced_accuracy"] for n, m in per.items()}}


def table(workdirs: Sequence[str], *, per_attribute: bool = False) -> str:
  """A Markdown table, one line per run (and, optionally, the per-attribute balanced
  accuracies as extra columns)."""
  rows = [row(w) for w in workdirs]
  head = ["run", "model", "mean acc", "majority", "mean bal. acc", "min bal. acc (attribute)",
          "AUROC", "dead heads"]
  names = list(rows[0]["balanced_accuracy"]) if rows and per_attribute else []
  lines = ["| " + " | ".join(head + names) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 3) + ["---"]
                          + ["---:"] * len(names)) + "|"]
  for r in rows:
    cells = [r["run"], r["model"], f"{100 * r['mean_accuracy']:.2f}",
             f"{100 * r['mean_majority_rate']:.2f}", f"{100 * r['mean_balanced_accuracy']:.2f}",
             f"{100 * r['min_balanced_accuracy']:.1f} ({r['worst_attribute']})",
             f"{r['mean_auroc']:.3f}", str(len(r["dead_heads"])) +
             (f" ({', '.join(r['dead_heads'])})" if r["dead_heads"] else "")]
    cells += [f"{100 * r['balanced_accuracy'][n]:.1f}" for n in names]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ---------------------------------------------------------------------------
# Paper A's claims over training seeds: one demo workdir per seed (HPNet in W,
# the baseline in W/baseline, the analyses in W/analysis/).

def _get(d: Any, *path: str) -> float | None:
  for p in path:
    if not isinstance(d, dict) or p not in d:
      return None
    d = d[p]
  return None if d is None else float(d)


# (claim, quantity, JSON file under analysis/ or "eval:<model>", key path); a value of
# a fraction is shown in points (× 100) when its name ends in "%".
CLAIM_NUMBERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("accuracy", "HPNet mean accuracy %", "eval:hpnet", ("mean_accuracy",)),
    ("accuracy", "baseline mean accuracy %", "eval:baseline", ("mean_accuracy",)),
    ("accuracy", "majority-class rate %", "eval:hpnet", ("mean_majority_rate",)),
    ("accuracy", "HPNet mean balanced accuracy %", "eval:hpnet", ("mean_balanced_accuracy",)),
    ("accuracy", "baseline mean balanced accuracy %", "eval:baseline",
     ("mean_balanced_accuracy",)),
    ("accuracy", "HPNet worst balanced accuracy %", "eval:hpnet", ("min_balanced_accuracy",)),
    ("accuracy", "baseline worst balanced accuracy %", "eval:baseline",
     ("min_balanced_accuracy",)),
    ("accuracy", "HPNet dead heads", "eval:hpnet", ("num_dead",)),
    ("accuracy", "baseline dead heads", "eval:baseline", ("num_dead",)),
    ("pruning", "HPNet semantic − random %", "pruning", ("models", "hpnet",
                                                        "semantic_minus_random")),
    ("pruning", "HPNet random spread (std) %", "pruning", ("models", "hpnet",
                                                          "random_std_mean")),
    ("pruning", "HPNet L1 − random %", "pruning", ("models", "hpnet", "l1_minus_random")),
    ("pruning", "baseline semantic − random %", "pruning", ("models", "baseline",
                                                           "semantic_minus_random")),
    ("pruning", "baseline random spread (std) %", "pruning", ("models", "baseline",
                                                             "random_std_mean")),
    ("robustness", "oracle gain over identity (test-selected) %", "robustness",
     ("val_selection_summary", "oracle_gain_mean")),
    ("robustness", "gain over identity (val-selected, on test) %", "robustness",
     ("val_selection_summary", "selected_gain_mean")),
    ("robustness", "σ levels where the val-selected (n, β) beats identity", "robustness",
     ("val_selection_summary", "levels_selected_beats_identity")),
    ("localisation", "HPNet attention ratio (present)", "attention",
     ("localisation_mean", "hpnet_attention", "present", "ratio")),
    ("localisation", "mean-map prior ratio (present)", "attention",
     ("localisation_mean", "mean_map_prior", "present", "ratio")),
    ("localisation", "centre prior ratio (present)", "attention",
     ("localisation_mean", "centre_prior", "present", "ratio")),
    ("localisation", "baseline Grad-CAM ratio (present)", "attention",
     ("localisation_mean", "baseline_grad_cam", "present", "ratio")),
    ("localisation", "HPNet attention pointing % (present)", "attention",
     ("localisation_mean", "hpnet_attention", "present", "pointing")),
    ("localisation", "mean-map prior pointing % (present)", "attention",
     ("localisation_mean", "mean_map_prior", "present", "pointing")),
    ("localisation", "centre prior pointing % (present)", "attention",
     ("localisation_mean", "centre_prior", "present", "pointing")),
    ("predictability", "HPNet ρ, (n, β) transform (near 1 by construction)", "predictability",
     ("models", "hpnet", "transform", "spearman_logit")),
    ("predictability", "HPNet ρ, prune one channel (logit)", "predictability",
     ("models", "hpnet", "prune_one", "spearman_logit")),
    ("predictability", "HPNet ρ, prune random sets → accuracy", "predictability",
     ("models", "hpnet", "prune_accuracy", "spearman_accuracy")),
    ("predictability", "baseline ρ, prune random sets → accuracy", "predictability",
     ("models", "baseline", "prune_accuracy", "spearman_accuracy")),
    ("predictability", "HPNet ρ within set size → accuracy", "predictability",
     ("models", "hpnet", "prune_accuracy", "spearman_accuracy_within_size")),
    ("predictability", "baseline ρ within set size → accuracy", "predictability",
     ("models", "baseline", "prune_accuracy", "spearman_accuracy_within_size")),
    ("table4", "Table 4 checks met", "attention", ("table4_hits",)),
)


def claim_numbers(workdir: str) -> dict[str, float | None]:
  """``{quantity: value}`` for one demo workdir (see :data:`CLAIM_NUMBERS`)."""
  from hpjax.hpnet import runs, statistics
  evals = {}
  for model, wd in (("hpnet", workdir), ("baseline", os.path.join(workdir, "baseline"))):
    r = row(wd)
    evals[model] = {**r, "num_dead": len(r["dead_heads"])}
  hint = "run python -m train.demo (or the evaluate.* analyses) for this workdir first"
  files = {name: _load_json(os.path.join(runs.output_dir(workdir), f"{name}.json"), hint)
           for name in ("pruning", "robustness", "attention", "predictability")}
  files["attention"]["table4_hits"] = statistics.table4_hits(
      files["attention"].get("table4", {}))[0]
  out = {}
  for _, quantity, source, path in CLAIM_NUMBERS:
    doc = evals[source.split(":")[1]] if source.startswith("eval:") else files[source]
    out[quantity] = _get(doc, *path)
  return out


def seeds_table(workdirs: Sequence[str]) -> str:
  """Markdown: each claim's numbers as mean ± sample std over the seeds' workdirs, and
  every seed's value (so a spread can be read, not only trusted)."""
  per_seed = [claim_numbers(w) for w in workdirs]
  lines = [f"Over {len(workdirs)} seeds ({', '.join(workdirs)}); ± is the sample standard "
           "deviation (ddof = 1).", "",
           "| claim | quantity | mean ± std | per seed |", "|---|---|---:|---|"]
  for claim, quantity, _, _ in CLAIM_NUMBERS:
    values = [s[quantity] for s in per_seed]
    scale = 100.0 if quantity.endswith("%") or "% (" in quantity else 1.0
    shown = [None if v is None else scale * v for v in values]
    known = [v for v in shown if v is not None and np.isfinite(v)]
    if known:
      m, sd = mean_and_spread(known)
      digits = 2 if scale == 100.0 else 3
      cell = f"{m:.{digits}f} ± {sd:.{digits}f}"
    else:
      cell, digits = "–", 2
    seeds = ", ".join("–" if v is None else f"{v:.{digits}f}" for v in shown)
    lines.append(f"| {claim} | {quantity} | {cell} | {seeds} |")
  return "\n".join(lines) + "\n"
