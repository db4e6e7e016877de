"""``python -m evaluate.semisupervised``, run from a checkout.

The command is :mod:`hpjax.commands.evaluate_semisupervised`;
installed, ``hpjax evaluate semisupervised`` runs it.
"""
from hpjax.commands.evaluate_semisupervised import main

if __name__ == "__main__":
  raise SystemExit(main())
