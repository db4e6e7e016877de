"""Semi-supervised re-training with image-score, softmax or random sample selection (paper B).

  python -m train.semisupervised --config fashion_mnist --method image_score --seed 0 \\
      --workdir runs/semi/fm_is_s0 --set pretrain_cache=runs/semi/cache
  python -m train.semisupervised --config fashion_mnist --method softmax --mode per_class \\
      --target-class 6 --seed 0 --workdir runs/semi/fm_sm_c6_s0
  python -m train.semisupervised --config cifar10 --set data_path=/data/cifar-10-batches-bin \\
      --method image_score --seed 0 --workdir runs/semi/c10_is_s0
  python -m train.semisupervised --config fashion_mnist_tables --suite tables \\
      --workdir runs/semi/fm_tables

With --suite, WORKDIR is the root of a whole experiment set (hpjax.image_score.suite):
every run of it in turn, each in its own directory below WORKDIR; the set picks
each run's method, mode, class and seed, --config and --set the rest.

Pre-trains E1 epochs on the labelled part of the training split, then re-trains E2
epochs, adding each epoch the top α_c of the additional images predicted as
class c (by image score / softmax confidence / at random; none for the baseline)
with their predicted labels. Re-running the same command resumes the run.
Per-epoch records go to WORKDIR/metrics.jsonl (kind "semi").
"""
from __future__ import annotations

import os

from hpjax.core import cli
from hpjax.core.errors import ConfigError
from hpjax.image_score import config as semi_config
from hpjax.image_score import semisupervised, suite


@cli.guarded
def main(argv: list[str] | None = None) -> int:
  p = cli.parser("train.semisupervised", __doc__)
  cli.add_config_arg(p, semi_config.SEMI_PRESETS, "fashion_mnist")
  p.add_argument("--method", choices=semi_config.METHODS, default=None,
                 help="sample selection (default: the preset's)")
  p.add_argument("--mode", choices=semi_config.MODES, default=None,
                 help="add pseudo labels of all classes, or only of --target-class")
  p.add_argument("--target-class", type=int, default=None, help="the class of mode per_class")
  p.add_argument("--seed", type=int, default=None, help="split, init, data order (default 0)")
  p.add_argument("--suite", choices=tuple(suite.SUITES), default=None,
                 help="run a whole experiment set under WORKDIR (resumed if present)")
  p.add_argument("--workdir", required=True, help="run directory (created; resumed if present)")
  cli.add_training_args(p, set_example="similarity=jaccard")
  args = p.parse_args(argv)
  flags = (("method", args.method), ("mode", args.mode), ("target_class", args.target_class),
           ("seed", args.seed))
  config = cli.training_config(args, semi_config.SEMI_PRESETS,
                               [f"{field}={value}" for field, value in flags if value is not None])
  if args.suite:
    given = [f"--{f.replace('_', '-')}" for f, v in flags if v is not None]
    if given:
      raise ConfigError(f"--suite {args.suite} sets each run's method, mode, class and seed; "
                        f"drop {', '.join(given)}")
    suite.run_suite(args.suite, config, args.workdir, progress=not args.no_progress)
    print(f"experiment set {args.suite} done in {os.path.abspath(args.workdir)}")
    return 0
  if args.mode == "per_class" and args.target_class is None:
    raise ConfigError("--mode per_class needs --target-class C")
  record = semisupervised.train(config, args.workdir, progress=not args.no_progress)
  print(f"{config.method} ({config.mode}) on {config.dataset}, seed {config.seed}: epoch "
        f"{record['epoch']} test accuracy {100 * record['test_accuracy']:.2f}%; records in "
        f"{os.path.abspath(os.path.join(args.workdir, 'metrics.jsonl'))}")
  return 0
