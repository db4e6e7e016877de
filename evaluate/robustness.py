"""Mask-transformation robustness (paper A, Fig. 8): accuracy under input noise for a
grid of (n, β).

  python -m evaluate.robustness --workdir runs/demo

Adds Gaussian noise (σ = 0, 0.05, ..., 0.5; fixed seed; clipped to [0, 1] unless
--no-clip) to the test images and evaluates HPNet with g(M; n, β) for n in
{1, 2, 3, 4}, β in {0, 0.1, 0.25, 0.5}. Writes WORKDIR/analysis/robustness.{json,png}.
"""
from __future__ import annotations

import sys

from hpjax import analysis, cli


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.robustness", __doc__)
  cli.add_analysis_args(p, baseline_help="baseline run for a reference curve")
  p.add_argument("--seed", type=int, default=0, help="noise seed")
  p.add_argument("--no-clip", action="store_true", help="do not clip noisy images to [0, 1]")
  args = p.parse_args(argv)
  r = analysis.run_robustness(args.workdir, baseline_workdir=args.baseline_workdir,
                              limit=args.limit, seed=args.seed, clip=not args.no_clip)
  print("sigma  best (n, beta)  best acc  identity acc  gain")
  for b in r["best"]:
    print(f"{b['sigma']:5.2f}  ({b['n']:g}, {b['beta']:g}){'':8s}{100 * b['mean_accuracy']:7.2f}"
          f"  {100 * b['identity_accuracy']:11.2f}  {100 * b['gain_over_identity']:+.2f}")
  print(f"some (n, beta) != (1, 0) beats the identity: {r['identity_beaten']}")
  print(f"written to {analysis.output_dir(args.workdir)}/robustness.{{json,png}}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
