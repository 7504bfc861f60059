"""The derivative operator g∂ f²(∂f)² at first order against brute force and closed forms.

Brute force: the lattice model exp(-S_GP - Σ_j w_j g f_j² ((f_{j+1} - f_{j-1}) / 2h)²), the
derivative a central difference between sites. -∂_g <Π f> at g = 0 is
-Σ_j w_j (<F u_j² v_j²> - <F><u_j² v_j²>) with u_j = f_j, v_j the difference quotient, every
Gaussian moment from its own Isserlis recursion on the joint covariance of the outputs and
(u_j, v_j) (a linear map of the kernel on the sites): no diagram. As h -> 0 it must tend to
the design built from JAX derivatives of the kernel, with an error falling as h².
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gaussian_sites import moment_function

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import derivative as dv
from nngp_ppl.theory import operators as ops
from nngp_ppl.theory.lattice import Lattice

ERF = nn.ErfNet(d_in=1, sigma_w=1.3, sigma_b=0.8)
X = np.array([[-0.7], [0.2], [0.9]])


def _brute(net, centres, weights, h, n, propagator="full"):
    """-∂_g <f(x_t1)..f(x_tn)> at g = 0 on the distinct n-tuples, for the sites ``centres``
    (weights ``weights``) whose derivative is (f(y + h) - f(y - h)) / 2h."""
    kx = len(X)
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    rows = [tuple(int(i) for i in t) for t in tuples.distinct_tuples(kx, n)]
    out = np.zeros(len(rows))
    for y, w in zip(centres, weights, strict=True):
        pts = np.array([[y - h], [y], [y + h]])
        Z = np.vstack([X, pts])
        C = np.array(net.kernel(Z))
        C[kx:, :] -= shift  # vertex legs carry K̃; external-external lines stay K
        C[:, kx:] -= shift
        C[kx:, kx:] += shift
        A = np.zeros((kx + 2, kx + 3))
        A[:kx, :kx] = np.eye(kx)
        A[kx, kx + 1] = 1.0  # u = f(y)
        A[kx + 1, kx], A[kx + 1, kx + 2] = -1 / (2 * h), 1 / (2 * h)  # v
        m = moment_function(A @ C @ A.T)
        vertex = m((0,) * kx + (2, 2))
        for r, t in enumerate(rows):
            c = [0] * kx
            for i in t:
                c[i] += 1
            out[r] -= w * (m(tuple(c) + (2, 2)) - m(tuple(c) + (0, 0)) * vertex)
    return out


SITES = np.array([-1.1, 0.5, 1.6])
WEIGHTS = np.array([0.3, 0.5, 0.2])


@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
@pytest.mark.parametrize("n", [2, 4, 6])
def test_design_is_the_limit_of_central_differences(n, propagator):
    """Fixed weighted sites, neighbours at ±h: the brute force B(h) = D + h² E + O(h⁴). The
    error must fall by 4.00 ± 0.05 per halving of h (h = 0.04, 0.02, 0.01), and the Richardson
    extrapolation (4 B(h/2) - B(h)) / 3 at h = 0.005 must equal the design to 1e-9 of its
    largest entry. All diagrams
    (drop_two_point=False): the brute force knows no rule 4.5."""
    lattice = Lattice(SITES[:, None], WEIGHTS)
    D = dv.first_order_design(ERF, X, n, None, ("gd",), propagator, drop_two_point=False,
                              lattice=lattice)[0, :, 0]
    hs = [0.04, 0.02, 0.01, 0.005, 0.0025]
    B = [_brute(ERF, SITES, WEIGHTS, h, n, propagator) for h in hs]
    err = [np.abs(b - D).max() for b in B]
    scale = np.abs(D).max()
    assert scale > 0 and err[0] > 1e-6 * scale  # the discretisation error is visible
    np.testing.assert_allclose([err[0] / err[1], err[1] / err[2]], 4.0, atol=0.05)
    # The extrapolation's O(h⁴) residual: 5e-8 at h = 0.01, 2e-10 at h = 0.0025.
    np.testing.assert_allclose((4 * B[4] - B[3]) / 3 / scale, D / scale, rtol=0, atol=1e-9)


def _brute_2d(net, X2, centres, weights, h, n):
    """As :func:`_brute` in d_in = 2: O = u² (v_1² + v_2²), v_μ the central difference along
    axis μ (four neighbours per site)."""
    kx = len(X2)
    rows = [tuple(int(i) for i in t) for t in tuples.distinct_tuples(kx, n)]
    out = np.zeros(len(rows))
    steps = h * np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])
    for y, w in zip(centres, weights, strict=True):
        C = np.array(net.kernel(np.vstack([X2, y[None, :], y + steps])))
        A = np.zeros((kx + 3, kx + 5))
        A[:kx, :kx] = np.eye(kx)
        A[kx, kx] = 1.0
        A[kx + 1, kx + 1], A[kx + 1, kx + 2] = -1 / (2 * h), 1 / (2 * h)
        A[kx + 2, kx + 3], A[kx + 2, kx + 4] = -1 / (2 * h), 1 / (2 * h)
        m = moment_function(A @ C @ A.T)
        vertex = m((0,) * kx + (2, 2, 0)) + m((0,) * kx + (2, 0, 2))
        for r, t in enumerate(rows):
            c = tuple(sum(1 for i in t if i == j) for j in range(kx))
            full = m(c + (2, 2, 0)) + m(c + (2, 0, 2))
            out[r] -= w * (full - m(c + (0, 0, 0)) * vertex)
    return out


@pytest.mark.parametrize("n", [2, 4])
def test_the_input_directions_are_summed(n):
    """d_in = 2, Erf-net (not translation invariant: both components of the mixed loop M
    are there): the design with Σ_μ equals the Richardson-extrapolated central differences
    along both axes to 1e-9, and the error falls as h² (ratio 4.00 ± 0.05)."""
    net = nn.ErfNet(d_in=2, sigma_w=1.2, sigma_b=0.6)
    X2 = np.array([[-0.6, 0.3], [0.4, -0.2], [0.1, 0.8]])
    centres = np.array([[-0.9, 0.4], [0.5, 0.7], [0.3, -1.0]])
    weights = np.array([0.4, 0.3, 0.5])
    D = dv.first_order_design(net, X2, n, None, "gd", drop_two_point=False,
                              lattice=Lattice(centres, weights))[0, :, 0]
    B = [_brute_2d(net, X2, centres, weights, h, n) for h in (0.02, 0.01, 0.005, 0.0025)]
    err = [np.abs(b - D).max() for b in B]
    np.testing.assert_allclose(err[0] / err[1], 4.0, atol=0.05)
    scale = np.abs(D).max()
    np.testing.assert_allclose((4 * B[3] - B[2]) / 3 / scale, D / scale, rtol=0, atol=1e-9)
    assert np.abs(dv.leg_factors(net, X2, centres)["M"]).min() > 1e-3


def test_odd_correlators_get_nothing_and_rule_4_5_keeps_the_connected_4pt_function():
    """The vertex is even: odd n vanish (design and brute force alike). With rule 4.5 the
    2-pt design is 0 and the 4-pt design is the first-order change of the connected 4-pt
    function κ4 = G4 - Σ_3 G2 G2 (the dropped diagrams are exactly its 2-pt insertions),
    against the Richardson-extrapolated brute force of G4 and G2 (to 1e-9)."""
    lattice = Lattice(SITES[:, None], WEIGHTS)
    for n in (1, 3):
        assert np.all(dv.first_order_design(ERF, X, n, None, "gd", drop_two_point=False,
                                            lattice=lattice) == 0)
        assert np.abs(_brute(ERF, SITES, WEIGHTS, 0.02, n)).max() < 1e-12
    assert np.all(dv.first_order_design(ERF, X, 2, None, "gd", lattice=lattice) == 0)
    D4 = dv.first_order_design(ERF, X, 4, None, "gd", lattice=lattice)[0, :, 0]

    def richardson(n):
        return (4 * _brute(ERF, SITES, WEIGHTS, 0.0025, n)
                - _brute(ERF, SITES, WEIGHTS, 0.005, n)) / 3

    G4, G2 = richardson(4), richardson(2)
    K = np.asarray(ERF.kernel(X))
    row2 = {tuple(int(i) for i in t): r for r, t in enumerate(tuples.distinct_tuples(3, 2))}
    kappa4 = []
    for r, t in enumerate(tuples.distinct_tuples(3, 4)):
        a, b, c, d = (int(i) for i in t)
        insert = 0.0
        for (p, q), (s, u) in (((a, b), (c, d)), ((a, c), (b, d)), ((a, d), (b, c))):
            insert += G2[row2[tuple(sorted((p, q)))]] * K[s, u] \
                + K[p, q] * G2[row2[tuple(sorted((s, u)))]]
        kappa4.append(G4[r] - insert)
    np.testing.assert_allclose(D4 / np.abs(D4).max(), np.array(kappa4) / np.abs(D4).max(),
                               rtol=0, atol=1e-9)
    assert np.abs(G4 - D4).max() > 0.1 * np.abs(D4).max()  # the 2-pt insertions matter


def test_on_a_uniform_lattice_the_error_falls_as_h_squared():
    """Every site of a uniform midpoint lattice on [-1.2, 1.4] weighted h, the derivative the
    central difference between neighbouring sites (one ghost site past each end): the 4-pt
    design on the same lattice from kernel derivatives differs by O(h²), the ratio of
    errors per halving of h (h = 0.1, 0.05, 0.025) in [3.85, 4.15] (3.75 and 3.93 from h = 0.2,
    where the O(h⁴) term still shows)."""
    errs = []
    for n_sites in (26, 52, 104):
        h = 2.6 / n_sites
        centres = -1.2 + (np.arange(n_sites) + 0.5) * h
        lattice = Lattice(centres[:, None], np.full(n_sites, h))
        D = dv.first_order_design(ERF, X, 4, None, "gd", drop_two_point=False,
                                  lattice=lattice)[0, :, 0]
        B = _brute(ERF, centres, np.full(n_sites, h), h, 4)
        errs.append(np.abs(B - D).max() / np.abs(D).max())
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.85) & (ratios < 4.15)), (errs, ratios)
    assert errs[-1] < 1e-3


def test_leg_factors_are_kernel_derivatives():
    """Gauss-net K = σ_b² + σ_W² exp(-s|x-y|²/2), s = σ_W²/d_in: ∂_y K = σ_W² s (x - y) e,
    M = 0 and T = Σ_μ ∂_μ∂'_μ K|_{y=y'} = σ_W² s d_in = σ_W⁴ (d_in = 1 and 2). Erf-net:
    M = ½ ∇_y K(y, y) by the symmetry of K, checked by central differences of the
    diagonal."""
    rng = np.random.default_rng(0)
    for d in (1, 2):
        net = nn.GaussNet(d_in=d, sigma_w=1.3, sigma_b=0.7)
        Xd, Y = rng.normal(size=(3, d)), rng.normal(size=(5, d))
        f = dv.leg_factors(net, Xd, Y)
        s = 1.3**2 / d
        e = np.exp(-s * ((Xd[:, None, :] - Y[None, :, :]) ** 2).sum(-1) / 2)
        np.testing.assert_allclose(f["dK"], 1.3**2 * s * (Xd[:, None, :] - Y[None]) * e[..., None],
                                   rtol=1e-12)
        np.testing.assert_allclose(f["T"], 1.3**4, rtol=1e-12)
        np.testing.assert_array_equal(f["M"], 0.0)
        np.testing.assert_allclose(f["Kyy"], 0.7**2 + 1.3**2, rtol=1e-14)
    Y = np.array([[-0.4], [0.3], [1.2]])
    f = dv.leg_factors(ERF, X, Y)
    h = 1e-5
    diag = [np.diag(np.asarray(ERF.kernel(Y + s * h))) for s in (-1, 1)]
    np.testing.assert_allclose(f["M"][:, 0], (diag[1] - diag[0]) / (4 * h), rtol=1e-8)
    assert np.abs(f["M"]).min() > 1e-3  # not translation invariant: the mixed loop is there


def _gauss_integral(net, idx, plain_shift):
    """∫_R K̃_a K̃_b ∂K_c ∂K_d dy for the Gauss-net in d_in = 1 in closed form (idx = a, b, c, d;
    K̃ = K - plain_shift): expand K̃_a K̃_b, each term a Gaussian times (x_c - y)(x_d - y)."""
    a, b, c, d = idx
    sw2, s = net.sigma_w**2, net.sigma_w**2
    const = net.sigma_b**2 - plain_shift
    x = X[:, 0]
    total = 0.0
    for S in itertools.chain.from_iterable(itertools.combinations((a, b), r) for r in range(3)):
        coef = const ** (2 - len(S)) * sw2 ** len(S)
        pts = x[list(S) + [c, d]]
        alpha = s * len(pts) / 2
        mu = pts.mean()
        gauss = np.exp(-s / 2 * (np.sum(pts**2) - len(pts) * mu**2)) * np.sqrt(np.pi / alpha)
        total += coef * gauss * ((x[c] - mu) * (x[d] - mu) + 1 / (2 * alpha))
    return sw2**2 * s**2 * total


@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
def test_gauss_net_box_integral_against_closed_form(propagator):
    """The 4-pt design with rule 4.5 on the cutoff box [-Λ, Λ], Gauss-net d_in = 1: at
    Λ = 30 (tails below e^-300) the closed-form Gaussian integrals of
    -4 Σ_6 Kay Kby ∂Kcy ∂Kdy over the whole line, to 1e-10. Every ∂K decays, so the design
    stops running: between Λ = 15 and 30 it changes by < 1e-12 even with the full K."""
    net = nn.GaussNet(d_in=1, sigma_w=1.2, sigma_b=0.9)
    D = dv.first_order_design(net, X, 4, [1.0, 15.0, 30.0], "gd", propagator)[..., 0]
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    hand = []
    for t in tuples.distinct_tuples(3, 4):
        t = [int(i) for i in t]
        total = 0.0
        for plain in itertools.combinations(range(4), 2):
            deriv = [i for i in range(4) if i not in plain]
            total += _gauss_integral(net, [t[plain[0]], t[plain[1]], t[deriv[0]],
                                           t[deriv[1]]], shift)
        hand.append(-4 * total)
    np.testing.assert_allclose(D[2], hand, rtol=1e-10)
    np.testing.assert_allclose(D[1], D[2], rtol=1e-12)
    assert np.abs(D[0] - D[2]).max() > 1e-3 * np.abs(D[2]).max()  # Λ = 1 cuts the integrand


def test_records_and_mixed_bases():
    """gd is a record of the derivative kind; a basis mixing it with λ gives λ's column
    from the local engine unchanged; the local engine and a fit basis refuse gd by name."""
    op = ops.operator("gd")
    assert (op.kind, op.legs, op.derivatives, op.dimension, op.parity) == \
        ("derivative", 4, (0, 0, 1, 1), 6, 1)
    assert str(op) == "g∂ f^2(∂f)^2"
    assert dv.first_order_expression(4) == "ΔG4 = -4 g∂ ∫ Σ_6 Kay Kby ∂Kcy·∂Kdy"
    lattice = Lattice(SITES[:, None], WEIGHTS)
    both = dv.first_order_design(ERF, X, 4, None, ("lambda", "gd"), lattice=lattice)
    alone = dv.first_order_design(ERF, X, 4, None, ("gd",), lattice=lattice)
    lam = nn.theory.diagrams.first_order_design(ERF, X, 4, None, ("lambda",), lattice=lattice)
    np.testing.assert_array_equal(both[..., :1], lam)
    np.testing.assert_array_equal(both[..., 1:], alone)
    with pytest.raises(nn.NNGPInputError, match="local operators"):
        nn.theory.diagrams.first_order_design(ERF, X, 4, 5.0, ("gd",))
    with pytest.raises(nn.NNGPInputError, match="couplings must be"):
        ops.coupling_names(("lambda", "gd"), fit_orders=(4,))
    with pytest.raises(nn.NNGPInputError, match="derivative"):
        dv.first_order_diagrams(4, "lambda")
    with pytest.raises(nn.NNGPInputError, match="kind 'derivative' needs derivatives"):
        ops.Operator(4, "d4", "δ", kind="derivative", derivatives=(1, 1, 1, 0))
