"""Wick / Isserlis sums and cumulants, against sampled Gaussians and brute-force enumeration."""

import itertools
import math

import numpy as np
import pytest

from nngp_ppl import ErfNet, NNGPInputError, connected_correlator, gp_correlator, tuples
from nngp_ppl.theory.wick import connected_correlator_tuples, gp_correlator_tuples


def _random_kernel(k, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k + 2))
    return A @ A.T / (k + 2)


def _brute_pairings(n):
    """Perfect matchings of n points from all n! orderings (independent of tuples.pairings)."""
    found = set()
    for perm in itertools.permutations(range(n)):
        found.add(frozenset(frozenset(perm[i : i + 2]) for i in range(0, n, 2)))
    return [tuple(tuple(sorted(p)) for p in m) for m in found]


def _brute_wick(K, n):
    k = K.shape[0]
    out = np.zeros((k,) * n)
    for matching in _brute_pairings(n):
        for idx in itertools.product(range(k), repeat=n):
            out[idx] += math.prod(K[idx[a], idx[b]] for a, b in matching)
    return out


def test_four_point_is_the_three_pairings():
    K = _random_kernel(3, 0)
    G = gp_correlator(K, 4)
    expected = (
        np.einsum("ab,cd->abcd", K, K)
        + np.einsum("ac,bd->abcd", K, K)
        + np.einsum("ad,bc->abcd", K, K)
    )
    np.testing.assert_allclose(G, expected, rtol=1e-13)


def test_six_point_is_the_fifteen_pairings():
    K = _random_kernel(3, 1)
    assert len(_brute_pairings(6)) == 15
    np.testing.assert_allclose(gp_correlator(K, 6), _brute_wick(K, 6), rtol=1e-12)


def test_eight_point_sums_105_pairings():
    assert len(_brute_pairings(8)) == 105
    K = _random_kernel(2, 2)
    np.testing.assert_allclose(gp_correlator(K, 8), _brute_wick(K, 8), rtol=1e-12)
    # All-ones kernel: every pairing contributes 1, so each entry counts the pairings.
    np.testing.assert_allclose(gp_correlator(np.ones((2, 2)), 8), 105.0)
    np.testing.assert_allclose(gp_correlator(np.ones((1, 1)), 10), 945.0)


def test_two_point_is_the_kernel_and_odd_orders_vanish():
    K = _random_kernel(4, 3)
    np.testing.assert_allclose(gp_correlator(K, 2), K, rtol=1e-15)
    assert np.all(gp_correlator(K, 3) == 0)
    assert gp_correlator(K, 5).shape == (4,) * 5


@pytest.mark.parametrize("n", [4, 6])
def test_wick_matches_sampled_gaussians(n):
    # The kernel of an Erf-net on three inputs; 400k exact normal draws with a fixed seed.
    # Each entry's sample mean has standard error std/sqrt(draws); the worst of the
    # C(k+n-1, n) z-scores must stay below 5 (the entries are correlated, so this is
    # looser than a Bonferroni bound but the seed is fixed; measured worst |z|: 1.6 for
    # n = 4 and 1.7 for n = 6 at this seed, at most 3.7 over four seeds).
    X = np.array([[-1.0], [0.2], [0.9]])
    K = np.asarray(ErfNet(d_in=1, sigma_w=1.0, sigma_b=0.5).kernel(X))
    rng = np.random.default_rng(20260101)
    draws = 400_000
    f = rng.multivariate_normal(np.zeros(3), K, size=draws, method="cholesky")
    rows = tuples.distinct_tuples(3, n)
    prod = np.prod(f[:, rows], axis=2)
    mean = prod.mean(axis=0)
    stderr = prod.std(axis=0, ddof=1) / math.sqrt(draws)
    z = (mean - gp_correlator_tuples(K, n)) / stderr
    assert np.max(np.abs(z)) < 5.0


def test_connected_correlator_of_a_gaussian_vanishes_beyond_two():
    K = _random_kernel(3, 4)
    moments = {2: gp_correlator(K, 2), 4: gp_correlator(K, 4), 6: gp_correlator(K, 6)}
    np.testing.assert_allclose(connected_correlator(moments, 2), K, rtol=1e-14)
    scale = np.max(np.abs(moments[4]))
    np.testing.assert_allclose(connected_correlator(moments, 4), 0.0, atol=1e-13 * scale)
    scale = np.max(np.abs(moments[6]))
    np.testing.assert_allclose(connected_correlator(moments, 6), 0.0, atol=1e-13 * scale)


def test_connected_correlator_recovers_uniform_cumulants():
    # X uniform on [-1, 1]: E X^{2m} = 1/(2m+1); cumulants kappa_{2m} = B_{2m} 2^{2m} / (2m)
    # (Bernoulli numbers B4 = -1/30, B6 = 1/42): kappa_4 = -2/15, kappa_6 = 16/63.
    moments = {2: np.full((1, 1), 1 / 3), 4: np.full((1,) * 4, 1 / 5), 6: np.full((1,) * 6, 1 / 7)}
    assert connected_correlator(moments, 4).item() == pytest.approx(-2 / 15, rel=1e-14)
    assert connected_correlator(moments, 6).item() == pytest.approx(16 / 63, rel=1e-14)


def test_connected_correlator_tuples_of_independent_variables():
    # Two independent uniforms on [-1, 1]: mixed cumulants vanish, pure ones are kappa_4.
    k = 2
    moments = {}
    for m in (2, 4):
        rows = tuples.distinct_tuples(k, m)
        vals = []
        for r in rows:
            c = np.bincount(r, minlength=k)
            # E[X^a Y^b] = E X^a E Y^b, odd moments zero.
            vals.append(math.prod(0.0 if e % 2 else 1 / (e + 1) for e in c))
        moments[m] = np.array(vals)
    kappa = connected_correlator_tuples(moments, 4, k)
    rows = tuples.distinct_tuples(k, 4)
    pure = np.array([len(set(r)) == 1 for r in rows.tolist()])
    np.testing.assert_allclose(kappa[pure], -2 / 15, rtol=1e-14)
    np.testing.assert_allclose(kappa[~pure], 0.0, atol=1e-15)


@pytest.mark.parametrize(
    "K, n, match",
    [
        (np.ones((2, 3)), 4, "square"),
        (np.ones((0, 0)), 4, "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), 4, "finite"),
        (np.eye(2), 12, "0..10"),
        (np.eye(2), -2, "0..10"),
        (np.eye(2), 2.0, "0..10"),
    ],
)
def test_bad_input_is_rejected(K, n, match):
    with pytest.raises(NNGPInputError, match=match):
        gp_correlator(K, n)


def test_connected_correlator_needs_moments():
    with pytest.raises(NNGPInputError, match="moments"):
        connected_correlator({}, 4)
