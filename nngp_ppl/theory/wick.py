"""Gaussian-process correlators (Wick / Isserlis) and cumulants from moments.

.. math:: G^{(n)}_{GP}(x_1..x_n) = \\sum_{\\text{pairings } p} \\prod_{(a,b)\\in p} K(x_a, x_b)

over the (n-1)!! perfect matchings (Isserlis 1918; physics.md §3). Odd n vanish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError

__all__ = [
    "gp_correlator_tuples",
    "gp_correlator",
    "connected_correlator_tuples",
    "connected_correlator",
]


def _kernel_matrix(K) -> np.ndarray:
    return _checks.symmetric_matrix("K", K)


def gp_correlator_tuples(K, n: int) -> np.ndarray:
    """Wick sum on the distinct tuples of :func:`nngp_ppl.tuples.distinct_tuples` (k, n)."""
    K = _kernel_matrix(K)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or n > 10:
        raise NNGPInputError(f"n must be an integer order in 0..10, got {n!r}")
    k = K.shape[0]
    rows = _tuples.distinct_tuples(k, n)
    if n % 2:
        return np.zeros(len(rows))
    if n == 0:
        return np.ones(1)
    total = np.zeros(len(rows))
    for pairing in _tuples.pairings(n):
        term = np.ones(len(rows))
        for a, b in pairing:
            term = term * K[rows[:, a], rows[:, b]]
        total += term
    return total


def gp_correlator(K, n: int) -> np.ndarray:
    """Full symmetric (k,)*n array of the GP n-point function for the kernel matrix ``K``.

    ``K`` is the (k, k) kernel on the k inputs; n even, n <= 10 (odd n give zeros).
    """
    K = _kernel_matrix(K)
    return _tuples.expand(gp_correlator_tuples(K, n), K.shape[0], n)


def connected_correlator_tuples(moments: Mapping[int, np.ndarray], n: int, k: int) -> np.ndarray:
    """Joint cumulant κ_n on the distinct tuples, from moments on distinct tuples.

    .. math:: \\kappa_n(x_1..x_n) = \\sum_{\\pi} (|\\pi|-1)!\\,(-1)^{|\\pi|-1}
        \\prod_{B\\in\\pi} E\\Big[\\prod_{j\\in B} f(x_j)\\Big]

    over set partitions π of the n points (Leonov & Shiryaev). ``moments[m]`` holds the
    m-point moments on ``distinct_tuples(k, m)``; an order missing from ``moments`` is
    taken as zero, which is right for odd orders of the zero-mean ensembles.
    """
    rows = _tuples.distinct_tuples(k, n)
    total = np.zeros(len(rows))
    for part in _tuples.set_partitions(n):
        if any(len(b) not in moments for b in part):
            continue
        r = len(part)
        term = np.full(len(rows), math.factorial(r - 1) * (-1.0) ** (r - 1))
        for block in part:
            sub = np.sort(rows[:, list(block)], axis=1)
            m = np.asarray(moments[len(block)], dtype=np.float64)
            term = term * m[_tuples.rows_of(k, sub)]
        total += term
    return total


def connected_correlator(moments: Mapping[int, np.ndarray], n: int) -> np.ndarray:
    """Full (k,)*n connected n-point function from full moment arrays ``{order: array}``.

    See :func:`connected_correlator_tuples` for the formula; orders missing from
    ``moments`` count as zero (odd orders of zero-mean ensembles).
    """
    compressed = _full_moments(moments)
    k = np.asarray(next(iter(moments.values()))).shape[0]
    return _tuples.expand(connected_correlator_tuples(compressed, n, k), k, n)


def _full_moments(moments) -> dict[int, np.ndarray]:
    """Full moment arrays ``{m: (k,)*m}`` checked (integer orders 1..12, one k, finite,
    symmetric under permutations of the points: a moment is) and compressed to tuples."""
    if not isinstance(moments, Mapping) or not moments:
        raise NNGPInputError("moments must map orders to correlator arrays, got none")
    out, k = {}, None
    for m, values in moments.items():
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= 12:
            raise NNGPInputError(f"moments must be keyed by orders 1..12, got key {m!r}")
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise NNGPInputError(f"moments[{m}] must be an array of real numbers") from None
        k = arr.shape[0] if k is None and arr.ndim else k
        if arr.shape != (k,) * m:
            raise NNGPInputError(f"moments[{m}] must be a full {(k,) * m} array (the {m}-point "
                                 f"function of the {k} inputs), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise NNGPInputError(f"moments[{m}] must be finite")
        out[int(m)] = _tuples.compress(arr, k, m)
        if not np.allclose(_tuples.expand(out[int(m)], k, m), arr, rtol=1e-10,
                           atol=1e-12 * float(np.max(np.abs(arr), initial=0.0))):
            raise NNGPInputError(f"moments[{m}] must be symmetric under permutations of the "
                                 "points (a moment is), got an asymmetric array")
    return out
