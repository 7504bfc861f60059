"""Cutoff box and vertex integrals against scipy adaptive quadrature and closed forms.

References:
* scipy ``quad``/``dblquad``/``tplquad`` with every axis split at 0 (the authors' method),
  integrating kernels transcribed independently here from physics.md §2 with ``math``;
* closed forms: Gauss-net kernels are sums of Gaussians, so Π_a K(x_a, y) expands over
  subsets into Gaussian integrals over the box (products of erf differences); ReLU-net with
  σ_b = 0 and positive 1-d inputs has K(x, y) = σ_W² x y / 2 for y > 0 and 0 for y < 0.
Measured (not asserted beyond the issue's tolerances): the composite Gauss-Legendre rule
agrees with these to <= 1e-13 (d_in = 1) and <= 5e-7 (d_in = 2, 3) up to Λ = 1e5, while
scipy's quad split at 0 misses the Gauss-net bump by 1e-3 relative at Λ = 1e4.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.special import erf

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import lattice as lt

CUTS = np.asarray(nn.PAPER_CUTOFFS, dtype=np.float64)


# --- independent kernel transcriptions (physics.md §2) ---------------------------------------


def _m(sw, sb, d, x, y):
    return sb**2 + sw**2 * sum(a * b for a, b in zip(x, y, strict=True)) / d


def _kernel_fn(name, sw, sb, d, shift):
    def erf_k(x, y):
        mxy, mxx, myy = _m(sw, sb, d, x, y), _m(sw, sb, d, x, x), _m(sw, sb, d, y, y)
        arg = 2 * mxy / math.sqrt((1 + 2 * mxx) * (1 + 2 * myy))
        return sb**2 + sw**2 * (2 / math.pi) * math.asin(arg) - shift

    def relu_k(x, y):
        mxy, mxx, myy = _m(sw, sb, d, x, y), _m(sw, sb, d, x, x), _m(sw, sb, d, y, y)
        norm = math.sqrt(mxx * myy)
        if norm == 0:
            return sb**2 - shift
        c = max(-1.0, min(1.0, mxy / norm))
        th = math.acos(c)
        return sb**2 + sw**2 / (2 * math.pi) * norm * (math.sin(th) + (math.pi - th) * c) - shift

    def gauss_k(x, y):
        d2 = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))
        return sb**2 + sw**2 * math.exp(-(sw**2) * d2 / (2 * d)) - shift

    return {"erf": erf_k, "relu": relu_k, "gauss": gauss_k}[name]


def _scipy(name, net, xs, cutoff, propagator, loops=0, epsrel=1e-11):
    d = net.d_in
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    K = _kernel_fn(name, net.sigma_w, net.sigma_b, d, shift)
    halves = [(-cutoff, 0.0), (0.0, cutoff)]
    if d == 1:
        def f(y):
            p = (y,)
            return math.prod(K(x, p) for x in xs) * K(p, p) ** loops

        return sum(integrate.quad(f, a, b, epsabs=0, epsrel=epsrel, limit=400)[0]
                   for a, b in halves)
    if d == 2:
        def f2(y2, y1):
            p = (y1, y2)
            return math.prod(K(x, p) for x in xs) * K(p, p) ** loops

        return sum(integrate.dblquad(f2, a, b, c, e, epsabs=0, epsrel=epsrel)[0]
                   for (a, b), (c, e) in itertools.product(halves, halves))

    def f3(y3, y2, y1):
        p = (y1, y2, y3)
        return math.prod(K(x, p) for x in xs) * K(p, p) ** loops

    return sum(integrate.tplquad(f3, a, b, c, e, g, h, epsabs=0, epsrel=epsrel)[0]
               for (a, b), (c, e), (g, h) in itertools.product(halves, halves, halves))


def _gauss_closed_form(net, xs, cutoff, shift=0.0, loops=0):
    """∫_box Π_a (c + s e^{-α|x_a - y|²}) (c + s)^loops dy, c = σ_b² - shift, s = σ_W²,
    α = σ_W²/(2 d): expand the product over subsets S of legs; each term is a Gaussian
    centred at the mean of x_S, integrated over the box axis by axis with erf."""
    d = net.d_in
    c, s, al = net.sigma_b**2 - shift, net.sigma_w**2, net.sigma_w**2 / (2 * d)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1, d)
    total = 0.0
    for r in range(len(xs) + 1):
        for S in itertools.combinations(range(len(xs)), r):
            if r == 0:
                total += c ** len(xs) * (2 * cutoff) ** d
                continue
            sub = xs[list(S)]
            mean = sub.mean(axis=0)
            const = math.exp(-al * (np.sum(sub**2) - r * np.sum(mean**2)))
            a = math.sqrt(al * r)
            axes = np.prod(math.sqrt(math.pi) / (2 * a)
                           * (erf(a * (cutoff - mean)) - erf(a * (-cutoff - mean))))
            total += c ** (len(xs) - r) * s**r * const * axes
    return total * (c + s) ** loops


# --- d_in = 1: scipy quad over all of the paper's cutoffs -----------------------------------


@pytest.mark.parametrize("name, sigma_b", [("erf", 1.0), ("relu", 0.0), ("relu", 1.0)])
@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
def test_one_dimension_matches_scipy_quad(name, sigma_b, propagator):
    net = nn.make_ensemble(name, d_in=1, sigma_b=sigma_b)
    X = nn.paper_inputs(name, 1)
    rows = np.array([[0, 1, 2, 3], [0, 0, 5, 5], [1, 1, 1, 4]])
    mine = np.asarray(lt.vertex_integrals(net, X, rows, CUTS, propagator))
    mine_loop = np.asarray(lt.vertex_integrals(net, X, rows[:2], CUTS, propagator, loops=1))
    for c, cut in enumerate(CUTS):
        for r, row in enumerate(rows):
            ref = _scipy(name, net, [tuple(X[i]) for i in row], cut, propagator)
            assert mine[c, r] == pytest.approx(ref, rel=1e-6, abs=1e-12 * abs(ref) + 1e-300)
        ref = _scipy(name, net, [tuple(X[i]) for i in rows[1]], cut, propagator, loops=1)
        assert mine_loop[c, 1] == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("d_in", [1, 2, 3])
@pytest.mark.parametrize("propagator", ["full", "bias_subtracted"])
def test_gauss_net_matches_closed_form(d_in, propagator):
    net = nn.GaussNet(d_in=d_in)
    X = nn.paper_inputs("gauss", d_in)
    k = len(X)
    rows = tuples.distinct_tuples(k, 4) if d_in < 3 else tuples.distinct_tuples(k, 4)[::12]
    cuts = CUTS if d_in < 3 else np.array([7.0, 1e5])
    shift = net.sigma_b**2 if propagator == "bias_subtracted" else 0.0
    mine = np.asarray(lt.vertex_integrals(net, X, rows, cuts, propagator))
    ref = np.array([[_gauss_closed_form(net, X[r], c, shift) for r in rows] for c in cuts])
    np.testing.assert_allclose(mine, ref, rtol=1e-10 if d_in == 1 else 1e-6)
    loop = np.asarray(lt.vertex_integrals(net, X, rows[:3], cuts, propagator, loops=2))
    ref = np.array([[_gauss_closed_form(net, X[r], c, shift, 2) for r in rows[:3]]
                    for c in cuts])
    np.testing.assert_allclose(loop, ref, rtol=1e-10 if d_in == 1 else 1e-6)


def test_gauss_net_matches_scipy_where_scipy_is_reliable():
    net = nn.GaussNet(d_in=1)
    X = nn.paper_inputs("gauss", 1)
    cuts = CUTS[CUTS <= 1000]
    mine = np.asarray(lt.vertex_integrals(net, X, [[0, 2, 4, 5]], cuts))[:, 0]
    ref = [_scipy("gauss", net, [tuple(X[i]) for i in (0, 2, 4, 5)], c, "full") for c in cuts]
    np.testing.assert_allclose(mine, ref, rtol=1e-6)


def test_relu_sigma_b_zero_is_a_power_law():
    """With m(x, y) = σ_W² x y: K(x, y) = σ_W⁴ x y / 2 for y > 0 (0 for y < 0) and
    K(y, y) = σ_W⁴ y² / 2, so I = (σ_W⁴/2)^(m+l) Π x_a Λ^(m+2l+1) / (m+2l+1) exactly."""
    net = nn.ReLUNet(d_in=1, sigma_w=1.3)
    X = nn.paper_inputs("relu", 1)
    rows = tuples.distinct_tuples(6, 4)
    for loops in (0, 1):
        mine = np.asarray(lt.vertex_integrals(net, X, rows, CUTS, loops=loops))
        p = 4 + 2 * loops + 1
        coef = (net.sigma_w**4 / 2) ** (4 + loops) * np.prod(X[rows, 0], axis=1)
        np.testing.assert_allclose(mine, coef[None, :] * CUTS[:, None] ** p / p, rtol=1e-12)


# --- d_in = 2, 3: dblquad / tplquad on a few integrals ---------------------------------------


@pytest.mark.parametrize(
    "name, sigma_b, cutoff",
    [("erf", 1.0, 7.0), ("erf", 1.0, 100.0), ("relu", 0.0, 7.0), ("relu", 0.0, 1e5),
     ("relu", 1.0, 1e3)],
)
@pytest.mark.slow
def test_two_dimensions_match_dblquad(name, sigma_b, cutoff):
    net = nn.make_ensemble(name, d_in=2, sigma_b=sigma_b)
    X = nn.paper_inputs(name, 2)
    row = [0, 1, 2, 3]
    mine = float(lt.vertex_integrals(net, X, [row], cutoff)[0])
    ref = _scipy(name, net, [tuple(X[i]) for i in row], cutoff, "full", epsrel=1e-8)
    assert mine == pytest.approx(ref, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name, sigma_b", [("erf", 1.0), ("relu", 1.0)])
def test_three_dimensions_match_tplquad(name, sigma_b):
    net = nn.make_ensemble(name, d_in=3, sigma_b=sigma_b)
    X = nn.paper_inputs(name, 3)
    row = [0, 1, 2, 3]
    mine = float(lt.vertex_integrals(net, X, [row], 7.0, "bias_subtracted")[0])
    ref = _scipy(name, net, [tuple(X[i]) for i in row], 7.0, "bias_subtracted", epsrel=1e-5)
    assert mine == pytest.approx(ref, rel=1e-4)


# --- derivatives and vectorisation -----------------------------------------------------------


@pytest.mark.slow
def test_cutoff_derivative_is_the_surface_term():
    """jax.grad of log I in log Λ equals finite differences, for d_in = 1 and 2, and gives
    exactly m + 1 = 5 for the ReLU power law (where differentiating the kernel would give
    NaN: arccos has infinite slope at cos θ = 1)."""
    for name, d, sb in (("erf", 1, 1.0), ("gauss", 2, 0.5), ("relu", 2, 1.0)):
        net = nn.make_ensemble(name, d_in=d, sigma_b=sb)
        X = nn.paper_inputs(name, d)
        fn = lt.vertex_integral_function(net, X, [[0, 1, 2, 3], [1, 1, 2, 2]], max_cutoff=100)
        slope = jax.jacfwd(lambda logc, fn=fn: jnp.log(fn(jnp.exp(logc))))(jnp.log(30.0))
        h = 1e-4
        fd = (np.log(fn(30.0 * np.exp(h))) - np.log(fn(30.0 * np.exp(-h)))) / (2 * h)
        np.testing.assert_allclose(np.asarray(slope), fd, rtol=1e-6)
    net = nn.ReLUNet(d_in=1)
    fn = lt.vertex_integral_function(net, nn.paper_inputs("relu", 1), [[0, 1, 2, 3]])
    g = jax.grad(lambda logc: jnp.log(fn(jnp.exp(logc))[0]))(jnp.log(1e4))
    assert float(g) == pytest.approx(5.0, rel=1e-12)
    gam = lt.vertex_integral_exponents(net, nn.paper_inputs("relu", 1), [[0, 1, 2, 3]], CUTS)
    np.testing.assert_allclose(gam, 5.0, rtol=1e-12)


def test_batched_traced_and_scalar_calls_agree():
    net = nn.ErfNet(d_in=1)
    X = nn.paper_inputs("erf", 1)
    rows = tuples.distinct_tuples(6, 4)
    batch = np.asarray(lt.vertex_integrals(net, X, rows, CUTS))
    assert batch.shape == (len(CUTS), len(rows))
    one = np.asarray(lt.vertex_integrals(net, X, rows, CUTS[4]))
    np.testing.assert_allclose(one, batch[4], rtol=1e-13)
    fn = jax.jit(jax.vmap(lt.vertex_integral_function(net, X, rows, max_cutoff=1e5)))
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(CUTS))), batch, rtol=1e-10)
    traced = jax.jit(lambda c: lt.vertex_integrals(net, X, rows, c))(CUTS[-1])
    np.testing.assert_allclose(np.asarray(traced), batch[-1], rtol=1e-9)


# --- lattices --------------------------------------------------------------------------------


def test_uniform_lattice_is_the_midpoint_rule():
    lat = nn.box_lattice(2, 3.0, "uniform", spacing=0.5)
    assert lat.kind == "uniform" and lat.spacing == 0.5 and len(lat) == 144
    assert np.all(np.abs(lat.points) < 3.0)
    assert lat.weights.sum() == pytest.approx(36.0)
    np.testing.assert_allclose(np.unique(lat.points[:, 0]), -2.75 + 0.5 * np.arange(12))
    lat = nn.box_lattice(1, 2.0, "uniform", n_sites=8)
    assert lat.spacing == 0.5
    # Midpoint rule: ∫ y² over [-2, 2] = 16/3, error -a²/24 per unit length x 4.
    assert np.sum(lat.weights * lat.points[:, 0] ** 2) == pytest.approx(16 / 3 - 0.25**2 * 4 / 3)
    with pytest.raises(nn.NNGPInputError, match="tile"):
        nn.box_lattice(1, 1.0, "uniform", spacing=0.3)
    with pytest.raises(nn.NNGPInputError, match="spacing"):
        nn.box_lattice(1, 1.0, "uniform")


def test_gauss_legendre_lattice_integrates_kinks_and_powers():
    for d, cut in ((1, 1e5), (2, 1e4), (3, 30.0)):
        lat = nn.box_lattice(d, cut, split_points=[[0.3] * d, [-0.7] * d])
        assert lat.weights.sum() == pytest.approx((2 * cut) ** d, rel=1e-12)
        assert np.all(np.abs(lat.points) <= cut)
    lat = nn.box_lattice(1, 50.0, split_points=[0.3])
    y = lat.points[:, 0]
    assert np.sum(lat.weights * np.abs(y - 0.3)) == pytest.approx(50.3**2 / 2 + 49.7**2 / 2)
    assert np.sum(lat.weights * np.maximum(y, 0) ** 5) == pytest.approx(50.0**6 / 6, rel=1e-13)


def test_explicit_lattice_reproduces_the_continuum_rule():
    net = nn.ReLUNet(d_in=2, sigma_b=1.0)
    X = nn.paper_inputs("relu", 2)
    lat = nn.box_lattice(2, 40.0, split_points=X, scale=lt.kernel_scale(net))
    rows = tuples.distinct_tuples(4, 4)
    on_lat = np.asarray(lt.vertex_integrals(net, X, rows, None, lattice=lat))
    cont = np.asarray(lt.vertex_integrals(net, X, rows, 40.0))
    np.testing.assert_allclose(on_lat, cont, rtol=1e-6)
    with pytest.raises(nn.NNGPInputError, match="match"):
        lt.vertex_integrals(net, X, rows, 41.0, lattice=lat)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_is_refused():
    net = nn.ErfNet(d_in=1)
    X = nn.paper_inputs("erf", 1)
    rows = [[0, 1, 2, 3]]
    for bad in (0.0, -1.0, np.nan, np.inf, [10.0, -1.0], []):
        with pytest.raises(nn.NNGPInputError, match="cutoff"):
            lt.vertex_integrals(net, X, rows, bad)
    with pytest.raises(nn.NNGPInputError, match="extent"):
        lt.vertex_integrals(net, X, rows, 0.9)
    with pytest.raises(nn.NNGPInputError, match="propagator"):
        lt.vertex_integrals(net, X, rows, 10.0, propagator="K_EFT")
    with pytest.raises(nn.NNGPInputError, match="rows"):
        lt.vertex_integrals(net, X, [[0, 6]], 10.0)
    with pytest.raises(nn.NNGPInputError, match="loops"):
        lt.vertex_integrals(net, X, rows, 10.0, loops=-1)
    with pytest.raises(nn.NNGPInputError, match="kind"):
        nn.box_lattice(1, 10.0, kind="sobol")
    with pytest.raises(nn.NNGPInputError, match="extent"):
        nn.box_lattice(1, 1.0, split_points=[2.0])
    with pytest.raises(nn.NNGPInputError, match="weights"):
        nn.Lattice(np.zeros((3, 1)), np.ones(2))
