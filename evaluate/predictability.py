"""``python -m evaluate.predictability``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_predictability`;
installed, ``hpjax evaluate predictability`` runs it.
"""
from hpjax.commands.evaluate_predictability import main

if __name__ == "__main__":
  raise SystemExit(main())
