"""One self-contained HTML report of every paper-A analysis of a trained run.

``python -m evaluate.report --workdir runs/demo`` runs whichever analyses have no
up-to-date JSON in ``WORKDIR/analysis/`` (pruning, robustness, attention,
predictability; "up to date" = computed on the run's current checkpoint step),
reads the others, and writes ``WORKDIR/report/index.html``: images embedded as
base64 data URIs, tables, the paper's claims with this run's numbers, the config,
sizes, timings and library versions. It opens from disk without a server.

Sizes default to a quick setting (≈2 minutes on two CPU cores for the ``demo``
preset); the sizes used are printed in the report. The ``evaluate.*`` entry points
default to larger samples; run them first for the final numbers and the report
reuses their JSON.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from hpjax import analysis

ANALYSES = ("pruning", "robustness", "attention", "predictability")

# Paper A's claims, in the words the report checks them with.
CLAIMS = {
    "pruning": "Semantic channel pruning keeps accuracy better than random pruning (Fig. 7).",
    "robustness": "Some mask transformation (n, β) ≠ (1, 0) degrades less under input noise "
                  "than the untransformed network (Fig. 8).",
    "table4": "Attributes with related meaning have correlated attention (Table 4: "
              "Heavy_Makeup ↔ Wearing_Lipstick, hair colours together).",
    "localisation": "Attention masks focus on the regions that matter for the attribute (Fig. 4).",
}


@dataclasses.dataclass(frozen=True)
class ReportSizes:
  """How much data each analysis sees (the report states them)."""
  limit: int | None = 128          # test images per analysis
  stats_limit: int | None = 512    # training images for correlations / attention statistics
  predictability_limit: int | None = 96  # test images per perturbation (C + draws + 1 masks)
  random_draws: int = 5            # random pruning orders (Fig. 7 spread)


def _run_of(result: dict[str, Any]) -> dict[str, Any]:
  return result.get("run") or result.get("models", {}).get("hpnet", {}).get("run") or {}


def ensure_analyses(workdir: str, *, baseline_workdir: str | None = None,
                    sizes: ReportSizes = ReportSizes(), force: bool = False,
                    log: Callable[[str], None] = print) -> tuple[dict[str, Any], dict[str, float]]:
  """Loads each analysis' JSON, (re)running those missing or from another checkpoint.

  Returns:
    ``(results by analysis name, seconds spent per analysis that was run)``.
  """
  from hpjax import predictability, pruning
  baseline_workdir = baseline_workdir or analysis.default_baseline(workdir)
  run = analysis.load_run(workdir)
  baseline = analysis.load_run(baseline_workdir) if baseline_workdir else None
  runners = {
      "pruning": lambda: pruning.run(workdir, baseline_workdir=baseline_workdir,
                                     draws=sizes.random_draws, limit=sizes.limit,
                                     stats_limit=sizes.stats_limit, time_physical=False),
      "robustness": lambda: analysis.run_robustness(workdir, baseline_workdir=baseline_workdir,
                                                    limit=sizes.limit),
      "attention": lambda: analysis.run_attention(workdir, baseline_workdir=baseline_workdir,
                                                  limit=sizes.limit,
                                                  stats_limit=sizes.stats_limit),
      "predictability": lambda: predictability.run(workdir, baseline_workdir=baseline_workdir,
                                                   limit=sizes.predictability_limit,
                                                   stats_limit=sizes.stats_limit),
  }
  if not run.is_hpnet:
    from hpjax.cli import UsageError
    raise UsageError(f"--workdir {workdir}: holds a {run.config.model} model; the report "
                     "needs the HPNet run (its baseline goes in WORKDIR/baseline)")
  results, timings = {}, {}
  for name in ANALYSES:
    path = os.path.join(analysis.output_dir(workdir), f"{name}.json")
    if not force and os.path.exists(path):
      with open(path) as f:
        r = json.load(f)
      # Up to date = computed on these very weights (and the same baseline, if any).
      if (_run_of(r).get("fingerprint") == run.fingerprint
          and _baseline_of(r) == (baseline.fingerprint if baseline else None)):
        results[name] = r
        continue
    log(f"running {name} ...")
    t0 = time.perf_counter()
    runners[name]()
    timings[name] = time.perf_counter() - t0
    with open(path) as f:  # the JSON form, as a later report would read it
      results[name] = json.load(f)
  return results, timings


def _baseline_of(result: dict[str, Any]) -> str | None:
  """Fingerprint of the baseline an analysis used (None: it used none)."""
  run = result.get("baseline_run") or result.get("models", {}).get("baseline", {}).get("run")
  return run.get("fingerprint") if run else None


# ---------------------------------------------------------------------------
# HTML.

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
td,th{border:1px solid #ccc;padding:.22em .55em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.claim{background:#f6f8fa;border-left:4px solid #888;padding:.5em .8em;margin:.8em 0}
.yes{border-left-color:#2a7}.no{border-left-color:#c33}.mixed{border-left-color:#d90}
code,pre{background:#f3f3f3;font-size:.85em}pre{padding:.6em;overflow-x:auto}
small{color:#666}
"""


def _img(path: str, alt: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode("ascii")
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
  def cell(tag, i, v):
    cls = ' class="l"' if i < left else ""
    return f"<{tag}{cls}>{html.escape(str(v))}</{tag}>"
  out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"]
  for r in rows:
    out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>")
  return "".join(out) + "</table>"


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100 * x:.2f}"


def _rho(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def _claim(verdict: str, text: str, evidence: str) -> str:
  cls = {"holds": "yes", "does not hold": "no"}.get(verdict, "mixed")
  return (f'<div class="claim {cls}"><b>Paper:</b> {html.escape(text)}<br><b>Here: '
          f'{html.escape(verdict)}.</b> {html.escape(evidence)}</div>')


# A transformed network must beat the identity by more than this (in mean-accuracy
# points) for the robustness claim to count: smaller gains are a handful of decisions
# on the report's sample.
ROBUSTNESS_MARGIN = 0.005


def verdicts(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
  """``{claim: (verdict, evidence)}`` from the analyses' JSON.

  Verdicts are "holds", "partly" or "does not hold":

  * pruning (HPNet): semantic − random mean accuracy, averaged over counts, above the
    random draws' mean std → holds; above 0 but within the spread → partly.
  * robustness: a transformed (n, β) beats the identity by more than
    :data:`ROBUSTNESS_MARGIN` at half or more of the σ > 0 levels → holds; at some → partly.
  * Table 4: Wearing_Lipstick in Heavy_Makeup's top 5, and every hair colour's top 5
    holding the other hair colours → holds; some of these pairs → partly.
  * localisation: HPNet attention's energy ratio > 1.2 → holds; > 1 → partly.
  """
  out = {}
  pr = results["pruning"]["models"]
  parts = []
  for name, m in pr.items():
    spread = float(np.mean(m["random_std"])) if "random_std" in m else 0.0
    parts.append(f"{name}: semantic − random = {100 * m['semantic_minus_random']:+.2f} pts "
                 f"mean accuracy averaged over counts {m['counts']} (random std "
                 f"{100 * spread:.2f}; L1 − random {100 * m['l1_minus_random']:+.2f})")
  hp = pr.get("hpnet") or next(iter(pr.values()))
  gap, spread = hp["semantic_minus_random"], float(np.mean(hp.get("random_std", [0.0])))
  out["pruning"] = ("holds" if gap > spread and gap > 0 else "partly" if gap > 0
                    else "does not hold", "; ".join(parts) + ".")
  rb = results["robustness"]
  noisy = [b for b in rb["best"] if b["sigma"] > 0]
  beaten = sum(b["gain_over_identity"] > ROBUSTNESS_MARGIN for b in noisy)
  best = max(rb["best"], key=lambda b: b["gain_over_identity"])
  out["robustness"] = (
      "holds" if noisy and 2 * beaten >= len(noisy) else "partly" if beaten else "does not hold",
      f"a transformed network beats the identity by more than {100 * ROBUSTNESS_MARGIN:g} pts "
      f"at {beaten} of {len(noisy)} noise levels σ > 0; largest gain "
      f"{100 * best['gain_over_identity']:+.2f} pts at σ = {best['sigma']:g} with (n, β) = "
      f"({best['n']:g}, {best['beta']:g}).")
  t4 = results["attention"]["table4"]
  checks = []  # (text, hits, possible)
  if "Heavy_Makeup" in t4:
    top = [n for n, _ in t4["Heavy_Makeup"]]
    checks.append(("Wearing_Lipstick in Heavy_Makeup's top 5", int("Wearing_Lipstick" in top), 1))
  hair = [h for h in ("Black_Hair", "Blond_Hair", "Brown_Hair") if h in t4]
  for h in hair:
    top = [n for n, _ in t4[h]]
    others = [o for o in hair if o != h]
    checks.append((f"other hair colours in {h}'s top 5", sum(o in top for o in others),
                   len(others)))
  hits, possible = sum(c[1] for c in checks), sum(c[2] for c in checks)
  out["table4"] = ("holds" if checks and hits == possible else
                   "does not hold" if hits == 0 else "partly",
                   "; ".join(f"{t}: {h}/{n}" for t, h, n in checks) + ".")
  loc = results["attention"].get("localisation_mean")
  if loc:
    a = loc["hpnet_attention"]["all"]
    g = loc.get("baseline_grad_cam", {}).get("all")
    verdict = "holds" if a["ratio"] > 1.2 else "partly" if a["ratio"] > 1.0 else "does not hold"
    ev = (f"HPNet attention puts {100 * a['share']:.1f}% of its energy in regions covering "
          f"{100 * a['area']:.1f}% of the image (ratio {a['ratio']:.2f}; 1 = uniform), pointing "
          f"game {100 * a['pointing']:.1f}%")
    if g:
      ev += f"; baseline Grad-CAM ratio {g['ratio']:.2f}, pointing {100 * g['pointing']:.1f}%"
    out["localisation"] = (verdict, ev + ".")
  return out


def _versions() -> dict[str, str]:
  import flax
  import jax
  import matplotlib
  import scipy
  dev = jax.devices()[0]
  return {"python": sys.version.split()[0], "platform": platform.platform(), "jax": jax.__version__,
          "flax": flax.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
          "matplotlib": matplotlib.__version__,
          "device": f"{dev.platform} ({getattr(dev, 'device_kind', '')}) × {jax.device_count()}"}


def render(workdir: str, results: dict[str, Any], *, config: dict[str, Any],
           timings: dict[str, float], sizes: ReportSizes, accuracy: dict[str, Any]) -> str:
  """The report's HTML (a string)."""
  out_dir = analysis.output_dir(workdir)
  fig = lambda name, alt: _img(os.path.join(out_dir, name), alt)
  names = results["attention"]["label_names"]
  v = verdicts(results)
  h = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>hpjax report: "
       f"{html.escape(os.path.basename(os.path.abspath(workdir)))}</title><style>{_CSS}</style>"
       "</head><body>",
       "<h1>HPNet report — Kimura &amp; Tanaka 2019, “New Perspective of Interpretability of "
       "Deep Neural Networks”</h1>",
       f"<p>Run <code>{html.escape(os.path.abspath(workdir))}</code>, checkpoint step "
       f"{_run_of(results['pruning']).get('step')}. Generated "
       f"{time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"]

  h.append("<h2>Claims</h2>")
  for key, text in CLAIMS.items():
    if key in v:
      h.append(_claim(v[key][0], text, v[key][1]))

  if accuracy:
    h.append("<h2>Accuracy</h2>")
    models = list(accuracy)
    rows = [[n] + [_pct(accuracy[m]["per_attribute"].get(n)) for m in models] for n in names]
    rows.append(["mean"] + [_pct(accuracy[m]["mean_accuracy"]) for m in models])
    h.append(_table(["attribute"] + [f"{m} (%; {accuracy[m]['num_examples']} test images)"
                                     for m in models], rows))

  pr = results["pruning"]
  h.append("<h2>Semantic channel pruning (Fig. 7)</h2>")
  h.append(fig("pruning.png", "Fig. 7 pruning curves"))
  for name, m in pr["models"].items():
    rows = [[k, _pct(s), _pct(l), f"{_pct(rm)} ± {100 * rs:.2f}"] for k, s, l, rm, rs in
            zip(m["counts"], m["semantic"], m["l1"], m["random_mean"], m["random_std"])]
    h.append(f"<p><b>{name}</b> ({m['reading']} correlation of {m['stats_images']} training "
             f"images; prune the {m['prune']}-L1 filter of a pair; {m['num_images']} test images; "
             f"{m['draws']} random orders)</p>")
    h.append(_table(["pruned channels", "semantic %", "L1 %", "random % (mean ± std)"], rows))
    pc = m.get("physical_check")
    if pc:
      speed = (f"; forward pass {pc['speedup']:.2f}× faster than the full model "
               f"(batch {pc['timing_batch']})" if "speedup" in pc else "")
      h.append(f"<p><small>Physical removal of {pc['num_pruned']} channels (model with "
               f"{pc['channels_kept']} channels): {_pct(pc['physical_mean_accuracy'])} % vs "
               f"masking {_pct(pc['masked_mean_accuracy'])} % on {pc['images']} images"
               f"{speed}.</small></p>")

  rb = results["robustness"]
  h.append("<h2>Intentional attention mask transformation under noise (Fig. 8)</h2>")
  h.append(fig("robustness.png", "Fig. 8 robustness"))
  h.append(f"<p>{rb['num_images']} test images; Gaussian noise with a fixed seed "
           f"({rb['seed']}), {'clipped to [0, 1]' if rb['clip'] else 'not clipped'}.</p>")
  base = rb.get("baseline_mean_accuracy")
  rows = [[f"{b['sigma']:g}", f"({b['n']:g}, {b['beta']:g})", _pct(b["mean_accuracy"]),
           _pct(b["identity_accuracy"]), f"{100 * b['gain_over_identity']:+.2f}"]
          + ([_pct(base[i])] if base else []) for i, b in enumerate(rb["best"])]
  h.append(_table(["σ", "best (n, β)", "best %", "identity %", "gain (pts)"]
                  + (["baseline CNN %"] if base else []), rows))

  at = results["attention"]
  h.append("<h2>Attention (Figs. 4–6, Table 4)</h2>")
  h.append("<p>Fig. 4: for each attribute, its top-3 channels by importance "
           "(mean mask × |w<sub>kc</sub>| over training images), masks overlaid on a test "
           "image that has the attribute.</p>")
  h.append(fig("fig4_attention.png", "Fig. 4 attention masks"))
  h.append(fig("fig5_mean_masks.png", "Fig. 5 mean masks"))
  h.append(fig("fig6_channel_correlation.png", "Fig. 6 channel correlation"))
  h.append(f"<p>Table 4 (correlation of the attributes' Fig. 5 rows; "
           f"{at['stats_images']} training images):</p>")
  h.append(_table(["target"] + [f"#{i + 1}" for i in range(5)],
                  [[t] + [f"{n} ({c:.2f})" for n, c in rows] for t, rows in at["table4"].items()],
                  left=6))
  h.append(fig("attribute_correlation.png", "attribute correlation"))
  if at.get("localisation"):
    h.append("<h3>Localisation on the generated faces (measured)</h3>")
    h.append("<p>Energy ratio = share of the map's mass inside the attribute's true region ÷ "
             "the region's share of the image (1 = uniform); pointing = the map's maximum "
             "falls in the region. HPNet's map per attribute is the importance-weighted mean "
             "of its channel masks; Grad-CAM is on the final feature map. Over all test "
             "images (the region is where the evidence would be) and over those that have "
             "the attribute.</p>")
    loc = at["localisation"]
    kinds = list(loc)
    rows = [[n] + [f"{loc[k]['all']['ratio'][i]:.2f} / {100 * loc[k]['all']['pointing'][i]:.0f}%"
                   for k in kinds] for i, n in enumerate(names)]
    lm = at["localisation_mean"]
    rows.append(["mean (all)"] + [f"{lm[k]['all']['ratio']:.2f} / "
                                  f"{100 * lm[k]['all']['pointing']:.0f}%" for k in kinds])
    rows.append(["mean (present)"] + [f"{lm[k]['present']['ratio']:.2f} / "
                                      f"{100 * lm[k]['present']['pointing']:.0f}%" for k in kinds])
    h.append(_table(["attribute"] + [f"{k}: ratio / pointing" for k in kinds], rows))
    h.append(fig("localisation.png", "localisation"))

  pd = results["predictability"]
  h.append("<h2>Human predictability as a number (SPEC A7)</h2>")
  h.append("<p>For each perturbation, each attribute's change of mean logit is predicted "
           "from training-set statistics before the perturbation runs (pruning: the removed "
           "channels' direct contribution w<sub>kc</sub>·E[GAP(M<sup>k</sup><sub>c</sub> "
           "f<sub>c</sub>)]; (n, β): the binned attention histogram), then observed on test "
           "images. Spearman ρ over all (perturbation, attribute) pairs; ρ(accuracy) ranks "
           "the predicted size of the logit shift against the observed accuracy drop.</p>")
  rows = []
  for name, m in pd["models"].items():
    for fam in ("prune_one", "prune_random", "transform"):
      f = m.get(fam, {})
      if f.get("applicable"):
        rows.append([name, fam, f["num_perturbations"], _rho(f["spearman_logit"]),
                     _rho(f["spearman_accuracy"])])
      else:
        rows.append([name, fam, 0, "n/a", "n/a"])
  h.append(_table(["model", "family", "perturbations", "ρ (Δ mean logit)", "ρ (accuracy)"], rows,
                  left=2))
  h.append(fig("predictability.png", "predicted vs observed"))
  reg = pd["regression"]
  h.append(f"<p>The paper's regression example ({reg['num_terms']} terms; coefficient "
           f"{reg['perturbed_index']} perturbed by {reg['delta']}): leakage = Σ over other basis "
           "functions of cos² with the perturbed one in L²([−1, 1]).</p>")
  h.append(_table(["basis", "mean leakage", "leakage of perturbed coefficient", "fit RMSE"],
                  [[b, f"{r['mean_leakage']:.4f}", f"{r['perturbed_leakage']:.4f}",
                    f"{r['rmse']:.4f}"] for b, r in reg["bases"].items()]))
  h.append(fig("regression.png", "regression leakage"))

  h.append("<h2>Sizes, timings, config, versions</h2>")
  h.append(f"<p>Report sizes (used for analyses this report ran): "
           f"<code>{html.escape(json.dumps(dataclasses.asdict(sizes)))}</code>. Timings of "
           "analyses run now (s): <code>"
           f"{html.escape(json.dumps({k: round(t, 1) for k, t in timings.items()}))}</code> "
           "(others were read from their JSON).</p>")
  h.append("<pre>" + html.escape(json.dumps(config, indent=1)) + "</pre>")
  h.append(_table(["library", "version"], [[k, val] for k, val in _versions().items()]))
  h.append("</body></html>")
  return "\n".join(h)


def build(workdir: str, *, baseline_workdir: str | None = None,
          sizes: ReportSizes = ReportSizes(), force: bool = False,
          log: Callable[[str], None] = print) -> str:
  """Runs the missing analyses and writes ``WORKDIR/report/index.html``; returns its path."""
  from hpjax.attributes import write_atomic
  baseline_workdir = baseline_workdir or analysis.default_baseline(workdir)
  results, timings = ensure_analyses(workdir, baseline_workdir=baseline_workdir, sizes=sizes,
                                     force=force, log=log)
  run = analysis.load_run(workdir)
  accuracy = {}
  for name, wd in (("hpnet", workdir), ("baseline", baseline_workdir)):
    p = os.path.join(wd, "eval", "attributes.json") if wd else None
    if p and os.path.exists(p):
      with open(p) as f:
        accuracy[name] = json.load(f)
  page = render(workdir, results, config=dataclasses.asdict(run.config), timings=timings,
                sizes=sizes, accuracy=accuracy)
  path = os.path.join(workdir, "report", "index.html")
  write_atomic(path, page)
  return path
