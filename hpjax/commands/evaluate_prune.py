"""Semantic channel pruning (paper A, Fig. 7): accuracy vs number of pruned channels.

  python -m evaluate.prune --workdir runs/demo [--baseline-workdir runs/demo/baseline]

Correlates the feature channels on training images, then evaluates semantic, L1-norm
and random (mean ± std over --draws orders) pruning on test images, for HPNet and
the baseline (WORKDIR/baseline by default, when trained). Writes
WORKDIR/analysis/pruning.{json,png}.
"""
from __future__ import annotations

from hpjax.core import cli
from hpjax.core.errors import ConfigError
from hpjax.hpnet import analyses, runs, statistics


def _counts(text: str) -> list[int]:
  try:
    return [int(t) for t in text.split(",") if t.strip()]
  except ValueError:
    raise ConfigError(f"--counts {text}: expected comma-separated integers") from None


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.prune", __doc__)
  cli.add_analysis_args(p)
  p.add_argument("--counts", type=_counts, help="pruned-channel counts, e.g. 0,8,16 "
                 "(default: 8 evenly spaced in [0, C))")
  p.add_argument("--draws", type=int, default=5, help="random orders (default 5)")
  p.add_argument("--reading", default="position", choices=statistics.READINGS,
                 help="channel-correlation reading (default position)")
  p.add_argument("--prune", default="lower", choices=("lower", "higher"),
                 help="within a correlated pair, prune the filter with the lower (the default, "
                 "docs/papers.md §A5) or higher L1 norm")
  p.add_argument("--stats-limit", type=int, default=1024, help="training images correlated")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if args.draws < 2:
    raise ConfigError(f"--draws {args.draws}: need at least 2 random draws for a spread")
  r = analyses.run("pruning", args.workdir, baseline_workdir=args.baseline_workdir,
                   counts=args.counts, draws=args.draws, seed=args.seed, reading=args.reading,
                   prune=args.prune, limit=args.limit, stats_limit=args.stats_limit)
  for name, m in r["models"].items():
    print(f"{name}: pruned {m['counts']}")
    for method in ("semantic", "l1", "random_mean"):
      print(f"  {method:12s} " + " ".join(f"{100 * a:6.2f}" for a in m[method]))
    print(f"  semantic - random (mean over counts > 0): {100 * m['semantic_minus_random']:+.2f} pts"
          f"; random std across {m['random_draws']} draws {100 * m['random_std_mean']:.2f} pts"
          f" (std error of the random mean {100 * m['random_sem_mean']:.2f})")
    pc = m["physical_check"]
    print(f"  physically pruned ({pc['channels_kept']} channels): "
          f"{100 * pc['physical_mean_accuracy']:.2f}% "
          f"(mask: {100 * pc['masked_mean_accuracy']:.2f}%)"
          + (f", {pc['speedup']:.2f}x faster" if "speedup" in pc else ""))
  print(f"written to {runs.output_dir(args.workdir)}/pruning.{{json,png}}")
  return 0
