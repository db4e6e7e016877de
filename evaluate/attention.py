"""``python -m evaluate.attention``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_attention`;
installed, ``hpjax evaluate attention`` runs it.
"""
from hpjax.commands.evaluate_attention import main

if __name__ == "__main__":
  raise SystemExit(main())
