"""Index bookkeeping for symmetric correlators.

An n-point function of k inputs is a symmetric (k,)*n array. Its distinct entries are the
multisets i1 <= ... <= in of input indices, C(k+n-1, n) of them (k = 6: 21, 126, 462 for
n = 2, 4, 6). Everything that is measured or fitted lives on these distinct tuples; the
full array is only built for display and for users who want it.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np

__all__ = [
    "distinct_tuples",
    "tuple_row",
    "full_index",
    "expand",
    "compress",
    "pairings",
    "set_partitions",
    "rows_of",
    "prefix_suffix_orders",
    "has_odd",
    "materialised_orders",
    "first_index_starts",
    "index_counts",
]


@cache
def distinct_tuples(k: int, n: int) -> np.ndarray:
    """The multisets of size ``n`` from ``range(k)`` as sorted rows, in lexicographic order.

    Shape (C(k+n-1, n), n), dtype int. Cached and read-only.
    """
    combos = list(itertools.combinations_with_replacement(range(k), n))
    # n = 0: one empty multiset (the 0-point function is the normalisation, 1).
    rows = np.array(combos, dtype=np.int64).reshape(len(combos), n)
    rows.setflags(write=False)
    return rows


@cache
def _row_lookup(k: int, n: int) -> dict[tuple[int, ...], int]:
    return {tuple(r): i for i, r in enumerate(distinct_tuples(k, n).tolist())}


def tuple_row(k: int, t) -> int:
    """Row of the multiset ``t`` (any order) in :func:`distinct_tuples` ``(k, len(t))``."""
    return _row_lookup(k, len(t))[tuple(sorted(int(i) for i in t))]


@cache
def full_index(k: int, n: int) -> np.ndarray:
    """(k,)*n integer array: entry at (i1..in) is the row of sorted(i1..in)."""
    if n == 0:  # a 0-d array: the one empty tuple, row 0
        idx = np.zeros((), dtype=np.int64)
        idx.setflags(write=False)
        return idx
    grids = np.indices((k,) * n).reshape(n, -1).T
    srt = np.sort(grids, axis=1)
    # Lexicographic rank of a sorted tuple via a dense code, matched against the table.
    weights = k ** np.arange(n - 1, -1, -1)
    table = distinct_tuples(k, n) @ weights
    codes = srt @ weights
    idx = np.searchsorted(table, codes).reshape((k,) * n)
    idx.setflags(write=False)
    return idx


def expand(values, k: int, n: int) -> np.ndarray:
    """Full symmetric (k,)*n array from the values on the distinct tuples (last axis)."""
    values = np.asarray(values)
    return values[..., full_index(k, n)]


def compress(full, k: int, n: int) -> np.ndarray:
    """Values on the distinct tuples from a full (k,)*n array (the inverse of :func:`expand`)."""
    full = np.asarray(full)
    rows = distinct_tuples(k, n)
    return full[tuple(rows.T)]


@cache
def pairings(n: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """All (n-1)!! perfect matchings of positions 0..n-1 (n even), as tuples of pairs
    (a < b in each): position 0 paired with each later one in turn, then the rest alike.
    Wick's theorem, the diagrams' contractions and the derivative vertices all use it."""
    if n % 2:
        raise ValueError(f"pairings need an even number of points, got {n}")

    def rec(items):
        if not items:
            yield ()
            return
        first, rest = items[0], items[1:]
        for j, partner in enumerate(rest):
            for tail in rec(rest[:j] + rest[j + 1 :]):
                yield ((first, partner),) + tail

    return tuple(rec(tuple(range(n))))


@cache
def set_partitions(n: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """All set partitions of positions 0..n-1 (Bell(n) of them), blocks as sorted tuples."""

    def rec(items):
        if not items:
            yield ()
            return
        first, rest = items[0], items[1:]
        for part in rec(rest):
            yield ((first,),) + part
            for i, block in enumerate(part):
                yield part[:i] + ((first,) + block,) + part[i + 1 :]

    return tuple(rec(tuple(range(n))))


def rows_of(k: int, sorted_rows) -> np.ndarray:
    """Row numbers of already sorted multisets (one per row, over k inputs) in
    :func:`distinct_tuples` ``(k, m)``: base-k codes are increasing in the lexicographic order
    the table is built in, so a binary search finds each. Zero-size multisets give row 0."""
    sorted_rows = np.asarray(sorted_rows)
    m = sorted_rows.shape[-1]
    if m == 0:
        return np.zeros(sorted_rows.shape[:-1], dtype=np.int64)
    weights = k ** np.arange(m - 1, -1, -1, dtype=np.int64)
    return np.searchsorted(distinct_tuples(k, m) @ weights, sorted_rows @ weights)


def prefix_suffix_orders(m: int, odd: bool = False) -> tuple[int, int]:
    """(p, q) of the prefix-suffix split of a monomial order m (the sampler's kernels,
    :mod:`nngp_ppl.sampling._shard`), p <= q.

    Even-only plans (``odd=False``: orders 2, 4, .. materialised) split as p = 2 floor(m/4),
    even, q = m - p. Plans with an odd order materialise every order 1..max(orders)
    (:func:`materialised_orders`), so any split works; they take p = floor(m/2),
    q = ceil(m/2), which keeps q <= max(orders) for every m <= 2 max(orders).
    """
    if odd:
        return m // 2, m - m // 2
    p = 2 * (m // 4)
    return p, m - p


def has_odd(orders) -> bool:
    """Whether a plan measures an odd order (and so materialises every order)."""
    return any(int(n) % 2 for n in orders)


def materialised_orders(orders) -> tuple[int, ...]:
    """Orders the sampler's kernels build product by product: 2, 4, .., max(orders) for
    even-only ``orders``; 1, 2, .., max(orders) when some order is odd (the odd products
    grow from the outputs as the even ones from the pairs: M_m = M_(m-2)[tail] P[lead])."""
    top = max(orders)
    return tuple(range(1, top + 1)) if has_odd(orders) else tuple(range(2, top + 1, 2))


@cache
def first_index_starts(k: int, q: int) -> tuple[int, ...]:
    """Row of the first q-tuple whose first index is >= d in :func:`distinct_tuples`
    ``(k, q)``, for d = 0..k (lexicographic order: those tuples are the rows from there on)."""
    first = distinct_tuples(k, q)[:, 0]
    return tuple(int(np.searchsorted(first, d)) for d in range(k + 1))


@cache
def index_counts(k: int, m: int) -> np.ndarray:
    """(T_m, k) int32: how often each input index occurs in each distinct m-tuple."""
    rows = distinct_tuples(k, m)
    return np.stack([np.sum(rows == a, axis=1) for a in range(k)], axis=1).astype(np.int32)
