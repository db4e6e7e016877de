"""Train HPNet (or its baseline) on a multi-attribute data set.

  python -m train.attributes --config demo --workdir runs/demo
  python -m train.attributes --config celeba --set data_path=/data/celeba --workdir runs/celeba

A workdir that already has checkpoints is resumed from the latest one.
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.hpnet import experiment
from hpjax.hpnet.config import ATTRIBUTE_PRESETS


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("train.attributes", __doc__)
  cli.add_config_arg(p, ATTRIBUTE_PRESETS, "demo")
  p.add_argument("--workdir", required=True,
                 help="run directory (created; resumed if it has checkpoints)")
  cli.add_training_args(p, set_example="batch_size=64")
  args = p.parse_args(argv)
  config = cli.training_config(args, ATTRIBUTE_PRESETS)
  state = experiment.train(config, args.workdir, progress=not args.no_progress)
  print(f"trained {config.model} ({config.name}) to step {int(state.step)}; "
        f"checkpoints and metrics in {os.path.abspath(args.workdir)}")
  return 0
