"""``python -m train.demo``, run from a checkout.

The command is :mod:`hpjax.commands.train_demo`;
installed, ``hpjax train demo`` runs it.
"""
from hpjax.commands.train_demo import main

if __name__ == "__main__":
  raise SystemExit(main())
