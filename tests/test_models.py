"""numpyro models: the coupling model's likelihood against brute force, the lattice field model
against Wick and first-order perturbation theory.

Oracles: scipy's multivariate normal with the explicitly assembled covariance; numerical
integration over the truncation scale; Isserlis's theorem by enumerating pairings; the
first-order diagrams of nngp_ppl.theory.diagrams evaluated on the same lattice (physics.md
§6). Monte Carlo tolerances are multiples of the Monte Carlo standard error (arviz-stats,
from the effective sample size) and say so.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from numpyro.infer.util import log_density

import nngp_ppl as nn
from nngp_ppl import NNGPInputError
from nngp_ppl.models import (
    CouplingProblem,
    FieldLattice,
    ScaleMixtureNormal,
    check_bounded,
    coupling_model,
    field_correlators,
    stable_cholesky,
    stack_problems,
)
from nngp_ppl.models.couplings import estimator_covariance, gaussian_moments
from nngp_ppl.models.field import MAX_FIELD_POINTS, interaction_spread, sample_field
from nngp_ppl.theory.diagrams import first_order_design
from nngp_ppl.theory.lattice import Lattice, box_lattice
from nngp_ppl.theory.wick import gp_correlator_tuples
from nngp_ppl.tuples import distinct_tuples, pairings


def _problem_data(seed=0, n_nets=20_000, lam=-2e-3):
    """EFT correlators of an Erf-net at three inputs with the GP estimator covariance."""
    net = nn.ErfNet(d_in=1)
    X = np.array([[-1.0], [0.2], [1.0]])
    K = np.asarray(net.kernel(X))
    gp = np.concatenate([gp_correlator_tuples(K, n) for n in (4, 6)])
    D = np.concatenate(
        [first_order_design(net, X, n, [5.0], ("lambda", "kappa"))[0] for n in (4, 6)]
    )
    cov = estimator_covariance(lambda m: gaussian_moments(K, m), 3, (4, 6), n_nets)
    L, _ = stable_cholesky(cov, rcond=0.0)
    rng = np.random.default_rng(seed)
    y = gp + D[:, 0] * lam + L @ rng.standard_normal(gp.size)
    return y, cov, gp, D


# --- covariance handling ---------------------------------------------------------------------


def test_gaussian_moments_order_12_match_isserlis_by_enumeration():
    K = np.asarray(nn.GaussNet(d_in=1, sigma_b=0.5).kernel(np.array([[-0.7], [0.1], [0.9]])))
    rows = distinct_tuples(3, 12)
    got = gaussian_moments(K, 12)
    for i in (0, 7, 50, len(rows) - 1):
        r = rows[i]
        brute = sum(np.prod([K[r[a], r[b]] for a, b in p]) for p in pairings(12))
        assert got[i] == pytest.approx(brute, rel=1e-12)


def test_estimator_covariance_matches_monte_carlo_of_gp_products():
    """(G_{s∪t} - G_s G_t)/n against the sample covariance of products of GP draws; the
    tolerance is 5 standard errors of a sample covariance entry (its variance estimated from
    the same draws)."""
    K = np.asarray(nn.ErfNet(d_in=1).kernel(np.array([[-1.0], [1.0]])))
    cov = estimator_covariance(lambda m: gaussian_moments(K, m), 2, (2, 4), 1)
    f = np.random.default_rng(3).multivariate_normal(np.zeros(2), K, size=400_000)
    prods = np.concatenate([np.prod(f[:, distinct_tuples(2, n)], axis=2) for n in (2, 4)], 1)
    c = prods - prods.mean(axis=0)
    mc = c.T @ c / (len(c) - 1)
    se = np.sqrt(np.einsum("ni,nj->ij", c**2, c**2) / len(c) - mc**2) / np.sqrt(len(c))
    assert np.all(np.abs(cov - mc) < 5 * se)


def test_stable_cholesky_is_exact_when_well_conditioned_and_only_inflates_otherwise():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    cov = A @ A.T + np.eye(6)
    L, floored = stable_cholesky(cov)
    assert floored == 0
    np.testing.assert_allclose(L @ L.T, cov, rtol=1e-12)
    v = rng.standard_normal((6, 2))
    singular = v @ v.T * np.array([1.0, 2, 3, 4, 5, 6])[:, None] ** 0  # rank 2
    singular += np.diag(np.full(6, 1e-300))
    L, floored = stable_cholesky(singular, rcond=1e-6)
    assert floored == 4
    # Regularised = original + a positive semi-definite matrix: never more confident.
    assert np.linalg.eigvalsh(L @ L.T - singular).min() > -1e-10 * np.abs(singular).max()


@pytest.mark.parametrize(
    "bad", [np.ones((3, 2)), np.full((2, 2), np.nan), np.diag([1.0, 0.0]), "x"]
)
def test_stable_cholesky_rejects_bad_covariances(bad):
    with pytest.raises(NNGPInputError, match="covariance"):
        stable_cholesky(bad)


# --- the coupling model's likelihood ---------------------------------------------------------


def test_rotated_likelihood_is_the_mvn_with_the_truncation_covariance():
    """u ~ N(UᵀL⁻¹Dg, 1 + c²μ) equals log N(y; GP + Dg, Σ' + c² M) up to -log|det L|, with
    M = (1-ρ)A² + ρ Σ_n a_n a_nᵀ assembled explicitly (Σ' the regularised covariance)."""
    y, cov, gp, D = _problem_data()
    p = CouplingProblem.build(y, cov, gp, D, ("lambda", "kappa"), blocks=[15, 28])
    S = p.scale_tril @ p.scale_tril.T
    logdet_L = np.sum(np.log(np.diag(p.scale_tril)))
    for g, c in [((-2e-3, 0.0), 0.0), ((-1e-3, 1e-5), 0.3), ((0.0, 2e-4), 2.0)]:
        cov_c = S + c**2 * p.truncation_matrix()
        mvn = scipy.stats.multivariate_normal(gp + D @ np.array(g), cov_c)
        assert p.loglik(g, c) - logdet_L == pytest.approx(mvn.logpdf(y), rel=1e-9, abs=1e-6)


def test_plain_model_is_the_mvn_with_the_fixed_cholesky_factor():
    y, cov, gp, D = _problem_data()
    p = CouplingProblem.build(y, cov, gp, D[:, :1], truncation=False)
    arrays, _ = stack_problems([p])
    model = functools.partial(coupling_model, couplings=("lambda",), truncation=False)
    for lam in (-3e-3, 0.0, 1e-3):
        logp, _ = log_density(model, (arrays,), {}, {"lambda": np.array([lam])})
        prior = scipy.stats.norm(0, p.prior_scale[0]).logpdf(lam)
        mvn = scipy.stats.multivariate_normal(gp + D[:, 0] * lam, p.scale_tril @ p.scale_tril.T)
        assert float(logp) - prior == pytest.approx(mvn.logpdf(y), rel=1e-9)


def test_grid_marginal_matches_numerical_integral_over_the_truncation_scale():
    """The model's likelihood is ∫ N(y | g, c) HalfNormal(c) dc; compare the grid mixture
    with adaptive quadrature in log c, for data with and without a truncation error."""
    y, cov, gp, D = _problem_data()
    model = functools.partial(coupling_model, couplings=("lambda",), truncation=True)
    for data in (y, y + 0.3 * np.abs(D[:, 0] * -2e-3)):
        p = CouplingProblem.build(data, cov, gp, D[:, :1], blocks=[15, 28])
        arrays, _ = stack_problems([p])
        for lam in (-2.1e-3, -1.5e-3):
            logp, _ = log_density(model, (arrays,), {}, {"lambda": np.array([lam])})
            got = float(logp) - scipy.stats.norm(0, p.prior_scale[0]).logpdf(lam)
            ll = np.array([p.loglik([lam], np.exp(t)) for t in np.linspace(-25, 2, 2000)])
            ref = ll.max()

            def integrand(t, lam=lam, ref=ref, p=p):
                c = np.exp(t)
                return np.exp(p.loglik([lam], c) - ref) * scipy.stats.halfnorm.pdf(c) * c

            val, _ = scipy.integrate.quad(integrand, -40, np.log(5.0), limit=400, points=[
                -25 + 27 * np.argmax(ll) / 1999])
            low = np.exp(p.loglik([lam], 0.0) - ref) * scipy.stats.halfnorm.cdf(np.exp(-40))
            expected = ref + np.log(val + low)
            # 1e-3 in log-likelihood: the grid's quadrature error, far below sampling noise.
            assert got == pytest.approx(expected, abs=1e-3)


def test_scale_mixture_normal_sampling_agrees_with_its_density():
    loc = np.array([0.5, -1.0])
    prec = np.array([[1.0, 4.0], [0.25, 1.0]])
    logw = np.log([0.3, 0.7]) + 0.5 * np.sum(np.log(prec), axis=1)
    d = ScaleMixtureNormal(loc, prec, logw)
    x = np.asarray(d.sample(jax.random.PRNGKey(0), (200_000,)))
    var = 0.3 / prec[0] + 0.7 / prec[1]
    assert np.all(np.abs(x.mean(axis=0) - loc) < 5 * np.sqrt(var / len(x)))
    np.testing.assert_allclose(x.var(axis=0), var, rtol=0.02)
    pt = np.array([0.1, 0.2])
    direct = np.log(
        0.3 * np.prod(scipy.stats.norm(loc, prec[0] ** -0.5).pdf(pt))
        + 0.7 * np.prod(scipy.stats.norm(loc, prec[1] ** -0.5).pdf(pt))
    )
    assert float(d.log_prob(pt)) == pytest.approx(direct, rel=1e-12)


def test_priors_are_weakly_informative():
    """The data-scaled prior is far wider than the likelihood (prior sd over the least-squares
    sd > 10, also for the nearly collinear pair (λ, κ)) and than the coupling the data
    support (> 5 |ĝ|), so it cannot pull the posterior."""
    y, cov, gp, D = _problem_data()
    for couplings in [("lambda",), ("lambda", "kappa")]:
        p = CouplingProblem.build(y, cov, gp, D[:, : len(couplings)], couplings)
        assert np.all(p.prior_scale / np.sqrt(np.diag(p.point_covariance)) > 10)
        assert np.all(p.prior_scale > 5 * np.abs(p.point_estimate))


def test_coupling_problem_rejects_bad_input():
    y, cov, gp, D = _problem_data()
    with pytest.raises(NNGPInputError, match="couplings"):
        CouplingProblem.build(y, cov, gp, D, ("lambda", "mu"))
    with pytest.raises(NNGPInputError, match="design"):
        CouplingProblem.build(y, cov, gp, D[:5], ("lambda", "kappa"))
    with pytest.raises(NNGPInputError, match="gp"):
        CouplingProblem.build(y, cov, gp[:-1], D, ("lambda", "kappa"))
    with pytest.raises(NNGPInputError, match="no first-order effect"):
        CouplingProblem.build(y, cov, gp, np.zeros((y.size, 1)))
    with pytest.raises(NNGPInputError, match="blocks"):
        CouplingProblem.build(y, cov, gp, D[:, :1], blocks=[10, 10])


# --- the lattice field model -----------------------------------------------------------------


@pytest.mark.parametrize("lam,kappa", [(-0.1, 0.0), (-1.0, -1e-3), (0.5, -1.0)])
def test_field_model_refuses_actions_unbounded_below(lam, kappa):
    with pytest.raises(NNGPInputError, match="unbounded below"):
        check_bounded(lam, kappa)


def _field():
    net = nn.GaussNet(d_in=1, sigma_w=1.0, sigma_b=0.5)
    X = np.array([[0.0], [0.6]])
    lattice = box_lattice(1, 1.0, "uniform", n_sites=6)
    return FieldLattice.build(net, X, lattice)


def _z(a, b, se):
    return np.abs(np.asarray(a) - np.asarray(b)) / np.asarray(se)


def test_field_model_without_couplings_reproduces_wick():
    """At λ = κ = 0 the lattice theory is the GP: G2 = K and G4 = Wick(K) within 4 Monte
    Carlo standard errors at every tuple (a 4σ band: the worst of 3 + 5 correlated tuples)."""
    ds = field_correlators(_field(), 0.0, 0.0, orders=(2, 4), num_samples=8000, num_warmup=500)
    assert ds.attrs["divergences"] == 0
    assert _z(ds.G2, ds.G2_gp, ds.G2_mcse).max() < 4
    assert _z(ds.G4, ds.G4_gp, ds.G4_mcse).max() < 4
    assert _z(ds.connected4, 0.0, ds.connected4_mcse).max() < 4


def test_field_model_matches_first_order_at_small_couplings():
    """With κ0 > 0 small, the symmetric difference [G(λ0, κ0) - G(-λ0, κ0)] / 2λ0 of the
    sampled lattice theory is the first-order λ coefficient up to O(λ0²) (the second order
    cancels): it matches the first-order diagrams on the same lattice, rule 4.5 off for the
    full 4-pt function (a lattice model has no counterterms) and the connected diagram for
    the connected 4-pt function, within 4 Monte Carlo standard errors of the difference,
    while being > 5 (full) and > 3 (connected) standard errors away from zero (so the match
    is not vacuous). The two runs are independent, so their errors add in quadrature."""
    field = _field()
    lam0, kappa0 = 2.5e-3, 1e-5
    plus = field_correlators(field, lam0, kappa0, orders=(2, 4), num_samples=8000,
                             num_warmup=500, seed=1)
    minus = field_correlators(field, -lam0, kappa0, orders=(2, 4), num_samples=8000,
                              num_warmup=500, seed=2)
    design = {
        rule: first_order_design(field.net, field.X, 4, None, ("lambda", "kappa"), "full",
                                 drop_two_point=rule, lattice=field.lattice)[0][:, 0]
        for rule in (False, True)
    }
    for name, rule, signal in (("G4", False, 5), ("connected4", True, 3)):
        diff = (plus[name] - minus[name]).values / (2 * lam0)
        se = np.hypot(plus[f"{name}_mcse"], minus[f"{name}_mcse"]).values / (2 * lam0)
        assert np.all(np.abs(design[rule]) / se > signal), name
        assert np.all(np.abs(diff - design[rule]) / se < 4), name
    # ... so first order is not flagged here (the flag is what the CLI prints).
    assert plus.attrs["first_order_reliable"] == minus.attrs["first_order_reliable"] == 1


def test_field_model_parts_from_first_order_at_large_couplings():
    """At (λ, κ) = (-5e-3, 1.25e-3) the first-order shift of G4 is about a third of G4; the
    sampled lattice theory departs from it by > 5 MC standard errors, towards the free theory
    (the sextic term saturates), and agrees, within 4 combined standard errors, with the exact
    lattice expectation by importance reweighting of 4·10⁵ independent GP draws,
    <f1..f4 e^-V>_GP / <e^-V>_GP (error by the delta method)."""
    field = _field()
    lam, kappa = -5e-3, 1.25e-3
    ds = field_correlators(field, lam, kappa, orders=(2, 4), num_samples=8000, num_warmup=500,
                           seed=3)
    assert np.all(_z(ds.G4, ds.G4_first_order, ds.G4_mcse) > 5)
    assert np.all(np.abs(ds.G4 - ds.G4_gp) < np.abs(ds.G4_first_order - ds.G4_gp))
    assert ds.attrs["first_order_reliable"] == 0  # ... and first order is flagged
    assert ds.attrs["divergences"] == 0

    pts = np.concatenate([field.X, field.lattice.points])
    K = np.asarray(field.net.kernel(pts))
    f = np.random.default_rng(7).multivariate_normal(np.zeros(len(pts)), K, size=400_000)
    sites = f[:, 2:]
    w = np.exp(-(sites**4 * (lam + kappa * sites**2)) @ field.lattice.weights)
    prod = np.prod(f[:, distinct_tuples(2, 4)], axis=2)
    exact = (prod * w[:, None]).mean(axis=0) / w.mean()
    infl = w[:, None] * (prod - exact) / w.mean()
    se = infl.std(axis=0) / np.sqrt(len(w))
    assert np.all(np.abs(ds.G4 - exact) / np.hypot(ds.G4_mcse, se) < 4)


def test_field_divergences_come_from_the_step_size_on_the_sextic_wall():
    """A strong sextic wall (κ = 10 on the 6-site test lattice) makes NUTS diverge at the
    former target acceptance 0.9 (18, 57, 21 divergences at seeds 0, 1, 2), and the default
    0.99 (smaller steps) removes them (0 at each of those seeds): the divergences are the
    step size on the wall, not a region out of the sampler's reach. Same shapes as the tests
    above, so the compiled sampler is shared."""
    field = _field()
    _, loose = sample_field(field, 0.0, 10.0, num_samples=8000, num_warmup=500,
                            target_accept=0.9)
    _, tight = sample_field(field, 0.0, 10.0, num_samples=8000, num_warmup=500)
    assert loose["diverging"].sum() > 10
    assert tight["diverging"].sum() == 0


def test_interaction_spread_matches_the_exact_moments_on_one_site():
    """On one site with weight w and free variance s, V = w(λ f⁴ + κ f⁶), f ~ N(0, s), so
    Var V = w²(λ² (105 - 9) s⁴ + 2λκ (945 - 45) s⁵ + κ² (10395 - 225) s⁶) from the normal
    moments E f^2m = (2m-1)!! s^m. Tolerance: 4 standard errors of the sample variance,
    sd((V - V̄)²)/√n, measured on independent draws of the same size."""
    net = nn.GaussNet(d_in=1, sigma_w=1.0, sigma_b=0.5)
    lattice = Lattice(np.array([[0.3]]), np.array([0.7]))
    field = FieldLattice.build(net, np.array([[0.0]]), lattice)
    s = float(net.kernel(np.array([[0.3]]))[0, 0])
    w, lam, kappa = 0.7, -0.01, 0.002
    exact = w**2 * (lam**2 * 96 * s**4 + 2 * lam * kappa * 900 * s**5
                    + kappa**2 * 10170 * s**6)
    n = 1 << 14
    f = np.sqrt(s) * np.random.default_rng(11).standard_normal(n)
    V = w * f**4 * (lam + kappa * f**2)
    se = np.std((V - V.mean()) ** 2) / np.sqrt(n)
    assert abs(interaction_spread(field, lam, kappa, n_draws=n) ** 2 - exact) < 4 * se


def test_a_uniform_box_smaller_than_the_inputs_is_refused():
    # gauss_legendre refused it already; a uniform lattice was accepted silently.
    net = nn.GaussNet(d_in=1)
    lattice = box_lattice(1, 0.3, "uniform", n_sites=4)
    with pytest.raises(NNGPInputError, match=r"^cutoff must be at least the inputs' extent "
                                             r"max\|x_i\| = 0.5 .* got 0.3"):
        FieldLattice.build(net, np.array([[0.0], [0.5]]), lattice)


def test_a_field_too_large_for_a_dense_factor_is_refused_before_the_kernel():
    net = nn.GaussNet(d_in=1)
    lattice = box_lattice(1, 1.0, "uniform", n_sites=MAX_FIELD_POINTS)
    with pytest.raises(NNGPInputError, match=r"^lattice: the field model holds dense "
                                             r"\(4,098 x 4,098\).* at most 4094 sites"):
        FieldLattice.build(net, np.array([[0.0], [0.5]]), lattice)
