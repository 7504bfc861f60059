"""Feynman-rule engine against physics.md §6 term by term and against brute-force Isserlis.

The brute-force check builds the discretised Gaussian model directly: a joint Gaussian of
the outputs f(x_i) at the inputs and the interacting field φ(y_j) at a few explicit vertex
sites, and differentiates <f(x_1)...f(x_n)> in g at g = 0 for the action
S = S_GP + Σ_j w_j g φ(y_j)^k, i.e. -Σ_j w_j (<f..f φ_j^k> - <f..f><φ_j^k>), with every
Gaussian moment computed by its own Isserlis recursion on the covariance matrix.
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path

import jax
import numpy as np
import pytest
from gaussian_sites import joint_covariance

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory.lattice import Lattice, vertex_integrals


def _double_factorial(m: int) -> int:
    return math.prod(range(m, 0, -2)) if m > 0 else 1


# --- structure: the coefficients of physics.md §6 ------------------------------------------


def test_four_point_lambda_is_minus_24():
    (d,) = dg.first_order_diagrams(4, 4)
    assert d.coefficient == -24 == -math.factorial(4)
    assert d.attached == (0, 1, 2, 3) and d.pairs == () and d.loops == 0
    assert str(d) == "-24 λ ∫ K1y K2y K3y K4y"


def test_four_point_kappa_is_minus_360_with_one_loop():
    (d,) = dg.first_order_diagrams(4, 6)
    assert d.coefficient == -360 == -math.comb(6, 2) * math.factorial(4)
    assert d.loops == 1 and d.attached == (0, 1, 2, 3)
    assert str(d) == "-360 κ ∫ Kyy K1y K2y K3y K4y"


def test_six_point_lambda_is_fifteen_terms_of_minus_24():
    ds = dg.first_order_diagrams(6, 4)
    assert len(ds) == 15
    assert all(d.coefficient == -24 and d.loops == 0 and len(d.attached) == 4 for d in ds)
    # The 15 external lines {e, f} are exactly the 15 pairs of six points, each once, and
    # the vertex takes the other four.
    lines = sorted(d.pairs[0] for d in ds)
    assert lines == sorted((a, b) for a in range(6) for b in range(a + 1, 6))
    for d in ds:
        assert set(d.attached) | set(d.pairs[0]) == set(range(6))
    assert str(ds[0]) == "-24 λ ∫ K1y K2y K3y K4y K56"
    (topo,) = dg.group_topologies(ds)
    assert str(topo) == "-24 λ ∫ Σ_15 Kay Kby Kcy Kdy Kef"


def test_six_point_kappa_is_720_plus_fifteen_terms_of_360():
    ds = dg.first_order_diagrams(6, 6)
    full = [d for d in ds if len(d.attached) == 6]
    loop = [d for d in ds if len(d.attached) == 4]
    assert len(ds) == 16 and len(full) == 1 and len(loop) == 15
    assert full[0].coefficient == -720 == -math.factorial(6) and full[0].loops == 0
    assert all(d.coefficient == -360 and d.loops == 1 for d in loop)
    assert sorted(d.pairs[0] for d in loop) == sorted(
        (a, b) for a in range(6) for b in range(a + 1, 6)
    )
    assert [str(t) for t in dg.group_topologies(ds)] == [
        "-720 κ ∫ K1y K2y K3y K4y K5y K6y",
        "-360 κ ∫ Kyy Σ_15 Kay Kby Kcy Kdy Kef",
    ]


def _physics_md_expressions() -> dict[int, str]:
    """The first-order ΔGn lines of docs/physics.md (§4: λ and κ; §6b: g₃ and g₅), in the
    engine's spelling: ASCII minus, single spaces, continuation lines joined, bracketed
    notes dropped, and the ellipses written out (K1y…K6y is K1y K2y .. K6y; Kay…Kdy is
    Kay Kby Kcy Kdy), so the text a reader sees is what the engine is compared with. The
    derivative operator's line (§6c, with g∂) is checked in test_derivative_operator."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "physics.md").read_text()
    lines, out = text.splitlines(), {}
    for i, line in enumerate(lines):
        m = re.match(r"\s*ΔG(\d) = (.*)", line)
        if not m or "g∂" in line:
            continue
        expr = m.group(2)
        for more in lines[i + 1:]:
            if not re.match(r"\s+[−-] ", more):
                break
            expr += " " + more.strip()
        expr = re.sub(r"\[[^]]*\]", "", expr).replace("−", "-")
        expr = re.sub(r"K1y…K(\d)y", lambda g: " ".join(f"K{i}y" for i in
                                                        range(1, int(g.group(1)) + 1)), expr)
        expr = re.sub(r"K([a-z])y…K([a-z])y", lambda g: " ".join(
            f"K{chr(c)}y" for c in range(ord(g.group(1)), ord(g.group(2)) + 1)), expr)
        out[int(m.group(1))] = f"ΔG{m.group(1)} = " + " ".join(expr.split())
    return out


def test_expression_matches_physics_md():
    """The engine's expressions are the ones docs/physics.md prints (read from the file,
    not a copy of it): the even vertices λ, κ on the 4- and 6-pt functions, the odd ones
    g₃, g₅ on the 1-, 3- and 5-pt functions."""
    doc = _physics_md_expressions()
    assert sorted(doc) == [1, 3, 4, 5, 6]
    for n, line in doc.items():
        couplings = ("lambda", "kappa") if n % 2 == 0 else ("g3", "g5")
        assert dg.first_order_expression(n, couplings) == line
    assert dg.first_order_expression(2) == "ΔG2 = 0"


def test_two_point_pieces_of_rule_4_5():
    lam = [d for d in dg.first_order_diagrams(4, 4, drop_two_point=False) if d.corrects_two_point]
    kap = [d for d in dg.first_order_diagrams(4, 6, drop_two_point=False) if d.corrects_two_point]
    # physics.md: -12 λ ∫ Kyy Kay Kby × Wick(rest), -90 κ ∫ Kyy² Kay Kby × Wick(rest).
    assert len(lam) == len(kap) == 6
    assert all(d.coefficient == -12 and d.loops == 1 for d in lam)
    assert all(d.coefficient == -90 and d.loops == 2 for d in kap)
    assert "Kyy²" in str(kap[0])
    assert all(not d.corrects_two_point for d in dg.first_order_diagrams(6, 6))


@pytest.mark.parametrize("n, k", [(2, 4), (4, 4), (4, 6), (6, 4), (6, 6), (3, 6), (4, 8)])
def test_multiplicities_match_counting_formula(n, k):
    """Labelled multiplicity = k!/(k-m)! (k-m-1)!! for m legs on the vertex, and all
    contractions (vacuum ones included) add up to (n+k-1)!!."""
    diagrams = dg.first_order_diagrams(n, k, drop_two_point=False)
    for d in diagrams:
        m = len(d.attached)
        expected = math.factorial(k) // math.factorial(k - m) * _double_factorial(k - m - 1)
        assert d.multiplicity == expected
    vacuum = _double_factorial(n - 1) * _double_factorial(k - 1) if n % 2 == 0 else 0
    total = sum(d.multiplicity for d in diagrams) + vacuum
    assert total == (_double_factorial(n + k - 1) if (n + k) % 2 == 0 else 0)


# --- brute force: discretised Gaussian model ------------------------------------------------


def _isserlis(cov: np.ndarray):
    @cache
    def moment(idx: tuple[int, ...]) -> float:
        if not idx:
            return 1.0
        if len(idx) % 2:
            return 0.0
        first, rest = idx[0], idx[1:]
        return sum(
            cov[first, rest[j]] * moment(rest[:j] + rest[j + 1 :]) for j in range(len(rest))
        )

    return moment


def _brute_force(net, X, sites, weights, n, k, propagator):
    """-(d/dg) at g=0 of <f(x_t1)..f(x_tn)>: the exact first-order term on distinct tuples."""
    cov = joint_covariance(net, X, sites, propagator)
    moment = _isserlis(cov)
    kx = len(X)
    out = []
    for t in tuples.distinct_tuples(kx, n):
        base = tuple(int(i) for i in t)
        total = 0.0
        for j, w in enumerate(weights):
            site = (kx + j,) * k
            total += w * (moment(base + site) - moment(base) * moment(site))
        out.append(-total)
    return np.array(out)


@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
@pytest.mark.parametrize("n, k", [(4, 4), (4, 6), (6, 4), (6, 6)])
def test_engine_equals_brute_force_first_order(n, k, propagator):
    net = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
    X = np.array([[-0.7], [0.2], [0.9]])
    sites = np.array([[-1.1], [0.4], [1.6]])
    weights = np.array([0.3, 0.5, 0.2])
    lattice = Lattice(sites, weights)
    name = {4: "lambda", 6: "kappa"}[k]
    engine = dg.first_order_design(net, X, n, None, (name,), propagator,
                                   drop_two_point=False, lattice=lattice)[0, :, 0]
    brute = _brute_force(net, X, sites, weights, n, k, propagator)
    np.testing.assert_allclose(engine, brute, rtol=1e-12, atol=1e-14 * np.abs(brute).max())
    if propagator == "full":  # positive kernels: +g ∫ f^k in S lowers every correlator
        assert np.all(brute < 0)


def test_rule_4_5_removes_exactly_the_two_point_pieces():
    """With drop_two_point=True the engine equals brute force minus the 2-pt pieces, which
    are (first-order 2-pt correction) x (Wick of the rest) summed over pairs."""
    net = nn.GaussNet(d_in=2, sigma_w=0.9, sigma_b=0.6)
    X = np.array([[0.1, -0.3], [0.5, 0.2], [-0.4, 0.4]])
    sites = np.array([[0.0, 0.5], [-0.6, -0.2]])
    weights = np.array([0.7, 1.1])
    lattice = Lattice(sites, weights)
    kept = dg.first_order_design(net, X, 4, None, ("lambda",), lattice=lattice)[0, :, 0]
    brute = _brute_force(net, X, sites, weights, 4, 4, "full")
    d2 = _brute_force(net, X, sites, weights, 2, 4, "full")  # ΔG2 on distinct pairs
    K = np.asarray(net.kernel(X))
    two_point = []
    for t in tuples.distinct_tuples(3, 4):
        s = 0.0
        for a in range(4):
            for b in range(a + 1, 4):
                c, e = [i for i in range(4) if i not in (a, b)]
                s += d2[tuples.tuple_row(3, (t[a], t[b]))] * K[t[c], t[e]]
        two_point.append(s)
    np.testing.assert_allclose(kept, brute - np.array(two_point), rtol=1e-12)


# --- numbers: the §6 formulas evaluated by hand ----------------------------------------------


def test_six_point_design_equals_hand_written_sums():
    net = nn.ReLUNet(d_in=1, sigma_b=0.5)
    X = nn.paper_inputs("relu", 1)[:4]
    cut = 30.0
    k = len(X)
    K = np.asarray(net.kernel(X))
    design = dg.first_order_design(net, X, 6, cut, ("lambda", "kappa"), "bias_subtracted")[0]
    r4 = tuples.distinct_tuples(k, 4)
    I4 = np.asarray(vertex_integrals(net, X, r4, cut, "bias_subtracted"))
    I4loop = np.asarray(vertex_integrals(net, X, r4, cut, "bias_subtracted", loops=1))
    I6 = np.asarray(vertex_integrals(net, X, tuples.distinct_tuples(k, 6), cut,
                                     "bias_subtracted"))
    by_hand = sum(d.evaluate(net, X, cut, "bias_subtracted") for d in
                  dg.first_order_diagrams(6, 4))
    np.testing.assert_allclose(by_hand, design[:, 0], rtol=1e-12)
    for row, t in enumerate(tuples.distinct_tuples(k, 6)):
        lam = kap = 0.0
        for e in range(6):
            for f in range(e + 1, 6):
                rest = tuples.tuple_row(k, [t[i] for i in range(6) if i not in (e, f)])
                lam += -24 * I4[rest] * K[t[e], t[f]]
                kap += -360 * I4loop[rest] * K[t[e], t[f]]
        kap += -720 * I6[row]
        np.testing.assert_allclose(design[row], [lam, kap], rtol=1e-12)


def test_correction_is_symmetric_linear_and_adds_to_gp():
    net = nn.GaussNet(d_in=1)
    X = nn.paper_inputs("gauss", 1)[:3]
    g = {"lambda": -2e-3, "kappa": 5e-5}
    full = nn.first_order_correction(net, X, 4, g, 50.0)
    assert full.shape == (3,) * 4
    np.testing.assert_allclose(full, np.transpose(full, (2, 0, 3, 1)))
    lam_only = nn.first_order_correction(net, X, 4, {"lambda": -2e-3}, 50.0)
    kap_only = nn.first_order_correction(net, X, 4, {"kappa": 5e-5}, 50.0)
    np.testing.assert_allclose(full, lam_only + kap_only, rtol=1e-13)
    assert np.all(lam_only > 0)  # λ < 0 raises G4: heavier tails (physics.md §5)
    ngp = nn.ngp_correlator(net, X, 4, g, 50.0)
    np.testing.assert_allclose(ngp, nn.gp_correlator(net.kernel(X), 4) + full, rtol=1e-13)


@pytest.mark.slow
def test_design_function_is_differentiable_in_the_cutoff():
    net = nn.ErfNet(d_in=1)
    X = nn.paper_inputs("erf", 1)[:3]
    fn = dg.first_order_design_function(net, X, 6, ("lambda", "kappa"), max_cutoff=100.0)
    cut = 40.0
    slope = np.asarray(jax.jacfwd(fn)(cut))
    h = 1e-3
    fd = (dg.first_order_design(net, X, 6, [cut + h, cut - h])) / (2 * h)
    np.testing.assert_allclose(slope, fd[0] - fd[1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fn(cut)), dg.first_order_design(net, X, 6, cut)[0],
                               rtol=1e-12)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -3, 4.0, True])  # odd k and k = 2: tests/test_odd_diagrams.py
def test_bad_vertex_orders(k):
    with pytest.raises(nn.NNGPInputError, match="k_vertex"):
        dg.first_order_diagrams(4, k)


def test_bad_couplings_propagators_cutoffs():
    net = nn.ErfNet()
    X = nn.paper_inputs("erf", 1)
    with pytest.raises(nn.NNGPInputError, match="coupling"):
        dg.first_order_design(net, X, 4, 10.0, ("lambda", "mu"))
    with pytest.raises(nn.NNGPInputError, match="coupling"):
        nn.first_order_correction(net, X, 4, {"g0": 1.0}, 10.0)
    with pytest.raises(nn.NNGPInputError, match="propagator"):
        nn.first_order_correction(net, X, 4, {"lambda": 1.0}, 10.0, propagator="eft")
    for bad in (0.0, -5.0, np.inf, np.nan):
        with pytest.raises(nn.NNGPInputError, match="cutoff"):
            nn.first_order_correction(net, X, 4, {"lambda": 1.0}, bad)
    with pytest.raises(nn.NNGPInputError, match="extent"):
        nn.first_order_correction(net, X, 4, {"lambda": 1.0}, 0.5)
    with pytest.raises(nn.NNGPInputError, match="n"):
        dg.first_order_design(net, X, 11, 10.0)
    with pytest.raises(nn.NNGPInputError, match="finite"):
        nn.first_order_correction(net, X, 4, {"lambda": np.nan}, 10.0)
