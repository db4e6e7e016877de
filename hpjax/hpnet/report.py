"""One self-contained HTML report of every paper-A analysis of a trained run.

``python -m evaluate.report --workdir runs/demo`` runs whichever analyses
(:data:`hpjax.hpnet.analyses.ANALYSES`: pruning, robustness, attention, predictability)
have no up-to-date JSON in ``WORKDIR/analysis/`` ("up to date" = computed on the run's
current weights and baseline),
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

from hpjax.core import io
from hpjax.hpnet import runs
from hpjax.hpnet.analyses import ANALYSES, attention
from hpjax.hpnet.claims import CLAIMS, LOCALISATION_KINDS, verdicts


@dataclasses.dataclass(frozen=True)
class ReportSizes:
  """How much data each analysis sees (the report states them)."""
  limit: int | None = 128          # test images per analysis
  stats_limit: int | None = 512    # training images for correlations / attention statistics
  predictability_limit: int | None = 96  # test images per perturbation (C + draws + 1 masks)
  random_draws: int = 5            # random pruning orders (Fig. 7 spread)

  def of(self, name: str) -> dict[str, Any]:
    """The keyword arguments of analysis ``name`` (:data:`hpjax.hpnet.analyses.ANALYSES`)."""
    return {"pruning": dict(draws=self.random_draws, limit=self.limit,
                            stats_limit=self.stats_limit, time_physical=False),
            "robustness": dict(limit=self.limit),
            "attention": dict(limit=self.limit, stats_limit=self.stats_limit),
            "predictability": dict(limit=self.predictability_limit,
                                   stats_limit=self.stats_limit)}[name]


def _run_of(result: dict[str, Any]) -> dict[str, Any]:
  return result.get("run") or result.get("models", {}).get("hpnet", {}).get("run") or {}


def ensure_analyses(workdir: str, *, baseline_workdir: str | None = None,
                    sizes: ReportSizes = ReportSizes(), force: bool = False,
                    log: Callable[[str], None] = print) -> tuple[dict[str, Any], dict[str, float]]:
  """Loads each analysis' JSON, (re)running those missing or from another checkpoint.

  Returns:
    ``(results by analysis name, seconds spent per analysis that was run)``.
  """
  run, baseline = runs.load_runs(workdir, baseline_workdir)
  runs.require_hpnet(run, "the report needs the HPNet run (its baseline goes in "
                     "WORKDIR/baseline)")
  results, timings = {}, {}
  for name, analysis in ANALYSES.items():
    path = os.path.join(runs.output_dir(workdir), f"{name}.json")
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
    analysis(run, baseline=baseline, **sizes.of(name))
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
.alert{background:#fdecea;border:2px solid #c33;color:#5a1111;padding:.6em .9em;margin:1em 0}
.alert ul{margin:.3em 0}
"""


def _img(path: str, alt: str) -> str:
  with open(path, "rb") as f:
    return _img_data(f.read(), alt)


def _img_data(png: bytes, alt: str) -> str:
  data = base64.b64encode(png).decode("ascii")
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


def _dash(x: Any, fmt: Callable[[Any], str] = lambda v: f"{100 * v:.2f}") -> str:
  """``fmt(x)``, or "–" where the value is missing (an older eval JSON, or no AUROC)."""
  return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt(x)


# ---------------------------------------------------------------------------
# Majority-class rates and dead heads (WORKDIR/eval/attributes.json).

MODEL_NAMES = {"hpnet": "HPNet", "baseline": "baseline CNN"}


def dead_heads(accuracy: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
  """``{model: dead attribute names}`` for each model whose eval JSON flags any.

  Reads ``dead_heads`` (or the per-attribute ``dead`` flags); an eval JSON from before
  these keys existed flags nothing (see :func:`unchecked_models`).
  """
  out = {}
  for model, a in accuracy.items():
    dead = a.get("dead_heads")
    if dead is None:
      dead = [n for n, m in (a.get("attributes") or {}).items() if m.get("dead")]
    if dead:
      out[model] = list(dead)
  return out


def unchecked_models(accuracy: dict[str, dict[str, Any]]) -> list[str]:
  """Models whose eval JSON predates the dead-head check (no ``attributes`` key)."""
  return [m for m, a in accuracy.items() if "attributes" not in a and "dead_heads" not in a]


def majority_rate(result: dict[str, Any], evaluation: dict[str, Any] | None
                  ) -> tuple[float | None, str]:
  """The mean majority-class rate to draw beside an analysis' accuracies, and its source.

  Args:
    result: the analysis' JSON for one model (a pruning model entry, the robustness
      result); its own ``mean_majority_rate`` (over the images it used) wins.
    evaluation: that model's ``eval/attributes.json`` (its ``mean_majority_rate``
      otherwise; None or an older JSON without it: no rate).

  Returns:
    ``(rate or None, a phrase naming the images it is measured on)``.
  """
  used = result.get("num_images")
  if result.get("mean_majority_rate") is not None:
    return float(result["mean_majority_rate"]), f"the {used} test images this analysis used"
  rate = (evaluation or {}).get("mean_majority_rate")
  if rate is None:
    return None, ""
  split, n = evaluation.get("split", "test"), evaluation.get("num_examples")
  where = f"the first {n} images of the {split} split (eval/attributes.json)"
  if split == "test" and n is not None and n == used:
    return float(rate), where + ", the images this analysis used"
  return float(rate), (where + f"; this analysis used the first {used} test images, whose "
                       "rate may differ")


def _majority_caption(drawn: dict[str, float | None],
                      current: dict[str, tuple[float | None, str]], rerun: str) -> list[str]:
  """The caption of Fig. 7's dashed majority-class lines.

  Args:
    drawn: ``{model: rate}`` the driver drew (``figure_majority_rate``; None or missing:
      no line in that panel, e.g. an analysis run before eval/attributes.json existed).
    current: ``{model: majority_rate(...)}`` from the eval JSON the report reads now.
    rerun: the command that redraws the figure.
  """
  shown = {k: float(r) for k, r in drawn.items() if r is not None}
  if not shown:
    if any(r is not None for r, _ in current.values()):
      return ["<p><small>No majority-class line in the figure: it was drawn before "
              f"eval/attributes.json existed (rerun {html.escape(rerun)} for the dashed "
              "line); the rates are beside each table.</small></p>"]
    return []
  sources = {k: w for k, (r, w) in current.items() if r is not None}
  on = (next(iter(sources.values())) if len(set(sources.values())) == 1
        and len(sources) == len(current) else "; ".join(f"{k}: {w}" for k, w in sources.items()))
  stale = [k for k, r in shown.items() if current.get(k, (None,))[0] is not None
           and _dash(current[k][0]) != _dash(r)]
  missing = [k for k in current if k not in shown]
  return ["<p><small>Dashed line: majority class = the mean over attributes of the accuracy "
          "of always answering each attribute's more frequent value, from each run's "
          "eval/attributes.json when the analysis ran ("
          + "; ".join(f"{html.escape(k)}: {_dash(r)} %" for k, r in shown.items()) + ")"
          + (f", on {html.escape(on)}" if sources else "") + "."
          + (f" eval/attributes.json has changed since for {html.escape(', '.join(stale))} "
             "(the rate beside the table is the current one)." if stale else "")
          + (f" No line for {html.escape(', '.join(missing))} (no eval/attributes.json with "
             "it when the analysis ran)." if missing else "") + "</small></p>"]


def _claim(verdict: str, text: str, evidence: str) -> str:
  cls = {"holds": "yes", "does not hold": "no"}.get(verdict, "mixed")
  return (f'<div class="claim {cls}"><b>Paper:</b> {html.escape(text)}<br><b>Here: '
          f'{html.escape(verdict)}.</b> {html.escape(evidence)}</div>')


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


def _dead_head_notice(accuracy: dict[str, dict[str, Any]], models: list[str]) -> list[str]:
  """The red box naming every dead head (none: no box), and a note on those of
  ``models`` (the analysed ones) whose dead heads could not be checked."""
  from hpjax.core.classification_metrics import DEAD_BALANCED_ACCURACY
  out = []
  dead = dead_heads(accuracy)
  if dead:
    items = []
    for model, names in dead.items():
      a = accuracy[model]
      total = len(a.get("attributes") or a.get("per_attribute") or {}) or "?"
      items.append(f"<li><b>{html.escape(MODEL_NAMES.get(model, model))}</b> "
                   f"(<code>{model}</code>, {html.escape(str(a.get('split', 'test')))} split, "
                   f"step {a.get('step', '?')}): {len(names)} of {total} heads dead — "
                   f"{html.escape(', '.join(names))}</li>")
    which = " and ".join(MODEL_NAMES.get(m, m) for m in dead)
    out.append(
        '<div class="alert"><b>Dead heads.</b> These heads predict a constant or have '
        f"balanced accuracy below {100 * DEAD_BALANCED_ACCURACY:g} % on the evaluation "
        "split (eval/attributes.json): their accuracy is (close to) the majority-class "
        f"rate, not something the model learned.<ul>{''.join(items)}</ul>"
        f"<b>The analyses below are computed on a model with dead heads ({html.escape(which)})"
        "</b>: their accuracies, pruning curves, robustness gains and attention statistics "
        "include these attributes.</div>")
  missing = [m for m in models if m not in accuracy]
  old = unchecked_models(accuracy)
  if missing or old:
    why = ([f"{m}: no eval/attributes.json" for m in missing]
           + [f"{m}: eval/attributes.json predates the per-attribute metrics" for m in old])
    out.append(f"<p><small>Dead heads not checked ({html.escape('; '.join(why))}); run "
               "<code>python -m evaluate.attributes --workdir W</code> for each run.</small></p>")
  return out


def _accuracy_section(accuracy: dict[str, dict[str, Any]], names: list[str], *,
                      steps: dict[str, int | None]) -> list[str]:
  """Per-attribute accuracy beside prevalence, majority rate, balanced accuracy, AUROC
  and the dead flag ("–" where an older eval JSON lacks them)."""
  from hpjax.core.classification_metrics import DEAD_BALANCED_ACCURACY
  models = list(accuracy)
  per = {m: accuracy[m].get("attributes") or {} for m in models}
  # Prevalence and majority rate describe the labels: one pair of columns when every
  # model was evaluated on the same images, else one pair per model.
  with_rates = [m for m in models if per[m]]
  shared = all([per[m].get(n, {}).get("majority_rate") for n in names]
               == [per[with_rates[0]].get(n, {}).get("majority_rate") for n in names]
               for m in with_rates)
  data_model = with_rates[0] if with_rates else (models[0] if models else None)

  def data_cols(m):
    return ["prevalence %", "majority class %"] if m is None else [
        f"{m} prevalence %", f"{m} majority class %"]

  def data_cells(m, n):
    a = per.get(m, {}).get(n, {})
    return [_dash(a.get("prevalence")), _dash(a.get("majority_rate"))]

  header = ["attribute"] + (data_cols(None) if shared else [])
  for m in models:
    header += ((data_cols(m) if not shared else []) +
               [f"{m} accuracy %", f"{m} balanced acc. %", f"{m} AUROC", f"{m} head"])
  rows = []
  for n in names:
    row = [n] + (data_cells(data_model, n) if shared else [])
    for m in models:
      a = per[m].get(n, {})
      dead = a.get("dead")
      row += ((data_cells(m, n) if not shared else []) +
              [_dash(accuracy[m].get("per_attribute", {}).get(n)),
               _dash(a.get("balanced_accuracy")),
               _dash(a.get("auroc"), lambda v: f"{v:.3f}"),
               "–" if dead is None else "DEAD" if dead else "ok"])
    rows.append(row)
  mean = ["mean"] + (["", _dash(accuracy.get(data_model, {}).get("mean_majority_rate"))]
                     if shared else [])
  for m in models:
    a = accuracy[m]
    d = a.get("dead_heads")
    mean += ((["", _dash(a.get("mean_majority_rate"))] if not shared else []) +
             [_dash(a.get("mean_accuracy")), _dash(a.get("mean_balanced_accuracy")),
              _dash(a.get("mean_auroc"), lambda v: f"{v:.3f}"),
              "–" if d is None else f"{len(d)} dead"])
  rows.append(mean)
  images = ", ".join(f"{m}: {a.get('num_examples', '?')} {a.get('split', 'test')} images, "
                     f"step {a.get('step', '?')}" for m, a in accuracy.items())
  h = ["<h2>Accuracy</h2>",
       f"<p>From each run's eval/attributes.json ({html.escape(images)}). Majority class = "
       "accuracy of always answering the attribute's more frequent value (the floor a "
       "constant head reaches); balanced accuracy = mean of the true-positive and "
       "true-negative rates (50 for any constant answer); AUROC of the logits (0.5 = "
       f"chance); head DEAD = constant predictions or balanced accuracy < "
       f"{100 * DEAD_BALANCED_ACCURACY:g} %.</p>"]
  for m in models:
    if None not in (steps.get(m), accuracy[m].get("step")) and steps[m] != accuracy[m]["step"]:
      h.append(f"<p><small>Note: eval/attributes.json of {m} is from step "
               f"{accuracy[m]['step']}; the analyses below used step {steps[m]}.</small></p>")
  h.append(_table(header, rows))
  return h


def _robustness_table(rb: dict[str, Any]) -> list[str]:
  """Per σ: the test-selected (oracle) (n, β) and, where the JSON has them, the
  validation-selected (n, β) measured on test beside it; the σ > 0 summary."""
  base = rb.get("baseline_mean_accuracy")
  val = rb.get("best_val_selected")
  header = ["σ", "oracle (n, β)", "oracle %", "identity %", "oracle gain (pts)"]
  if val:
    header += ["val-selected (n, β)", "its test %", "its test gain (pts)", "= oracle"]
  header += ["baseline CNN %"] if base else []
  rows = []
  for i, b in enumerate(rb["best"]):
    row = [f"{b['sigma']:g}", f"({b['n']:g}, {b['beta']:g})", _pct(b["mean_accuracy"]),
           _pct(b["identity_accuracy"]), f"{100 * b['gain_over_identity']:+.2f}"]
    if val:
      r = val[i]
      row += [f"({r['n']:g}, {r['beta']:g})", _pct(r["test_accuracy"]),
              f"{100 * r['test_gain_over_identity']:+.2f}", "yes" if r["is_oracle"] else "no"]
    rows.append(row + ([_pct(base[i])] if base else []))
  if not val:
    return [_table(header, rows)]
  v, sm = rb.get("validation") or {}, rb.get("val_selection_summary") or {}
  out = [f"<p>Oracle: the (n, β) with the highest mean accuracy on the very test images "
         "it is reported on (the best of the grid's noisy estimates; biased upwards). "
         f"Val-selected: the (n, β) chosen on the {html.escape(str(v.get('split', 'val')))} "
         f"split ({v.get('num_images', '?')} images, same noise seed and grid), measured on "
         "test; the robustness claim is judged on it.</p>", _table(header, rows)]
  if sm:
    kept = sm.get("retained_fraction")
    out.append(
        f"<p>Over σ &gt; 0 ({sm.get('num_levels', '?')} levels): mean test gain over the "
        f"identity {100 * sm['selected_gain_mean']:+.2f} pts val-selected vs "
        f"{100 * sm['oracle_gain_mean']:+.2f} pts oracle ("
        + (f"{100 * kept:.0f}% of the oracle gain retained" if kept is not None
           else "the oracle gains nothing")
        + f"); the val-selected (n, β) beats the identity on test at "
        f"{sm.get('levels_selected_beats_identity', '?')} levels, the oracle at "
        f"{sm.get('levels_oracle_beats_identity', '?')}; the two agree at "
        f"{sm.get('levels_selected_is_oracle', '?')}.</p>")
  return out


def _localisation_tables(at: dict[str, Any], names: list[str]) -> list[str]:
  """Per attribute and map kind (HPNet attention, Grad-CAMs, the priors), ratio and
  pointing over all test images and over those with the attribute (with their
  count), the means, and HPNet attention minus the better prior."""
  loc, lm = at["localisation"], at["localisation_mean"]
  kinds = list(loc)
  label = lambda k: LOCALISATION_KINDS.get(k, k)
  cell = lambda r, p: f"{r:.2f} / {100 * p:.0f}%"
  out = []
  priors = [p for p in attention.PRIORS if p in loc]
  if priors:
    out.append("<p>Controls that use no information from the scored image: mean-map prior "
               "= HPNet's attention map averaged over the evaluated test images, per "
               "attribute (the same map for every image; built from the images it is scored "
               "on, which can only flatter it); centre prior = a centred Gaussian, the same "
               "for every image and attribute. A map that beats them knows more than where "
               "attributes usually are.</p>")
  diff = at.get("localisation_attention_minus_prior")
  if diff is None and priors == list(attention.PRIORS) and "hpnet_attention" in lm:
    diff = attention.attention_minus_prior(lm)
  for sub, title in (("all", "all test images"), ("present", "test images with the attribute")):
    if any(sub not in loc[k] for k in kinds):
      continue
    count = np.asarray(loc[kinds[0]][sub].get("count", [np.nan] * len(names)))
    rows = [[n] + ([int(count[i])] if sub == "present" else [])
            + [cell(loc[k][sub]["ratio"][i], loc[k][sub]["pointing"][i]) for k in kinds]
            for i, n in enumerate(names)]
    rows.append([f"mean ({sub})"] + ([""] if sub == "present" else [])
                + [cell(lm[k][sub]["ratio"], lm[k][sub]["pointing"]) for k in kinds])
    if diff and sub in diff:
      d = diff[sub]
      rows.append(["HPNet attention − better prior"] + ([""] if sub == "present" else [])
                  + [f"{d['ratio']:+.2f} / {100 * d['pointing']:+.0f} pts"
                     if k == "hpnet_attention" else "" for k in kinds])
    out.append(f"<p><b>Localisation over {title}</b> (ratio / pointing):</p>")
    out.append(_table(["attribute"] + (["images"] if sub == "present" else [])
                      + [f"{label(k)}: ratio / pointing" for k in kinds], rows))
  return out


PREDICTABILITY_FAMILIES = ("prune_one", "prune_random", "prune_accuracy", "transform")


def _predictability_section(pd: dict[str, Any]) -> list[str]:
  """The ρ table of every family and model, and what the prune_accuracy and transform
  scores say."""
  rows = []
  for name, m in pd["models"].items():
    for fam in PREDICTABILITY_FAMILIES:
      f = m.get(fam)
      if f is None:
        continue  # an older JSON without this family
      if f.get("applicable"):
        rows.append([name, fam, f["num_perturbations"], _rho(f.get("spearman_logit")),
                     _rho(f.get("spearman_accuracy")),
                     _rho(f["spearman_accuracy_within_size"])
                     if "spearman_accuracy_within_size" in f else "–"])
      else:
        rows.append([name, fam, 0, "n/a", "n/a", "n/a"])
  out = [_table(["model", "family", "perturbations", "ρ (Δ mean logit)", "ρ (accuracy)",
                 "ρ (accuracy, within set size)"], rows, left=2)]
  acc = {name: m["prune_accuracy"] for name, m in pd["models"].items()
         if (m.get("prune_accuracy") or {}).get("applicable")}
  text = []
  if acc:
    text.append(
        "prune_accuracy, the family whose answer is not built in (accuracy is a "
        "thresholded function of the per-image logits, simulated on training images and "
        "observed on test): ρ(accuracy) "
        + "; ".join(f"{MODEL_NAMES.get(n, n)} {_rho(f.get('spearman_accuracy'))} (within "
                    f"set size {_rho(f.get('spearman_accuracy_within_size'))})"
                    for n, f in acc.items())
        + ". The within-size ρ averages ρ over sets of one size, so that \"larger sets hurt "
        "more\" earns nothing; the baseline's simulated logits are exact, HPNet's leave out "
        "the masks' response to the pruning.")
  text.append("The transform family's ρ (Δ mean logit) is near 1 by construction: (n, β) "
              "change the masks only and the logit is linear in g(M) for fixed features, so "
              "the prediction is the observation up to binning; it checks the bookkeeping, "
              "not how predictable the model is.")
  out.append("<p>" + html.escape(" ".join(text)) + "</p>")
  return out


def render(workdir: str, results: dict[str, Any], *, config: dict[str, Any],
           timings: dict[str, float], sizes: ReportSizes, accuracy: dict[str, Any]) -> str:
  """The report's HTML (a string)."""
  out_dir = runs.output_dir(workdir)
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
  h += _dead_head_notice(accuracy, list(results["pruning"]["models"]))

  h.append("<h2>Claims</h2>")
  for key, text in CLAIMS.items():
    if key in v:
      h.append(_claim(v[key][0], text, v[key][1]))

  if accuracy:
    h += _accuracy_section(accuracy, names, steps={
        m: r.get("run", {}).get("step") for m, r in results["pruning"]["models"].items()})
  pr = results["pruning"]
  h.append("<h2>Semantic channel pruning (Fig. 7)</h2>")
  majority = {name: majority_rate(m, accuracy.get(name)) for name, m in pr["models"].items()}
  h.append(fig("pruning.png", "Fig. 7 pruning curves"))
  h += _majority_caption((pr.get("figure_majority_rate") or {}), majority,
                         "python -m evaluate.prune, or the report with --force")
  for name, m in pr["models"].items():
    rows = [[k, _pct(s), _pct(l), f"{_pct(rm)} ± {100 * rs:.2f}"] for k, s, l, rm, rs in
            zip(m["counts"], m["semantic"], m["l1"], m["random_mean"], m["random_std"])]
    h.append(f"<p><b>{name}</b> ({m['reading']} correlation of {m['stats_images']} training "
             f"images; prune the {m['prune']}-L1 filter of a pair; {m['num_images']} test images; "
             f"{m['draws']} random orders; majority class {_dash(majority[name][0])} %)</p>")
    h.append(_table(["pruned channels", "semantic %", "L1 %", "random % (mean ± std)"], rows))
    if m.get("random_std_mean") is not None:
      h.append(f"<p><small>Over the counts &gt; 0 ({m.get('gap_counts')}): semantic − random "
               f"{100 * m['semantic_minus_random']:+.2f} pts, L1 − random "
               f"{100 * m['l1_minus_random']:+.2f} pts; random std across "
               f"{m.get('random_draws', m['draws'])} draws {100 * m['random_std_mean']:.2f} "
               f"pts (std error of the random mean "
               f"{100 * m.get('random_sem_mean', float('nan')):.2f}).</small></p>")
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
  # The labels are the same for both models: either run's eval JSON gives the rate.
  rate, where = majority_rate(rb, next(
      (accuracy[m] for m in ("hpnet", "baseline")
       if (accuracy.get(m) or {}).get("mean_majority_rate") is not None), None))
  drawn = rb.get("figure_majority_rate")
  h.append(fig("robustness.png", "Fig. 8 robustness"))
  if drawn is not None:
    text = (f"Majority class (always answering each attribute's more frequent value; the "
            f"dashed line): {_dash(drawn)} %, from eval/attributes.json when this analysis ran"
            + (f"; eval/attributes.json now gives {_dash(rate)} %" if rate is not None
               and _dash(rate) != _dash(drawn) else "")
            + (f", on {html.escape(where)}" if rate is not None else ""))
  elif rate is not None:
    text = (f"Majority class (always answering each attribute's more frequent value): "
            f"{_dash(rate)} %, on {html.escape(where)}; not drawn in the figure, which was made "
            "before eval/attributes.json existed (rerun python -m evaluate.robustness, or the "
            "report with --force, for the dashed line)")
  else:
    text = "Majority class – % (no eval/attributes.json with it)"
  h.append(f"<p>{rb['num_images']} test images; Gaussian noise with a fixed seed "
           f"({rb['seed']}), {'clipped to [0, 1]' if rb['clip'] else 'not clipped'}. "
           f"{text}.</p>")
  h += _robustness_table(rb)

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
    h.append(f"<h3>Localisation against the test images' true regions "
             f"({at.get('run', {}).get('dataset', 'test split')}, measured)</h3>")
    h.append("<p>Energy ratio = share of the map's mass inside the attribute's true region ÷ "
             "the region's share of the image (1 = uniform); pointing = the map's maximum "
             "falls in the region. HPNet's map per attribute is the importance-weighted mean "
             "of its channel masks; Grad-CAM is on the final feature map. Over all test "
             "images (the region is where the evidence would be) and over those that have "
             "the attribute (present; the claim is judged there).</p>")
    h += _localisation_tables(at, names)
    h.append(fig("localisation.png", "localisation"))

  pd = results["predictability"]
  h.append("<h2>Human predictability as a number</h2>")
  h.append("<p>For each perturbation, each attribute's change of mean logit is predicted "
           "from training-set statistics before the perturbation runs (pruning: the removed "
           "channels' direct contribution w<sub>kc</sub>·E[GAP(M<sup>k</sup><sub>c</sub> "
           "f<sub>c</sub>)]; (n, β): the binned attention histogram), then observed on test "
           "images. Spearman ρ over all (perturbation, attribute) pairs; ρ(accuracy) ranks "
           "the predicted size of the logit shift against the observed accuracy drop, except "
           "for prune_accuracy, whose accuracy drop under the random channel sets is "
           "predicted by simulating the pruning on training images with the unpruned "
           "model's per-image logit terms.</p>")
  h += _predictability_section(pd)
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
  baseline_workdir = baseline_workdir or runs.default_baseline(workdir)
  results, timings = ensure_analyses(workdir, baseline_workdir=baseline_workdir, sizes=sizes,
                                     force=force, log=log)
  run = runs.load_run(workdir)
  accuracy = {}
  for name, wd in (("hpnet", workdir), ("baseline", baseline_workdir)):
    p = os.path.join(wd, "eval", "attributes.json") if wd else None
    if p and os.path.exists(p):
      with open(p) as f:
        accuracy[name] = json.load(f)
  page = render(workdir, results, config=dataclasses.asdict(run.config), timings=timings,
                sizes=sizes, accuracy=accuracy)
  path = os.path.join(workdir, "report", "index.html")
  io.write_text(path, page)
  return path
