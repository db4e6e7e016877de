"""python -m hpjax.data.inspect: summary and exit 0 for sound copies, one error line and exit 2 otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import data_fixtures as fx
from hpjax.data import inspect, prepare


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  base = tmp_path_factory.mktemp("insp")
  fx.write_celeba(str(base / "celeba"), n=8)
  fx.write_cifar_bin(str(base / "cifar"), n_per_batch=2)
  fx.write_idx_dataset(str(base / "idx"), n_train=20, n_test=10)
  prepare.prepare_celeba(str(base / "celeba"), str(base / "cache"), image_size=16, workers=0, log=lambda *a: None)
  return base


@pytest.mark.parametrize("fmt, sub, pieces", [
    ("cifar10", "cifar", ["train: 10 examples, image uint8 (32, 32, 3), label int32 ()", "split sizes: train 10 / test 2 (total 12)"]),
    ("idx", "idx", ["train: 20 examples, image uint8 (28, 28, 1)", "examples per class: 0 2, 1 2"]),
    ("celeba", "celeba", ["validation: 2 examples, image uint8 (178, 178, 3), label int32 (40,)", "positives per attribute: 5_o_Clock_Shadow"]),
    ("celeba_prepared", "cache", ["train: 4 examples, image uint8 (16, 16, 3)", "total 8"]),
    ("digits", None, ["test: 355 examples", "examples per class: 0 35, 1 36"]),
])
def test_sound_copies_exit_zero(roots, capsys, fmt, sub, pieces):
  assert inspect.main([fmt, str(roots / sub) if sub else "-"]) == 0
  out = capsys.readouterr().out
  for p in pieces:
    assert p in out, out
  assert "sound" in out


def test_first_problem_is_one_line_and_exit_two(roots, tmp_path, capsys):
  import shutil

  root = tmp_path / "c"
  shutil.copytree(roots / "celeba", root)
  # The last test image is corrupt: only a full decode of every record finds it.
  (root / "img_align_celeba" / "000008.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
  assert inspect.main(["celeba", str(root)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("error: ") and "000008.jpg" in err


def test_empty_directory(tmp_path, capsys):
  for fmt in ("celeba", "cifar10", "idx", "celeba_prepared", "cifar10_tfds"):
    assert inspect.main([fmt, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(tmp_path) in err, err


def test_runs_as_a_module(roots):
  r = subprocess.run([sys.executable, "-m", "hpjax.data.inspect", "cifar10", str(roots / "nowhere")],
                     capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
