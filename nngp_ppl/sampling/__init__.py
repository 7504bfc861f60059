"""Sampling: network outputs -> correlator estimates (layer 2).

* :mod:`.sampler`: :func:`~.sampler.sample_correlators`, the planner and the run loop.
* :mod:`._shard`, :mod:`._native`: one shard's forward pass and accumulation (XLA or the
  native C kernel ``_accumulate.c``).
* :mod:`.checkpoint`: resumable runs; :mod:`.distributed`: Dask workers.
* :mod:`.stats`: :class:`~.stats.CorrelatorStats`, the running sums and their files.
"""
