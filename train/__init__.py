"""Thin ``python -m train.*`` entry points; the work lives in :mod:`hpjax`."""
