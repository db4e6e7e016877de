"""One self-contained HTML report of every paper-A analysis.

  python -m evaluate.report --workdir runs/demo

Runs the analyses whose JSON is missing from WORKDIR/analysis/ (or stems from
another checkpoint) at quick sizes, reads the others, and writes
WORKDIR/report/index.html (images embedded; opens without a server).
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.core.errors import ConfigError
from hpjax.hpnet import report


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  d = report.ReportSizes()
  p = cli.parser("evaluate.report", __doc__)
  cli.add_analysis_args(p, limit=d.limit)
  p.add_argument("--stats-limit", type=int, default=d.stats_limit,
                 help=f"training images for statistics (default {d.stats_limit})")
  p.add_argument("--predictability-limit", type=int, default=d.predictability_limit,
                 help=f"test images per perturbation (default {d.predictability_limit})")
  p.add_argument("--draws", type=int, default=d.random_draws, help="random pruning orders")
  p.add_argument("--force", action="store_true", help="re-run every analysis")
  args = p.parse_args(argv)
  for name in ("limit", "stats_limit", "predictability_limit", "draws"):
    if getattr(args, name) < 2:
      raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 2")
  sizes = report.ReportSizes(limit=args.limit, stats_limit=args.stats_limit,
                             predictability_limit=args.predictability_limit,
                             random_draws=args.draws)
  path = report.build(args.workdir, baseline_workdir=args.baseline_workdir, sizes=sizes,
                      force=args.force)
  print(f"report written to {os.path.abspath(path)}")
  return 0
