"""Sharded training: multi-device and multi-process equality, resume after SIGKILL, NaN stop."""
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS
from hpjax.core import configs, distributed, training
from hpjax.data.synthetic import SyntheticFaces
from hpjax.core.errors import NonFiniteLossError

from subprocess_fixtures import assert_trees_close as _assert_trees_close
from subprocess_fixtures import env as _env
from subprocess_fixtures import free_port as _free_port

SMOKE = ATTRIBUTE_PRESETS["smoke"]


def _train_cmd(workdir, *sets):
  cmd = [sys.executable, "-m", "train.attributes", "--config", "smoke", "--workdir", str(workdir),
         "--no-progress"]
  for s in sets:
    cmd += ["--set", s]
  return cmd


def _final_params(workdir) -> dict:
  _, state, _ = experiment.load(str(workdir))
  return jax.tree.map(np.asarray, state.params)


def test_step_on_4_devices_equals_single_device():
  assert jax.device_count() == 4, "conftest forces 4 host devices"
  src = SyntheticFaces("train", image_size=16, num_examples=64)
  config = SMOKE
  model = experiment.build_model(config, len(src.label_names))
  tx = training.make_optimizer(1e-2, 1, 10)
  state0 = training.create_train_state(model, tx, src.image_shape, 0)
  loss_fn = experiment.make_loss_fn(config, src.image_shape, len(src.label_names))
  batch_np = src.get_batch(np.arange(8))
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    repl = distributed.replicated(mesh)
    step = jax.jit(functools.partial(training.train_step, loss_fn=loss_fn),
                   out_shardings=(repl, repl))
    state = jax.device_put(state0, repl)
    for _ in range(2):
      state, metrics = step(state, distributed.global_batch(batch_np, mesh))
    assert len(state.params["heads"]["kernel"].sharding.device_set) == len(devices)
    results.append((jax.tree.map(np.asarray, state.params), float(metrics["loss"])))
  _assert_trees_close(results[0][0], results[1][0], atol=1e-5)
  assert results[0][1] == pytest.approx(results[1][1], abs=1e-5)
  # And the step changed something: the comparison is not between two initial states.
  moved = np.abs(results[0][0]["heads"]["kernel"] - np.asarray(state0.params["heads"]["kernel"]))
  assert moved.max() > 1e-3


def test_two_processes_train_to_the_same_parameters_as_one(tmp_path):
  sets = ("num_steps=4", "checkpoint_every=4", "eval_every=0")
  one = subprocess.run(_train_cmd(tmp_path / "one", *sets), env=_env(), capture_output=True,
                       text=True, timeout=300)
  assert one.returncode == 0, one.stderr[-2000:]
  port = _free_port()
  procs = [subprocess.Popen(_train_cmd(tmp_path / "two", *sets), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(
                                HPJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
  _assert_trees_close(_final_params(tmp_path / "one"), _final_params(tmp_path / "two"), atol=1e-5)


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
  # Long enough that the kill lands mid-run: ~2 s of steps after the first checkpoint.
  sets = ("num_steps=400", "checkpoint_every=20", "log_every=20", "eval_every=0")
  full = subprocess.run(_train_cmd(tmp_path / "full", *sets), env=_env(), capture_output=True,
                        text=True, timeout=300)
  assert full.returncode == 0, full.stderr[-2000:]

  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(_train_cmd(killed_dir, *sets), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  first = killed_dir / "checkpoints" / "40" / "commit_success.txt"
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(p) for p in os.listdir(killed_dir / "checkpoints") if p.isdigit())
  assert steps and steps[-1] < 400, f"the run was not interrupted mid-way: checkpoints {steps}"

  resumed = subprocess.run(_train_cmd(killed_dir, *sets), env=_env(), capture_output=True,
                           text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  _assert_trees_close(_final_params(tmp_path / "full"), _final_params(killed_dir), atol=0)
  # Metrics are not duplicated by the resumed attempt.
  with open(killed_dir / "metrics.jsonl") as f:
    train_steps = [json.loads(l)["step"] for l in f if '"train"' in l]
  assert train_steps == list(range(20, 401, 20))


def test_nan_loss_stops_naming_the_step(tmp_path):
  config = dataclasses.replace(SMOKE, learning_rate=1e12, warmup_steps=1, num_steps=30,
                               log_every=30, eval_every=0, checkpoint_every=30, l1_lambda=0.0)
  with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
    experiment.train(config, str(tmp_path / "nan"), progress=False)


def test_entry_points_smoke(tmp_path, capsys):
  from evaluate import attributes as eval_main
  from train import attributes as train_main
  workdir = str(tmp_path / "smoke")
  assert train_main.main(["--config", "smoke", "--workdir", workdir, "--no-progress"]) == 0
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {r["kind"] for r in records} == {"train", "eval"}
  assert max(r["step"] for r in records) == SMOKE.num_steps
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert eval_main.main(["--workdir", workdir]) == 0
  result = json.load(open(os.path.join(workdir, "eval", "attributes.json")))
  names = SyntheticFaces("test").label_names
  assert set(result["per_attribute"]) == set(names)
  assert result["mean_accuracy"] == pytest.approx(np.mean(list(result["per_attribute"].values())))
  assert 0.0 <= result["mean_accuracy"] <= 1.0
  out = capsys.readouterr().out
  assert "| **mean** |" in out and "attributes.json" in out
  # Bad input: one line, exit status 2, no traceback.
  assert train_main.main(["--config", "nope", "--workdir", workdir]) == 2
  assert train_main.main(["--config", "smoke", "--set", "batch_size=x", "--workdir", workdir]) == 2
  assert eval_main.main(["--workdir", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert "--config nope" in err and "batch_size" in err and "no checkpoints" in err


def test_demo_entry_point_trains_both_models(tmp_path, capsys):
  from train import demo as demo_main
  workdir = tmp_path / "demo"
  assert demo_main.main(["--config", "smoke", "--workdir", str(workdir), "--no-progress",
                         "--no-report", "--set", "num_steps=2"]) == 0
  for sub in ("", "baseline"):
    result = json.load(open(workdir / sub / "eval" / "attributes.json"))
    assert result["step"] == 2 and 0.0 <= result["mean_accuracy"] <= 1.0
  assert json.load(open(workdir / "baseline" / "eval" / "attributes.json"))["model"] == "baseline"
  assert str(workdir.resolve()) in capsys.readouterr().out


def test_celeba_preset_trains_on_celeba_format_fixture(tmp_path):
  import data_fixtures
  root = tmp_path / "celeba"
  data_fixtures.write_celeba(str(root), n=24)
  config = configs.override(ATTRIBUTE_PRESETS["celeba"], [
      f"data_path={root}", "image_size=16", "features=4,8", "dilations=1,2", "batch_size=4",
      "num_steps=2", "eval_every=0", "checkpoint_every=2", "worker_count=0", "log_every=1"])
  state = experiment.train(config, str(tmp_path / "run"), progress=False)
  assert int(state.step) == 2
  assert state.params["heads"]["kernel"].shape == (40, 8)
  result = experiment.evaluate(str(tmp_path / "run"))
  assert len(result["per_attribute"]) == 40 and result["num_examples"] == 6
