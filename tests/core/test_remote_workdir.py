"""Remote workdirs (``gs://bucket/run``): the checkpoint path reaches orbax untouched.

``checkpoint_manager`` used to pass the workdir through ``os.path.abspath``, which
turned ``gs://bucket/run`` into ``$PWD/gs:/bucket/run``.
"""
from __future__ import annotations

import os

from hpjax.core import training, workdir


class _Captured(Exception):
  pass


def _directory_orbax_gets(monkeypatch, path) -> str:
  def fake_manager(directory, **kwargs):
    raise _Captured(os.fspath(directory))

  monkeypatch.setattr(training.ocp, "CheckpointManager", fake_manager)
  try:
    training.checkpoint_manager(path, 2)
  except _Captured as e:
    return str(e)
  raise AssertionError("checkpoint_manager did not build an orbax manager")


def test_remote_paths_pass_through(monkeypatch):
  assert _directory_orbax_gets(monkeypatch, "gs://bucket/runs/demo") == "gs://bucket/runs/demo/checkpoints"
  assert _directory_orbax_gets(monkeypatch, "s3://b/r/") == "s3://b/r/checkpoints"


def test_local_paths_are_made_absolute(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert _directory_orbax_gets(monkeypatch, "runs/demo") == str(tmp_path / "runs/demo/checkpoints")


class _Url(os.PathLike):
  """A path-like object that is not a local path (as an epath.Path of a bucket is)."""

  def __fspath__(self) -> str:
    return "gs://bucket/run"


def test_path_like_remote_objects_and_no_local_side_effects(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert _directory_orbax_gets(monkeypatch, _Url()) == "gs://bucket/run/checkpoints"
  workdir.check("gs://bucket/run")  # no local folder is created for it
  with workdir.lock("gs://bucket/run"):
    pass
  assert not os.listdir(tmp_path)
