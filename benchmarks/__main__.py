"""``python -m benchmarks [--quick] [--suites ceilings,hpnet,...] [--out DIR]``.

Runs the suites in one process (HPNet's framework runs in fresh subprocesses for
their peak memory) and writes ``benchmarks/results/<machine>.json`` and ``.md``
(see :mod:`benchmarks.harness`). Quote numbers from a full run on a quiet machine;
``--quick`` is a smoke run of tiny sizes (CI), written to ``<machine>.quick.*``.

The GPU check (issue 11) is a script of its own, ``python -m benchmarks.gpu [--quick]``
(:mod:`benchmarks.gpu`): one isolated process per HPNet variant, within a time budget.
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks import harness


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0],
                              epilog="GPU check: python -m benchmarks.gpu [--quick] (see its "
                                     "--help)")
  p.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 iterations (smoke run)")
  p.add_argument("--suites", default=",".join(harness.SUITES),
                 help=f"comma-separated subset of {','.join(harness.SUITES)} (default: all)")
  p.add_argument("--out", default=harness.RESULTS_DIR, help="results directory")
  p.add_argument("--hpnet-sizes", default=None, metavar="28,32,64",
                 help="image sizes of the hpnet suite (default: all; the baseline, bf16 and "
                      "weight-gradient variants run at the largest)")
  args = p.parse_args(argv)
  names = [n for n in args.suites.split(",") if n]
  try:
    sizes = [int(x) for x in args.hpnet_sizes.split(",")] if args.hpnet_sizes else None
  except ValueError:
    p.error(f"--hpnet-sizes: expected comma-separated integers, got {args.hpnet_sizes!r}")
  try:
    result = harness.run_suites(names, args.quick, log=lambda s: print(s, file=sys.stderr),
                                hpnet_sizes=sizes)
  except ValueError as e:
    p.error(str(e))
  jpath, mpath = harness.write_results(result, args.out)
  print(f"wrote {jpath} and {mpath}")
  with open(jpath) as f:  # the targets over this run merged with the suites kept there
    targets = json.load(f)["targets"]
  for name, t in targets.items():
    print(f"  {name}: {t['value']} (goal {t['goal']}) -> "
          f"{ {True: 'met', False: 'NOT met', None: 'not measured'}[t['met']] }")
  return 0


if __name__ == "__main__":
  sys.exit(main())
