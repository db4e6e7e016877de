"""The project's commands, one module each, and the ``hpjax`` console script that runs them.

Module ``hpjax.commands.GROUP_NAME`` holds command GROUP NAME: ``main(argv) -> int``.
From a checkout, ``python -m GROUP.NAME`` runs it (``train/`` and ``evaluate/`` are thin
entry points, not installed); installed, the console script runs the same function:

  hpjax train demo --workdir runs/demo
  hpjax evaluate report --workdir runs/demo
  hpjax train attributes --help
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os

COMMANDS: dict[str, tuple[str, ...]] = {
    "train": ("attributes", "demo", "semisupervised"),
    "evaluate": ("attributes", "attention", "predictability", "prune", "report", "robustness",
                 "runs", "semisupervised"),
}


def module_name(group: str, name: str) -> str:
  """The module of command GROUP NAME."""
  return f"{__name__}.{group}_{name}"


def summary(group: str, name: str) -> str:
  """The first paragraph of command GROUP NAME's docstring, on one line.

  Read from the source, not imported: importing a command imports JAX (seconds), and
  ``hpjax --help`` lists them all.
  """
  with open(os.path.join(os.path.dirname(__file__), f"{group}_{name}.py"), encoding="utf-8") as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  return " ".join(doc.split("\n\n", 1)[0].split())


def _parser() -> argparse.ArgumentParser:
  listing = "\n".join(f"  {f'{group} {name}':25s} {summary(group, name)}"
                      for group, names in COMMANDS.items() for name in names)
  p = argparse.ArgumentParser(
      prog="hpjax", formatter_class=argparse.RawDescriptionHelpFormatter,
      description="HPNet (paper A) and image-score selection (paper B): train and evaluate.",
      epilog=f"commands:\n{listing}\n\n'hpjax GROUP COMMAND --help' shows a command's options; "
             "from a checkout,\n'python -m GROUP.COMMAND' runs the same command.")
  groups = p.add_subparsers(dest="group", metavar="GROUP", required=True)
  for group, names in COMMANDS.items():
    g = groups.add_parser(group, help=", ".join(names))
    commands = g.add_subparsers(dest="name", metavar="COMMAND", required=True)
    for name in names:
      # The command's own parser reads the rest, --help included.
      commands.add_parser(name, help=summary(group, name), add_help=False)
  return p


def main(argv: list[str] | None = None) -> int:
  """``hpjax GROUP COMMAND [ARGS]``: runs that command's ``main(ARGS)``."""
  args, rest = _parser().parse_known_args(argv)
  command = importlib.import_module(module_name(args.group, args.name))
  from hpjax.core import cli  # imports JAX, which --help and usage errors do without
  with cli.console():
    return command.main(rest)
