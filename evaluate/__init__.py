"""Thin ``python -m evaluate.*`` entry points, run from a checkout and not installed.

The commands live in :mod:`hpjax.commands`; installed, ``hpjax evaluate NAME`` runs them.
"""
