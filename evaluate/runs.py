"""``python -m evaluate.runs``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_runs`;
installed, ``hpjax evaluate runs`` runs it.
"""
from hpjax.commands.evaluate_runs import main

if __name__ == "__main__":
  raise SystemExit(main())
