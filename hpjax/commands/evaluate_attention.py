"""Attention analyses (paper A, Figs. 4–6, Table 4) and measured localisation.

  python -m evaluate.attention --workdir runs/demo

Fig. 4: top-3 channel masks per attribute; Fig. 5: K×C mean masks; Fig. 6: C×C
channel correlation; Table 4: top-5 correlated attributes per attribute. Where the
test images have true regions (the generated faces; an attribute table with region
columns; CelebA with its landmarks: docs/data.md), also the share of attention (HPNet)
and Grad-CAM (HPNet and the baseline) energy inside each attribute's true region, and
the pointing game, over all test images and over those that have the attribute, beside
two controls that use no information from the scored image (HPNet's mean attention
map; a centred Gaussian).
Writes WORKDIR/analysis/attention.json and PNGs.
"""
from __future__ import annotations

from hpjax.core import cli
from hpjax.hpnet import analyses, runs


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.attention", __doc__)
  cli.add_analysis_args(p, limit_help="test images for localisation",
                        baseline_help="baseline run for Grad-CAM localisation")
  p.add_argument("--stats-limit", type=int, default=1024, help="training images for Figs. 5-6")
  args = p.parse_args(argv)
  r = analyses.run("attention", args.workdir, baseline_workdir=args.baseline_workdir,
                   limit=args.limit, stats_limit=args.stats_limit)
  print("Table 4: top-5 correlated attributes")
  for target, rows in r["table4"].items():
    print(f"  {target:20s} " + ", ".join(f"{n} ({c:.2f})" for n, c in rows))
  for kind, d in r.get("localisation_mean", {}).items():
    print(f"localisation {kind:18s} " + "  ".join(
        f"{sub}: energy ratio {d[sub]['ratio']:.2f}, pointing {100 * d[sub]['pointing']:.1f}%"
        for sub in ("all", "present")))
  for sub, d in r.get("localisation_attention_minus_prior", {}).items():
    print(f"HPNet attention minus best prior ({sub}): ratio {d['ratio']:+.2f}, "
          f"pointing {100 * d['pointing']:+.1f} pts")
  print(f"written to {runs.output_dir(args.workdir)}/")
  return 0
