"""Thin ``python -m evaluate.*`` entry points; the work lives in :mod:`hpjax`."""
