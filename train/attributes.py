"""Train HPNet (or its baseline) on a multi-attribute data set.

  python -m train.attributes --config demo --workdir runs/demo
  python -m train.attributes --config celeba --set data_path=/data/celeba --workdir runs/celeba

A workdir that already has checkpoints is resumed from the latest one.
"""
from __future__ import annotations

import argparse
import os
import sys

from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS
from hpjax.core import cli, configs, distributed


def parse(argv: list[str] | None) -> argparse.Namespace:
  p = cli.parser("train.attributes", __doc__)
  p.add_argument("--config", default="demo", help=f"preset: {', '.join(ATTRIBUTE_PRESETS)}")
  p.add_argument("--workdir", required=True, help="run directory (created; resumed if it has checkpoints)")
  cli.add_training_args(p, set_example="batch_size=64")
  return p.parse_args(argv)


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  args = parse(argv)
  distributed.initialize(True if args.distributed else None)
  config = configs.override(configs.preset(ATTRIBUTE_PRESETS, args.config), args.set)
  state = experiment.train(config, args.workdir, progress=not args.no_progress)
  print(f"trained {config.model} ({config.name}) to step {int(state.step)}; "
        f"checkpoints and metrics in {os.path.abspath(args.workdir)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
