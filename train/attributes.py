"""Train HPNet (or its baseline) on a multi-attribute data set.

  python -m train.attributes --config demo --workdir runs/demo
  python -m train.attributes --config celeba --set data_path=/data/celeba --workdir runs/celeba

A workdir that already has checkpoints is resumed from the latest one.
"""
from __future__ import annotations

import argparse
import os
import sys

from hpjax import attributes, cli, configs, distributed


def parse(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m train.attributes", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="demo", help=f"preset: {', '.join(configs.ATTRIBUTE_PRESETS)}")
  p.add_argument("--workdir", required=True, help="run directory (created; resumed if it has checkpoints)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="override a config field, e.g. --set batch_size=64 (repeatable)")
  p.add_argument("--distributed", action="store_true",
                 help="call jax.distributed.initialize() (also: HPJAX_DISTRIBUTED=1)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p.parse_args(argv)


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  args = parse(argv)
  distributed.initialize(True if args.distributed else None)
  config = configs.override(configs.preset(configs.ATTRIBUTE_PRESETS, args.config), args.set)
  state = attributes.train(config, args.workdir, progress=not args.no_progress)
  print(f"trained {config.model} ({config.name}) to step {int(state.step)}; "
        f"checkpoints and metrics in {os.path.abspath(args.workdir)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
