"""Ctrl-C and SIGTERM (issue 13, item 5): training stops after a step with a checkpoint, prints
one line naming the command that resumes, exits 130 / 143, and the resumed run ends with the
parameters of an uninterrupted one — in one process and in two."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys

import optax
import orbax.checkpoint as ocp
import pytest

from hpjax.core import cli, interrupt, training
from hpjax.image_score import semisupervised as semi
from hpjax.image_score.config import SEMI_PRESETS
from subprocess_fixtures import assert_trees_close, env, free_port, kill_all, wait_for
from test_training import _final_params, _train_cmd

# As the SIGKILL test of test_training.py: long enough that the signal lands mid-run.
SETS = ("num_steps=400", "checkpoint_every=20", "log_every=20", "eval_every=0")
FIRST = os.path.join("checkpoints", "40", "commit_success.txt")


def _stop_line(text: str, name: str) -> re.Match:
  """The one line a stopped command prints, parsed: (step, checkpoints, command).

  Gloo's own connection line (multi-process runs on CPU) is not the command's.
  """
  lines = [l for l in text.splitlines() if not l.startswith("[Gloo] ")]
  assert len(lines) == 1, text[-3000:]
  m = re.fullmatch(rf"stopped by {name} after step (\d+), checkpoint saved in (\S+); "
                   r"to resume, run: (python -m train\.attributes .*)", lines[0])
  assert m, lines[0]
  return m


def _train_steps(workdir) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l)["step"] for l in f if '"train"' in l]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("interrupt") / "full"
  full = subprocess.run(_train_cmd(workdir, *SETS), env=env(), capture_output=True, text=True,
                        timeout=300)
  assert full.returncode == 0, full.stderr[-2000:]
  return _final_params(workdir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_with_a_checkpoint_and_resumes_to_the_same_parameters(
    sig, uninterrupted, tmp_path):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_train_cmd(workdir, *SETS), env=env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    wait_for(workdir / FIRST, proc)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
  finally:
    kill_all([proc])
  assert proc.returncode == 128 + sig, out[-3000:]
  m = _stop_line(out, signal.Signals(sig).name)
  step = int(m[1])
  assert 40 <= step < 400, f"the signal did not land mid-run: stopped after step {step}"
  assert m[2] == str(workdir / "checkpoints")
  assert step in training.checkpoint_steps(str(workdir))
  # The printed command resumes the run.
  resumed = subprocess.run([sys.executable, *shlex.split(m[3])[1:]], env=env(), cwd=os.getcwd(),
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert_trees_close(uninterrupted, _final_params(workdir), atol=0)
  # The stopped run logged its partial window; the resumed one logs each step once.
  assert _train_steps(workdir) == sorted({*range(20, 401, 20), step})


def test_one_signalled_process_stops_both_at_the_same_step(uninterrupted, tmp_path):
  workdir = tmp_path / "two"
  port = free_port()

  def start():
    return [subprocess.Popen(_train_cmd(workdir, *SETS), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env(
                                 HPJAX_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                 JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
            for i in range(2)]

  procs = start()
  try:
    wait_for(workdir / FIRST, procs[0], timeout=480)  # two processes on a loaded CPU: slow
    procs[1].send_signal(signal.SIGINT)   # Ctrl-C in process 1's terminal only
    outs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    kill_all(procs)
  assert [p.returncode for p in procs] == [130, 130], "\n".join(o[-2000:] for o in outs)
  steps = [int(_stop_line(o, "SIGINT")[1]) for o in outs]
  # The processes agree where to stop at the steps where they log (log_every=20).
  assert steps[0] == steps[1] and steps[0] % 20 == 0 and 40 <= steps[0] < 400, steps
  assert steps[0] in training.checkpoint_steps(str(workdir))

  port = free_port()
  procs = start()
  try:
    outs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    kill_all(procs)
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
  # Two processes against one: the tolerance of test_training's two-process test.
  assert_trees_close(uninterrupted, _final_params(workdir), atol=1e-5)


# ----------------------------------------------------------------------------
# In-process: where the loop stops, the second signal, the handlers put back


def _digits_fit(workdir, evaluate=None):
  """Six steps of the semi-supervised smoke model on digits (compiles in seconds)."""
  cfg = SEMI_PRESETS["smoke"]
  data = semi.load_data(cfg)
  source = data.train_source(data.labelled)
  model = semi.build_model(cfg, data.num_classes)
  state = training.create_train_state(model, optax.adam(cfg.learning_rate),
                                      data.train_images.shape[1:], cfg.seed)
  config = semi.PhaseConfig(batch_size=32, num_steps=6, log_every=4, eval_every=2,
                            checkpoint_every=100, max_checkpoints=3, worker_count=0, seed=0,
                            phase="test", num_examples=len(source))
  return training.fit(str(workdir), config=config, state=state, loss_fn=semi.loss_fn,
                      train_source=source, evaluate=evaluate or (lambda s: {}), progress=False)


def test_fit_stops_after_the_step_and_a_second_signal_lets_the_save_finish(
    tmp_path, monkeypatch, capfd):
  whole = _digits_fit(tmp_path / "whole")

  def evaluate(state):  # a scheduler's SIGTERM during the evaluation of step 2
    if int(state.step) == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return {}

  save = ocp.CheckpointManager.save

  def save_under_ctrl_c(self, step, *args, **kwargs):  # Ctrl-C while the checkpoint is written
    os.kill(os.getpid(), signal.SIGINT)
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save_under_ctrl_c)
  handlers = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
  workdir = tmp_path / "stopped"
  with pytest.raises(interrupt.Interrupted) as stopped:
    _digits_fit(workdir, evaluate)
  monkeypatch.undo()
  # The first signal decides: stopped after the step that followed it, exit 143.
  e = stopped.value
  assert (e.signum, e.step, e.exit_code) == (signal.SIGTERM, 3, 143)
  assert e.checkpoints == str(workdir / "checkpoints")
  assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == handlers
  err = capfd.readouterr().err
  assert err.count("SIGINT: already stopping") == 1, err
  # The save the second signal arrived in completed, and resuming from it ends where an
  # uninterrupted run does.
  assert training.checkpoint_steps(str(workdir)) == [3]
  resumed = _digits_fit(workdir)
  assert int(resumed.step) == 6
  assert_trees_close(whole.params, resumed.params, atol=0)
  assert _train_steps(workdir) == [3, 4, 6]


def _command(raises):
  def main(argv):
    raise raises
  main.__module__ = "hpjax.commands.train_attributes"
  return cli.guarded(main)


def test_guarded_prints_the_resume_command_and_exits_128_plus_the_signal(capsys):
  argv = ["--config", "smoke", "--workdir", "my runs/a"]
  stop = interrupt.Interrupted(signal.SIGTERM, 7, "/w/checkpoints")
  assert _command(stop)(argv) == 143
  assert capsys.readouterr().err == (
      "stopped by SIGTERM after step 7, checkpoint saved in /w/checkpoints; to resume, run: "
      "python -m train.attributes --config smoke --workdir 'my runs/a'\n")
  with cli.console():
    assert _command(KeyboardInterrupt())(argv) == 130
  assert capsys.readouterr().err == (
      "stopped by SIGINT (nothing is half-written; unsaved work is redone); to resume, run: "
      "hpjax train attributes --config smoke --workdir 'my runs/a'\n")


def test_outside_the_step_loop_a_signal_raises_where_the_command_is(capsys):
  def main(argv):
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the command")
  main.__module__ = "hpjax.commands.evaluate_attributes"
  handlers = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
  assert cli.guarded(main)(["--workdir", "w"]) == 143
  assert capsys.readouterr().err.startswith("stopped by SIGTERM (nothing is half-written")
  assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == handlers
