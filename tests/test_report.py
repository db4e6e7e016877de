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
from test_analysis import K, SMOKE, random_variables

from hpjax import attributes, report, training

CHROMIUM = "/usr/bin/chromium"


def write_run(workdir: str, model_kind: str, seed: int) -> None:
  """A checkpoint in the layout train.attributes writes (state + config)."""
  config = dataclasses.replace(SMOKE, model=model_kind)
  model = attributes.build_model(config, K)
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


def test_verdicts_read_the_numbers():
  results = {
      "pruning": {"models": {"hpnet": {"semantic_minus_random": 0.02, "l1_minus_random": 0.0,
                                       "counts": [0, 4], "random_std": [0.0, 0.05]},
                             "baseline": {"semantic_minus_random": -0.01,
                                          "l1_minus_random": 0.0, "counts": [0, 4],
                                          "random_std": [0.0, 0.01]}}},
      "robustness": {"best": [{"sigma": 0.0, "gain_over_identity": 0.0, "n": 1, "beta": 0},
                              {"sigma": 0.25, "gain_over_identity": 0.001, "n": 1, "beta": 0},
                              {"sigma": 0.5, "gain_over_identity": 0.03, "n": 2, "beta": 0.1}]},
      "attention": {"table4": {"Heavy_Makeup": [["Wearing_Lipstick", 0.9]],
                               "Black_Hair": [["Blond_Hair", 0.8], ["Bald", 0.1]],
                               "Blond_Hair": [["Bald", 0.5]]}},
  }
  v = report.verdicts(results)
  assert v["pruning"][0] == "partly"  # +2 pts for HPNet, within the random spread (2.5)
  # 0.1 pts at σ = 0.25 is below the margin; 3 pts at σ = 0.5 counts: 1 of 2 levels.
  assert v["robustness"][0] == "holds" and "+3.00 pts at σ = 0.5" in v["robustness"][1]
  assert "at 1 of 2 noise levels" in v["robustness"][1]
  assert v["table4"][0] == "partly"  # Blond_Hair's top list lacks Black_Hair
  assert "other hair colours in Black_Hair's top 5: 1/1" in v["table4"][1]


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
