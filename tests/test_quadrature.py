"""The all-monomials Gaussian quadrature against closed forms and adaptive integration."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, special

from nngp_ppl import NNGPInputError, tuples
from nngp_ppl.ensembles import quadrature


def _mults(k, d):
    rows = tuples.distinct_tuples(k, d)
    return np.array([np.bincount(r, minlength=k) for r in rows]).reshape(len(rows), k)


def _gaussian_bump_moment(C, m):
    """E[prod_j exp(-m_j z_j^2)] = det(I + 2 diag(m) C)^(-1/2), z ~ N(0, C)."""
    return np.linalg.det(np.eye(len(m)) + 2.0 * np.diag(m) @ C) ** -0.5


def _sine_moment(C, m):
    """E[prod_j sin(z_j)^m_j]: expand sin = (e^{iz} - e^{-iz}) / 2i, E e^{i s.z} = e^{-s.C.s/2}."""
    idx = [j for j, c in enumerate(m) for _ in range(c)]
    d = len(idx)
    eps = np.array(list(itertools.product((1, -1), repeat=d)), dtype=float).reshape(-1, d)
    onehot = np.zeros((d, len(m)))
    onehot[np.arange(d), idx] = 1.0
    s = eps @ onehot
    total = np.sum(np.prod(eps, axis=1) * np.exp(-0.5 * np.einsum("ei,ij,ej->e", s, C, s)))
    # (2i)^-d; the sum vanishes for odd d (eps -> -eps flips the sign, keeps the exponent).
    return (total / (2.0**d) * (1j ** (-d))).real


_F_CASES = {
    "rank2": np.array([[-1.0, 1.0], [-0.2, 1.0], [0.6, 1.0], [1.0, 1.0]]),
    "rank3": np.array([[-0.7, -0.7, 1.0], [-0.7, 0.7, 1.0], [0.7, -0.7, 1.0], [0.7, 0.7, 1.0]]),
    "rank4": np.array([[0.8, 0.1, -0.3, 0.9], [-0.2, 0.7, 0.4, 1.0], [0.3, -0.5, 0.6, 0.8]]),
}


@pytest.mark.parametrize("case", sorted(_F_CASES))
def test_gaussian_bump_moments_match_the_determinant_closed_form(case):
    """h(z) = exp(-z^2) is entire and grows off the axis like erf: every monomial, d <= 8."""
    F = _F_CASES[case]
    k = len(F)
    C = F @ F.T
    got = quadrature.gaussian_moments(lambda z: np.exp(-z * z), F, [2, 5, 8])
    for d, values in got.items():
        exact = np.array([_gaussian_bump_moment(C, m) for m in _mults(k, d)])
        # Promised 1e-10 of the scale (these moments are positive, so scale = value).
        np.testing.assert_allclose(values, exact, rtol=1e-10, atol=0)


def test_sine_moments_match_the_exponential_expansion_to_order_ten():
    """Odd, bounded, entire; signs cancel, so judge each moment against the largest one."""
    F = _F_CASES["rank2"]
    C = F @ F.T
    got = quadrature.gaussian_moments(np.sin, F, [3, 6, 10])
    for d, values in got.items():
        exact = np.array([_sine_moment(C, m) for m in _mults(len(F), d)])
        assert np.max(np.abs(values - exact)) <= 1e-10 * np.max(np.abs(exact))
    assert np.all(got[3] == 0.0)  # odd activation, odd degree: zero by symmetry


def test_polynomial_activation_gives_isserlis_moments():
    """h(z) = z + z^3/2 grows polynomially; E[z_a z_b z_c z_d] by Wick and E z^6 = 15 C^3."""
    F = _F_CASES["rank3"]
    C = F @ F.T
    got = quadrature.gaussian_moments(lambda z: z, F, [4, 6])
    for row, t in enumerate(tuples.distinct_tuples(len(F), 4)):
        a, b, c, d = t
        wick = C[a, b] * C[c, d] + C[a, c] * C[b, d] + C[a, d] * C[b, c]
        assert got[4][row] == pytest.approx(wick, rel=1e-11, abs=1e-12)
    j6 = tuples.tuple_row(len(F), [2] * 6)
    assert got[6][j6] == pytest.approx(15 * C[2, 2] ** 3, rel=1e-11)
    cubic = quadrature.gaussian_moments(lambda z: z + 0.5 * z**3, F[:1], [2])
    v = C[0, 0]
    # E[(z + z^3/2)^2] = v + E z^4 + E z^6 / 4 = v + 3 v^2 + 15 v^3 / 4
    assert cubic[2][0] == pytest.approx(v + 3 * v**2 + 3.75 * v**3, rel=1e-11)


def test_erf_high_orders_match_adaptive_scipy_integration():
    """E[erf(z1)^a erf(z2)^b] at the paper's sigma = 1, d_in = 1, nested adaptive quad."""
    X = np.array([-1.0, 0.6, 1.0])
    F = np.stack([X, np.ones(3)], axis=1)
    C = F @ F.T
    got = quadrature.gaussian_moments(special.erf, F, [8, 12])

    def reference(i, j, a, b):
        s1 = math.sqrt(C[i, i])
        beta = C[i, j] / C[i, i]
        tau = math.sqrt(C[j, j] - C[i, j] ** 2 / C[i, i])

        def inner(z1):
            f = lambda t: special.erf(beta * z1 + tau * t) ** b * math.exp(-0.5 * t * t)  # noqa: E731
            return integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-12, limit=200)[0]

        def outer(t1):
            z1 = s1 * t1
            return special.erf(z1) ** a * math.exp(-0.5 * t1 * t1) * inner(z1)

        pts = [0.0]
        val = integrate.quad(outer, -12, 12, points=pts, epsabs=1e-13, epsrel=1e-12, limit=200)
        return val[0] / (2 * math.pi)

    for (i, a), (j, b) in [((2, 8), (0, 0)), ((0, 4), (2, 4)), ((1, 6), (2, 6)), ((0, 7), (1, 5))]:
        if b == 0:
            s = math.sqrt(C[i, i])
            ref = integrate.quad(
                lambda t, s=s, a=a: special.erf(s * t) ** a * math.exp(-t * t / 2),
                -12, 12, epsabs=1e-13, epsrel=1e-12, limit=200,
            )[0] / math.sqrt(2 * math.pi)
        else:
            ref = reference(i, j, a, b)
        d = a + b
        row = tuples.tuple_row(3, [i] * a + [j] * b)
        assert got[d][row] == pytest.approx(ref, rel=1e-10), (i, a, j, b)


def test_rank_deficient_and_single_point_factors():
    """Repeated rows collapse the rank; a zero row is the constant h(0)."""
    F = np.array([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]])
    got = quadrature.gaussian_moments(np.cos, F, [2])
    # cos(z)^2 at z ~ N(0, 1.25): (1 + e^{-2 v}) / 2; cos(0) = 1 for the zero row.
    v = 1.25
    row = tuples.tuple_row(3, [0, 1])
    assert got[2][row] == pytest.approx(0.5 * (1 + math.exp(-2 * v)), rel=1e-12)
    row = tuples.tuple_row(3, [0, 2])
    assert got[2][row] == pytest.approx(math.exp(-v / 2), rel=1e-12)
    assert quadrature.reduce_factor(F).shape == (3, 1)


def test_growth_exponent_and_refusals():
    assert quadrature.growth_exponent(np.tanh) == 0
    assert quadrature.growth_exponent(lambda z: np.logaddexp(0.0, z)) == 1
    assert quadrature.growth_exponent(lambda z: z**3) == 3
    with pytest.raises(NNGPInputError, match="faster than a polynomial"):
        quadrature.growth_exponent(np.exp)
    with pytest.raises(NNGPInputError, match="finite values"):
        quadrature.growth_exponent(lambda z: 1.0 / z)
    with pytest.raises(NNGPInputError, match="same shape"):
        quadrature.growth_exponent(lambda z: 1.0)


def test_too_high_a_rank_is_refused_before_any_work():
    F = np.random.default_rng(0).normal(size=(7, 7))
    with pytest.raises(NNGPInputError, match="rank 7"):
        quadrature.gaussian_moments(np.tanh, F, [8])


def test_pair_expectation_of_oscillating_activations_at_large_variance():
    # E[sin z sin z'] = e^{-(a+b)/2} sinh(c), E[cos z cos z'] = e^{-(a+b)/2} cosh(c). A probe
    # on nested grids once accepted a step that aliased sin(30 u) (answer -0.05 for 1e-190).
    cases = np.array([[901.0, 1.25, 16.0], [10001.0, 1.25, 51.0], [91.0, 3.0, 7.0],
                      [2.0, 2.0, 1.9], [400.0, 400.0, 399.0], [1.25, 0.3, -0.5]])
    a, b, c = cases.T
    damp = np.exp(-(a + b) / 2)
    for fn, exact in ((np.sin, damp * np.sinh(c)), (np.cos, damp * np.cosh(c))):
        got = quadrature.pair_expectation(fn, a, b, c)
        # Error bound: rtol 1e-12 of E|h h'| <= 1; judged at 1e-10.
        np.testing.assert_allclose(got, exact, rtol=0, atol=1e-10)
        ok = exact > 1e-3
        np.testing.assert_allclose(got[ok], exact[ok], rtol=1e-10)


def _dblquad_pair(h, a, b, c, nu, nu_p):
    """E[h(z) h(z')] and E|h(z) h(z')| by adaptive scipy integration in (u1, u2) (Cholesky
    of the covariance, the means added; |u| <= 12 leaves a tail below 1e-30)."""
    L11 = math.sqrt(a)
    L21 = c / L11
    L22 = math.sqrt(b - L21 * L21)

    def f(u2, u1):
        return (float(h(np.array(nu + L11 * u1))) * float(h(np.array(nu_p + L21 * u1 + L22 * u2)))
                * math.exp(-0.5 * (u1 * u1 + u2 * u2)) / (2 * math.pi))

    val = integrate.dblquad(f, -12, 12, -12, 12, epsabs=1e-14, epsrel=1e-13)[0]
    scale = integrate.dblquad(lambda u2, u1: abs(f(u2, u1)), -12, 12, -12, 12,
                              epsabs=1e-14, epsrel=1e-8)[0]
    return val, scale


def _softplus(z):
    return np.logaddexp(0.0, z)


@pytest.mark.parametrize("h", [np.tanh, _softplus])
def test_pair_expectation_with_means_matches_adaptive_scipy_integration(h):
    # Means up to 3 standard deviations, either variance the larger; the second call swaps
    # the pair (the rule puts the larger variance first, and its mean must go with it).
    cases = [(2.0, 1.5, 0.7, 0.5, 0.2), (1.2, 3.0, -0.9, -1.0, 1.5),
             (4.0, 4.0, 3.5, 3.0, -3.0), (0.25, 2.0, 0.3, 1.5, -0.5)]
    for a, b, c, nu, nu_p in cases:
        ref, scale = _dblquad_pair(h, a, b, c, nu, nu_p)
        got = quadrature.pair_expectation(h, a, b, c, nu=nu, nu_p=nu_p)
        swapped = quadrature.pair_expectation(h, b, a, c, nu=nu_p, nu_p=nu)
        # Error bound: rtol 1e-12 of E|h h'| (measured 3e-14 here); judged at 1e-10.
        assert abs(got - ref) < 1e-10 * scale, (a, b, c, nu, nu_p, got, ref)
        assert abs(swapped - ref) < 1e-10 * scale, (a, b, c, nu, nu_p, swapped, ref)


def test_pair_expectation_with_means_of_sine_and_at_zero_mean():
    # E[sin(nu + z) sin(nu' + z')] = (cos(nu - nu') e^{-(a+b-2c)/2}
    #                                 - cos(nu + nu') e^{-(a+b+2c)/2}) / 2,
    # broadcast over arrays, at variances up to 1e4 (the kernel far out in a cutoff box).
    a = np.array([2.0, 901.0, 1.25, 400.0, 10001.0])
    b = np.array([1.5, 1.25, 91.0, 400.0, 1.25])
    c = np.array([0.7, 16.0, 7.0, 399.0, -51.0])
    nu = np.array([0.5, 30.0, -1.0, 20.0, 100.0])
    nu_p = np.array([[0.2], [-0.7]])  # (2, 1): broadcasts against (5,)
    exact = 0.5 * (np.cos(nu - nu_p) * np.exp(-(a + b - 2 * c) / 2)
                   - np.cos(nu + nu_p) * np.exp(-(a + b + 2 * c) / 2))
    got = quadrature.pair_expectation(np.sin, a, b, c, nu=nu, nu_p=nu_p)
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-10)  # E|h h'| <= 1
    # Zero means: the same numbers as the unshifted rule (which may halve the lattice).
    for h in (np.tanh, np.sin, _softplus):
        plain = quadrature.pair_expectation(h, a, b, c)
        np.testing.assert_allclose(
            quadrature.pair_expectation(h, a, b, c, nu=np.zeros(5), nu_p=0.0), plain,
            rtol=1e-12, atol=1e-15)


def test_oscillation_detector():
    assert quadrature.oscillatory(np.sin) and quadrature.oscillatory(np.cos)
    assert not any(quadrature.oscillatory(f) for f in (np.tanh, special.erf, np.exp2))


def test_kept_pair_lattices_are_the_lattices_and_stay_within_their_bound(monkeypatch):
    # pair_expectation keeps the small two-dimensional lattices it integrates on: a kept one
    # must be the lattice nodes() builds, bit for bit, unwritable, and the kept bytes stay
    # within the bound however many lattices are asked for.
    monkeypatch.setattr(quadrature, "_kept_pair_nodes", type(quadrature._kept_pair_nodes)())
    monkeypatch.setattr(quadrature, "_KEPT_PAIR_BYTES", 200_000)
    keys = [(h1, h2, 8.0, half) for h1 in (0.2, 0.25, 0.3) for h2 in (0.4, 0.5)
            for half in (False, True)]
    for _ in range(2):  # the second pass reads what the first kept (or rebuilt)
        for h1, h2, R, half in keys:
            got = quadrature._pair_nodes(h1, h2, R, half)
            want = list(quadrature.nodes(np.array([h1, h2]), R, 1 << 22, half=half))
            assert len(got) == len(want)
            for (u, w), (u0, w0) in zip(got, want, strict=True):
                assert np.array_equal(u, u0) and np.array_equal(w, w0)
    kept = quadrature._kept_pair_nodes
    assert kept and sum(size for _, size in kept.values()) <= 200_000
    assert len(kept) < len(keys)  # the bound evicted some
    u, w = next(iter(kept.values()))[0][0]
    with pytest.raises(ValueError):
        u[0, 0] = 1.0
    # The integral does not depend on whether its lattice was kept.
    a, b, c = np.array([2.0, 1.0]), np.array([1.0, 0.5]), np.array([0.3, -0.2])
    warm = quadrature.pair_expectation(np.tanh, a, b, c)
    quadrature._kept_pair_nodes.clear()
    assert np.array_equal(warm, quadrature.pair_expectation(np.tanh, a, b, c))
