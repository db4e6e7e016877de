"""The semi-supervised loop killed (SIGKILL) in the middle of an epoch and resumed ends with the
selections, records and parameters of an uninterrupted run (issue 13, item 6)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpjax.image_score import semisupervised as semi
from subprocess_fixtures import assert_trees_close, env, kill_all, wait_for

# 384 labelled / 256 additional digits: 12 pre-training steps, ~16 per epoch, a checkpoint
# every 2, so a kill after the second one of an epoch lands with the epoch half done.
SETS = ("num_train=640", "checkpoint_every=2", "max_checkpoints=2")
EPOCHS = (1, 2)


def _cmd(workdir) -> list[str]:
  cmd = [sys.executable, "-m", "train.semisupervised", "--config", "smoke", "--workdir",
         str(workdir), "--no-progress"]
  for s in SETS:
    cmd += ["--set", s]
  return cmd


def _run(workdir) -> None:
  done = subprocess.run(_cmd(workdir), env=env(), capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("semi_resume")
  full, killed = root / "full", root / "killed"
  _run(full)
  for epoch in EPOCHS:  # killed in the middle of epoch 1, resumed, killed in epoch 2
    proc = subprocess.Popen(_cmd(killed), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
      wait_for(os.path.join(semi.phase_dir(str(killed), epoch), "checkpoints", "4",
                            "commit_success.txt"), proc)
    finally:
      kill_all([proc])  # SIGKILL
    assert not os.path.exists(semi.record_path(str(killed), epoch)), (
        f"the kill landed after epoch {epoch} had finished")
  _run(killed)
  return str(full), str(killed)


def _without_seconds(record: dict) -> dict:
  return {k: v for k, v in record.items() if k != "seconds"}


def test_every_epoch_selects_and_records_as_the_uninterrupted_run(runs):
  full, killed = runs
  for epoch in EPOCHS:
    with np.load(os.path.join(semi.phase_dir(full, epoch), "selection.npz")) as a, \
         np.load(os.path.join(semi.phase_dir(killed, epoch), "selection.npz")) as b:
      assert a["index"].size > 0
      np.testing.assert_array_equal(a["index"], b["index"])
      np.testing.assert_array_equal(a["pseudo"], b["pseudo"])
  for epoch in (0, *EPOCHS):
    with open(semi.record_path(full, epoch)) as f, open(semi.record_path(killed, epoch)) as g:
      assert _without_seconds(json.load(f)) == _without_seconds(json.load(g))
  read = lambda w: [_without_seconds(json.loads(l))
                    for l in open(os.path.join(w, "metrics.jsonl"))]
  assert read(full) == read(killed) and len(read(full)) == 1 + len(EPOCHS)


def test_the_resumed_run_ends_with_the_same_parameters(runs):
  full, killed = runs
  _, a = semi.load_final_state(full)
  _, b = semi.load_final_state(killed)
  assert int(a.step) == int(b.step) > 0
  assert_trees_close(a.params, b.params, atol=0)
  assert_trees_close(a.opt_state, b.opt_state, atol=0)
  with np.load(os.path.join(full, "scores.npz")) as x, \
       np.load(os.path.join(killed, "scores.npz")) as y:
    assert sorted(x.files) == sorted(y.files)
    for k in x.files:
      if x[k].dtype.kind == "f":
        np.testing.assert_array_equal(x[k], y[k])
