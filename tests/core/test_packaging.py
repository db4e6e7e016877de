"""Packaging: only ``hpjax`` is installed, the ``hpjax`` console script runs every command,
``python -m train.*`` / ``evaluate.*`` still run from the checkout, and the lock pins it all."""
import importlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hpjax import commands

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENTRY_POINT_PACKAGES = ("train", "evaluate", "benchmarks")


def _run(cmd, cwd):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_only_the_library(tmp_path):
  # What setuptools puts in the wheel, built from a copy of the checkout: build_py is the
  # wheel's package contents, without needing the wheel package or an index.
  pytest.importorskip("setuptools")
  src = tmp_path / "src"
  for name in ("pyproject.toml", "README.md"):
    os.makedirs(src, exist_ok=True)
    shutil.copy(os.path.join(ROOT, name), src / name)
  for name in ("hpjax", *ENTRY_POINT_PACKAGES):
    shutil.copytree(os.path.join(ROOT, name), src / name,
                    ignore=shutil.ignore_patterns("__pycache__", "results"))
  r = _run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py",
            "--build-lib", str(tmp_path / "lib")], cwd=src)
  assert r.returncode == 0, r.stderr
  assert sorted(os.listdir(tmp_path / "lib")) == ["hpjax"]
  assert (tmp_path / "lib" / "hpjax" / "commands" / "train_demo.py").is_file()


def test_installed_distribution_provides_no_entry_point_package(tmp_path):
  providers = md.packages_distributions()
  assert "hpjax" in providers["hpjax"]
  for name in ENTRY_POINT_PACKAGES:
    assert "hpjax" not in providers.get(name, []), f"pip install hpjax provides {name}"
  scripts = {e.name: e.value for e in md.distribution("hpjax").entry_points
             if e.group == "console_scripts"}
  assert scripts == {"hpjax": "hpjax.commands:main"}
  # Outside the checkout none of them resolves into this project (editable finder included).
  probe = ("import importlib.util as u\n"
           f"for n in {ENTRY_POINT_PACKAGES!r}:\n"
           "  s = u.find_spec(n)\n"
           "  print(n, s.origin if s else None)")
  r = _run([sys.executable, "-c", probe], cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  for line in r.stdout.splitlines():
    name, origin = line.split(" ", 1)
    assert not origin.startswith(ROOT), f"{name} resolves to {origin} outside the checkout"


def _console_script() -> str:
  path = shutil.which("hpjax", path=sysconfig.get_path("scripts"))
  assert path, "no hpjax console script: re-run pip install -e '.[test]'"
  return path


def test_console_script_lists_and_runs_the_commands(tmp_path):
  r = _run([_console_script(), "--help"], cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("usage: hpjax")
  for group, names in commands.COMMANDS.items():
    for name in names:
      assert f"  {group} {name} " in r.stdout
  r = _run([_console_script(), "train", "demo", "--help"], cwd=tmp_path)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("usage: hpjax train demo ")
  assert "(hpjax evaluate report does the rest)" in " ".join(r.stdout.split())
  r = _run([_console_script(), "train", "nope"], cwd=tmp_path)
  assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr


def test_entry_point_runs_from_the_checkout():
  r = _run([sys.executable, "-m", "train.demo", "--help"], cwd=ROOT)
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("usage: python -m train.demo ")
  assert "(python -m evaluate.report does the rest)" in " ".join(r.stdout.split())


def test_each_checkout_entry_point_is_a_command():
  for group, names in commands.COMMANDS.items():
    on_disk = {f[:-3] for f in os.listdir(os.path.join(ROOT, group))
               if f.endswith(".py") and f != "__init__.py"}
    assert on_disk == set(names)
    for name in names:
      command = importlib.import_module(commands.module_name(group, name))
      assert importlib.import_module(f"{group}.{name}").main is command.main
      assert commands.summary(group, name) == command.__doc__.split("\n\n")[0].replace("\n", " ")


def test_errors_name_commands_as_they_were_run(tmp_path, capsys):
  from evaluate import attributes
  missing = str(tmp_path / "missing")
  assert attributes.main(["--workdir", missing]) == 2
  assert capsys.readouterr().err == (f"error: --workdir {missing}: no checkpoints/ there; "
                                     "train first with python -m train.attributes\n")
  assert commands.main(["evaluate", "attributes", "--workdir", missing]) == 2
  assert capsys.readouterr().err == (f"error: --workdir {missing}: no checkpoints/ there; "
                                     "train first with hpjax train attributes\n")
  # The console spelling ends with the command.
  assert attributes.main(["--workdir", missing]) == 2
  assert "python -m train.attributes" in capsys.readouterr().err


def test_lock_pins_every_installed_dependency():
  lock = {}
  with open(os.path.join(ROOT, "requirements", "lock.txt")) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line:
        name, version = line.split("==")
        lock[canonicalize_name(name)] = version
  needed, todo = set(), [("hpjax", ("test",))]
  while todo:
    name, extras = todo.pop()
    for text in md.requires(name) or []:
      req = Requirement(text)
      if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or ("",)):
        continue
      key = canonicalize_name(req.name)
      if name == "hpjax":  # the declared ranges admit the pinned releases
        assert req.specifier.contains(lock[key], prereleases=True), (text, lock[key])
      if key not in needed:
        needed.add(key)
        todo.append((req.name, tuple(req.extras)))
  assert needed <= set(lock), f"not pinned: {sorted(needed - set(lock))}"
