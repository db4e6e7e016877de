"""Every table and figure of paper B from a set of runs, as JSON, Markdown and PNGs.

The library side of ``python -m evaluate.semisupervised``: :func:`evaluate`
loads the runs (:mod:`~hpjax.image_score.runs`), computes Tables 1–2 and the
similarity and wall-time tables (:mod:`~hpjax.image_score.tables`), Table 3
(:mod:`~hpjax.image_score.assembly`), and draws Figs. 2–5
(:mod:`~hpjax.image_score.plots`); :func:`markdown_report` is the summary written
beside the JSON. Paper B: "Image Score: how to select useful samples"
(arXiv 1812.00334); docs/papers.md §B5.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

from hpjax.core import io
from hpjax.image_score.assembly import assembly_table
from hpjax.image_score.plots import figure_data, plot_epochs, plot_intervals
from hpjax.image_score.runs import load_runs, runs_from_summary, runs_summary
from hpjax.image_score.tables import (SAMPLES, TABLE_MODES, comparison_table, format_cell,
                                      markdown_comparison, markdown_precision, precision_table,
                                      similarity_table, table_heading, wall_times)


def evaluate(workdirs: Sequence[str] | None, out: str, *, summary: str | None = None,
             fig_class: int = 0, num_resamples: int = 10000,
             plot_similarities: Sequence[str] = ("recall",)) -> dict[str, Any]:
  """All tables and figures of the runs in ``workdirs``; writes ``out/semisupervised.{json,md}``,
  ``out/runs_summary.json`` (:func:`~hpjax.image_score.runs.runs_summary`) and the PNGs.

  Args:
    workdirs: run directories of one data set and model (None: ``summary``).
    out: output directory.
    summary: instead of ``workdirs``, a ``runs_summary.json``: Tables 1–2, precision,
      wall times and Fig. 5 are recomputed from it alone (the assembly, Figs. 2–4 and
      the AUROC need the run directories and are left empty).
    fig_class: the class of Figs. 2–5 (the paper shows class 0).
    num_resamples: bootstrap resamples.
    plot_similarities: similarities drawn as Figs. 2–4 (all three are in the JSON).

  Returns:
    The JSON-able result. ``result["tables"]`` holds one comparison table per mode
    and sample type, keyed ``"<mode>_<sample>"``: mode ``"all"`` always, ``"dataset"``
    and ``"per_class"`` when such runs are present.
  """
  runs = runs_from_summary(summary) if summary else load_runs(workdirs)
  if not summary:
    # One run per line: small enough to commit beside the results it reproduces.
    rs = runs_summary(runs, os.path.commonpath([os.path.abspath(r.workdir) for r in runs]))
    io.write_text(os.path.join(out, "runs_summary.json"),
                  '{"kind": "semisupervised_runs", "runs": [\n' + ",\n".join(
                      json.dumps(r, separators=(",", ":")) for r in rs["runs"]) + "\n]}\n")
  result: dict[str, Any] = {"num_runs": len(runs), "dataset": runs[0].config.dataset,
                            "runs": [{"workdir": r.workdir, "method": r.method,
                                      "mode": r.config.mode,
                                      "target_class": r.config.target_class, "seed": r.seed,
                                      "epochs": r.last_epoch,
                                      "final_accuracy": r.records[-1]["test_accuracy"]}
                                     for r in runs]}
  tables = {}
  for mode in TABLE_MODES:
    if mode != "all" and not any(r.config.mode == mode for r in runs):
      continue
    for sample in SAMPLES:
      tables[f"{mode}_{sample}"] = comparison_table(runs, mode=mode, sample=sample,
                                                    num_resamples=num_resamples)
  result["tables"] = tables
  result["precision"] = precision_table(runs)
  result["assembly"] = {m: (assembly_table(runs, method=m) if not summary else {"rows": []})
                        for m in ("image_score", "softmax")}
  result["similarity"] = similarity_table(runs)
  result["wall_seconds"] = wall_times(runs)

  figs = {}
  base = sorted((r for r in runs if not summary
                 and os.path.exists(os.path.join(r.workdir, "scores.npz"))),
                key=lambda r: (r.method != "baseline", r.seed))
  if base:
    r = base[0]
    data = figure_data(os.path.join(r.workdir, "scores.npz"), cls=fig_class)
    data_all = figure_data(os.path.join(r.workdir, "scores.npz"), cls=None)
    figs["source"] = r.workdir
    figs[f"class_{fig_class}"] = data
    figs["all_classes"] = data_all
    e1, e2 = r.config.pretrain_epochs, r.config.pretrain_epochs + r.last_epoch
    for stage, epochs in (("pretrain", e1), ("final", e2)):
      acc = data[stage]["accuracy_test"]
      for sim in plot_similarities:
        plot_intervals(data, stage, sim, os.path.join(out, f"fig_scores_{stage}_{sim}.png"),
                       f"class {fig_class}, {r.method} run seed {r.seed}, {stage} model "
                       f"({epochs} epochs): test acc "
                       f"{'–' if acc is None else f'{100 * acc:.1f}'}%")
      plot_intervals(data_all, stage, "recall",
                     os.path.join(out, f"fig_scores_{stage}_recall_allclasses.png"),
                     f"all classes, {stage} model ({epochs} epochs)")
  result["figures"] = figs
  plot_epochs(runs, fig_class, os.path.join(out, f"fig5_class{fig_class}_all.png"), mode="all")
  if any(r.config.mode == "dataset" for r in runs):
    plot_epochs(runs, fig_class, os.path.join(out, f"fig5_class{fig_class}_dataset.png"),
                mode="dataset")
  if any(r.config.mode == "per_class" for r in runs):
    for c in sorted({r.config.target_class for r in runs if r.config.mode == "per_class"}):
      plot_epochs(runs, c, os.path.join(out, f"fig5_class{c}_per_class.png"), mode="per_class")

  io.write_json(os.path.join(out, "semisupervised.json"), result)
  io.write_text(os.path.join(out, "semisupervised.md"), markdown_report(result))
  return result


def markdown_report(result: dict[str, Any]) -> str:
  """The Markdown summary written beside the JSON."""
  parts = [f"# Semi-supervised selection on {result['dataset']} ({result['num_runs']} runs)", ""]
  for name, t in result["tables"].items():
    parts += [f"## Table ({name}): {table_heading(t)}", "", markdown_comparison(t)]
  for m, a in result["assembly"].items():
    if a["rows"]:
      parts += [f"## Assembly of per-class {m} models (Table 3)", "",
                "| seed | classes | epoch | baseline | assembled | claimed |", "|---|---|---|---|---|---|"]
      parts += [f"| {r['seed']} | {r['classes']} | {r['epoch']} | {r['baseline']:.2f} | "
                f"{r['assembled']:.2f} | {100 * r['claimed_share']:.1f}% |" for r in a["rows"]]
      sm = a["summary"]
      parts += ["", f"Assembled − baseline over {sm['n']} seeds (the independent samples): "
                f"mean over epochs {sm['mean_diff']:+.2f} points (exact one-sided sign-flip "
                f"p = {sm['p_mean_diff']:.4f}), last epoch {sm['final_diff']:+.2f} "
                f"(p = {sm['p_final_diff']:.4f}); p floor {sm['p_floor']:.4f}.", ""]
  parts += ["## Pseudo-label precision (share of added images whose label is right)", "",
            markdown_precision(result["precision"]), ""]
  sim = result["similarity"]
  parts += ["## Similarities", "", "| similarity | seeds | final acc | pseudo-label precision |",
            "|---|---|---|---|"]
  parts += [f"| {r['similarity']} | {r['seeds']} | {r['final_accuracy']:.2f} | "
            f"{r['precision']:.2f} |" for r in sim["runs"]]
  parts += ["", "AUROC of the score for a correct test label (pre-trained models, seeds "
            f"{sim['auroc_seeds']}): " + ", ".join(
                f"{k} {format_cell(v, 3)}" for k, v in sim["auroc_test_pretrained"].items()), ""]
  parts += ["## Wall time (s per re-training epoch)", "", "```",
            json.dumps(result["wall_seconds"], indent=1), "```", ""]
  return "\n".join(parts)
