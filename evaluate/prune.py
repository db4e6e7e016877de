"""``python -m evaluate.prune``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_prune`;
installed, ``hpjax evaluate prune`` runs it.
"""
from hpjax.commands.evaluate_prune import main

if __name__ == "__main__":
  raise SystemExit(main())
