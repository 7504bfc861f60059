"""A least-recently-used memo bounded by the bytes of what it holds.

The package keeps three such memos: parsed netCDF files by content (:mod:`nngp_ppl._io`),
quadrature kernel blocks (:mod:`nngp_ppl.ensembles.core`) and the small integration lattices
of :func:`nngp_ppl.ensembles.quadrature.pair_expectation`. Each entry is ``key -> (value,
size in bytes)``, least recently used first; the bounds are passed to :meth:`BytesLRU.keep`
by the caller, so a module-level bound changed at run time takes effect at the next call.
Thread-safe: kernels are evaluated from XLA's callback threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["BytesLRU"]


class BytesLRU(OrderedDict):
    """``key -> (value, size)``, least recently used first (an ``OrderedDict``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def fetch(self, key):
        """The value kept under ``key``, now the most recently used; None if none is."""
        with self._lock:
            hit = self.get(key)
            if hit is None:
                return None
            self.move_to_end(key)
            return hit[0]

    def keep(self, key, value, size: int, *, limit: int, largest: int | None = None) -> None:
        """Keep ``value`` (``size`` bytes) unless it is larger than ``largest`` (default
        ``limit``); then drop the least recently used entries until at most ``limit`` bytes
        are kept."""
        if size > (limit if largest is None else largest):
            return
        with self._lock:
            self[key] = (value, size)
            self.move_to_end(key)
            total = sum(n for _, n in self.values())
            while total > limit:
                total -= self.popitem(last=False)[1][1]
