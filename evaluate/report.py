"""``python -m evaluate.report``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_report`;
installed, ``hpjax evaluate report`` runs it.
"""
from hpjax.commands.evaluate_report import main

if __name__ == "__main__":
  raise SystemExit(main())
