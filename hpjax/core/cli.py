"""Shared plumbing for the ``python -m train.*`` / ``python -m evaluate.*`` entry points."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from hpjax.core.errors import Error


def guarded(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
  """Wraps an entry point so project errors print one line and exit with status 2.

  Expected failures (bad data files, bad arguments, a diverged loss) are the user's to fix, so they
  get a single line naming the file/argument and the problem, never a traceback.
  Anything else is a bug and keeps its traceback.
  """

  @functools.wraps(main)
  def wrapper(argv: list[str] | None = None) -> int:
    try:
      return int(main(argv) or 0)
    except Error as e:
      print(f"error: {e}", file=sys.stderr)
      return 2

  return wrapper


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
  """An entry point's parser: ``prog="python -m MODULE"``, its docstring shown as written."""
  return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_training_args(p: argparse.ArgumentParser, *, set_example: str,
                      distributed: bool = True) -> None:
  """``--set FIELD=VALUE`` (repeatable), ``--distributed`` and ``--no-progress``."""
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help=f"override a config field, e.g. --set {set_example} (repeatable)")
  if distributed:
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (also: HPJAX_DISTRIBUTED=1)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_analysis_args(p: argparse.ArgumentParser, *, limit: int = 256,
                      limit_help: str = "test images",
                      baseline_help: str = "baseline run") -> None:
  """``--workdir``, ``--baseline-workdir`` and ``--limit`` of the paper-A analyses."""
  p.add_argument("--workdir", required=True, help="HPNet run directory")
  p.add_argument("--baseline-workdir",
                 help=f"{baseline_help} (default: WORKDIR/baseline if trained)")
  p.add_argument("--limit", type=int, default=limit, help=f"{limit_help} (default {limit})")
