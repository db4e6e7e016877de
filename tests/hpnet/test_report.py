"""End to end: the paper-A entry points and the self-contained HTML report.

The runs are smoke-shaped checkpoints written directly (random weights, non-trivial
BatchNorm statistics): the pipeline, not the training, is under test, and the
shapes match the other paper-A tests so their compiled passes are reused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess

import numpy as np
import orbax.checkpoint as ocp
import pytest
from hpnet_fixtures import K, SMOKE, random_variables

from hpjax.core import training
from hpjax.hpnet import experiment, report

CHROMIUM = "/usr/bin/chromium"


def write_run(workdir: str, model_kind: str, seed: int) -> None:
  """A checkpoint in the layout train.attributes writes (state + config)."""
  config = dataclasses.replace(SMOKE, model=model_kind)
  model = experiment.build_model(config, K)
  v = random_variables(model, seed)
  tx = training.make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps)
  state = training.TrainState(step=np.int32(3), params=v["params"], batch_stats=v["batch_stats"],
                              opt_state=tx.init(v["params"]), apply_fn=model.apply, tx=tx)
  mngr = training.checkpoint_manager(workdir, 1)
  mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state.arrays()),
                                       config=ocp.args.JsonSave(dataclasses.asdict(config))))
  mngr.wait_until_finished()
  mngr.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  w = str(tmp_path_factory.mktemp("paper_a") / "run")
  write_run(w, "hpnet", 0)
  write_run(os.path.join(w, "baseline"), "baseline", 1)
  return w


@pytest.fixture(scope="module")
def built(workdir):
  from evaluate import report as report_main
  rc = report_main.main(["--workdir", workdir, "--limit", "24", "--stats-limit", "32",
                         "--predictability-limit", "16", "--draws", "2"])
  assert rc == 0
  return os.path.join(workdir, "report", "index.html")


def test_report_is_self_contained_with_every_analysis(built, workdir):
  page = open(built, encoding="utf-8").read()
  for name in report.ANALYSES:
    with open(os.path.join(workdir, "analysis", f"{name}.json")) as f:
      assert json.load(f)  # every analysis ran and wrote its JSON
  srcs = re.findall(r'<img[^>]*src="([^"]*)"', page)
  assert len(srcs) >= 9
  assert all(s.startswith("data:image/png;base64,") for s in srcs)
  assert not re.search(r'(src|href)="(https?:|file:|//)', page)
  for text in ("Fig. 7", "Fig. 8", "Table 4", "Spearman", "leakage", "jax", "Claims"):
    assert text in page
  pruning = json.load(open(os.path.join(workdir, "analysis", "pruning.json")))
  for m in pruning["models"].values():
    pc = m["physical_check"]  # physical removal reproduces the mask's accuracy
    assert pc["physical_mean_accuracy"] == pytest.approx(pc["masked_mean_accuracy"], abs=1 / 24)
    assert len(m["random"]) == 2


def test_report_reuses_up_to_date_analyses(built, workdir):
  logged = []
  results, timings = report.ensure_analyses(workdir, log=logged.append)
  assert timings == {} and logged == [] and set(results) == set(report.ANALYSES)


@pytest.mark.parametrize("module", ["prune", "robustness", "attention", "predictability",
                                    "report"])
def test_entry_points_give_one_line_errors(module, tmp_path, capsys):
  import importlib
  main = importlib.import_module(f"evaluate.{module}").main
  assert main(["--workdir", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and "no checkpoints" in err[0]


def test_robustness_refuses_the_baseline(workdir, capsys):
  from evaluate import robustness
  assert robustness.main(["--workdir", os.path.join(workdir, "baseline")]) == 2
  assert "needs HPNet" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
def test_report_renders_in_headless_chromium(built, tmp_path):
  # A copy with a script that marks each image once the page has loaded.
  page = open(built, encoding="utf-8").read()
  probe = ("<script>window.addEventListener('load',function(){var im=document.images;"
           "for(var i=0;i<im.length;i++){im[i].setAttribute('data-loaded',"
           "(im[i].complete&&im[i].naturalWidth>0)?'yes':'no');}"
           "document.body.setAttribute('data-images',String(im.length));});</script>")
  path = tmp_path / "probe.html"
  path.write_text(page.replace("</body>", probe + "</body>"), encoding="utf-8")
  out = subprocess.run(
      [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
       "--disable-component-update", "--no-first-run", "--disable-sync",
       f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
      capture_output=True, text=True, timeout=120)
  dom = out.stdout
  n = int(re.search(r'data-images="(\d+)"', dom).group(1))
  assert n == len(re.findall(r"<img", page)) and n >= 9
  assert dom.count('data-loaded="yes"') == n and 'data-loaded="no"' not in dom
  shutil.rmtree(tmp_path / "profile", ignore_errors=True)


# ---------------------------------------------------------------------------
# Majority-class rates and dead heads (eval/attributes.json beside the analyses).

def eval_json(names, *, dead=(), old=False, num_examples=64, prevalence=0.25):
  """An eval/attributes.json as experiment.evaluate writes it (``old``: as it did
  before the per-attribute metrics: mean_accuracy and per_attribute only)."""
  acc = {n: 0.8 for n in names}
  out = {"split": "test", "step": 3, "num_examples": num_examples, "model": "hpnet",
         "mean_accuracy": 0.8, "per_attribute": acc}
  if old:
    return out
  per = {n: {"accuracy": 0.8, "prevalence": prevalence, "majority_rate": 1 - prevalence,
             "balanced_accuracy": 0.5 if n in dead else 0.7, "auroc": 0.5 if n in dead else 0.75,
             "constant": n in dead, "dead": n in dead} for n in names}
  return {**out, "mean_majority_rate": 1 - prevalence,
          "mean_balanced_accuracy": float(np.mean([p["balanced_accuracy"] for p in per.values()])),
          "mean_auroc": 0.7, "dead_heads": list(dead), "attributes": per}


def _row(page, first):
  """The cells of the (first) table row whose first cell is ``first``."""
  m = re.search(rf'<tr><td class="l">{re.escape(first)}</td>(.*?)</tr>', page)
  assert m, first
  return re.findall(r"<td[^>]*>(.*?)</td>", m.group(1))


@pytest.fixture(scope="module")
def analysed(built, workdir):
  results, timings = report.ensure_analyses(workdir, log=lambda s: None)
  assert timings == {}
  return results


def _render(workdir, results, accuracy):
  return report.render(workdir, results, config={}, timings={}, sizes=report.ReportSizes(),
                       accuracy=accuracy)


def test_red_box_iff_a_head_is_dead(analysed, workdir):
  names = analysed["attention"]["label_names"]
  dead = [names[1], names[4]]
  healthy = {"hpnet": eval_json(names), "baseline": eval_json(names)}
  page = _render(workdir, analysed, healthy)
  assert 'class="alert"' not in page and "Dead heads not checked" not in page
  for model, other in (("hpnet", "baseline"), ("baseline", "hpnet")):
    evals = {m: eval_json(names, dead=dead if m == model else ()) for m in ("hpnet", "baseline")}
    page = _render(workdir, analysed, evals)
    box = re.search(r'<div class="alert">(.*?)</div>', page, re.S).group(1)
    assert page.index('class="alert"') < page.index("<h2>Claims</h2>")  # at the top
    assert f"<code>{model}</code>" in box and f"<code>{other}</code>" not in box
    assert report.MODEL_NAMES[model] in box
    assert f"2 of {len(names)} heads dead — {dead[0]}, {dead[1]}" in box
    assert "The analyses below are computed on a model with dead heads" in box
    cells = _row(page, dead[0])
    heads = cells[5::4]  # per model: accuracy, balanced, AUROC, head after the 2 data cells
    assert heads == (["DEAD", "ok"] if model == "hpnet" else ["ok", "DEAD"])
    assert _row(page, "mean")[5::4] == (["2 dead", "0 dead"] if model == "hpnet"
                                        else ["0 dead", "2 dead"])
  page = _render(workdir, analysed, {"hpnet": eval_json(names, dead=dead),
                                     "baseline": eval_json(names, dead=dead[:1])})
  box = re.search(r'<div class="alert">(.*?)</div>', page, re.S).group(1)
  assert "<code>hpnet</code>" in box and "<code>baseline</code>" in box
  assert page.count('class="alert"') == 1


def test_majority_rate_beside_accuracy(analysed, workdir):
  names = analysed["attention"]["label_names"]
  page = _render(workdir, analysed, {"hpnet": eval_json(names, prevalence=0.25),
                                     "baseline": eval_json(names, prevalence=0.25)})
  header = re.search(r"<h2>Accuracy</h2>.*?<tr>(.*?)</tr>", page, re.S).group(1)
  ths = re.findall(r"<th[^>]*>(.*?)</th>", header)
  assert ths[:3] == ["attribute", "prevalence %", "majority class %"]
  assert "hpnet balanced acc. %" in ths and "baseline AUROC" in ths and "hpnet head" in ths
  cells = _row(page, names[0])
  assert cells[:2] == ["25.00", "75.00"] and cells[2] == "80.00" and cells[3] == "70.00"
  assert cells[4] == "0.750" and cells[5] == "ok"
  assert _row(page, "mean")[:3] == ["", "75.00", "80.00"]
  # Beside the pruning and robustness tables; the analyses used 24 test images, the
  # eval JSON 64, and the caption says so.
  assert page.count("majority class 75.00 %") == len(analysed["pruning"]["models"])
  assert "this analysis used the first 24 test images, whose rate may differ" in page
  # These analyses ran before any eval JSON existed: their figures have no dashed
  # line, and the captions say so instead of describing one.
  assert analysed["robustness"]["figure_majority_rate"] is None
  assert set(analysed["pruning"]["figure_majority_rate"].values()) == {None}
  assert "Dashed line: majority class" not in page
  assert "more frequent value; the dashed line)" not in page
  assert "No majority-class line in the figure" in page
  assert "Majority class (always answering each attribute's more frequent value): 75.00 %" \
         in page and "not drawn in the figure" in page
  # Figures the drivers drew with the line (figure_majority_rate): captioned as such.
  drawn = json.loads(json.dumps(analysed))
  drawn["robustness"]["figure_majority_rate"] = 0.75
  drawn["pruning"]["figure_majority_rate"] = {m: 0.75 for m in drawn["pruning"]["models"]}
  page = _render(workdir, drawn, {"hpnet": eval_json(names, prevalence=0.25),
                                  "baseline": eval_json(names, prevalence=0.25)})
  assert page.count("majority class 75.00 %") == len(analysed["pruning"]["models"])
  assert "Majority class (always answering each attribute's more frequent value; the " \
         "dashed line): 75.00 %" in page
  assert "Dashed line: majority class" in page and "hpnet: 75.00 %" in page
  assert "this analysis used the first 24 test images, whose rate may differ" in page
  assert "not drawn in the figure" not in page and "No majority-class line" not in page
  # The eval JSON changed after the figures were drawn: both numbers are stated.
  page = _render(workdir, drawn, {"hpnet": eval_json(names, prevalence=0.4),
                                  "baseline": eval_json(names, prevalence=0.4)})
  assert "the dashed line): 75.00 %" in page and "eval/attributes.json now gives 60.00 %" in page
  assert "eval/attributes.json has changed since for hpnet, baseline" in page
  # Evaluated on different images: prevalence and majority rate per model.
  page = _render(workdir, analysed, {"hpnet": eval_json(names, prevalence=0.25),
                                     "baseline": eval_json(names, prevalence=0.4)})
  assert _row(page, names[0])[:2] == ["25.00", "75.00"]
  assert _row(page, names[0])[6:8] == ["40.00", "60.00"]
  assert _row(page, "mean")[6:8] == ["", "60.00"]


def test_old_eval_json_renders_with_dashes(analysed, workdir):
  names = analysed["attention"]["label_names"]
  page = _render(workdir, analysed, {"hpnet": eval_json(names, old=True),
                                     "baseline": eval_json(names, old=True)})
  assert 'class="alert"' not in page
  assert "Dead heads not checked" in page and "predates the per-attribute metrics" in page
  per_model = ["80.00", "–", "–", "–"]  # accuracy; balanced accuracy, AUROC, head unknown
  assert _row(page, names[0]) == ["–", "–"] + 2 * per_model
  assert _row(page, "mean") == ["", "–"] + 2 * per_model
  assert "majority class – %" in page and "no eval/attributes.json with it" in page
  # No eval JSON at all: the page says the heads were not checked.
  page = _render(workdir, analysed, {})
  assert 'class="alert"' not in page and "hpnet: no eval/attributes.json" in page


def test_majority_rate_source():
  ev = eval_json(["a", "b"], num_examples=24, prevalence=0.1)
  rate, where = report.majority_rate({"num_images": 24}, ev)
  assert rate == pytest.approx(0.9) and where.endswith("the images this analysis used")
  rate, where = report.majority_rate({"num_images": 16}, ev)
  assert rate == pytest.approx(0.9) and "used the first 16 test images" in where
  assert report.majority_rate({"num_images": 16}, eval_json(["a"], old=True))[0] is None
  assert report.majority_rate({"num_images": 16}, None)[0] is None
  # The analysis' own rate (over the very images it used) wins.
  assert report.majority_rate({"num_images": 16, "mean_majority_rate": 0.7}, ev)[0] == 0.7
  assert report.dead_heads({"hpnet": eval_json(["a", "b"], dead=["b"]),
                            "baseline": eval_json(["a", "b"]),
                            "old": eval_json(["a"], old=True)}) == {"hpnet": ["b"]}
  assert report.unchecked_models({"hpnet": eval_json(["a"]),
                                  "old": eval_json(["a"], old=True)}) == ["old"]


def _majority_lines(ax):
  from hpjax.hpnet import plots
  return [ln for ln in ax.lines if ln.get_label() == plots.MAJORITY_LABEL]


@pytest.fixture
def drawn_figures(monkeypatch):
  """The figures the plotting functions hand to plots.save (kept open; closed after)."""
  import matplotlib.pyplot as plt

  from hpjax.hpnet import plots
  figs = []

  def keep(fig, path):
    figs.append(fig)
    fig.savefig(path)  # still a file, but the figure stays open for inspection
    return path

  monkeypatch.setattr(plots, "save", keep)
  yield figs
  for fig in figs:
    plt.close(fig)


def test_plots_draw_the_majority_line(tmp_path, drawn_figures):
  from hpjax.hpnet import plots
  curve = {"counts": [0, 2, 4], "semantic": [0.8, 0.78, 0.7], "l1": [0.8, 0.75, 0.7],
           "random_mean": [0.8, 0.7, 0.65], "random_std": [0.0, 0.02, 0.03], "draws": 2,
           "reading": "position"}
  path = str(tmp_path / "p.png")
  assert plots.pruning_curves({"hpnet": curve, "baseline": curve}, path,
                              majority_rate={"hpnet": 0.75, "baseline": None}) == path
  hp, base = drawn_figures[-1].axes[0], drawn_figures[-1].axes[1]
  (line,) = _majority_lines(hp)
  assert line.get_linestyle() == "--" and list(line.get_ydata()) == [75.0, 75.0]
  assert plots.MAJORITY_LABEL == "majority class"
  assert plots.MAJORITY_LABEL in [t.get_text() for t in hp.get_legend().get_texts()]
  assert _majority_lines(base) == []
  plots.pruning_curves({"hpnet": curve}, path, majority_rate=0.6)
  ax = drawn_figures[-1].axes[0]
  assert list(_majority_lines(ax)[0].get_ydata()) == [60.0, 60.0]
  assert ax.get_ylim()[0] <= 60.0  # in view
  plots.pruning_curves({"hpnet": curve}, path)
  assert _majority_lines(drawn_figures[-1].axes[0]) == []

  rb = {"sigmas": [0.0, 0.1], "ns": [1.0, 2.0], "betas": [0.0],
        "mean_accuracy": np.full((2, 2, 1), 0.8), "baseline_mean_accuracy": [0.85, 0.8]}
  plots.robustness(rb, str(tmp_path / "r.png"), majority_rate=0.9)
  (line,) = _majority_lines(drawn_figures[-1].axes[0])
  assert line.get_linestyle() == "--" and list(line.get_ydata()) == [90.0, 90.0]
  plots.robustness(rb, str(tmp_path / "r.png"))
  assert _majority_lines(drawn_figures[-1].axes[0]) == []
  assert len(drawn_figures) == 5


def test_plots_write_the_figures(tmp_path):
  from hpjax.hpnet import plots
  curve = {"counts": [0, 2], "semantic": [0.8, 0.7], "l1": [0.8, 0.7], "random_mean": [0.8, 0.6],
           "random_std": [0.0, 0.02], "draws": 2, "reading": "position"}
  rb = {"sigmas": [0.0, 0.1], "ns": [1.0, 2.0], "betas": [0.0],
        "mean_accuracy": np.full((2, 2, 1), 0.8)}
  for kw in ({}, {"majority_rate": 0.9}):
    assert os.path.getsize(plots.robustness(rb, str(tmp_path / "r.png"), **kw)) > 0
    assert os.path.getsize(plots.pruning_curves({"hpnet": curve}, str(tmp_path / "p.png"),
                                                **kw)) > 0
  assert not hasattr(plots, "png_bytes")  # the report embeds the drivers' PNGs


def test_drivers_draw_the_majority_rate_of_eval_json(built, workdir, tmp_path, monkeypatch):
  """The pruning and robustness analyses draw each run's eval/attributes.json rate;
  the report embeds the very PNGs they wrote and captions the line they drew."""
  from hpjax.hpnet import analyses, plots, runs
  w = str(tmp_path / "run")
  shutil.copytree(workdir, w, ignore=shutil.ignore_patterns("report"))
  base_w = os.path.join(w, "baseline")
  assert runs.eval_majority_rate(w) is None and runs.eval_majority_rate(None) is None
  evals = {"hpnet": experiment.evaluate(w), "baseline": experiment.evaluate(base_w)}
  rates = {m: e["mean_majority_rate"] for m, e in evals.items()}
  assert runs.eval_majority_rate(w) == pytest.approx(rates["hpnet"])
  assert runs.eval_majority_rate(base_w) == pytest.approx(rates["baseline"])
  calls = []
  for name in ("pruning_curves", "robustness"):
    real = getattr(plots, name)
    monkeypatch.setattr(plots, name, lambda *a, _real=real, _name=name, **kw: (
        calls.append((_name, kw.get("majority_rate"))), _real(*a, **kw))[1])
  pr = analyses.run("pruning", w, counts=[0, 2], draws=2, limit=8, stats_limit=32,
                    time_physical=False)
  rb = analyses.run("robustness", w, limit=8, ns=(1.0, 2.0), betas=(0.0, 0.1),
                    sigmas=(0.0, 0.1))
  assert calls == [("pruning_curves", pr["figure_majority_rate"]),
                   ("robustness", rb["figure_majority_rate"])]
  assert pr["figure_majority_rate"] == pytest.approx(rates)  # one line per panel
  assert rb["figure_majority_rate"] == pytest.approx(rates["hpnet"])
  out = runs.output_dir(w)
  for name in ("pruning", "robustness"):
    with open(os.path.join(out, f"{name}.json")) as f:
      assert json.load(f)["figure_majority_rate"] is not None

  logged = []
  page = open(report.build(w, log=logged.append), encoding="utf-8").read()
  assert logged == []  # the drivers' JSON is reused, not recomputed
  import base64
  for name in ("pruning", "robustness"):  # embedded as written, not redrawn
    with open(os.path.join(out, f"{name}.png"), "rb") as f:
      assert base64.b64encode(f.read()).decode("ascii") in page
  assert "Dashed line: majority class" in page
  assert f"hpnet: {100 * rates['hpnet']:.2f} %" in page
  assert (f"the dashed line): {100 * rates['hpnet']:.2f} %, from eval/attributes.json when "
          "this analysis ran") in page


def test_report_reads_the_eval_json_attributes_writes(built, workdir, tmp_path):
  """End to end on a copy of the runs: evaluate.attributes' JSON in the report."""
  w = str(tmp_path / "run")
  shutil.copytree(workdir, w, ignore=shutil.ignore_patterns("report"))
  evals = {"hpnet": experiment.evaluate(w),
           "baseline": experiment.evaluate(os.path.join(w, "baseline"))}
  logged = []
  page = open(report.build(w, log=logged.append), encoding="utf-8").read()
  assert logged == []  # the analyses were reused
  names = list(evals["hpnet"]["per_attribute"])
  cells = _row(page, names[0])
  assert cells[1] == f"{100 * evals['hpnet']['attributes'][names[0]]['majority_rate']:.2f}"
  assert _row(page, "mean")[1] == f"{100 * evals['hpnet']['mean_majority_rate']:.2f}"
  assert ('class="alert"' in page) == any(e["dead_heads"] for e in evals.values())
  for model, e in evals.items():
    if e["dead_heads"]:
      assert ", ".join(e["dead_heads"]) in page
  assert "Dead heads not checked" not in page
