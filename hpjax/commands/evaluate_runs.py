"""Compare evaluated runs side by side, or paper A's claims over training seeds.

  python -m evaluate.runs runs/ablation/*                  # one line per run
  python -m evaluate.runs --per-attribute runs/a runs/b    # + each attribute's balanced accuracy
  python -m evaluate.runs --seeds runs/demo_s0 runs/demo_s1 runs/demo_s2

Without --seeds, each WORKDIR needs eval/attributes.json (python -m evaluate.attributes):
the table puts mean accuracy beside the majority-class rate, mean and worst balanced
accuracy, AUROC and the dead heads. With --seeds, each WORKDIR is a finished
python -m train.demo run (HPNet in WORKDIR, baseline in WORKDIR/baseline, analyses
in WORKDIR/analysis/), and the table gives every claim's number as mean ± std over
the seeds with each seed's value.
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.hpnet import summary


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.runs", __doc__)
  p.add_argument("workdirs", nargs="+", help="run directories")
  p.add_argument("--seeds", action="store_true", help="paper-A claims over seed workdirs")
  p.add_argument("--per-attribute", action="store_true",
                 help="add each attribute's balanced accuracy (without --seeds)")
  p.add_argument("--out", help="also write the table to this Markdown file")
  args = p.parse_args(argv)
  text = (summary.seeds_table(args.workdirs) if args.seeds
          else summary.table(args.workdirs, per_attribute=args.per_attribute))
  print(text, end="")
  if args.out:
    from hpjax.core.io import write_text
    write_text(args.out, text)
    print(f"written to {os.path.abspath(args.out)}")
  return 0
