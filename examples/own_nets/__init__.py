"""A user's own ensembles, importable when ``examples/`` is on ``PYTHONPATH``: ``cos_net``
(a class, example 07) and ``deep_tanh`` (plain JAX ``init``/``apply`` functions, example 06)."""
