"""Evaluate a trained attribute model on the test split.

  python -m evaluate.attributes --workdir runs/demo

Writes WORKDIR/eval/attributes.json (mean_accuracy, per_attribute) and a Markdown
table beside it, and prints the table.
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.hpnet import experiment


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("evaluate.attributes", __doc__)
  p.add_argument("--workdir", required=True, help="a run directory written by train.attributes")
  p.add_argument("--split", default="test", choices=("train", "val", "test"))
  p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize()")
  args = p.parse_args(argv)
  cli.initialize_distributed(args)
  cli.require_trained("--workdir", args.workdir, "checkpoints/", "train.attributes")
  result = experiment.evaluate(args.workdir, split=args.split)
  with open(os.path.join(args.workdir, "eval", "attributes.md")) as f:
    print(f.read(), end="")
  print(f"mean {args.split} accuracy {100 * result['mean_accuracy']:.2f}% over "
        f"{result['num_examples']} images; written to "
        f"{os.path.abspath(os.path.join(args.workdir, 'eval', 'attributes.json'))}")
  return 0
