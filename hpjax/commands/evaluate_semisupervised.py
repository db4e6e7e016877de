"""Tables 1–3 and Figs. 2–5 of paper B from semi-supervised runs.

  python -m evaluate.semisupervised --workdirs runs/semi/fm/* --out runs/semi/fm_eval
  python -m evaluate.semisupervised --summary runs/semi/fm_eval/runs_summary.json --out T

Per class: baseline, image-score, softmax (and random) test accuracy, differences
and one-sided p-values, per mode of the runs (all, dataset, per_class): with
per-seed samples (final accuracy, or mean over the re-training epochs, of each
seed; paired over the seeds shared with the baseline; exact sign-flip p with its
floor 2^-n, bootstrap p only from 5 seeds on) and with the paper's per-epoch
samples of one seed (not independent: the p-values are optimistic); the assembly
of per-class runs (Table 3); labelling accuracy and share of images per score
interval, one set of intervals per figure (Figs. 2–4); accuracy over the
re-training epochs (Fig. 5). Writes OUT/semisupervised.{json,md} and PNGs.
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.image_score import results


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.semisupervised", __doc__)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdirs", nargs="+",
                   help="run directories written by train.semisupervised (one data set)")
  src.add_argument("--summary", help="OUT/runs_summary.json of an earlier evaluation: the "
                   "tables again without the run directories (no assembly, Figs. 2-4, AUROC)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--fig-class", type=int, default=0, help="class of Figs. 2–5 (default 0)")
  p.add_argument("--num-resamples", type=int, default=10000, help="bootstrap resamples")
  p.add_argument("--plot-similarities", nargs="+", default=["recall"],
                 choices=("recall", "jaccard", "dice"),
                 help="similarities drawn as Figs. 2-4 (all are in the JSON)")
  args = p.parse_args(argv)
  for w in args.workdirs or ():
    cli.require_trained("--workdirs", w, "config.json", "train.semisupervised")
  results.evaluate(args.workdirs, args.out, summary=args.summary, fig_class=args.fig_class,
                   num_resamples=args.num_resamples, plot_similarities=args.plot_similarities)
  with open(os.path.join(args.out, "semisupervised.md")) as f:
    print(f.read(), end="")
  print(f"written to {os.path.abspath(args.out)}")
  return 0
