"""``python -m train.semisupervised``, run from a checkout.

The command is :mod:`hpjax.commands.train_semisupervised`;
installed, ``hpjax train semisupervised`` runs it.
"""
from hpjax.commands.train_semisupervised import main

if __name__ == "__main__":
  raise SystemExit(main())
