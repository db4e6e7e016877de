"""Thin ``python -m train.*`` entry points, run from a checkout and not installed.

The commands live in :mod:`hpjax.commands`; installed, ``hpjax train NAME`` runs them.
"""
