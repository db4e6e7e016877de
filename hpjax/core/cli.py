"""Shared plumbing for the commands in :mod:`hpjax.commands`.

A command runs as ``python -m GROUP.NAME`` from a checkout or as ``hpjax GROUP NAME``
once installed; its usage line, help and error lines are spelled the way it was run.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import os
import re
import shlex
import signal
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

from hpjax.core import configs, distributed, interrupt
from hpjax.core.errors import ConfigError, Error

# True while the ``hpjax`` console script runs a command.
_CONSOLE: contextvars.ContextVar[bool] = contextvars.ContextVar("hpjax_console", default=False)
_ENTRY_POINT = re.compile(r"python -m (train|evaluate)\.(\w+)")


@contextlib.contextmanager
def console() -> Iterator[None]:
  """Within: commands are spelled ``hpjax GROUP NAME``, as the console script runs them."""
  token = _CONSOLE.set(True)
  try:
    yield
  finally:
    _CONSOLE.reset(token)


def as_invoked(text: str) -> str:
  """TEXT with each ``python -m GROUP.NAME`` spelled ``hpjax GROUP NAME`` under :func:`console`."""
  return _ENTRY_POINT.sub(r"hpjax \1 \2", text) if _CONSOLE.get() else text


def command_line(main: Callable[..., Any], argv: Sequence[str] | None) -> str:
  """How the entry point MAIN was run with ARGV, to run again (``python -m train.attributes
  --workdir W``, or ``hpjax train attributes --workdir W`` under :func:`console`)."""
  module = main.__module__
  if module == "__main__":  # python -m hpjax.data.prepare
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec else module
  group, sep, name = module.rpartition(".")[2].partition("_")
  if module.startswith("hpjax.commands.") and sep:
    module = f"{group}.{name}"
  return as_invoked(shlex.join(["python", "-m", module,
                                *(sys.argv[1:] if argv is None else argv)]))


def guarded(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
  """Wraps an entry point so project errors print one line and exit with status 2.

  Expected failures (bad data files, bad arguments, a diverged loss) are the user's to fix, so they
  get a single line naming the file/argument and the problem, never a traceback.
  Anything else is a bug and keeps its traceback.

  SIGINT (Ctrl-C) and SIGTERM stop the command (training after a step, with a
  checkpoint: :mod:`hpjax.core.interrupt`); it prints one line saying where it stopped
  and the command that resumes, and exits with 130 (SIGINT) or 143 (SIGTERM).
  """

  @functools.wraps(main)
  def wrapper(argv: list[str] | None = None) -> int:
    try:
      with interrupt.raising():
        return int(main(argv) or 0)
    except Error as e:
      print(f"error: {as_invoked(str(e))}", file=sys.stderr)
      return 2
    except (interrupt.Interrupted, KeyboardInterrupt) as e:
      stop = e if isinstance(e, interrupt.Interrupted) else interrupt.Interrupted(signal.SIGINT)
      print(f"{stop}; to resume, run: {command_line(main, argv)}", file=sys.stderr, flush=True)
      return stop.exit_code

  return wrapper


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
  """An entry point's parser: ``prog`` as the command was run (``python -m MODULE`` or
  ``hpjax GROUP NAME``), its docstring shown as written."""
  return argparse.ArgumentParser(prog=as_invoked(f"python -m {module}"),
                                 description=doc and as_invoked(doc),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_arg(p: argparse.ArgumentParser, presets: Mapping[str, Any], default: str) -> None:
  """``--config``: the name of one of PRESETS."""
  p.add_argument("--config", default=default, help=f"preset: {', '.join(presets)}")


def add_training_args(p: argparse.ArgumentParser, *, set_example: str,
                      distributed: bool = True) -> None:
  """``--set FIELD=VALUE`` (repeatable), ``--distributed`` and ``--no-progress``."""
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help=f"override a config field, e.g. --set {set_example} (repeatable)")
  if distributed:
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (also: HPJAX_DISTRIBUTED=1)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")


def initialize_distributed(args: argparse.Namespace) -> None:
  """Joins the multi-host job when ``--distributed`` (or ``HPJAX_DISTRIBUTED=1``) asks for it."""
  distributed.initialize(True if args.distributed else None)


def training_config(args: argparse.Namespace, presets: Mapping[str, Any],
                    sets: Sequence[str] = ()) -> Any:
  """The run's config: preset ``--config`` with the ``--set`` overrides, then SETS.

  Joins the multi-host job first (:func:`initialize_distributed`), as every process must
  before it touches a device.
  """
  initialize_distributed(args)
  return configs.override(configs.preset(presets, args.config), [*args.set, *sets])


def require_trained(flag: str, workdir: str, entry: str, trainer: str) -> None:
  """Raises :class:`ConfigError` unless WORKDIR holds ENTRY (a folder when it ends in ``/``),
  naming the command (``python -m TRAINER``) that writes it."""
  path = os.path.join(workdir, entry)
  if not (os.path.isdir(path) if entry.endswith("/") else os.path.isfile(path)):
    raise ConfigError(f"{flag} {workdir}: no {entry} there; train first with python -m {trainer}")


def add_analysis_args(p: argparse.ArgumentParser, *, limit: int = 256,
                      limit_help: str = "test images",
                      baseline_help: str = "baseline run") -> None:
  """``--workdir``, ``--baseline-workdir`` and ``--limit`` of the paper-A analyses."""
  p.add_argument("--workdir", required=True, help="HPNet run directory")
  p.add_argument("--baseline-workdir",
                 help=f"{baseline_help} (default: WORKDIR/baseline if trained)")
  p.add_argument("--limit", type=int, default=limit, help=f"{limit_help} (default {limit})")
