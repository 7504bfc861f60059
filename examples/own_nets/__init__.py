"""A user's own ensembles, importable when ``examples/`` is on ``PYTHONPATH`` (example 07)."""
