"""Index bookkeeping of symmetric correlators: counts, order, expand/compress, matchings."""

import itertools
import math

import numpy as np
import pytest

from nngp_ppl import tuples


@pytest.mark.parametrize("k, n", [(1, 4), (2, 3), (3, 4), (4, 6), (6, 2), (6, 4), (6, 6), (5, 8)])
def test_distinct_tuple_count_is_multiset_coefficient(k, n):
    rows = tuples.distinct_tuples(k, n)
    assert rows.shape == (math.comb(k + n - 1, n), n)


def test_paper_counts_for_six_inputs():
    # physics.md §3: 21, 126, 462 distinct 2-, 4-, 6-point correlators of six inputs.
    assert [len(tuples.distinct_tuples(6, n)) for n in (2, 4, 6)] == [21, 126, 462]


@pytest.mark.parametrize("k, n", [(3, 4), (6, 4), (4, 6)])
def test_distinct_tuples_are_the_sorted_multisets_in_lexicographic_order(k, n):
    rows = tuples.distinct_tuples(k, n)
    assert np.all(np.diff(rows, axis=1) >= 0)
    assert np.all((rows >= 0) & (rows < k))
    # Every index tuple of the full array, sorted, is one of the rows, and all rows occur.
    seen = {tuple(sorted(t)) for t in itertools.product(range(k), repeat=n)}
    assert seen == {tuple(r) for r in rows.tolist()}
    as_list = [tuple(r) for r in rows.tolist()]
    assert as_list == sorted(as_list)
    assert not rows.flags.writeable


def test_tuple_row_ignores_order():
    k = 5
    rows = tuples.distinct_tuples(k, 4)
    rng = np.random.default_rng(3)
    for i in rng.choice(len(rows), size=20, replace=False):
        perm = rng.permutation(rows[i])
        assert tuples.tuple_row(k, perm) == i


@pytest.mark.parametrize("k, n", [(1, 2), (3, 2), (4, 4), (3, 6), (6, 4)])
def test_expand_gives_a_symmetric_array_and_compress_inverts_it(k, n):
    rng = np.random.default_rng(k * 10 + n)
    values = rng.normal(size=math.comb(k + n - 1, n))
    full = tuples.expand(values, k, n)
    assert full.shape == (k,) * n
    for perm in itertools.permutations(range(n)):
        np.testing.assert_array_equal(np.transpose(full, perm), full)
    np.testing.assert_array_equal(tuples.compress(full, k, n), values)
    # Each entry is the value of its sorted index tuple.
    for idx in itertools.islice(itertools.product(range(k), repeat=n), 0, None, 7):
        assert full[idx] == values[tuples.tuple_row(k, idx)]


def test_compress_of_a_symmetrised_array_round_trips():
    k, n = 4, 4
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(k,) * n)
    sym = sum(np.transpose(raw, p) for p in itertools.permutations(range(n))) / math.factorial(n)
    # Permuted sums round differently entry to entry, hence a round-off tolerance.
    back = tuples.expand(tuples.compress(sym, k, n), k, n)
    np.testing.assert_allclose(back, sym, rtol=0, atol=1e-14)


def test_expand_keeps_leading_batch_axes():
    k, n = 3, 4
    vals = np.arange(2 * math.comb(k + n - 1, n), dtype=float).reshape(2, -1)
    out = tuples.expand(vals, k, n)
    assert out.shape == (2,) + (k,) * n
    np.testing.assert_array_equal(out[1], tuples.expand(vals[1], k, n))


@pytest.mark.parametrize("n, count", [(2, 1), (4, 3), (6, 15), (8, 105), (10, 945)])
def test_pairings_are_all_perfect_matchings(n, count):
    pairs = tuples.pairings(n)
    assert len(pairs) == count == math.prod(range(n - 1, 0, -2))
    canon = set()
    for p in pairs:
        flat = sorted(i for pair in p for i in pair)
        assert flat == list(range(n))
        canon.add(frozenset(frozenset(pair) for pair in p))
    assert len(canon) == count


def test_pairings_reject_odd_n():
    with pytest.raises(ValueError, match="even"):
        tuples.pairings(5)


@pytest.mark.parametrize("n, bell", [(1, 1), (2, 2), (3, 5), (4, 15), (5, 52), (6, 203), (7, 877)])
def test_set_partitions_count_bell_numbers(n, bell):
    parts = tuples.set_partitions(n)
    assert len(parts) == bell
    canon = set()
    for part in parts:
        assert sorted(i for block in part for i in block) == list(range(n))
        canon.add(frozenset(frozenset(b) for b in part))
    assert len(canon) == bell
