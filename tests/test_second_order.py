"""Second-order (two-vertex) diagrams and their integrals, against exact oracles.

* Counting: the leg-by-leg enumeration of the engine against literal enumeration of every
  perfect matching of the n + k1 + k2 legs, and the total (n + k1 + k2 - 1)!!.
* Brute force: a discretised Gaussian model (outputs at the inputs and the field at a few
  explicit vertex sites, one joint Gaussian) with S = S_GP + Σ_j w_j Σ_c g_c φ_j^{k_c};
  its exact second-order coefficient ½ ∂_c ∂_d <f..f> at g = 0 is computed from the full
  formula <F V_c V_d> - <F V_c><V_d> - <F V_d><V_c> - <F><V_c V_d> + 2 <F><V_c><V_d> with
  every Gaussian moment from its own Isserlis recursion: no diagram, no linked-cluster
  argument. With 2-pt insertions kept the engine must equal it to 1e-10.
* Integrals: the two-vertex integrals against scipy's adaptive dblquad (split at 0 and at
  the diagonal y1 = y2) to 1e-8, and the blocked propagator matrix against one block.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from gaussian_sites import joint_covariance, moment_function, poly_add, poly_mul
from scipy import integrate

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory import second_order as so
from nngp_ppl.theory.lattice import Lattice


def _double_factorial(m: int) -> int:
    return math.prod(range(m, 0, -2)) if m > 0 else 1


# --- counting -------------------------------------------------------------------------------


def _literal_counts(n, k1, k2):
    """Every perfect matching of the n + k1 + k2 labelled legs, classified."""
    counts = {}
    vertex = [None] * n + [0] * k1 + [1] * k2
    for matching in dg._matchings(tuple(range(n + k1 + k2))):
        att, pairs, loops, lines = ([], []), [], [0, 0], 0
        for a, b in matching:
            va, vb = vertex[a], vertex[b]
            if va is None and vb is None:
                pairs.append((a, b))
            elif va is None:
                att[vb].append(a)
            elif va == vb:
                loops[va] += 1
            else:
                lines += 1
        key = (tuple(sorted(att[0])), tuple(sorted(att[1])), tuple(sorted(pairs)),
               loops[0], loops[1], lines)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("n, k1, k2", [(2, 4, 4), (4, 4, 4), (2, 4, 6), (4, 4, 6), (6, 4, 4)])
def test_enumeration_equals_literal_matchings(n, k1, k2):
    engine = dict(dg._two_vertex_counts(n, k1, k2))
    assert engine == _literal_counts(n, k1, k2)


@pytest.mark.parametrize("n, k1, k2", [(6, 6, 6), (6, 4, 6), (8, 6, 6), (3, 4, 6)])
def test_enumeration_total_is_double_factorial(n, k1, k2):
    total = sum(c for _, c in dg._two_vertex_counts(n, k1, k2))
    assert total == (_double_factorial(n + k1 + k2 - 1) if (n + k1 + k2) % 2 == 0 else 0)


def test_closed_form_coefficients():
    """λ² exchange of the 6-pt function: vertex 1 takes a, b, c on 4·3·2 of its legs,
    vertex 2 takes d, e, f on 4·3·2 of its legs, the two last legs join: 576 per split
    {abc|def}, 10 splits. λ² bubble of the 4-pt function: (4·3)² × 2 = 288 per channel, 3
    channels. κ² exchange: each vertex takes 3 externals on 6·5·4 of its legs, one of its 3
    free legs goes to the line (3 × 3 ways) and its last two close a self-loop."""
    (ex,) = [t for t in dg.group_second_order(dg.second_order_diagrams(6, (4, 4)))
             if t.topology == "exchange"]
    assert (ex.coefficient, ex.count) == (math.perm(4, 3) ** 2, 10)
    (bub,) = dg.group_second_order(dg.second_order_diagrams(4, (4, 4)))
    assert (bub.topology, bub.coefficient, bub.count) == ("bubble", math.perm(4, 2) ** 2 * 2, 3)
    assert bub.lines == 2 and bub.loops == (0, 0)
    kk = [t for t in dg.group_second_order(dg.second_order_diagrams(6, (6, 6)))
          if t.topology == "exchange"]
    assert [(t.coefficient, t.count, t.loops) for t in kk] == [
        (math.perm(6, 3) ** 2 * 9, 10, (1, 1))]
    assert dg.second_order_expression(2) == "δ²G2 = 0"
    # Rule 4.5 removes every 2-pt insertion and nothing else.
    kept = dg.second_order_diagrams(6, (4, 6), drop_two_point=False)
    dropped = dg.second_order_diagrams(6, (4, 6))
    assert set(dropped) == {d for d in kept if d.topology not in dg.TWO_POINT_TOPOLOGIES}
    assert {d.topology for d in kept} == {"exchange", "bubble", "melon", "leg", "loop",
                                          "two_point"}
    # A product of two first-order pieces without a 2-pt factor needs 4 + 4 externals.
    eight = dg.second_order_diagrams(8, (4, 4))
    assert {d.topology for d in eight} == {"exchange", "bubble", "disconnected"}
    (disc,) = [t for t in dg.group_second_order(eight) if t.topology == "disconnected"]
    assert (disc.coefficient, disc.count) == (math.factorial(4) ** 2, 35)


# --- brute force: discretised Gaussian model -------------------------------------------------


def _brute_second_order(net, X, sites, weights, n, orders, propagator):
    """(T_n, nc, nc): ½ ∂_c ∂_d <f(x_t1)..f(x_tn)> at g = 0 for
    S = S_GP + Σ_j w_j Σ_c g_c φ_j^k_c."""
    cov = joint_covariance(net, X, sites, propagator)
    moment = moment_function(cov)
    kx, ns = len(X), len(sites)

    def m(t, extra):  # extra: {site: power}
        c = [0] * (kx + ns)
        for i in t:
            c[int(i)] += 1
        for j, p in extra.items():
            c[kx + j] += p
        return moment(tuple(c))

    def add(a, b):
        out = dict(a)
        for j, p in b.items():
            out[j] = out.get(j, 0) + p
        return out

    rows = tuples.distinct_tuples(kx, n)
    nc = len(orders)
    out = np.zeros((len(rows), nc, nc))
    for r, t in enumerate(rows):
        for c in range(nc):
            for d in range(nc):
                total = 0.0
                for j, wj in enumerate(weights):
                    Vc = {j: orders[c]}
                    for jj, wjj in enumerate(weights):
                        Vd = {jj: orders[d]}
                        total += wj * wjj * (
                            m(t, add(Vc, Vd)) - m(t, Vc) * m((), Vd) - m(t, Vd) * m((), Vc)
                            - m(t, {}) * m((), add(Vc, Vd)) + 2 * m(t, {}) * m((), Vc) * m((), Vd)
                        )
                out[r, c, d] = 0.5 * total
    return out


@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
@pytest.mark.parametrize("n", [4, 6])
def test_engine_equals_brute_force_second_order(n, propagator):
    net = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
    X = np.array([[-0.7], [0.2], [0.9]])
    sites = np.array([[-1.1], [0.5]])
    weights = np.array([0.3, 0.5])
    lattice = Lattice(sites, weights)
    engine = dg.second_order_design(net, X, n, None, ("lambda", "kappa"), propagator,
                                    drop_two_point=False, lattice=lattice)[0]
    brute = _brute_second_order(net, X, sites, weights, n, (4, 6), propagator)
    scale = np.abs(brute).max(axis=0)  # per coupling pair: the κ² entries are ~1e4 × λ²
    np.testing.assert_allclose(engine / scale, brute / scale, rtol=0, atol=1e-10)
    np.testing.assert_allclose(engine, np.swapaxes(engine, 1, 2), rtol=1e-14)


def test_rule_4_5_at_second_order_on_the_gauss_net_in_two_dimensions():
    """With 2-pt insertions dropped, the λ² 4-pt term is the bubble alone and the 6-pt
    term exchange + bubble × external line: evaluated here by hand on a two-dimensional
    explicit lattice with numpy (no two-vertex integral code)."""
    net = nn.GaussNet(d_in=2, sigma_w=0.9, sigma_b=0.6)
    X = np.array([[0.1, -0.3], [0.5, 0.2], [-0.4, 0.4]])
    sites = np.array([[0.0, 0.5], [-0.6, -0.2], [0.3, 0.3]])
    w = np.array([0.7, 1.1, 0.4])
    lattice = Lattice(sites, w)
    K = np.asarray(net.kernel(X))
    Kxy = np.asarray(net.kernel(X, sites))
    M = np.asarray(net.kernel(sites))
    d4 = dg.second_order_design(net, X, 4, None, ("lambda",), lattice=lattice)[0, :, 0, 0]
    d6 = dg.second_order_design(net, X, 6, None, ("lambda",), lattice=lattice)[0, :, 0, 0]

    def legs(idx):
        return w * np.prod(Kxy[list(idx)], axis=0)

    def bubble(a, b, c, d):
        return legs((a, b)) @ M**2 @ legs((c, d))

    for r, t in enumerate(tuples.distinct_tuples(3, 4)):
        a, b, c, d = t
        hand = 288 * (bubble(a, b, c, d) + bubble(a, c, b, d) + bubble(a, d, b, c))
        np.testing.assert_allclose(d4[r], hand, rtol=1e-12)
    for r, t in enumerate(tuples.distinct_tuples(3, 6)):
        ex = bu = 0.0
        for s in range(1, 6):  # splits {0 i j | rest}: 10 of them
            for u in range(s + 1, 6):
                left = (t[0], t[s], t[u])
                right = tuple(t[i] for i in range(1, 6) if i not in (s, u))
                ex += legs(left) @ M @ legs(right)
        for e in range(6):
            for f in range(e + 1, 6):
                rest = [t[i] for i in range(6) if i not in (e, f)]
                a, b, c, d = rest
                bu += K[t[e], t[f]] * (bubble(a, b, c, d) + bubble(a, c, b, d)
                                       + bubble(a, d, b, c))
        np.testing.assert_allclose(d6[r], 576 * ex + 288 * bu, rtol=1e-12)


def test_topology_selection_adds_up():
    net = nn.ReLUNet(d_in=1, sigma_b=1.0)
    X = nn.paper_inputs("relu", 1)[:3]
    total = dg.second_order_design(net, X, 6, 20.0, ("lambda", "kappa"))
    parts = sum(dg.second_order_design(net, X, 6, 20.0, ("lambda", "kappa"), topologies=t)
                for t in ("exchange", ("bubble", "melon")))
    np.testing.assert_allclose(parts, total, rtol=1e-13)
    one = sum(d.evaluate(net, X, 20.0) for d in dg.second_order_diagrams(6, (4, 4)))
    np.testing.assert_allclose(one, total[0, :, 0, 0], rtol=1e-12)
    g = {"lambda": -0.01, "kappa": 2e-4}
    corr = dg.second_order_correction(net, X, 6, g, 20.0)
    vals = np.array([g["lambda"], g["kappa"]])
    np.testing.assert_allclose(tuples.compress(corr, 3, 6),
                               np.einsum("tij,i,j->t", total[0], vals, vals), rtol=1e-13)


# --- rule 4.5 at second order: a model whose 2-pt function is kept exact by counterterms ---


def _counterterm_model(net, X, sites, weights, k, propagator):
    """Exact first- and second-order coefficients of <f(x_t1)..f(x_tn)> in the discretised
    model S = S_GP + g Σ_j w_j φ_j^k + ½ φᵀ(g δ1 + g² δ2)φ, with the quadratic counterterms
    δ1, δ2 (on the vertex sites) solved so that the 2-pt function of every variable stays
    the GP covariance to O(g²) — K exact, as in the networks. Returns a function
    tuple -> (c1, c2) and the residual 2-pt coefficients (which must vanish)."""
    C = joint_covariance(net, X, sites, propagator)
    moment = moment_function(C)
    kx, ns = len(X), len(sites)
    V = kx + ns

    def mono(counts, coef=1.0):
        return {tuple(counts): coef}

    def unit(*idx):
        c = [0] * V
        for i in idx:
            c[i] += 1
        return c

    def quad(delta):
        return poly_add(*[mono(unit(kx + a, kx + b), 0.5 * delta[a, b])
                           for a in range(ns) for b in range(ns)])

    def E(p):
        return sum(c * moment(a) for a, c in p.items())

    vertex = poly_add(*[mono([0] * kx + [k if i == j else 0 for i in range(ns)], weights[j])
                         for j in range(ns)])

    def coefficients(F, A, B):
        N0, N1 = E(F), -E(poly_mul(F, A))
        N2 = 0.5 * E(poly_mul(F, poly_mul(A, A))) - E(poly_mul(F, B))
        Z1, Z2 = -E(A), 0.5 * E(poly_mul(A, A)) - E(B)
        return N1 - N0 * Z1, N2 - N1 * Z1 - N0 * Z2 + N0 * Z1**2

    Css_inv = np.linalg.inv(C[kx:, kx:])
    zero = np.zeros((ns, ns))
    T1 = np.array([[coefficients(mono(unit(kx + a, kx + b)), vertex, {})[0]
                    for b in range(ns)] for a in range(ns)])
    d1 = Css_inv @ T1 @ Css_inv  # c1(φaφb) = T1 - (C δ1 C)_ab = 0
    A = poly_add(vertex, quad(d1))
    T2 = np.array([[coefficients(mono(unit(kx + a, kx + b)), A, quad(zero))[1]
                    for b in range(ns)] for a in range(ns)])
    d2 = Css_inv @ T2 @ Css_inv  # c2(φaφb) = T2 - (C δ2 C)_ab = 0
    B = quad(d2)
    residual = max(abs(c) for a in range(V) for b in range(V)
                   for c in coefficients(mono(unit(a, b)), A, B))
    return (lambda t: coefficients(mono(unit(*t)), A, B)), residual


@pytest.mark.parametrize("n, k, propagator", [(4, 4, "full"), (4, 6, "full"),
                                              (6, 4, "bias_subtracted")])
def test_rule_4_5_equals_a_model_with_exact_two_point_function(n, k, propagator):
    """The skeleton rule (drop every diagram with a 2-pt insertion, on legs, lines and
    self-loops) against a model in which counterterms keep K exact: its O(g) and O(g²)
    coefficients must be the first- and second-order designs with rule 4.5 on."""
    net = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
    X = np.array([[-0.7], [0.2], [0.9]])
    sites = np.array([[-1.1], [0.5]])
    weights = np.array([0.3, 0.5])
    model, residual = _counterterm_model(net, X, sites, weights, k, propagator)
    lattice = Lattice(sites, weights)
    name = {4: "lambda", 6: "kappa"}[k]
    d1 = dg.first_order_design(net, X, n, None, (name,), propagator, lattice=lattice)[0, :, 0]
    d2 = dg.second_order_design(net, X, n, None, (name,), propagator,
                                lattice=lattice)[0, :, 0, 0]
    c = np.array([model(tuple(int(i) for i in t)) for t in tuples.distinct_tuples(3, n)])
    scale = np.abs(c).max(axis=0)
    assert residual <= 1e-12 * scale.max()  # the counterterms do keep the 2-pt function
    np.testing.assert_allclose(c[:, 0] / scale[0], d1 / scale[0], rtol=0, atol=1e-11)
    np.testing.assert_allclose(c[:, 1] / scale[1], d2 / scale[1], rtol=0, atol=1e-10)
    # ... and the dropped pieces matter: with them kept the model is missed by O(1).
    kept = dg.second_order_design(net, X, n, None, (name,), propagator, drop_two_point=False,
                                  lattice=lattice)[0, :, 0, 0]
    assert np.max(np.abs(kept - c[:, 1])) > 0.1 * scale[1]


def test_exchange_on_the_degenerate_relu_net_equals_the_zero_dimensional_theory():
    """ReLU σ_b = 0 with positive inputs is f(x) = x S, S = Σ_i a_i relu(w_i) (physics.md
    §9), so K(x, y) = x y Var(S) for y > 0 and 0 for y < 0: every vertex integral factorises
    and the EFT is a zero-dimensional theory of S. With λ = λ̄ fitted to the exact κ4, the
    λ² exchange predicts κ6_t = 10 κ4(S)² / Var(S) × Π x (5760 λ² σ^14 (Λ^5/5)² with
    λ = -κ4(S) / (24 σ^8 Λ^5/5)); the exact κ6_t = κ6(S) Π x, with κ_n(S) = N κ_n(a h) from
    E[a^2m] = (2m-1)!! N^-m and E[relu(w)^2m] = (2m-1)!!/2. A closed-form oracle of the
    exchange coefficient 576, the two-vertex integral and the sign: the ratio is 3.409."""
    from nngp_ppl.inference.eft import mean_coupling
    from nngp_ppl.theory.exact import exact_correlator_tuples, exact_cumulant_tuples

    net = nn.ReLUNet(d_in=1, sigma_b=0.0)
    X = nn.paper_inputs("relu", 1)[:3]
    N, cut = 20, 10.0
    lam = mean_coupling(net, X, exact_correlator_tuples(net, X, N, 4), cut)[0]
    E = dg.second_order_design(net, X, 6, cut, ("lambda",), topologies="exchange")[0, :, 0, 0]
    k6 = exact_cumulant_tuples(net, X, N, 6)
    m2, m4, m6 = (_double_factorial(2 * m - 1) / 2 for m in (1, 2, 3))
    EY2, EY4, EY6 = m2 / N, 3 * m4 / N**2, 15 * m6 / N**3
    var = N * EY2
    k4S = N * (EY4 - 3 * EY2**2)
    k6S = N * (EY6 - 15 * EY4 * EY2 + 30 * EY2**3)
    expected = 10 * k4S**2 / (var * k6S)
    assert expected == pytest.approx(281.25 / 82.5)
    np.testing.assert_allclose(lam**2 * E / k6, expected, rtol=1e-8)
    # Each vertex integral is ∫_0^Λ y^4 dy ∝ Λ^5, so E ∝ Λ^10 and d log E / d log Λ = 10.
    slope = dg.second_order_design_slope(net, X, 6, cut, ("lambda",),
                                         topologies="exchange")[0, :, 0, 0]
    np.testing.assert_allclose(slope / E, 10.0, rtol=1e-8)


# --- integrals ----------------------------------------------------------------------------


def _scalar_kernel(net):
    """K(x, y) for scalar inputs (physics.md §2) with the math module."""
    sw, sb = net.sigma_w, net.sigma_b

    def m(x, y):
        return sb**2 + sw**2 * x * y

    if net.name == "erf":
        return lambda x, y: sb**2 + sw**2 * (2 / math.pi) * math.asin(
            2 * m(x, y) / math.sqrt((1 + 2 * m(x, x)) * (1 + 2 * m(y, y))))
    if net.name == "relu":
        def K(x, y):
            norm = math.sqrt(m(x, x) * m(y, y))
            c = max(-1.0, min(1.0, m(x, y) / norm))
            t = math.acos(c)
            return sb**2 + sw**2 / (2 * math.pi) * norm * (math.sin(t) + (math.pi - t) * c)
        return K
    return lambda x, y: sb**2 + sw**2 * math.exp(-(sw**2) * (x - y) ** 2 / 2)


def _dblquad(K, xs1, l1, xs2, l2, lines, cut):
    def f(y2, y1):
        return (math.prod(K(x, y1) for x in xs1) * K(y1, y1) ** l1 * K(y1, y2) ** lines
                * math.prod(K(x, y2) for x in xs2) * K(y2, y2) ** l2)

    total = 0.0
    for a, b in ((-cut, 0.0), (0.0, cut)):
        for lo, hi in ((lambda y: -cut, lambda y: y), (lambda y: y, lambda y: cut)):
            total += integrate.dblquad(f, a, b, lo, hi, epsabs=0, epsrel=1e-11)[0]
    return total


@pytest.mark.parametrize("net, ens, cut", [
    (nn.ErfNet(d_in=1), "erf", 10.0),
    (nn.ReLUNet(d_in=1, sigma_b=1.0), "relu", 30.0),
    (nn.GaussNet(d_in=1), "gauss", 30.0),  # the ridge along y1 = y2 (banded method)
])
def test_two_vertex_integrals_against_dblquad(net, ens, cut):
    X = nn.paper_inputs(ens, 1)
    key = so.TwoVertexKey(3, 0, 2, 1, 1)
    swapped = key.swapped()
    out = so.two_vertex_integrals(net, X, [key, swapped], cut)
    u, v = 17, 9
    r1, r2 = tuples.distinct_tuples(6, 3)[u], tuples.distinct_tuples(6, 2)[v]
    ref = _dblquad(_scalar_kernel(net), X[r1, 0], 0, X[r2, 0], 1, 1, cut)
    assert abs(out[key][0, u, v] - ref) <= 1e-8 * abs(ref)
    np.testing.assert_array_equal(out[swapped][0], out[key][0].T)


@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
def test_banded_and_uniform_ridge_methods_agree(propagator):
    """Two independent rules for the Gauss-net ridge: the band around each outer node
    against fixed-width panels on both vertices (the full box, no band)."""
    net = nn.GaussNet(d_in=1, sigma_w=1.2, sigma_b=0.7)
    X = nn.paper_inputs("gauss", 1)[:3] * 50  # spread the inputs over the kernel scale
    keys = [(3, 0, 3, 0, 1), (2, 1, 2, 0, 2), (1, 0, 1, 1, 3), (2, 0, 2, 1, 0)]
    cuts = [3.0, 25.0]
    banded = so.two_vertex_integrals(net, X, keys, cuts, propagator)
    uniform = so.two_vertex_integrals(net, X, keys, cuts, propagator, ridge_method="uniform")
    for key in keys:
        np.testing.assert_allclose(banded[key], uniform[key], rtol=1e-11)
    c0, band = so.ridge_split(net, propagator)
    assert c0 == pytest.approx(0.49 if propagator == "full" else 0.0, abs=1e-15)
    # R = σ_W² exp(-σ_W² Δ²/2) < 1e-17 σ_W² needs σ_W Δ >= sqrt(2 ln 1e17) = 8.85.
    scale = 1 / 1.2
    assert band == pytest.approx(math.ceil(math.sqrt(2 * math.log(1e17)) / 1.2 / scale) * scale)


def test_ridge_is_detected_only_for_translation_invariant_kernels():
    assert so.has_ridge(nn.GaussNet(d_in=1))
    assert so.has_ridge(nn.GaussNet(d_in=1), "bias_subtracted")
    assert not so.has_ridge(nn.ErfNet(d_in=1))
    assert not so.has_ridge(nn.ReLUNet(d_in=1, sigma_b=1.0))
    with pytest.warns(UserWarning, match="ridge"):
        so.ridge_rule(nn.GaussNet(d_in=1), nn.paper_inputs("gauss", 1), 1e5, max_nodes=400)
    with pytest.warns(UserWarning, match="ridge"):
        so.two_vertex_integrals(nn.GaussNet(d_in=2), nn.paper_inputs("gauss", 2),
                                [(1, 0, 1, 0, 1)], 3.0, nodes=2, ratio=8.0)


def test_blocks_of_the_propagator_matrix_give_the_same_integrals():
    """d_in = 2 on a coarse rule: 7 rows per block against the whole matrix at once."""
    net = nn.ErfNet(d_in=2)
    X = nn.paper_inputs("erf", 2)
    keys = [(2, 0, 2, 0, 2), (3, 1, 1, 0, 1), (2, 0, 2, 1, 0)]
    whole = so.two_vertex_integrals(net, X, keys, [5.0, 8.0], nodes=3, ratio=8.0,
                                    block_budget=2**30)
    P = so.memory_estimate(net, X, keys, 8.0, nodes=3, ratio=8.0)["points"]
    blocked = so.two_vertex_integrals(net, X, keys, [5.0, 8.0], nodes=3, ratio=8.0,
                                      block_budget=7 * P)
    for key in keys:
        np.testing.assert_allclose(blocked[key], whole[key], rtol=1e-12)
    # L = 0 factorises into two first-order integrals.
    from nngp_ppl.theory.lattice import vertex_integrals
    first = np.asarray(vertex_integrals(net, X, tuples.distinct_tuples(4, 2), [5.0, 8.0],
                                        nodes=3, ratio=8.0))
    loop = np.asarray(vertex_integrals(net, X, tuples.distinct_tuples(4, 2), [5.0, 8.0],
                                       loops=1, nodes=3, ratio=8.0))
    np.testing.assert_allclose(whole[(2, 0, 2, 1, 0)], first[:, :, None] * loop[:, None, :],
                               rtol=1e-12)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input():
    net = nn.ErfNet()
    X = nn.paper_inputs("erf", 1)
    with pytest.raises(nn.NNGPInputError, match="k_vertex"):
        dg.second_order_diagrams(4, (4, 0))
    with pytest.raises(nn.NNGPInputError, match="k_vertices"):
        dg.second_order_diagrams(4, 4)
    with pytest.raises(nn.NNGPInputError, match="topologies"):
        dg.second_order_diagrams(4, (4, 4), topologies=("vacuum",))
    with pytest.raises(nn.NNGPInputError, match="n"):
        dg.second_order_design(net, X, 10, 10.0)
    with pytest.raises(nn.NNGPInputError, match="cutoffs"):
        dg.second_order_design(net, X, 4, 0.5)
    with pytest.raises(nn.NNGPInputError, match="propagator"):
        dg.second_order_design(net, X, 4, 10.0, propagator="eft")
    with pytest.raises(nn.NNGPInputError, match="keys"):
        so.two_vertex_integrals(net, X, [(1, 0, -1, 0, 1)], 10.0)
    with pytest.raises(nn.NNGPInputError, match="keys"):
        so.two_vertex_integrals(net, X, "abc", 10.0)
    with pytest.raises(nn.NNGPInputError, match="rel_step"):
        dg.second_order_design_slope(net, X, 4, 10.0, rel_step=0.5)
    with pytest.raises(nn.NNGPInputError, match="extent"):
        dg.second_order_design_slope(net, X, 4, 1.0)
    with pytest.raises(nn.NNGPInputError, match="ridge_method"):
        so.two_vertex_integrals(nn.GaussNet(), X, [(1, 0, 1, 0, 1)], 10.0, ridge_method="x")
    with pytest.raises(nn.NNGPInputError, match="block_budget"):
        so.two_vertex_integrals(net, X, [(1, 0, 1, 0, 1)], 10.0, block_budget=0)
