"""A corpus of damaged workdirs run through every command that reads or writes one (issue 13,
item 7).

One smoke-trained attributes workdir and one tiny semi-supervised workdir are trained once;
each case copies one, damages the copy, and runs each command that applies, in-process
through its ``main(argv)``, on a fresh copy. Every run must:

- exit with the status the case expects (2 where the command cannot go on);
- print no traceback; at most three lines on stderr, and at most three lines in all when
  it stops (a successful command's report on stdout is its normal output);
- leave every file it does not mean to change byte-identical (a SHA-256 of every file
  before and after): a command may change only its own outputs (``writes``), add files
  only there (``adds``), and a training command may move a damaged checkpoint aside into
  ``damaged/`` with every byte kept, never delete it.

``evaluate.prune`` stands for paper A's analyses (they load a run as ``evaluate.attributes``
does, through :func:`hpjax.hpnet.experiment.load`); it runs where the workdir cannot be
used, where it stops in a second. An unwritable workdir is made so with ``chattr +i`` when
the tests run as root (permissions do not bind root).

The first output line of each (case, command) is printed as a table at the end of the
module (``pytest -s``), for the issue's closing note.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from typing import Callable, Mapping

import pytest

from evaluate import attributes as evaluate_attributes
from evaluate import prune as evaluate_prune
from evaluate import semisupervised as evaluate_semisupervised
from train import attributes as train_attributes
from train import semisupervised as train_semisupervised

SEMI_SETS = ("--set", "retrain_epochs=1")


@dataclasses.dataclass(frozen=True)
class Command:
  """A command and what it may do to a workdir."""

  main: Callable[[list[str]], int]
  argv: Callable[[str, str], list[str]]   # (workdir, scratch folder outside it) -> argv
  writes: tuple[str, ...] = ()            # path prefixes of the files it may change
  adds: tuple[str, ...] = ()              # path prefixes where it may add files
  # Trains in the workdir itself (not in sub-folders): may move a damaged checkpoint
  # into damaged/, and logs each step once in metrics.jsonl.
  trains_here: bool = False


TRAIN_WRITES = ("metrics.jsonl", "tensorboard/", ".lock")
COMMANDS: dict[str, Command] = {
    "train.attributes": Command(
        train_attributes.main,
        lambda w, _: ["--config", "smoke", "--workdir", w, "--no-progress"],
        writes=TRAIN_WRITES, adds=TRAIN_WRITES + ("checkpoints/", "damaged/"),
        trains_here=True),
    "evaluate.attributes": Command(
        evaluate_attributes.main, lambda w, _: ["--workdir", w], writes=("eval/",),
        adds=("eval/",)),
    "evaluate.prune": Command(
        evaluate_prune.main,
        lambda w, _: ["--workdir", w, "--limit", "16", "--stats-limit", "16", "--counts", "0,4",
                      "--draws", "2"],
        writes=("analysis/",), adds=("analysis/",)),
    "train.semisupervised": Command(
        train_semisupervised.main,
        lambda w, _: ["--config", "smoke", *SEMI_SETS, "--workdir", w, "--no-progress"],
        writes=("metrics.jsonl", ".lock"), adds=(".lock",)),
    "evaluate.semisupervised": Command(
        evaluate_semisupervised.main,
        lambda w, scratch: ["--workdirs", w, "--out", os.path.join(scratch, "eval"),
                            "--num-resamples", "50"]),
}


# ----------------------------------------------------------------------------
# Damage


def _latest(w: str) -> str:
  d = os.path.join(w, "checkpoints")
  return os.path.join(d, str(max(int(n) for n in os.listdir(d) if n.isdigit())))


def _checkpoint(w: str, step: int) -> str:
  return os.path.join(w, "checkpoints", str(step))


def _files(folder: str) -> list[str]:
  return sorted(os.path.join(r, n) for r, _, names in os.walk(folder) for n in names)


def _truncate(path: str) -> None:
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _data_files(checkpoint: str) -> list[str]:
  """The data files of a checkpoint's arrays: ``state/d/*`` and ``state/ocdbt.process_*/d/*``
  (small runs keep their arrays in the first, the issue's demo run in the second)."""
  data = [p for p in _files(os.path.join(checkpoint, "state"))
          if os.path.basename(os.path.dirname(p)) == "d"]
  assert data, checkpoint
  return data


def _truncate_data(checkpoint: str) -> None:
  """Halves every data file of a checkpoint's arrays (the issue's measured damage)."""
  for path in _data_files(checkpoint):
    _truncate(path)


def _remove_data(checkpoint: str) -> None:
  for path in _data_files(checkpoint):
    os.remove(path)


def _write(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def _remove_commit_markers(checkpoint: str) -> None:
  markers = [p for p in _files(checkpoint) if os.path.basename(p) == "commit_success.txt"]
  assert markers
  for path in markers:
    os.remove(path)


def _tear_last_line(path: str) -> None:
  with open(path, "rb") as f:
    data = f.read()
  last = data.rstrip(b"\n").rfind(b"\n") + 1
  _write(path, data[:last + (len(data) - last) // 2])


def _make_file(w: str) -> None:
  shutil.rmtree(w)
  _write(w, b"not a workdir\n")


def _lock(w: str, pid: int, host: str) -> None:
  """A ``W/.lock`` as :mod:`hpjax.core.workdir` writes it, naming PID on HOST."""
  _write(os.path.join(w, ".lock"), json.dumps({
      "pid": pid, "host": host, "started": "2024-01-01 00:00:00",
      "command": "python -m train.attributes --workdir W"}).encode())


_SLEEPER: list[subprocess.Popen] = []


def _live_pid() -> int:
  if not _SLEEPER:
    _SLEEPER.append(subprocess.Popen(["sleep", "600"]))
  return _SLEEPER[0].pid


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def _unfinish_semi(w: str) -> None:
  """The last epoch of the semi-supervised run not recorded: a re-run resumes it."""
  os.remove(os.path.join(w, "records", "epoch_001.json"))


def _truncate_semi_phase(phase: str) -> Callable[[str], None]:
  def damage(w: str) -> None:
    _unfinish_semi(w)
    _truncate_data(_latest(os.path.join(w, phase)))
  return damage


# ----------------------------------------------------------------------------
# Cases


@dataclasses.dataclass(frozen=True)
class Case:
  """A damaged workdir and, per command, the exit status and first output line expected."""

  name: str
  kind: str                                   # "attributes" or "semi"
  damage: Callable[[str], None]
  # command -> (status, regex of the first line; None: nothing on stderr)
  expect: Mapping[str, tuple[int, str | None]]
  extra: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  unwritable: bool = False                    # the whole copy made read-only


FALLBACK_EVAL = (0, r"warning: checkpoint 6 in \S+ cannot be restored: .*; using checkpoint 3 "
                    r"instead")
FALLBACK_TRAIN = (0, r"warning: checkpoint 6 in \S+ cannot be restored: .*; set it aside in "
                     r"\S+/damaged/checkpoint_6; using checkpoint 3 instead")
NONE_RESTORES = (2, r"error: (checkpoint \d+ in \S+ cannot be restored|none of the \d+ "
                    r"checkpoints in \S+ can be restored): ")
OK = (0, None)  # nothing on stderr
USES_LOCK = r"error: workdir \S+ is in use by pid \d+ on "

CASES = [
    Case("intact", "attributes", lambda w: None,
         {"train.attributes": OK, "evaluate.attributes": OK}),
    Case("truncated latest checkpoint data", "attributes",
         lambda w: _truncate_data(_latest(w)),
         {"train.attributes": FALLBACK_TRAIN, "evaluate.attributes": FALLBACK_EVAL}),
    Case("missing latest checkpoint data files", "attributes",
         lambda w: _remove_data(_latest(w)),
         {"train.attributes": FALLBACK_TRAIN, "evaluate.attributes": FALLBACK_EVAL}),
    Case("bad latest checkpoint metadata", "attributes",
         lambda w: _write(os.path.join(_latest(w), "state", "_METADATA"), b"{not json"),
         {"train.attributes": FALLBACK_TRAIN, "evaluate.attributes": FALLBACK_EVAL}),
    Case("latest checkpoint config not JSON", "attributes",
         lambda w: _write(os.path.join(_latest(w), "config", "metadata"), b"{not json"),
         {"train.attributes": FALLBACK_TRAIN, "evaluate.attributes": FALLBACK_EVAL}),
    Case("latest checkpoint without its commit markers", "attributes",
         lambda w: _remove_commit_markers(_latest(w)),
         {"train.attributes": FALLBACK_TRAIN, "evaluate.attributes": FALLBACK_EVAL}),
    Case("older checkpoint damaged, latest intact", "attributes",
         lambda w: _truncate_data(_checkpoint(w, 3)),
         {"train.attributes": OK, "evaluate.attributes": OK}),
    Case("every checkpoint truncated", "attributes",
         lambda w: [_truncate_data(_checkpoint(w, s)) for s in (3, 6)],
         {"train.attributes": NONE_RESTORES, "evaluate.attributes": NONE_RESTORES,
          "evaluate.prune": NONE_RESTORES}),
    Case("empty checkpoints folder", "attributes",
         lambda w: [shutil.rmtree(_checkpoint(w, s)) for s in (3, 6)],
         {"train.attributes": (0, r"warning: workdir \S+: no checkpoint to resume from; "
                                  r"starting over at step 0 \(metrics.jsonl's records of steps "
                                  r"2..6 are replaced\)"),
          "evaluate.attributes": (2, r"error: no checkpoint in \S+: train first"),
          "evaluate.prune": (2, r"error: no checkpoint in \S+: train first")}),
    Case("metrics.jsonl with a torn last line", "attributes",
         lambda w: _tear_last_line(os.path.join(w, "metrics.jsonl")),
         {"train.attributes": OK, "evaluate.attributes": OK}),
    Case("a different config on resume", "attributes", lambda w: None,
         {"train.attributes": (2, r"error: workdir \S+ holds a run with another config: "
                                  r"features 4,8,8,8 → 8,8,8,16; .*--workdir")},
         extra={"train.attributes": ("--set", "features=8,8,8,16")}),
    Case("workdir is a file", "attributes", _make_file,
         {"train.attributes": (2, r"error: workdir \S+ is a file, not a folder"),
          "evaluate.attributes": (2, r"error: "), "evaluate.prune": (2, r"error: ")}),
    Case("unwritable workdir", "attributes", lambda w: None,
         {"train.attributes": (2, r"error: workdir \S+ is not writable"),
          "evaluate.attributes": (2, r"error: cannot write \S+/eval/")},
         unwritable=True),
    Case("locked by a live process", "attributes", lambda w: _lock(w, _live_pid(),
                                                                   socket.gethostname()),
         {"train.attributes": (2, USES_LOCK), "evaluate.attributes": OK}),
    Case("stale lock of a dead process", "attributes",
         lambda w: _lock(w, _dead_pid(), socket.gethostname()),
         {"train.attributes": (0, r"warning: workdir \S+: taking over the stale lock of pid "
                                  r"\d+ .*: pid \d+ is not running"),
          "evaluate.attributes": OK}),
    Case("locked from another host", "attributes",
         lambda w: _lock(w, 1, "another-host.example"),
         {"train.attributes": (2, USES_LOCK + r"another-host\.example"),
          "evaluate.attributes": OK}),
    Case("intact", "semi", lambda w: None,
         {"train.semisupervised": OK, "evaluate.semisupervised": OK}),
    Case("config.json not JSON", "semi",
         lambda w: _write(os.path.join(w, "config.json"), b"{not json"),
         {"train.semisupervised": (2, r"error: \S+/config.json: not JSON"),
          "evaluate.semisupervised": (2, r"error: \S+/config.json: not JSON")}),
    Case("a different config on resume", "semi", lambda w: None,
         {"train.semisupervised": (2, r"error: workdir \S+ holds a run with another config: "
                                      r"method image_score → softmax")},
         extra={"train.semisupervised": ("--method", "softmax")}),
    Case("metrics.jsonl with a torn last line", "semi",
         lambda w: _tear_last_line(os.path.join(w, "metrics.jsonl")),
         {"train.semisupervised": OK, "evaluate.semisupervised": OK}),
    Case("unfinished epoch, its only checkpoint truncated", "semi",
         _truncate_semi_phase("epoch_001"),
         {"train.semisupervised": NONE_RESTORES, "evaluate.semisupervised": OK}),
    Case("unfinished epoch, the pre-training checkpoint truncated", "semi",
         _truncate_semi_phase("pretrain"),
         {"train.semisupervised": NONE_RESTORES, "evaluate.semisupervised": OK}),
    Case("workdir is a file", "semi", _make_file,
         {"train.semisupervised": (2, r"error: workdir \S+ is a file, not a folder"),
          "evaluate.semisupervised": (2, r"error: ")}),
    Case("unwritable workdir", "semi", lambda w: None,
         {"train.semisupervised": (2, r"error: workdir \S+ is not writable"),
          "evaluate.semisupervised": OK}, unwritable=True),
    Case("locked by a live process", "semi",
         lambda w: _lock(w, _live_pid(), socket.gethostname()),
         {"train.semisupervised": (2, USES_LOCK), "evaluate.semisupervised": OK}),
    Case("stale lock of a dead process", "semi",
         lambda w: _lock(w, _dead_pid(), socket.gethostname()),
         {"train.semisupervised": (0, r"warning: workdir \S+: taking over the stale lock"),
          "evaluate.semisupervised": OK}),
]


# ----------------------------------------------------------------------------
# Harness


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The two workdirs every case copies, trained once."""
  root = tmp_path_factory.mktemp("corpus")
  attributes, semi = str(root / "attributes"), str(root / "semi")
  assert train_attributes.main(["--config", "smoke", "--workdir", attributes,
                                "--no-progress"]) == 0
  assert evaluate_attributes.main(["--workdir", attributes]) == 0  # eval/ exists, as usual
  assert train_semisupervised.main(["--config", "smoke", *SEMI_SETS, "--workdir", semi,
                                    "--no-progress"]) == 0
  assert sorted(os.listdir(os.path.join(attributes, "checkpoints"))) == ["3", "6"]
  yield {"attributes": attributes, "semi": semi}
  for proc in _SLEEPER:
    proc.kill()
    proc.wait()
  _SLEEPER.clear()


TABLE: list[tuple[str, str, int, float, str]] = []


@pytest.fixture(scope="module", autouse=True)
def closing_table():
  yield
  width = max((len(f"{case} / {command}") for case, command, *_ in TABLE), default=0)
  print("\n\n" + "case / command".ljust(width) + "  status  seconds  first line")
  for case, command, status, seconds, line in TABLE:
    print(f"{case} / {command}".ljust(width) + f"  {status:>6}  {seconds:7.1f}  {line}")


def _hashes(root: str) -> dict[str, str]:
  if not os.path.isdir(root):
    with open(root, "rb") as f:
      return {"": hashlib.sha256(f.read()).hexdigest()}
  out = {}
  for path in _files(root):
    with open(path, "rb") as f:
      out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
  return any(path == p or path.startswith(p) for p in prefixes)


def _set_unwritable(path: str, on: bool) -> None:
  """Makes every file and folder of PATH unwritable (root: the immutable attribute, as
  permissions do not bind root)."""
  if os.geteuid() == 0:
    done = subprocess.run(["chattr", "-R", "+i" if on else "-i", path], capture_output=True)
    if done.returncode and on:
      pytest.skip(f"cannot make {path} immutable: {done.stderr.decode().strip()}")
    return
  for p in [path, *(os.path.join(r, n) for r, ds, fs in os.walk(path) for n in ds + fs)]:
    mode = os.stat(p).st_mode
    os.chmod(p, mode & ~0o222 if on else mode | 0o200)


def _run(case: Case, name: str, source: str, scratch: str, capfd) -> tuple[int, str, str]:
  """Runs command NAME on a fresh damaged copy of SOURCE; checks the workdir's files."""
  command = COMMANDS[name]
  w = os.path.join(scratch, "workdir")
  shutil.copytree(source, w)
  case.damage(w)
  if case.unwritable:
    _set_unwritable(w, True)
  before = _hashes(w)
  capfd.readouterr()
  t0 = time.perf_counter()
  try:
    status = command.main(command.argv(w, scratch) + list(case.extra.get(name, ())))
  finally:
    seconds = time.perf_counter() - t0
    out, err = capfd.readouterr()
    if case.unwritable:
      _set_unwritable(w, False)
  after = _hashes(w)
  damaged = set(h for p, h in after.items() if p.startswith("damaged/"))
  changed = sorted(p for p in before if after.get(p) != before[p]
                   and not _under(p, command.writes)
                   and not (command.trains_here and before[p] in damaged))
  assert not changed, f"{name} changed or removed {changed}"
  added = sorted(p for p in after if p not in before and not _under(p, command.adds))
  assert not added, f"{name} added {added}"
  assert not os.path.exists(os.path.join(w, ".lock")) or ".lock" in before, "lock left behind"
  metrics = os.path.join(w, "metrics.jsonl")
  if command.trains_here and status == 0:  # a training run logs each step once
    with open(metrics) as f:
      records = [(r["kind"], r["step"]) for r in map(json.loads, f)]
    assert len(records) == len(set(records)), f"{name}: steps logged twice in {metrics}"
  return status, seconds, out, err


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
def test_damaged_workdir(case, trained, tmp_path, capfd):
  failures = []
  for name, (status, first) in case.expect.items():
    scratch = str(tmp_path / name)
    got, seconds, out, err = _run(case, name, trained[case.kind], scratch, capfd)
    line = (err.splitlines() or out.splitlines() or [""])[0]
    TABLE.append((f"{case.kind}: {case.name}", name, got, seconds, line))
    problems = []
    if got != status:
      problems.append(f"exit status {got}, expected {status}")
    if "Traceback" in out + err:
      problems.append("a traceback")
    if len(err.splitlines()) > 3 or (got and len((out + err).splitlines()) > 3):
      problems.append(f"{len(err.splitlines())} lines on stderr, {len(out.splitlines())} on "
                      "stdout")
    if first is None and err:
      problems.append(f"stderr not empty: {err.splitlines()[0]!r}")
    if first is not None and not re.match(first, line):
      problems.append(f"first line {line!r} does not match {first!r}")
    if problems:
      failures.append(f"{name}: {'; '.join(problems)}\n{(out + err)[-1500:]}")
  assert not failures, "\n".join(failures)
