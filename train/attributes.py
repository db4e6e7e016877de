"""``python -m train.attributes``, run from a checkout.

The command is :mod:`hpjax.commands.train_attributes`;
installed, ``hpjax train attributes`` runs it.
"""
from hpjax.commands.train_attributes import main

if __name__ == "__main__":
  raise SystemExit(main())
