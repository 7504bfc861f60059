"""Diagrams with odd vertices (f³, f⁵, and f, f² too) against brute force.

The discretised Gaussian model of tests/gaussian_sites.py: the outputs at three inputs and
the field at two or three explicit vertex sites as one joint Gaussian, with
S = S_GP + Σ_j w_j Σ_c g_c φ_j^{k_c}. Its exact Taylor coefficients in the couplings,
-∂_c <Π f> and ½ ∂_c ∂_d <Π f> at g = 0, come from the quotient <F e^{-gV}> / <e^{-gV}>
expanded to second order, every Gaussian moment from its own Isserlis recursion: no
diagram, no linked-cluster argument. With 2-pt insertions kept the designs must equal them
to 1e-10 relative, for every pair of operators up to f⁶ and the 1- to 6-pt functions; the
centred designs (expansion around the mean) must equal the same for the centred moments
<Π (f - <f>)>, built here from the moments by the binomial expansion.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from gaussian_sites import joint_covariance, moment_function, poly_add, poly_mul

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory.lattice import Lattice

NET = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
X = np.array([[-0.7], [0.2], [0.9]])


class Series:
    """A function of the couplings to second order: c0 + c1·g + gᵀ c2 g (c2 symmetric)."""

    def __init__(self, c0, c1, c2):
        self.c0, self.c1, self.c2 = float(c0), np.asarray(c1), np.asarray(c2)

    def __mul__(self, other):
        outer = np.outer(self.c1, other.c1)
        return Series(self.c0 * other.c0, self.c0 * other.c1 + other.c0 * self.c1,
                      self.c0 * other.c2 + other.c0 * self.c2 + (outer + outer.T) / 2)

    def __add__(self, other):
        return Series(self.c0 + other.c0, self.c1 + other.c1, self.c2 + other.c2)

    def scaled(self, s):
        return Series(s * self.c0, s * self.c1, s * self.c2)


def _brute_moments(sites, weights, orders, propagator):
    """tuple of input indices -> Series of <Π f> under S_GP + Σ_j w_j Σ_c g_c φ_j^{k_c}."""
    moment = moment_function(joint_covariance(NET, X, sites, propagator))
    kx = len(X)

    def m(t, extra=()):  # extra: (site, power) pairs
        c = [0] * (kx + len(sites))
        for i in t:
            c[int(i)] += 1
        for j, p in extra:
            c[kx + j] += p
        return moment(tuple(c))

    def expectations(t):
        """<F>, <F V_c>, <F V_c V_d> with V_c = Σ_j w_j φ_j^{k_c}."""
        ws = list(enumerate(weights))
        one = np.array([sum(w * m(t, ((j, k),)) for j, w in ws) for k in orders])
        two = np.array([[sum(w * v * m(t, ((j, ka), (i, kb))) for j, w in ws for i, v in ws)
                         for kb in orders] for ka in orders])
        return m(t), one, two

    Z0, Z1, Z2 = expectations(())
    # 1/Z = 1 + <V>·g + gᵀ(<V><V>ᵀ - ½<VV>)g, since Z = 1 - <V>·g + ½ gᵀ<VV>g.
    Zinv = Series(1.0, Z1, np.outer(Z1, Z1) - Z2 / 2)

    @cache
    def series(t):
        N0, N1, N2 = expectations(t)
        return Series(N0, -N1, N2 / 2) * Zinv

    return series


def _centred(series, t):
    """Series of <Π_a (f_a - <f_a>)> from the moments: Σ_S (-1)^|S| Π_{a∈S} <f_a> <Π_rest f>."""
    total = None
    for r in range(len(t) + 1):
        for S in itertools.combinations(range(len(t)), r):
            term = series(tuple(sorted(t[b] for b in range(len(t)) if b not in S)))
            for a in S:
                term = term * series((t[a],))
            term = term.scaled((-1) ** r)
            total = term if total is None else total + term
    return total


SITES = np.array([[-1.1], [0.5]])
WEIGHTS = np.array([0.3, 0.5])
ORDERS = (1, 2, 3, 4, 5, 6)
NAMES = ("g1", "g2", "g3", "lambda", "g5", "kappa")


@pytest.fixture(scope="module", params=["full", "bias_subtracted"])
def brute(request):
    return request.param, _brute_moments(SITES, WEIGHTS, ORDERS, request.param)


def _compare(engine, exact):
    """Relative to each coupling (pair)'s largest entry, as the entries of one design differ
    by orders of magnitude (κ² ~ 1e5 g₁²); entries that vanish exactly (a linear source does
    not change the covariance) are round-off in the brute force's subtractions, so they
    are compared to 1e-6 of the largest entry of the whole design."""
    if not np.abs(exact).max() > 0:  # the centred 1-pt function
        np.testing.assert_array_equal(engine, 0.0)
        return
    scale = np.maximum(np.abs(exact).max(axis=0), 1e-6 * np.abs(exact).max())
    np.testing.assert_allclose(engine / scale, exact / scale, rtol=0, atol=1e-10)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_designs_equal_brute_force_with_odd_vertices(brute, n, centred):
    """-∂_c and ½ ∂_c ∂_d of <Π f> (or of the centred moments), every operator f..f⁶."""
    propagator, series = brute
    rows = [tuple(int(i) for i in t) for t in tuples.distinct_tuples(len(X), n)]
    exact = [(_centred(series, t) if centred else series(t)) for t in rows]
    lattice = Lattice(SITES, WEIGHTS)
    d1 = dg.first_order_design(NET, X, n, None, NAMES, propagator, drop_two_point=False,
                               lattice=lattice, centred=centred)[0]
    d2 = dg.second_order_design(NET, X, n, None, NAMES, propagator, drop_two_point=False,
                                lattice=lattice, centred=centred)[0]
    _compare(d1, np.array([s.c1 for s in exact]))
    _compare(d2, np.array([s.c2 for s in exact]))
    # Parity: an operator pair with k_c + k_d + n odd has no diagram, and the brute force
    # finds zero too; the rest must not all vanish (the comparison is not empty), except
    # the centred 1-pt function, zero by construction.
    ks = np.array(ORDERS)
    odd2 = (ks[:, None] + ks[None, :] + n) % 2 == 1
    assert np.all(d2[:, odd2] == 0) and np.all(d1[:, (ks + n) % 2 == 1] == 0)
    assert (np.abs(d2[:, ~odd2]).max() > 0) == (not centred or n > 1)


def test_one_point_function_at_first_order_is_the_tadpoles():
    """ΔG1 = -3 g₃ ∫ K1y Kyy - 15 g₅ ∫ K1y Kyy² (physics.md §6b), on a lattice by hand."""
    assert dg.first_order_expression(1, ("g3", "g5")) == \
        "ΔG1 = -3 g₃ ∫ Kyy K1y - 15 g₅ ∫ Kyy² K1y"
    lattice = Lattice(SITES, WEIGHTS)
    Kxy = np.asarray(NET.kernel(X, SITES))
    Kyy = np.diag(np.asarray(NET.kernel(SITES)))
    design = dg.first_order_design(NET, X, 1, None, ("g3", "g5"), lattice=lattice)[0]
    np.testing.assert_allclose(design[:, 0], -3 * Kxy @ (WEIGHTS * Kyy), rtol=1e-13)
    np.testing.assert_allclose(design[:, 1], -15 * Kxy @ (WEIGHTS * Kyy**2), rtol=1e-13)
    assert dg.first_order_expression(1, ("g3",), centred=True) == "ΔG1 = 0"


def test_three_and_five_point_functions_at_first_order():
    assert dg.first_order_expression(3, ("g3",)) == \
        "ΔG3 = -6 g₃ ∫ K1y K2y K3y - 3 g₃ ∫ Kyy Σ_3 Kay Kbc"
    assert dg.first_order_expression(3, ("g3",), centred=True) == "ΔG3 = -6 g₃ ∫ K1y K2y K3y"
    five = dg.first_order_expression(5, ("g5",), centred=True)
    assert five == "ΔG5 = -120 g₅ ∫ K1y K2y K3y K4y K5y - 60 g₅ ∫ Kyy Σ_10 Kay Kby Kcy Kde"
    # Even orders get nothing from one odd vertex.
    assert dg.first_order_expression(4, ("g3", "g5")) == "ΔG4 = 0"


def test_g3_squared_exchange_in_the_four_point_function():
    """With rule 4.5 and the mean subtracted, g₃² gives the 4-pt function the three
    exchange channels alone, 36 g₃² ∫∫ K1y K2y Kyz K3z K4z + 2 perms (3·2 ways to put x1, x2
    on y, 3·2 for x3, x4 on z, the mirror counted by the ½ of the expansion)."""
    expr = dg.second_order_expression(4, ("g3",), centred=True)
    assert expr == "δ²G4 = +36 g₃² ∫∫ Σ_3 Kay Kby Kyz Kcz Kdz  [exchange]"
    lattice = Lattice(SITES, WEIGHTS)
    Kxy = np.asarray(NET.kernel(X, SITES))
    Kyz = np.asarray(NET.kernel(SITES))
    d2 = dg.second_order_design(NET, X, 4, None, ("g3",), lattice=lattice, centred=True)
    rows = tuples.distinct_tuples(len(X), 4)
    W = WEIGHTS[:, None] * WEIGHTS[None, :] * Kyz

    def channel(a, b, c, d):
        return (Kxy[a] * Kxy[b]) @ W @ (Kxy[c] * Kxy[d])

    hand = [36 * (channel(a, b, c, d) + channel(a, c, b, d) + channel(a, d, b, c))
            for a, b, c, d in rows]
    np.testing.assert_allclose(d2[0, :, 0, 0], hand, rtol=1e-13)


def test_topologies_of_odd_vertices():
    """Two unjoined tadpoles are a product of 1-pt functions, not a 2-pt insertion; a
    tadpole on a vertex that touches two external points is one (it corrects K)."""
    by_top = {}
    for d in dg.second_order_diagrams(2, (3, 3), drop_two_point=False):
        by_top.setdefault(d.topology, []).append(d)
    assert set(by_top) == {"tadpole", "two_point"}
    (tad,) = by_top["tadpole"]
    assert (tad.lines, tad.loops, tad.external_tadpole) == (0, (1, 1), True)
    assert all(d.lines > 0 for d in by_top["two_point"])
    # (3, 4): the quartic vertex with three legs out and a g₃ tadpole on the fourth is a
    # genuine 3-pt vertex: kept by rule 4.5 and by the centred convention.
    kept = dg.second_order_diagrams(3, (3, 4), centred=True)
    assert any(d.topology == "tadpole" and d.attached == ((), (0, 1, 2)) for d in kept)
    # Even vertices never make tadpoles.
    for ks in ((4, 4), (4, 6), (6, 6)):
        assert not any(d.topology == "tadpole" or d.external_tadpole
                       for n in (2, 4, 6) for d in dg.second_order_diagrams(
                           n, ks, drop_two_point=False))


def test_bad_vertex_orders_and_names():
    for bad in (0, -3, 4.0, True, "3"):
        with pytest.raises(nn.NNGPInputError, match="k_vertex"):
            dg.first_order_diagrams(3, bad)
    with pytest.raises(nn.NNGPInputError, match="k_vertex"):
        dg.second_order_diagrams(3, (3, 0))
    for bad in ("g0", "g", "mu", "g03", "G3"):
        with pytest.raises(nn.NNGPInputError, match="coupling names"):
            dg.first_order_expression(3, (bad,))
    with pytest.raises(nn.NNGPInputError, match="repeat"):
        dg.first_order_expression(4, ("lambda", "g4"))
    with pytest.raises(nn.NNGPInputError, match="centred"):
        dg.first_order_design(NET, X, 3, 10.0, ("g3",), centred="yes")


# --- rule 4.5 with odd vertices: counterterms keep the covariance, not the mean -------------


def _covariance_counterterm_model(ops, propagator):
    """Exact O(t) and O(t²) coefficients of <f(x_t1)..f(x_tn)> in the discretised model
    S = S_GP + t Σ_j w_j Σ_c a_c φ_j^{k_c} + ½ φᵀ(t δ1 + t² δ2)φ (``ops``: (k_c, a_c)), the
    quadratic counterterms on the vertex sites solved so that the *covariance* of every
    variable stays the GP's to O(t²) — K exact, the mean left to the theory (the source
    convention). Returns tuple -> (c1, c2) and the largest residual covariance
    coefficient (which must vanish)."""
    C = joint_covariance(NET, X, SITES, propagator)
    moment = moment_function(C)
    kx, ns = len(X), len(SITES)
    V = kx + ns

    def unit(*idx):
        c = [0] * V
        for i in idx:
            c[i] += 1
        return {tuple(c): 1.0}

    def quad(delta):
        return poly_add(*[{k: 0.5 * delta[a, b] for k in unit(kx + a, kx + b)}
                           for a in range(ns) for b in range(ns)])

    def E(p):
        return sum(c * moment(a) for a, c in p.items())

    vertex = poly_add(*[{k: WEIGHTS[j] * a for k in unit(*[kx + j] * kc)}
                         for j in range(ns) for kc, a in ops])

    def coefficients(F, A, B):
        N0, N1 = E(F), -E(poly_mul(F, A))
        N2 = 0.5 * E(poly_mul(F, poly_mul(A, A))) - E(poly_mul(F, B))
        Z1, Z2 = -E(A), 0.5 * E(poly_mul(A, A)) - E(B)
        return N1 - N0 * Z1, N2 - N1 * Z1 - N0 * Z2 + N0 * Z1**2

    def covariance(a, b, A, B):
        (ab1, ab2), (a1, _), (b1, _) = (coefficients(unit(*i), A, B) for i in ((a, b), (a,),
                                                                                (b,)))
        return ab1, ab2 - a1 * b1  # the means vanish at t = 0

    inv = np.linalg.inv(C[kx:, kx:])
    zero = np.zeros((ns, ns))
    T1 = np.array([[covariance(kx + a, kx + b, vertex, {})[0] for b in range(ns)]
                   for a in range(ns)])
    A = poly_add(vertex, quad(inv @ T1 @ inv))
    T2 = np.array([[covariance(kx + a, kx + b, A, quad(zero))[1] for b in range(ns)]
                   for a in range(ns)])
    B = quad(inv @ T2 @ inv)
    residual = max(abs(c) for a in range(V) for b in range(V) for c in covariance(a, b, A, B))
    return (lambda t: coefficients(unit(*t), A, B)), residual


@pytest.mark.parametrize("ops, propagator", [(((3, 1.0),), "full"),
                                             (((3, 1.0), (4, 0.6)), "bias_subtracted"),
                                             (((3, 0.8), (5, 0.3)), "full")])
def test_rule_4_5_with_odd_vertices_equals_a_model_with_exact_covariance(ops, propagator):
    """Rule 4.5 with odd vertices (drop 2-pt insertions, keep every tadpole) against a model
    whose counterterms keep the covariance exact: its O(t) and O(t²) coefficients must be
    a·D1 and aᵀ D2 a for the 1- to 5-pt functions. This decides the classification: two
    unjoined tadpoles (<f><f>) stay, a tadpole on a vertex with two external legs (a
    correction of the covariance through the mean) goes."""
    model, residual = _covariance_counterterm_model(ops, propagator)
    names = tuple(dg.coupling_names(f"g{k}")[0] for k, _ in ops)
    a = np.array([c for _, c in ops])
    lattice = Lattice(SITES, WEIGHTS)
    missed = 0.0
    for n in range(1, 6):
        d1 = dg.first_order_design(NET, X, n, None, names, propagator, lattice=lattice)[0]
        d2 = dg.second_order_design(NET, X, n, None, names, propagator, lattice=lattice)[0]
        kept = dg.second_order_design(NET, X, n, None, names, propagator,
                                      drop_two_point=False, lattice=lattice)[0]
        c = np.array([model(tuple(int(i) for i in t))
                      for t in tuples.distinct_tuples(len(X), n)])
        # Coefficients that vanish (by parity, or as 2-pt pieces that rule 4.5 drops) are
        # round-off in the model's subtractions: the scale floor is the terms' O(1) size.
        scale = np.maximum(np.abs(c).max(axis=0), 1.0)
        assert residual <= 1e-12 * scale.max()
        np.testing.assert_allclose(d1 @ a, c[:, 0], rtol=0, atol=1e-11 * scale[0])
        np.testing.assert_allclose(np.einsum("tij,i,j->t", d2, a, a), c[:, 1], rtol=0,
                                   atol=1e-10 * scale[1])
        missed = max(missed, np.abs(np.einsum("tij,i,j->t", kept, a, a) - c[:, 1]).max()
                     / scale[1])
    assert missed > 0.1  # the dropped 2-pt insertions matter


def test_box_integrals_two_tadpoles_are_the_square_of_the_one_point_function():
    """On the cutoff box (not an explicit lattice): the g₃² 2-pt design with rule 4.5 is the
    two unjoined tadpoles alone, <f_a><f_b> = D1_a D1_b g₃², computed by the two-vertex
    integrals against the 1-pt design from the vertex integrals (different code); and the
    JAX design function agrees with the design array for odd couplings."""
    cut = 12.0
    d1 = dg.first_order_design(NET, X, 1, cut, ("g3",))[0, :, 0]
    d2 = dg.second_order_design(NET, X, 2, cut, ("g3",))[0, :, 0, 0]
    rows = tuples.distinct_tuples(len(X), 2)
    np.testing.assert_allclose(d2, d1[rows[:, 0]] * d1[rows[:, 1]], rtol=1e-10)
    assert np.all(dg.second_order_design(NET, X, 2, cut, ("g3",), centred=True) == 0)
    fn = dg.first_order_design_function(NET, X, 3, ("g3", "lambda", "g5"), max_cutoff=20.0)
    np.testing.assert_allclose(np.asarray(fn(cut)),
                               dg.first_order_design(NET, X, 3, cut, ("g3", "lambda", "g5"))[0],
                               rtol=1e-12)
