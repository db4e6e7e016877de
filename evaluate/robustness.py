"""``python -m evaluate.robustness``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_robustness`;
installed, ``hpjax evaluate robustness`` runs it.
"""
from hpjax.commands.evaluate_robustness import main

if __name__ == "__main__":
  raise SystemExit(main())
