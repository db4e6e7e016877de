"""Mask-transformation robustness (paper A, Fig. 8): accuracy under input noise for a
grid of (n, β).

  python -m evaluate.robustness --workdir runs/demo

Adds Gaussian noise (σ = 0, 0.05, ..., 0.5; fixed seed; clipped to [0, 1] unless
--no-clip) to the test images and evaluates HPNet with g(M; n, β) for n in
{1, 2, 3, 4}, β in {0, 0.1, 0.25, 0.5}. The best (n, β) per σ is reported twice: chosen
on the test split itself (an oracle) and chosen on the validation split (same grid, same
number of images) then scored on test. Writes WORKDIR/analysis/robustness.{json,png}.
"""
from __future__ import annotations

from hpjax.core import cli
from hpjax.hpnet import analyses, runs


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.robustness", __doc__)
  cli.add_analysis_args(p, baseline_help="baseline run for a reference curve")
  p.add_argument("--seed", type=int, default=0, help="noise seed")
  p.add_argument("--no-clip", action="store_true", help="do not clip noisy images to [0, 1]")
  args = p.parse_args(argv)
  r = analyses.run("robustness", args.workdir, baseline_workdir=args.baseline_workdir,
                   limit=args.limit, seed=args.seed, clip=not args.no_clip)
  print("sigma  best (n, beta)  best acc  identity acc  gain")
  for b in r["best"]:
    print(f"{b['sigma']:5.2f}  ({b['n']:g}, {b['beta']:g}){'':8s}{100 * b['mean_accuracy']:7.2f}"
          f"  {100 * b['identity_accuracy']:11.2f}  {100 * b['gain_over_identity']:+.2f}")
  print(f"some (n, beta) != (1, 0) beats the identity (test oracle): {r['identity_beaten']}")
  print("sigma  val-selected (n, beta)  val acc  test acc  test gain  oracle gain")
  for b in r["best_val_selected"]:
    print(f"{b['sigma']:5.2f}  ({b['n']:g}, {b['beta']:g}){'':16s}{100 * b['val_accuracy']:7.2f}"
          f"  {100 * b['test_accuracy']:8.2f}  {100 * b['test_gain_over_identity']:+9.2f}"
          f"  {100 * b['oracle_test_gain']:+11.2f}")
  sm = r["val_selection_summary"]
  kept = sm["retained_fraction"]
  print(f"sigma > 0: mean test gain {100 * sm['selected_gain_mean']:+.2f} pts (val-selected) vs "
        f"{100 * sm['oracle_gain_mean']:+.2f} pts (oracle)"
        + ("" if kept is None else f", {100 * kept:.0f}% of the oracle gain survives"))
  print(f"written to {runs.output_dir(args.workdir)}/robustness.{{json,png}}")
  return 0
