"""The main job: HPNet + baseline on generated faces, evaluation, analyses and report.

  python -m train.demo --workdir runs/demo
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.hpnet import demo


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("train.demo", __doc__)
  p.add_argument("--workdir", default="runs/demo", help="output directory (resumed if present)")
  p.add_argument("--config", default="demo", help="attribute preset to train")
  cli.add_training_args(p, set_example="num_steps=1200", distributed=False)
  p.add_argument("--no-report", action="store_true",
                 help=cli.as_invoked("stop after training and evaluation "
                                     "(python -m evaluate.report does the rest)"))
  args = p.parse_args(argv)
  outputs = demo.run(args.workdir, preset=args.config, overrides=args.set,
                     progress=not args.no_progress, with_report=not args.no_report)
  print("outputs:")
  for name, path in outputs.items():
    print(f"  {name}: {os.path.abspath(path)}")
  return 0
