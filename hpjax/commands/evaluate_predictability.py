"""Human predictability as a number (paper A; docs/papers.md §A7).

  python -m evaluate.predictability --workdir runs/demo

Predicts each attribute's change of mean logit under pruning one channel, pruning
random channel sets and (HPNet) changing (n, β), from training-set attention
statistics computed beforehand, and each attribute's accuracy drop under the random
sets from a simulation on training images (prune_accuracy); runs the perturbations on
test images; reports Spearman's rho between predicted and observed changes, for HPNet
and the baseline. The transform family's rho(logit) is near 1 by construction.
Also the paper's regression example (monomial / Legendre / Fourier leakage).
Writes WORKDIR/analysis/predictability.json, predictability.png, regression.png.
"""
from __future__ import annotations

from hpjax.core import cli
from hpjax.hpnet import analyses, runs
from hpjax.hpnet.analyses import predictability


def _fmt(x) -> str:
  return "  n/a" if x is None else f"{x:5.3f}"


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.predictability", __doc__)
  cli.add_analysis_args(p)
  p.add_argument("--stats-limit", type=int, default=1024, help="training images for predictors")
  p.add_argument("--random-draws", type=int, default=12, help="random channel sets")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  r = analyses.run("predictability", args.workdir, baseline_workdir=args.baseline_workdir,
                   limit=args.limit, stats_limit=args.stats_limit,
                   random_draws=args.random_draws, seed=args.seed)
  print("model     family         rho(logit)  rho(accuracy)")
  for name, m in r["models"].items():
    for fam in predictability.FAMILIES:
      f = m[fam]
      if f.get("applicable"):
        print(f"{name:9s} {fam:14s} {_fmt(f['spearman_logit']):>10s}  "
              f"{_fmt(f['spearman_accuracy']):>13s}"
              + (f"  (within set size {_fmt(f['spearman_accuracy_within_size'])})"
                 if "spearman_accuracy_within_size" in f else ""))
  print("regression example: mean leakage " + ", ".join(
      f"{b} {v['mean_leakage']:.3f}" for b, v in r["regression"]["bases"].items()))
  print(f"written to {runs.output_dir(args.workdir)}/")
  return 0
