"""``python -m evaluate.attributes``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_attributes`;
installed, ``hpjax evaluate attributes`` runs it.
"""
from hpjax.commands.evaluate_attributes import main

if __name__ == "__main__":
  raise SystemExit(main())
