"""Workdirs that are damaged, changed, unusable, full or in use (issue 13, items 1-4).

Every case is run through the commands' ``main(argv)`` (status 2 and one ``error:``
line, no traceback) or at library level, on copies of one trained smoke workdir.
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hpjax.core import io, training, workdir
from hpjax.core.errors import CheckpointError, ConfigError, WorkdirError
from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS, AttributesConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Checkpoints at steps 3 and 6; no evaluation (faster, and not what is tested here).
SMOKE = dataclasses.replace(ATTRIBUTE_PRESETS["smoke"], eval_every=0, log_every=2)
SETS = ["--set", "eval_every=0", "--set", "log_every=2"]


def _train_argv(w, *sets):
  argv = ["--config", "smoke", "--workdir", str(w), "--no-progress", *SETS]
  for s in sets:
    argv += ["--set", s]
  return argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """``(workdir, final params)`` of an uninterrupted smoke run."""
  w = str(tmp_path_factory.mktemp("workdir") / "run")
  state = experiment.train(SMOKE, w, progress=False)
  assert training.checkpoint_steps(w) == [6, 3]
  return w, jax.tree.map(np.asarray, state.params)


@pytest.fixture
def run(trained, tmp_path):
  """A fresh copy of the trained workdir."""
  w = str(tmp_path / "run")
  shutil.copytree(trained[0], w)
  return w


def _hashes(root: str) -> dict[str, str]:
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      p = os.path.join(d, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def _one_error(capsys) -> str:
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def _params(w):
  return jax.tree.map(np.asarray, experiment.load(w)[1].params)


def _assert_equal_trees(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _train_steps(metrics_path):
  with open(metrics_path) as f:
    return [r["step"] for r in map(json.loads, f) if r["kind"] == "train"]


def _step_dir(w, step):
  return os.path.join(w, "checkpoints", str(step))


# ----------------------------------------------------------------------------
# 1. Damaged checkpoints


def _truncate_data(w, step):
  """Truncates the array data files (``state/d/*`` after orbax merged the per-process
  databases, ``state/ocdbt.process_0/d/*`` before)."""
  files = glob.glob(os.path.join(_step_dir(w, step), "state", "**", "d", "*"), recursive=True)
  assert files
  for f in files:
    os.truncate(f, 10)


def _garbage(path):
  with open(path, "w") as f:
    f.write("{not json")


DAMAGE = {
    "truncated data files": (_truncate_data, "state: ValueError: OUT_OF_RANGE"),
    "missing _METADATA": (lambda w, s: os.remove(os.path.join(_step_dir(w, s), "state",
                                                              "_METADATA")),
                          "state: its _METADATA file is missing"),
    "bad array metadata": (lambda w, s: _garbage(os.path.join(_step_dir(w, s), "state",
                                                              "_METADATA")),
                           "state: JSONDecodeError"),
    "missing ocdbt manifest": (lambda w, s: os.remove(os.path.join(
        _step_dir(w, s), "state", "manifest.ocdbt")), "state: ValueError: NOT_FOUND"),
    "config not JSON": (lambda w, s: _garbage(os.path.join(_step_dir(w, s), "config",
                                                           "metadata")),
                        "config: JSONDecodeError"),
    "no commit marker": (lambda w, s: os.remove(os.path.join(_step_dir(w, s),
                                                             training.COMMIT_MARKER)),
                         "no commit_success.txt"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_evaluation_falls_back_to_the_newest_intact_checkpoint(run, kind, capsys):
  from evaluate import attributes as evaluate_main
  damage, what = DAMAGE[kind]
  damage(run, 6)
  before = _hashes(run)
  assert evaluate_main.main(["--workdir", run]) == 0
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1, err
  assert err[0].startswith(f"warning: checkpoint 6 in {run}/checkpoints cannot be restored: ")
  assert what in err[0] and err[0].endswith("; using checkpoint 3 instead")
  assert json.load(open(os.path.join(run, "eval", "attributes.json")))["step"] == 3
  after = _hashes(run)
  assert {k: v for k, v in after.items() if not k.startswith("eval/")} == before


def test_wrong_dtype_is_reported_not_cast(run, capsys):
  from evaluate import attributes as evaluate_main
  # Checkpoint 9: checkpoint 6 with one parameter stored as float16.
  config, state, _ = experiment.load(run)
  mngr = training.checkpoint_manager(run, 5)
  arrays = state.arrays()
  name = sorted(arrays["params"])[0]
  leaf_path = [name]
  sub = arrays["params"][name]
  while isinstance(sub, dict):
    key = sorted(sub)[0]
    leaf_path.append(key)
    sub = sub[key]
  parent = arrays["params"]
  for k in leaf_path[:-1]:
    parent = parent[k]
  parent[leaf_path[-1]] = np.asarray(sub, np.float16)
  import orbax.checkpoint as ocp
  mngr.save(9, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                       config=ocp.args.JsonSave(dataclasses.asdict(config))))
  mngr.wait_until_finished()
  mngr.close()
  assert evaluate_main.main(["--workdir", run]) == 0
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("warning: checkpoint 9 ")
  assert f"state: params.{'.'.join(leaf_path)} is float16" in err[0]
  assert "expected float32" in err[0] and err[0].endswith("using checkpoint 6 instead")


def test_no_intact_checkpoint_is_one_error_line(run, capsys):
  from evaluate import attributes as evaluate_main
  from train import attributes as train_main
  _truncate_data(run, 6)
  DAMAGE["config not JSON"][0](run, 3)
  before = _hashes(run)
  assert evaluate_main.main(["--workdir", run]) == 2
  line = _one_error(capsys)
  assert line.startswith(f"error: none of the 2 checkpoints in {run}/checkpoints can be "
                         "restored: checkpoint 6: state: ValueError: OUT_OF_RANGE")
  assert "; checkpoint 3: config: JSONDecodeError" in line
  assert train_main.main(_train_argv(run)) == 2  # training restores the data iterator too
  assert _one_error(capsys).startswith(
      f"error: none of the 2 checkpoints in {run}/checkpoints can be restored: checkpoint 6: "
      "state or data: ValueError: OUT_OF_RANGE")
  assert _hashes(run) == before  # nothing deleted, nothing moved, no lock left


def test_empty_checkpoints_folder(run, capsys):
  from evaluate import attributes as evaluate_main
  from train import attributes as train_main
  shutil.rmtree(os.path.join(run, "checkpoints"))
  os.mkdir(os.path.join(run, "checkpoints"))
  assert evaluate_main.main(["--workdir", run]) == 2
  assert _one_error(capsys) == f"error: no checkpoint in {run}/checkpoints: train first"
  # Training starts over (as after a kill before the first checkpoint), replacing the
  # earlier attempt's records instead of repeating them.
  assert train_main.main(_train_argv(run, "num_steps=2")) == 0
  assert capsys.readouterr().err.splitlines() == [
      f"warning: workdir {run}: no checkpoint to resume from; starting over at step 0 "
      "(metrics.jsonl's records of steps 2..6 are replaced)"]
  assert training.checkpoint_steps(run) == [2]
  assert _train_steps(os.path.join(run, "metrics.jsonl")) == [2]


def test_training_resumes_from_the_intact_checkpoint_and_sets_the_damaged_one_aside(
    run, trained, capsys):
  from train import attributes as train_main
  _truncate_data(run, 6)
  damaged = _hashes(_step_dir(run, 6))
  assert train_main.main(_train_argv(run)) == 0
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning: checkpoint")]
  assert len(err) == 1
  aside = os.path.join(run, "damaged", "checkpoint_6")
  assert err[0].startswith(f"warning: checkpoint 6 in {run}/checkpoints cannot be restored: ")
  assert err[0].endswith(f"; set it aside in {aside}; using checkpoint 3 instead")
  assert _hashes(aside) == damaged  # every byte kept
  # Steps 4..6 trained again: the same parameters as the uninterrupted run.
  assert training.checkpoint_steps(run) == [6, 3]
  _assert_equal_trees(_params(run), trained[1])


# ----------------------------------------------------------------------------
# 2. A different config on an existing workdir


def test_every_config_field_is_classified():
  from hpjax.image_score.config import SemiConfig
  from hpjax.image_score.semisupervised import PhaseConfig
  assert not set(workdir.MAY_CHANGE_ON_RESUME) & set(workdir.MUST_MATCH)
  for cls in (AttributesConfig, SemiConfig, PhaseConfig):
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = fields - set(workdir.MAY_CHANGE_ON_RESUME) - set(workdir.MUST_MATCH)
    assert not missing, f"{cls.__name__}: decide whether {missing} may change on resume"


def test_compare_configs():
  a = dataclasses.asdict(SMOKE)
  b = dataclasses.asdict(dataclasses.replace(SMOKE, num_steps=9, worker_count=2))
  assert workdir.compare_configs(a, b, where="workdir W") == {
      "num_steps": {"stored": 6, "requested": 9}, "worker_count": {"stored": 0, "requested": 2}}
  c = dataclasses.asdict(dataclasses.replace(SMOKE, features=(8, 8, 8, 16), seed=1, num_steps=9))
  with pytest.raises(ConfigError) as e:
    workdir.compare_configs(json.loads(json.dumps(a)), c, where="workdir W")
  assert str(e.value).startswith("workdir W holds a run with another config: features "
                                 "4,8,8,8 → 8,8,8,16, seed 0 → 1; ")
  assert "num_steps" not in str(e.value) and "use a new --workdir" in str(e.value)
  # A field only one side has (another version of the code) is not compared.
  assert workdir.compare_configs({"num_steps": 6, "old": 1}, {"num_steps": 6, "new": 2},
                                 where="W") == {}


def test_changed_shape_fields_are_refused_before_restoring(run, capsys):
  from train import attributes as train_main
  before = _hashes(run)
  assert train_main.main(_train_argv(run, "features=8,8,8,16", "num_steps=8")) == 2
  line = _one_error(capsys)
  assert line == (f"error: workdir {run} holds a run with another config: features 4,8,8,8 → "
                  "8,8,8,16; these fix the model, its data or its training, so it cannot "
                  "resume with them: use a new --workdir (or --set the stored values)")
  assert _hashes(run) == before


def test_allowed_changes_resume_and_are_recorded(run, capsys):
  from train import attributes as train_main
  assert train_main.main(_train_argv(run, "num_steps=8", "checkpoint_every=4")) == 0
  err = capsys.readouterr().err
  assert (f"warning: workdir {run}: resuming at step 6 with num_steps 6 → 8, checkpoint_every "
          "3 → 4 (recorded in metrics.jsonl)") in err
  records = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
  resume = [r for r in records if r["kind"] == "resume"]
  assert resume == [{"step": 6, "kind": "resume", "changed": {
      "num_steps": {"stored": 6, "requested": 8},
      "checkpoint_every": {"stored": 3, "requested": 4}}}]
  assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8]
  assert training.checkpoint_steps(run)[0] == 8
  assert training.read_config(run)["num_steps"] == 8  # the new config is the stored one now


def test_semisupervised_config_check_uses_the_one_comparison(tmp_path, capsys):
  from evaluate import semisupervised as evaluate_main
  from hpjax.image_score import semisupervised as semi
  from hpjax.image_score.config import SEMI_PRESETS
  w = str(tmp_path / "semi")
  os.makedirs(os.path.join(w, "records"))
  cfg = SEMI_PRESETS["smoke"]
  semi._check_config(cfg, w)
  io.write_json(os.path.join(w, "records", "epoch_000.json"), {"epoch": 0})
  io.write_json(os.path.join(w, "records", "epoch_001.json"), {"epoch": 1})
  # Allowed: recorded, and config.json follows.
  semi._check_config(dataclasses.replace(cfg, log_every=8, worker_count=1), w)
  assert (f"warning: workdir {w}: resuming after epoch 1 with log_every 4 → 8, worker_count "
          "0 → 1 (recorded in metrics.jsonl)") in capsys.readouterr().err
  assert semi.read_run_config(w).log_every == 8
  semi._write_metrics(w)
  records = [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
  assert [(r["step"], r["kind"]) for r in records] == [(0, "semi"), (1, "semi"), (1, "resume")]
  assert records[2]["changed"]["log_every"] == {"stored": 4, "requested": 8}
  # Refused: each field listed, stored → requested.
  with pytest.raises(ConfigError, match=r"^workdir .* another config: method image_score → "
                                        r"softmax, retrain_epochs 2 → 3; "):
    semi._check_config(dataclasses.replace(cfg, method="softmax", retrain_epochs=3), w)
  # config.json that is not JSON: one line from both commands.
  _garbage(os.path.join(w, "config.json"))
  assert evaluate_main.main(["--workdirs", w, "--out", str(tmp_path / "out")]) == 2
  line = _one_error(capsys)
  assert line.startswith(f"error: {w}/config.json: not JSON (Expecting property name "
                         "enclosed in double quotes, line 1 column 2); it records the run's "
                         "config")
  with pytest.raises(WorkdirError, match="not JSON"):
    semi._check_config(cfg, w)


# ----------------------------------------------------------------------------
# 3. Bad workdirs and full disks


def test_workdir_that_is_a_file(tmp_path, capsys):
  from evaluate import attributes as evaluate_main
  from evaluate import semisupervised as evaluate_semi
  from hpjax.data import prepare
  from train import attributes as train_main
  from train import semisupervised as train_semi
  f = tmp_path / "file"
  f.write_text("x")
  assert train_main.main(_train_argv(f)) == 2
  assert _one_error(capsys) == (f"error: workdir {f} is a file, not a folder; choose another "
                                "--workdir")
  assert train_semi.main(["--config", "smoke", "--workdir", str(f), "--no-progress"]) == 2
  assert _one_error(capsys) == (f"error: workdir {f} is a file, not a folder; choose another "
                                "--workdir")
  assert evaluate_main.main(["--workdir", str(f)]) == 2
  assert "no checkpoints/ there" in _one_error(capsys)
  assert evaluate_semi.main(["--workdirs", str(f), "--out", str(tmp_path / "o")]) == 2
  assert "no config.json there" in _one_error(capsys)
  assert prepare.main(["celeba", "--src", str(tmp_path), "--dst", str(f / "cache")]) == 2
  assert _one_error(capsys) == (f"error: the folder of --dst {f} is a file, not a folder; "
                                "choose another --dst")
  assert f.read_text() == "x"


def test_unwritable_workdir_and_full_disk_are_refused_up_front(tmp_path, monkeypatch, capsys):
  from train import attributes as train_main
  w = str(tmp_path / "w")
  os.makedirs(w)
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, m: False if p == w else real_access(p, m))
  assert train_main.main(_train_argv(w)) == 2
  assert _one_error(capsys) == (f"error: workdir {w} is not writable by this user; fix its "
                                "permissions or choose another --workdir")
  monkeypatch.setattr(os, "access", real_access)
  usage = shutil.disk_usage(w)
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=4096))
  assert train_main.main(_train_argv(w)) == 2
  assert _one_error(capsys) == (f"error: workdir {w}: its disk is full (4096 bytes free); free "
                                "some space or choose another --workdir")
  assert os.listdir(w) == []


def test_unwritable_files_are_one_line(tmp_path, monkeypatch):
  # As root nothing is unwritable: the write itself fails as it would for another user.
  def denied(*a, **k):
    raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json.tmp1"))

  monkeypatch.setattr(os, "replace", denied)
  with pytest.raises(WorkdirError) as e:
    io.write_json(tmp_path / "x.json", {"a": 1})
  assert str(e.value) == f"cannot write {tmp_path / 'x.json'}: Permission denied [EACCES]"
  assert not os.listdir(tmp_path)


def test_full_disk_during_checkpoint_save_then_resume(run, trained, monkeypatch, capsys):
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
  from train import attributes as train_main
  shutil.rmtree(_step_dir(run, 6))
  with open(os.path.join(run, "metrics.jsonl")) as f:
    kept = [l for l in f if json.loads(l)["step"] <= 3]
  io.write_text(os.path.join(run, "metrics.jsonl"), "".join(kept))
  save = jch.JsonCheckpointHandler._save_fn

  async def full(self, x, directory):
    path = directory / self._filename
    path.write_text(json.dumps(x)[:5])  # part of it, then the disk is full
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

  monkeypatch.setattr(jch.JsonCheckpointHandler, "_save_fn", full)
  assert train_main.main(_train_argv(run)) == 2
  line = _one_error(capsys)
  # The file that failed, in orbax's temporary folder of the checkpoint.
  assert line.startswith(f"error: checkpoint 6 not saved: cannot write {run}/checkpoints/"
                         "6.orbax-checkpoint-tmp/")
  assert line.endswith("/metadata: No space left on device [ENOSPC]; checkpoint 3 is intact: "
                       "re-run to resume from it")
  assert training.checkpoint_steps(run) == [3]
  assert not os.path.exists(os.path.join(run, workdir.LOCK_NAME))
  monkeypatch.setattr(jch.JsonCheckpointHandler, "_save_fn", save)
  assert train_main.main(_train_argv(run)) == 0
  _assert_equal_trees(_params(run), trained[1])
  assert _train_steps(os.path.join(run, "metrics.jsonl")) == [2, 4, 6]


def test_full_disk_during_metrics_write_then_resume(run, trained, monkeypatch, capsys):
  from train import attributes as train_main
  shutil.rmtree(_step_dir(run, 6))
  path = os.path.join(run, "metrics.jsonl")
  with open(path) as f:
    kept = "".join(l for l in f if json.loads(l)["step"] <= 3)
  io.write_text(path, kept)
  write_all = io.write_all

  def full(fd, data):
    if b'"step": 6' in data:
      os.write(fd, data[:7])  # a torn line, then the disk is full
      raise OSError(errno.ENOSPC, "No space left on device")
    return write_all(fd, data)

  monkeypatch.setattr(io, "write_all", full)
  assert train_main.main(_train_argv(run)) == 2
  assert _one_error(capsys) == (f"error: cannot write {path}: No space left on device "
                                "[ENOSPC]")
  # No torn line: the records up to step 4 are whole, and checkpoint 3 is intact.
  assert [json.loads(l)["step"] for l in open(path)] == [2, 4]
  assert training.checkpoint_steps(run) == [3]
  monkeypatch.setattr(io, "write_all", write_all)
  assert train_main.main(_train_argv(run)) == 0
  _assert_equal_trees(_params(run), trained[1])
  assert _train_steps(path) == [2, 4, 6]


_NOISY = """
import errno, sys
from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
from evaluate import attributes as evaluate_main
from train import attributes as train_main
assert evaluate_main.main(["--workdir", sys.argv[1]]) == 0

async def no_space(self, x, directory):
  raise OSError(errno.ENOSPC, "No space left on device", str(directory / self._filename))

jch.JsonCheckpointHandler._save_fn = no_space
sys.exit(train_main.main(sys.argv[2:]))
"""


def test_orbax_leftovers_print_no_traceback(trained, tmp_path):
  # A failed restore or save leaves orbax threads that fail later (at exit, too) and
  # print tracebacks past pytest's capture: run the commands as a user does.
  damaged, full = str(tmp_path / "damaged"), str(tmp_path / "full")
  shutil.copytree(trained[0], damaged)
  DAMAGE["missing ocdbt manifest"][0](damaged, 6)
  shutil.copytree(trained[0], full)
  shutil.rmtree(_step_dir(full, 6))
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  proc = subprocess.run([sys.executable, "-c", _NOISY, damaged, *_train_argv(full)],
                        env={**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT},
                        capture_output=True, text=True, timeout=600)
  err = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(err) == 2, proc.stderr[-3000:]
  assert err[0].startswith("warning: checkpoint 6 ") and "NOT_FOUND" in err[0]
  assert err[1].startswith("error: checkpoint 6 not saved: ") and "[ENOSPC]" in err[1]


def test_torn_last_metrics_line_is_dropped_on_resume(run, capsys):
  from train import attributes as train_main
  path = os.path.join(run, "metrics.jsonl")
  shutil.rmtree(_step_dir(run, 6))
  with open(path, "a") as f:
    f.write('{"step": 6, "kind": "tr')
  assert train_main.main(_train_argv(run)) == 0
  assert _train_steps(path) == [2, 4, 6]
  # A bad line that is not the last is no torn write: one error line naming it.
  with open(path, "w") as f:
    f.write('{"step": 2}\nxx\n{"step": 4}\n')
  shutil.rmtree(_step_dir(run, 6))
  assert train_main.main(_train_argv(run)) == 2
  assert _one_error(capsys).startswith(f"error: {path} line 2: expected a JSON record, got 'xx")


# ----------------------------------------------------------------------------
# 4. Two runs on one workdir

_HOLD = """
import sys, time
from hpjax.core import workdir
with workdir.lock(sys.argv[1]):
  print("locked", flush=True)
  time.sleep(120)
"""


def _holder(w):
  """A process holding W's lock (started and waited for)."""
  env = {**os.environ, "PYTHONPATH": ROOT}
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, w], stdout=subprocess.PIPE, text=True,
                          env=env)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_run_is_refused_naming_the_first_then_takes_over_its_stale_lock(run, capsys):
  from evaluate import attributes as evaluate_main
  from train import attributes as train_main
  proc = _holder(run)
  try:
    lock = json.load(open(os.path.join(run, workdir.LOCK_NAME)))
    assert lock["pid"] == proc.pid and lock["host"] == socket.gethostname()
    assert lock["command"].startswith("python -c") and lock["started"]
    before = _hashes(run)
    assert train_main.main(_train_argv(run)) == 2
    line = _one_error(capsys)
    assert line.startswith(f"error: workdir {run} is in use by pid {proc.pid} on "
                           f"{socket.gethostname()} since {lock['started']} (python -c ")
    assert line.endswith("; wait for it to end or stop it")
    assert _hashes(run) == before
    # Evaluation only reads: it works while the run holds the lock.
    assert evaluate_main.main(["--workdir", run]) == 0
    capsys.readouterr()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # SIGKILL left the lock behind: the next run takes it over with one warning.
  assert os.path.exists(os.path.join(run, workdir.LOCK_NAME))
  assert train_main.main(_train_argv(run)) == 0
  err = capsys.readouterr().err.splitlines()
  assert err == [f"warning: workdir {run}: taking over the stale lock of pid {proc.pid} on "
                 f"{socket.gethostname()} since {lock['started']} ({lock['command']}): pid "
                 f"{proc.pid} is not running"]
  assert not os.path.exists(os.path.join(run, workdir.LOCK_NAME))  # released at the end


def _write_lock(w, name=workdir.LOCK_NAME, **fields):
  holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2025-01-01 00:00:00",
            "start_ticks": None, "command": "python -m train.attributes", **fields}
  io.write_json(os.path.join(w, name), holder)


def test_every_writing_command_is_refused_on_a_workdir_in_use(tmp_path, capsys):
  from hpjax.data import prepare
  from train import semisupervised as train_semi
  w = str(tmp_path / "semi")
  os.makedirs(w)
  live = os.getppid()  # another live process of this host
  _write_lock(w, pid=live)
  assert train_semi.main(["--config", "smoke", "--workdir", w, "--no-progress"]) == 2
  assert _one_error(capsys).startswith(f"error: workdir {w} is in use by pid {live} on ")
  assert os.listdir(w) == [workdir.LOCK_NAME]
  # prepare: the cache being written is locked by .DST.lock beside it.
  _write_lock(str(tmp_path), name=".cache.lock", pid=live)
  assert prepare.main(["celeba", "--src", str(tmp_path / "raw"), "--dst",
                       str(tmp_path / "cache")]) == 2
  assert _one_error(capsys).startswith(f"error: the folder of --dst {tmp_path} is in use by "
                                       f"pid {live} on ")


def test_lock_from_another_host_is_respected(tmp_path):
  w = str(tmp_path)
  _write_lock(w, pid=1, host="elsewhere")
  with pytest.raises(WorkdirError) as e:
    with workdir.lock(w):
      pass
  assert str(e.value) == (f"workdir {w} is in use by pid 1 on elsewhere since 2025-01-01 "
                          "00:00:00 (python -m train.attributes); another host: if that run has "
                          f"ended, delete {w}/.lock")


def test_reused_pid_and_unreadable_lock_are_stale(tmp_path, capsys):
  w = str(tmp_path)
  # The pid is alive (this process) but started later than the lock's holder did.
  _write_lock(w, start_ticks=1)
  with workdir.lock(w):
    assert json.load(open(os.path.join(w, workdir.LOCK_NAME)))["pid"] == os.getpid()
  assert "now belongs to a later process" in capsys.readouterr().err
  # Unreadable and young: being written by its owner right now; old: stale.
  with open(os.path.join(w, workdir.LOCK_NAME), "w") as f:
    f.write("{")
  with pytest.raises(WorkdirError, match="being locked by another process right now"):
    with workdir.lock(w):
      pass
  old = time.time() - 3600
  os.utime(os.path.join(w, workdir.LOCK_NAME), (old, old))
  with workdir.lock(w):
    pass
  assert capsys.readouterr().err.startswith(f"warning: workdir {w}: taking over the stale "
                                            f"lock {w}/.lock: it is not a lock record")
  assert os.listdir(w) == []


def test_nested_locks_write_one_file(tmp_path):
  w = str(tmp_path / "w")
  with workdir.lock(w):
    with workdir.lock(os.path.join(w, "epoch_001")):
      assert not os.path.exists(os.path.join(w, "epoch_001", workdir.LOCK_NAME))
    assert os.path.exists(os.path.join(w, workdir.LOCK_NAME))
  assert not os.path.exists(os.path.join(w, workdir.LOCK_NAME))


def test_lock_is_released_when_the_run_fails(tmp_path):
  w = str(tmp_path / "w")
  with pytest.raises(RuntimeError):
    with workdir.lock(w):
      raise RuntimeError("boom")
  assert os.listdir(w) == []
  with pytest.raises(CheckpointError):  # the library's own errors release it as well
    with workdir.lock(w):
      training.read_config(w)
  assert os.listdir(w) == []
