"""End to end on your own data: an attribute table of generated faces on disk (JPEG/PNG + CSV
with region boxes) trains HPNet, evaluates, and scores localisation from the CSV's regions."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import data_fixtures as fx
from hpjax.data.regions import box_masks
from hpjax.data.synthetic import ATTRIBUTES
from hpjax.hpnet.analyses import attention

SETS = ["dataset=attribute_table", "image_size=16", "num_steps=4", "eval_every=4",
        "checkpoint_every=4"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("faces_table"))
  # 60 faces at 32 px, stored 32x40 (padded), read at 16 px: 48 train / 6 val / 6 test.
  return root, fx.write_attribute_table(root, 60, size=32, pad=4, seed=3)


@pytest.fixture(scope="module")
def trained(table, tmp_path_factory):
  from train import attributes as train_attributes
  root, _ = table
  workdir = str(tmp_path_factory.mktemp("table_run") / "run")
  argv = ["--config", "smoke", "--workdir", workdir, "--no-progress",
          *(a for s in SETS + [f"data_path={root}"] for a in ("--set", s))]
  assert train_attributes.main(argv) == 0
  return workdir


def test_trains_and_evaluates_on_the_table(table, trained, capsys):
  from evaluate import attributes as evaluate_attributes
  root, written = table
  assert evaluate_attributes.main(["--workdir", trained]) == 0
  result = json.load(open(os.path.join(trained, "eval", "attributes.json")))
  assert result["num_examples"] == 6 and result["step"] == 4
  assert list(result["per_attribute"]) == list(ATTRIBUTES)
  test_rows = [i for i, s in enumerate(written["split"]) if s == "test"]
  prevalence = written["label"][test_rows].mean(0)
  got = [result["attributes"][a]["prevalence"] for a in ATTRIBUTES]
  np.testing.assert_allclose(got, prevalence)
  assert "mean test accuracy" in capsys.readouterr().out


def test_localisation_is_scored_on_the_tables_regions(table, trained, capsys):
  from evaluate import attention as evaluate_attention
  _, written = table
  assert evaluate_attention.main(["--workdir", trained, "--stats-limit", "16"]) == 0
  r = json.load(open(os.path.join(trained, "analysis", "attention.json")))
  loc = r["localisation"]
  assert set(loc) == {"hpnet_attention", "hpnet_grad_cam", "mean_map_prior", "centre_prior"}
  # Every test image counts for every attribute whose CSV box is non-empty.
  test_rows = [i for i, s in enumerate(written["split"]) if s == "test"]
  boxes = written["boxes"][test_rows]
  counted = (boxes[..., 2] > boxes[..., 0]).sum(0)
  np.testing.assert_array_equal(loc["hpnet_attention"]["all"]["count"], counted)
  present = ((boxes[..., 2] > boxes[..., 0]) & (written["label"][test_rows] > 0)).sum(0)
  np.testing.assert_array_equal(loc["hpnet_attention"]["present"]["count"], present)
  # The share of a uniform-ish prior inside a box is the box's area at 16 px.
  area = np.asarray(loc["centre_prior"]["all"]["area"])
  assert ((area > 0) & (area <= 1)).all()
  assert "localisation hpnet_attention" in capsys.readouterr().out


def test_every_paper_a_analysis_runs_on_the_table(trained):
  from evaluate import report
  assert report.main(["--workdir", trained, "--limit", "6", "--stats-limit", "16",
                      "--predictability-limit", "6", "--draws", "2"]) == 0
  analysis = os.path.join(trained, "analysis")
  written = {name: json.load(open(os.path.join(analysis, f"{name}.json")))
             for name in ("attention", "pruning", "robustness", "predictability")}
  assert written["attention"]["run"]["dataset"] == "attribute_table"
  assert "localisation_mean" in written["attention"] and written["robustness"]["num_images"] == 6
  assert os.path.getsize(os.path.join(trained, "report", "index.html")) > 0


def test_regions_are_drawn_from_the_boxes():
  boxes = np.array([[[1, 0, 3, 2], [0, 0, 0, 0]]], np.int32)  # [B=1, K=2, 4]
  batch = {"image": np.zeros((1, 4, 5, 3), np.uint8), "boxes": boxes}
  assert attention.has_regions(batch)
  regions = attention._regions(batch)
  assert regions.shape == (1, 2, 4, 5) and regions.dtype == bool
  np.testing.assert_array_equal(regions[0, 0], [[0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0] * 5, [0] * 5])
  assert not regions[0, 1].any()
  np.testing.assert_array_equal(regions, box_masks(boxes, 4, 5))
  assert not attention.has_regions({"image": batch["image"]})
