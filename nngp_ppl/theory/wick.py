"""Gaussian-process correlators (Wick / Isserlis) and cumulants from moments.

.. math:: G^{(n)}_{GP}(x_1..x_n) = \\sum_{\\text{pairings } p} \\prod_{(a,b)\\in p} K(x_a, x_b)

over the (n-1)!! perfect matchings (Isserlis 1918; physics.md §3). Odd n vanish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import tuples as _tuples
from .._checks import NNGPInputError


def _kernel_matrix(K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise NNGPInputError(f"K must be a non-empty square (k, k) kernel matrix, got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise NNGPInputError("K must be finite")
    return K


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
    if not moments:
        raise NNGPInputError("moments must map orders to correlator arrays, got none")
    k = np.asarray(next(iter(moments.values()))).shape[0]
    compressed = {m: _tuples.compress(v, k, m) for m, v in moments.items()}
    return _tuples.expand(connected_correlator_tuples(compressed, n, k), k, n)
