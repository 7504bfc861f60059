"""The free part of the fits (nngp_ppl.inference.two_point): λ must not absorb a 2-pt shift.

Oracle: a synthetic "network" that is exactly Gaussian, f = s(N) (σ_b a_0 + a_1 erf(x) +
a_2 cos(x)) with a ~ N(0, I), so its 2-pt function is G2 = s(N)² K with s(N)² = 1 + 1/N
(G2 ≠ K, like a deep MLP's) while every connected correlator beyond the 2-pt function is
exactly zero: the true λ is 0.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nngp_ppl as nn
from nngp_ppl.inference import eft
from nngp_ppl.inference import two_point as tp
from nngp_ppl.theory.wick import gp_correlator_tuples
from nngp_ppl.tuples import distinct_tuples, expand

SB = 0.5
X3 = np.array([[-1.0], [0.3], [1.0]])
#: The NUTS settings of tests/test_inference.py's γ and β tests: one width of the 4-pt
#: function on three inputs compiles to the same program, which the persistent cache reuses.
RUN = {"num_chains": 4, "num_samples": 500, "num_warmup": 300}


def _features(X):
    x = X[:, 0]
    return jnp.stack([jnp.full_like(x, SB), jax.scipy.special.erf(x), jnp.cos(x)], axis=1)


def gauss_kernel(X, Y):
    """K(x, y) = σ_b² + erf(x) erf(y) + cos(x) cos(y): the infinite-width kernel."""
    return _features(X) @ _features(Y).T


def gauss_init(key, width):
    return {"a": jax.random.normal(key, (3,)), "s": jnp.sqrt(1.0 + 1.0 / width)}


def gauss_apply(params, X):
    return params["s"] * (_features(X) @ params["a"])


def shifted_gaussian():
    return nn.JaxNetwork(gauss_init, gauss_apply, d_in=1, name="gauss_shift",
                         kernel=gauss_kernel, sigma_b=SB)


@pytest.fixture(scope="module")
def gauss_stats():
    return nn.sample_correlators(shifted_gaussian(), X3, [4], 40_000, orders=(2, 4), seed=1,
                                 progress=False)


def test_wick_jacobian_matches_finite_differences():
    """J = ∂Wick_n/∂G2 against central differences of the Wick sums (a polynomial of
    degree n/2: the difference error is O(h²) with h = 1e-5)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    G2 = A @ A.T + np.eye(3)
    pairs = distinct_tuples(3, 2)
    for n in (4, 6):
        J = tp.wick_jacobian(G2, n)
        h = 1e-5
        for p, (a, b) in enumerate(pairs):
            E = np.zeros((3, 3))
            E[a, b] = E[b, a] = h
            fd = (gp_correlator_tuples(G2 + E, n) - gp_correlator_tuples(G2 - E, n)) / (2 * h)
            np.testing.assert_allclose(J[:, p], fd, rtol=1e-7, atol=1e-7)


def test_propagated_noise_matches_replicate_runs():
    """Cov(Ĝ4 - Wick(Ĝ2)) linearised from the joint estimator covariance of (Ĝ2, Ĝ4) (exact
    Gaussian moments) against the spread of 400 replicate runs of 2000 Gaussian draws. The
    variance of a variance estimate from R replicates has relative s.d. √(2/R) = 7%, so the
    diagonal ratios must lie within 0.75..1.33 (4 s.d.) — and the naive Var(Ĝ4) alone, the
    covariance that ignores Ĝ2's noise, must not."""
    from nngp_ppl.inference.models.couplings import estimator_covariance, gaussian_moments

    K = np.asarray(gauss_kernel(jnp.asarray(X3), jnp.asarray(X3)))
    L = np.linalg.cholesky(K)
    rng = np.random.default_rng(1)
    R, M = 400, 2000
    rows = distinct_tuples(3, 4)
    rhat = np.empty((R, len(rows)))
    for i in range(R):
        f = rng.standard_normal((M, 3)) @ L.T
        G4 = np.mean(np.prod(f[:, rows], axis=2), axis=0)
        rhat[i] = G4 - gp_correlator_tuples(f.T @ f / M, 4)
    full = estimator_covariance(lambda m: gaussian_moments(K, m), 3, (2, 4), M)
    _, jac = tp.free_part(K, (4,))
    ratio = np.var(rhat, axis=0, ddof=1) / np.diag(tp.propagate(full, jac))
    assert np.all((ratio > 0.75) & (ratio < 1.33)), ratio
    naive = np.var(rhat, axis=0, ddof=1) / np.diag(full)[6:]
    assert np.all(naive < 0.75)  # measured 0.25-0.53: the subtraction cancels noise


def test_point_fit_does_not_absorb_the_two_point_shift(gauss_stats):
    """Exact oracle: the true λ is 0. Subtracting Wick(Ĝ2) gives λ within 4 of its standard
    errors of 0; subtracting Wick(K) (rule 4.5 as stated, the old behaviour) gives the
    projection of Wick(G2) - Wick(K) = ((1 + 1/N)² - 1) Wick(K), many errors away."""
    net = shifted_gaussian()
    assert net.two_point_exact is False
    kw = dict(width=4, couplings=("lambda",), orders=(4,), weighting="estimand")
    with warnings.catch_warnings():
        warnings.simplefilter("error", nn.TwoPointWarning)  # 'measured': nothing to warn
        fixed = eft.fit_couplings(gauss_stats, [5.0, 20.0], **kw)
    assert fixed.two_point == "measured"
    assert np.all(np.abs(fixed.values[:, 0]) < 4 * fixed.stderr[:, 0])

    old = eft.fit_couplings(gauss_stats, [5.0, 20.0], two_point="kernel", **kw)
    K = tp.kernel(net, X3)
    shift = {4: ((1 + 1 / 4) ** 2 - 1) * gp_correlator_tuples(K, 4) + gp_correlator_tuples(K, 4)}
    predicted = eft.fit_couplings(shift, [5.0, 20.0], net=net, X=X3, couplings=("lambda",),
                                  orders=(4,), weighting="estimand", two_point="kernel")
    assert np.all(np.abs(old.values[:, 0]) > 10 * old.stderr[:, 0])
    assert np.all(np.abs(old.values[:, 0] - predicted.values[:, 0]) < 4 * old.stderr[:, 0])

    # λ̄ (the paper's mean over tuples) and the per-tuple couplings follow the same choice.
    lbar = eft.mean_coupling(net, X3, gauss_stats, [5.0], width=4)
    np.testing.assert_allclose(lbar, fixed.values[:1, 0], rtol=1e-10)


def test_posterior_does_not_absorb_the_two_point_shift(gauss_stats):
    """The posterior of λ on r = G - Wick(G2): its mean within 4 posterior s.d. of the true
    0, its attributes say which free part was subtracted, and the point estimate and its
    s.d. equal the point fit's (the same estimand and propagated noise)."""
    from nngp_ppl.inference.couplings import infer_couplings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt = infer_couplings(gauss_stats, cutoffs=[5.0], compare=False, **RUN)
    lam = dt.posterior["lambda"].values
    assert abs(lam.mean()) < 4 * lam.std()
    assert dt.attrs["two_point"] == "measured" and "measured" in dt.attrs["free_part"]
    G2 = expand(gauss_stats.correlator_tuples(2, 4), 3, 2)
    np.testing.assert_allclose(dt.constant_data["free_part"].values[0],
                               gp_correlator_tuples(G2, 4))
    fit = eft.fit_couplings(gauss_stats, [5.0], width=4, couplings=("lambda",), orders=(4,),
                            weighting="estimand")
    np.testing.assert_allclose(dt.constant_data["point_estimate"].values.ravel(),
                               fit.values.ravel(), rtol=1e-8)
    np.testing.assert_allclose(dt.constant_data["point_sd"].values.ravel(), fit.stderr.ravel(),
                               rtol=0.05)  # the posterior's noise factor floors eigenvalues


def test_two_point_choice_is_validated(gauss_stats):
    net = shifted_gaussian()
    with pytest.raises(nn.NNGPInputError, match="two_point must be one of"):
        eft.fit_couplings(gauss_stats, [5.0], width=4, couplings=("lambda",), orders=(4,),
                          two_point="connected")
    G4 = gauss_stats.correlator_tuples(4, 4)
    with pytest.raises(nn.NNGPInputError, match="needs the measured 2-pt function"):
        eft.mean_coupling(net, X3, G4, [5.0], two_point="measured")
    # 'auto' without a 2-pt function falls back to K and says that λ absorbs the shift.
    with pytest.warns(nn.TwoPointWarning):
        eft.mean_coupling(net, X3, G4, [5.0])
    # A net whose 2-pt function is K keeps rule 4.5 (the paper's fits are unchanged).
    assert tp.resolve(nn.ErfNet(), "auto", True) == "kernel"


# --- a Monte Carlo kernel's error (JaxNetwork without a kernel formula) ------------------


def erf1_init(key, width):
    """A single-layer Erf-net (σ_W = σ_b = 1, d_in = 1), as a user would write it."""
    kw, kb, ka, kc = jax.random.split(key, 4)
    return {"w": jax.random.normal(kw, (width, 1)), "b": jax.random.normal(kb, (width,)),
            "a": jax.random.normal(ka, (width,)) / width**0.5, "c": jax.random.normal(kc, ())}


def erf1_apply(params, X):
    return jax.lax.erf(X @ params["w"].T + params["b"]) @ params["a"] + params["c"]


def _mc_erf(nets, seed=12345):
    return nn.JaxNetwork(erf1_init, erf1_apply, 1, name="my_erf1", sigma_b=1.0,
                         kernel_width=16, kernel_nets=nets, kernel_seed=seed,
                         two_point_exact=True)


@pytest.fixture(scope="module")
def mc_stats():
    """2·10⁴ single-layer Erf-nets at N = 3 with the 64-network Monte Carlo kernel, seed 2:
    the point fit's and the posterior's kernel-error tests read the same run."""
    return nn.sample_correlators(_mc_erf(64), X3, [3], 20_000, orders=(2, 4), seed=2,
                                 progress=False)


def test_kernel_error_propagation_matches_the_spread_over_kernel_seeds():
    """Oracle: 40 independent Monte Carlo kernels (disjoint groups of M = 64 networks). The
    λ̄ of the exact ErfNet correlators at N = 3 (design from each K̂, free part Wick(Ĝ2)
    or Wick(K̂)) scatters over them by the linearised prediction (mean predicted variance).
    An s.d. from 40 draws is uncertain by 11 %, so the ratio must lie in 0.7..1.4 (3 s.d.).
    The vertex integrals of kernel_influence are the design's to round-off."""
    from nngp_ppl.theory import lattice
    from nngp_ppl.theory.diagrams import first_order_design
    from nngp_ppl.theory.exact import exact_correlator_tuples

    cut, M, groups = 5.0, 64, 40
    erf = nn.ErfNet()
    G2 = expand(exact_correlator_tuples(erf, X3, 3, 2), 3, 2)
    G4 = exact_correlator_tuples(erf, X3, 3, 4)
    I, _, _ = tp.kernel_influence(_mc_erf(M), X3, cut)
    D = first_order_design(_mc_erf(M), X3, 4, [cut], ("lambda",))[0, :, 0]
    np.testing.assert_allclose(-24 * I, D, rtol=1e-10)
    big = _mc_erf(M * groups)
    lat = lattice.box_lattice(1, cut, split_points=X3, scale=lattice.kernel_scale(big))
    FX = np.asarray(big._kernel_networks(jnp.asarray(X3)))
    FY = np.asarray(big._kernel_networks(jnp.asarray(lat.points)))
    for mode in ("measured", "kernel"):
        values, predicted = [], []
        for g in range(groups):
            part = slice(g * M, (g + 1) * M)
            inf = tp.influence_from_outputs(FX[part], FY[part], lat.weights)
            K = FX[part].T @ FX[part] / M
            free = gp_correlator_tuples(G2 if mode == "measured" else K, 4)
            values.append(np.mean((G4 - free) / (-24 * inf[0])))
            predicted.append(tp.kernel_coupling_variance(None, X3, cut, G4 - free, None, mode,
                                                         influence=inf))
        ratio = np.std(values, ddof=1) / np.sqrt(np.mean(predicted))
        assert 0.7 < ratio < 1.4, (mode, ratio)


def test_kernel_error_widens_the_fit_and_vanishes_with_many_networks(mc_stats):
    """The point fit's variance is the statistical sandwich plus the kernel's share, which
    falls as 1/M: with 64 kernel networks it dominates the λ̄ interval of 2·10⁴ sampled
    networks (free part Wick(Ĝ2): the design's error alone; measured 72 %), with 8192 it
    is below 5 % (4.8 % already at 4096); with an exact kernel it is zero and the rest is
    the same sandwich."""
    stats = mc_stats
    kw = dict(width=3, couplings=("lambda",), orders=(4,), weighting="estimand",
              two_point="measured")
    few = eft.fit_couplings(stats, [5.0], net=_mc_erf(64), **kw)
    many = eft.fit_couplings(stats, [5.0], net=_mc_erf(8192), **kw)
    exact = nn.JaxNetwork(erf1_init, erf1_apply, 1, name="my_erf1", sigma_b=1.0,
                          kernel=nn.ErfNet(), two_point_exact=True)
    ref = eft.fit_couplings(stats, [5.0], net=exact, **kw)
    assert ref.kernel_error.startswith("none") and np.all(ref.kernel_variance == 0)
    assert few.kernel_error.startswith("design and free part")
    share_few = few.kernel_variance[0, 0] / few.covariance[0, 0, 0]
    share_many = many.kernel_variance[0, 0] / many.covariance[0, 0, 0]
    assert share_few > 0.5 and share_many < 0.05, (share_few, share_many)
    # 1/M: 128 times the networks, within the noise of the two variance estimates
    ratio = few.kernel_variance[0, 0] / many.kernel_variance[0, 0]
    assert 128 / 2 < ratio < 128 * 2, ratio
    # The statistical part is the exact kernel's sandwich up to the 1/D² it scales with (D
    # from K̂ is a few % off the exact design: 9.5 % in the variance at M = 4096).
    np.testing.assert_allclose(many.covariance[0, 0, 0] - many.kernel_variance[0, 0],
                               ref.covariance[0, 0, 0], rtol=0.2)


def test_posterior_carries_the_kernel_error(mc_stats):
    """The posterior of λ with a 64-network Monte Carlo kernel is wider than with the exact
    kernel (same networks) by the linearised kernel variance of the point fit:
    sd² ≈ sd_exact² + Var_K within 15 % in sd (NUTS error of 4 x 500 draws, ~3 %, and the
    few-% design difference of the statistical part); the attributes say so."""
    from nngp_ppl.inference.couplings import infer_couplings

    exact = nn.JaxNetwork(erf1_init, erf1_apply, 1, name="my_erf1", sigma_b=1.0,
                          kernel=nn.ErfNet(), two_point_exact=True)
    sd, kw = {}, dict(cutoffs=[5.0], compare=False, two_point="measured", **RUN)
    for name, net in (("mc", None), ("exact", exact)):
        stats = mc_stats if net is None else nn.sample_correlators(
            net, X3, [3], 20_000, orders=(2, 4), seed=2, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dt = infer_couplings(stats, **kw)
        sd[name] = float(dt.posterior["lambda"].values.std())
        if name == "mc":
            assert dt.attrs["kernel_noise"].startswith("design: linearised")
            fit = eft.fit_couplings(stats, [5.0], width=3, couplings=("lambda",), orders=(4,),
                                    weighting="estimand", two_point="measured")
            kvar = fit.kernel_variance[0, 0]
        else:
            assert dt.attrs["kernel_noise"].startswith("none")
    assert kvar > sd["exact"] ** 2  # the kernel error dominates here
    np.testing.assert_allclose(sd["mc"], np.sqrt(sd["exact"] ** 2 + kvar), rtol=0.15)
