"""Data sources for hpjax: generated attribute faces, real data sets, and the grain pipeline.

Every source is a random-access sequence of examples (``len(src)``, ``src[i]``) that
returns a dict of NumPy arrays, see :mod:`hpjax.data.base`.
"""
