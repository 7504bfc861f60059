"""Coupling posteriors, the diagnostics gate, β-function posteriors, comparisons and the CLI.

Oracles: the conjugate normal posterior of the linear-Gaussian model; synthetic correlators
drawn from the EFT itself at known couplings (calibration); noise-free exact finite-width
correlators (nngp_ppl.theory.exact) with the estimator covariance of the GP moments; the
closed-form exponents of physics.md §8 and the independently computed local exponents of
the vertex integrals (nngp_ppl.theory.lattice). Statistical tolerances are derived from the
binomial or Monte Carlo standard error and say so; every seed is fixed.

Posteriors here use three inputs (15 + 28 observables) and one sampler configuration, so
the sampler compiles once per model shape.
"""

from __future__ import annotations

import warnings

import arviz_base
import jax
import numpy as np
import pytest
import xarray as xr

import nngp_ppl as nn
from nngp_ppl import NNGPInputError, cli, eft
from nngp_ppl.inference import (
    DiagnosticsWarning,
    beta_function,
    compare_point_estimates,
    diagnostics_gate,
    infer_couplings,
    sample_coupling_posterior,
)
from nngp_ppl.inference.flow import design_function
from nngp_ppl.inference.plots import plot_beta, plot_coupling_posteriors, plot_running
from nngp_ppl.models import CouplingProblem, stable_cholesky
from nngp_ppl.models.couplings import estimator_covariance, gaussian_moments
from nngp_ppl.theory.diagrams import first_order_design
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.theory.lattice import vertex_integral_exponents
from nngp_ppl.theory.wick import gp_correlator_tuples
from nngp_ppl.tuples import distinct_tuples

RUN = {"num_chains": 4, "num_samples": 500, "num_warmup": 300}
ERF3 = np.array([[-1.0], [0.2], [1.0]])


class ArrayStats:
    """Correlators given as arrays, with the CorrelatorStats interface infer_couplings reads."""

    def __init__(self, net, X, means, n_nets, orders, seed=0):
        self.net, self.X, self.orders, self.seed = net, np.asarray(X), tuple(orders), seed
        self._means, self._n = means, n_nets
        self.widths = tuple(sorted(means))

    def correlator_tuples(self, n, width):
        return self._means[width][n]

    def n_nets(self, width):
        return self._n[width]

    @property
    def k(self):
        return len(self.X)


def exact_stats(net, X, widths, n_nets, orders=(4, 6)):
    means = {w: {n: exact_correlator_tuples(net, X, w, n) for n in orders} for w in widths}
    return ArrayStats(net, X, means, {w: n_nets for w in widths}, orders)


def _eft_problems(reps, couplings=("lambda",), truncation=True, cbar_true=0.0, seed=0):
    """Replications of Erf-net correlators drawn from the first-order EFT at known couplings,
    noise from the GP estimator covariance of 2·10⁴ nets, plus (optionally) a truncation
    error drawn from the model's own truncation covariance at relative size cbar_true."""
    net = nn.ErfNet(d_in=1)
    K = np.asarray(net.kernel(ERF3))
    gp = np.concatenate([gp_correlator_tuples(K, n) for n in (4, 6)])
    D = np.concatenate([first_order_design(net, ERF3, n, [5.0], couplings)[0] for n in (4, 6)])
    cov = estimator_covariance(lambda m: gaussian_moments(K, m), 3, (4, 6), 20_000)
    L, _ = stable_cholesky(cov)
    g_true = np.array([-2e-3, 1e-4])[: len(couplings)]
    mean = gp + D @ g_true
    shape = np.abs(D @ g_true)
    M = 0.5 * np.diag(shape**2)
    for a, b in ((0, 15), (15, 43)):
        M[a:b, a:b] += 0.5 * np.outer(shape[a:b], shape[a:b])
    trunc = np.linalg.cholesky(M + 1e-30 * np.eye(43))
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(reps):
        y = mean + L @ rng.standard_normal(43) + cbar_true * trunc @ rng.standard_normal(43)
        problems.append(CouplingProblem.build(y, cov, gp, D, couplings, truncation=truncation,
                                              blocks=[15, 28]))
    return problems, g_true


def _coverage(out, name, truth, prob=0.9):
    d = out[name].reshape(-1, out[name].shape[-1])
    lo, hi = np.quantile(d, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return float(np.mean((lo <= truth) & (truth <= hi)))


# --- calibration -----------------------------------------------------------------------------


def test_credible_intervals_are_calibrated_on_eft_data():
    """60 replications of correlators drawn from the EFT at λ0: the 90% intervals of the
    default model (truncation term on) cover λ0 in 90% ± 7% of them. The binomial standard
    error of the coverage is sqrt(0.09/60) = 3.9%, so the band is 1.8 standard errors."""
    problems, g_true = _eft_problems(60)
    out = sample_coupling_posterior(problems, jax.random.PRNGKey(0), **RUN)
    assert out["diverging"].sum() == 0
    assert abs(_coverage(out, "lambda", g_true[0]) - 0.9) <= 0.07


@pytest.mark.slow
def test_truncation_term_keeps_intervals_calibrated_when_first_order_is_not_enough():
    """50 replications whose correlators carry, besides the noise, missing higher orders of
    relative size 0.5 (drawn from the truncation model's own covariance). With the inferred
    truncation term the 90% intervals still cover λ0 in 90% ± 8% of replications (binomial
    standard error 4.2%); the plain model, which ignores the missing orders, covers it far
    less often (below 60%)."""
    for truncation, ok in ((True, lambda c: abs(c - 0.9) <= 0.08), (False, lambda c: c < 0.6)):
        problems, g_true = _eft_problems(50, truncation=truncation, cbar_true=0.5, seed=1)
        out = sample_coupling_posterior(problems, jax.random.PRNGKey(1), **RUN)
        cov = _coverage(out, "lambda", g_true[0])
        assert ok(cov), (truncation, cov)


def test_nuts_reproduces_the_conjugate_posterior():
    """Without the truncation term the model is linear-Gaussian with a normal prior, so the
    posterior is normal with precision P0 + DᵀΣ⁻¹D: NUTS mean and sd agree within 4 Monte
    Carlo standard errors (mean: sd/sqrt(ESS); sd: about sd/sqrt(2 ESS))."""
    import arviz_stats

    (p,), _ = _eft_problems(1, truncation=False, seed=5)
    A = np.linalg.solve(p.scale_tril, p.design)
    r = np.linalg.solve(p.scale_tril, p.observed - p.gp)
    prec = A.T @ A + np.diag(p.prior_scale**-2.0)
    mean = np.linalg.solve(prec, A.T @ r)[0]
    sd = np.sqrt(np.linalg.inv(prec)[0, 0])
    out = sample_coupling_posterior(p, jax.random.PRNGKey(2), **RUN)
    draws = out["lambda"][..., 0]
    ess = float(arviz_stats.ess(draws))
    assert abs(draws.mean() - mean) < 4 * sd / np.sqrt(ess)
    assert abs(draws.std() - sd) < 4 * sd / np.sqrt(2 * ess)


# --- infer_couplings on noise-free exact correlators -----------------------------------------


GAUSS = nn.GaussNet(d_in=1)
GAUSS_X = np.array([[-0.01], [0.002], [0.01]])


def test_infer_couplings_returns_a_complete_datatree(tmp_path):
    stats = exact_stats(nn.ErfNet(d_in=1), ERF3, (5, 50), 100_000)
    dt = infer_couplings(stats, cutoffs=[5.0, 50.0], seed=3, **RUN)
    assert {"posterior", "sample_stats", "observed_data", "constant_data"} <= set(dt.children)
    post = dt["posterior"]
    assert post["lambda"].dims == ("chain", "draw", "width", "cutoff")
    assert post["cbar"].dims == ("chain", "draw", "width", "cutoff")
    assert list(post["width"].values) == [5, 50]
    np.testing.assert_allclose(post["cutoff"].values, [5.0, 50.0])
    assert dt["sample_stats"]["diverging"].dims == ("chain", "draw", "width", "cutoff")
    np.testing.assert_allclose(dt["observed_data"]["G4"].sel(width=50).values,
                               exact_correlator_tuples(stats.net, ERF3, 50, 4))
    for key in ("ensemble", "couplings", "orders", "propagator", "covariance", "seed",
                "nngp_ppl_version", "diagnostics_passed"):
        assert key in dt.attrs
    assert dt.attrs["diagnostics_passed"] == int(diagnostics_gate(dt, warn=False).passed)
    # Same seed, same draws, whatever else is fitted alongside.
    alone = infer_couplings(stats, cutoffs=[50.0], widths=[50], seed=3, **RUN)
    np.testing.assert_array_equal(alone["posterior"]["lambda"].sel(width=50, cutoff=50.0),
                                  post["lambda"].sel(width=50, cutoff=50.0))
    path = tmp_path / "post.nc"
    dt.to_netcdf(path, engine="h5netcdf")
    back = xr.open_datatree(path, engine="h5netcdf")
    np.testing.assert_array_equal(back["posterior"]["lambda"].values, post["lambda"].values)


def test_posterior_contains_noise_free_estimate_and_shrinks_as_root_n():
    """Exact Gauss-net 4-pt correlators (N = 100, inputs 0.01 apart, where the first-order EFT
    describes every tuple) with the estimator covariance of n networks: the 90% interval
    contains the paper's noise-free λ̄ and the least-squares fit on the same exact data, and
    the posterior sd at n = 10⁴ over that at 10⁵ is sqrt(10) within 10% (the truncation
    term, inferred near zero here, does not stop the 1/sqrt(n) shrinkage)."""
    sds = []
    for n_nets in (10_000, 100_000):
        stats = exact_stats(GAUSS, GAUSS_X, (100,), n_nets, orders=(4,))
        dt = infer_couplings(stats, cutoffs=[10.0], orders=(4,), seed=4, **RUN)
        lam = dt["posterior"]["lambda"].values.ravel()
        lo, hi = np.quantile(lam, [0.05, 0.95])
        g4 = stats.correlator_tuples(4, 100)
        lam_bar = eft.mean_coupling(GAUSS, GAUSS_X, g4, [10.0])[0]
        wls = eft.fit_couplings({4: g4}, [10.0], net=GAUSS, X=GAUSS_X, couplings=("lambda",),
                                orders=(4,), weighting="relative").values[0, 0]
        assert lo <= lam_bar <= hi and lo <= wls <= hi
        sds.append(lam.std())
    assert sds[0] / sds[1] == pytest.approx(np.sqrt(10), rel=0.1)


def test_infer_couplings_rejects_bad_input():
    stats = exact_stats(nn.ErfNet(d_in=1), ERF3, (5,), 10_000)
    with pytest.raises(NNGPInputError, match="cutoff"):
        infer_couplings(stats, cutoffs=[-1.0])
    with pytest.raises(NNGPInputError, match="widths"):
        infer_couplings(stats, cutoffs=[5.0], widths=[7])
    with pytest.raises(NNGPInputError, match="couplings"):
        infer_couplings(stats, cutoffs=[5.0], couplings=("mu",))
    with pytest.raises(NNGPInputError, match="X must be the inputs"):
        infer_couplings(stats, X=ERF3 * 2, cutoffs=[5.0])
    with pytest.raises(NNGPInputError, match="covariance"):
        infer_couplings(stats, cutoffs=[5.0], covariance="guess")
    with pytest.raises(NNGPInputError, match="exact"):
        infer_couplings(stats, cutoffs=[5.0], covariance="exact")  # erf: order 12 unavailable


# --- the diagnostics gate --------------------------------------------------------------------


def test_gate_fails_loudly_naming_width_and_cutoff():
    rng = np.random.default_rng(0)
    lam = rng.normal(size=(4, 500, 2, 2))
    lam[:, :, 1, 0] += np.arange(4)[:, None] * 3.0  # chains that never met
    div = np.zeros((4, 500, 2, 2), dtype=bool)
    div[0, 3, 0, 1] = True
    dt = arviz_base.from_dict(
        {"posterior": {"lambda": lam}, "sample_stats": {"diverging": div}},
        dims={"lambda": ["width", "cutoff"], "diverging": ["width", "cutoff"]},
        coords={"width": [10, 100], "cutoff": [5.0, 50.0]},
    )
    with pytest.warns(DiagnosticsWarning, match=r"width=100, cutoff=5") as rec:
        gate = diagnostics_gate(dt)
    assert "width=10, cutoff=50" in str(rec[0].message)  # the divergence
    assert not gate.passed
    assert set(gate.failures) == {(100, 5.0), (10, 50.0)}
    good = gate.table[(gate.table["width"] == 10) & (gate.table["cutoff"] == 5.0)]
    assert bool(good["ok"].iloc[0]) and good["r_hat"].iloc[0] < 1.01


# --- β-functions -----------------------------------------------------------------------------


def _gamma_posterior(net, X, width, cutoffs, seed):
    stats = exact_stats(net, X, (width,), 100_000)
    with warnings.catch_warnings():
        # The gate's 400-ESS threshold is for production runs (4 x 1000 draws); the short
        # test runs are checked for divergences instead.
        warnings.simplefilter("ignore", DiagnosticsWarning)
        dt = infer_couplings(stats, cutoffs=cutoffs, seed=seed, **RUN)
    assert int(dt["sample_stats"]["diverging"].sum()) == 0
    return dt, beta_function(dt)


@pytest.mark.parametrize(
    "net,X,gamma",
    [
        (nn.GaussNet(d_in=1), GAUSS_X, 1.0),
        (nn.GaussNet(d_in=2), 0.01 * np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]]), 2.0),
        (nn.ReLUNet(d_in=1, sigma_b=0.0), np.array([[0.2], [0.6], [1.2]]), 5.0),
    ],
    ids=["gauss-d1", "gauss-d2", "relu-sb0-d1"],
)
def test_gamma_posterior_contains_the_analytic_exponent(net, X, gamma):
    """physics.md §8: Gauss-net with full K runs with γ = d_in, ReLU-net with σ_b = 0 with
    γ = 5 (exactly, at every cutoff). The asymptotic γ's 90% interval contains it."""
    _, beta = _gamma_posterior(net, X, 100, [1e4, 1e5], seed=5)
    g = beta["posterior"]["gamma"].values.ravel()
    lo, hi = np.quantile(g, [0.05, 0.95])
    assert float(beta["constant_data"]["gamma_analytic"]) == gamma
    assert lo - 1e-9 <= gamma <= hi + 1e-9


def test_running_shares_the_common_uncertainty_and_matches_the_vertex_exponents():
    """Erf-net, three cutoffs. (1) The local exponent -β/λ equals the tuple-averaged
    d log I_t / d log Λ of the vertex integrals (computed independently by
    vertex_integral_exponents) to 1e-3: the running comes from the integrals, not the data.
    (2) The per-draw regression of log|λ| along one joint trajectory has a far smaller
    spread than the same regression across independent per-cutoff posteriors (> 10 times),
    which treats the shared uncertainty of λ as independent noise at each cutoff."""
    net = nn.GaussNet(d_in=1)
    cutoffs = [1e3, 1e4, 1e5]
    dt, beta = _gamma_posterior(net, GAUSS_X, 100, cutoffs, seed=6)
    exps = vertex_integral_exponents(net, GAUSS_X, distinct_tuples(3, 4), cutoffs).mean(axis=1)
    local = beta["posterior"]["gamma_local"].median(("chain", "draw")).sel(width=100).values
    np.testing.assert_allclose(local, exps, rtol=1e-3)
    joint = beta["posterior"]["gamma_slope"].values.std()
    indep = beta["posterior"]["gamma_independent"].values.std()
    assert indep > 10 * joint


def test_design_function_matches_physics_md_formulas_and_its_derivative():
    """The differentiable design equals an independent assembly of physics.md §6
    (ΔG4 = -24λ I - 360κ I⁽¹⁾, ΔG6 = -24λ Σ15 I K - 720κ I₆ - 360κ Σ15 I⁽¹⁾ K) from
    scipy-free Gauss–Legendre quadrature, and its JAX derivative in log Λ equals a central
    finite difference."""
    net = nn.ErfNet(d_in=1, sigma_b=0.7)
    X = ERF3
    fn = design_function(net, X, (4, 6), ("lambda", "kappa"), max_cutoff=100.0)
    t, w = np.polynomial.legendre.leggauss(400)

    def integral(rows, cutoff, loops):
        y = np.concatenate([(t + 1) / 2 * (-cutoff), (t + 1) / 2 * cutoff])[:, None]
        ww = np.concatenate([w, w]) * cutoff / 2
        Ky = np.asarray(net.kernel(X, y))
        Kyy = np.diag(np.asarray(net.kernel(y)))
        return (np.prod(Ky[rows], axis=1) * Kyy**loops) @ ww

    cut = 8.0
    K = np.asarray(net.kernel(X))
    r4, r6 = distinct_tuples(3, 4), distinct_tuples(3, 6)
    ref4 = np.stack([-24 * integral(r4, cut, 0), -360 * integral(r4, cut, 1)], axis=1)
    lam6, kap6 = np.zeros(len(r6)), -720 * integral(r6, cut, 0)
    for e in range(6):
        for f in range(e + 1, 6):
            rest = [i for i in range(6) if i not in (e, f)]
            Kef = K[r6[:, e], r6[:, f]]
            lam6 += -24 * integral(r6[:, rest], cut, 0) * Kef
            kap6 += -360 * integral(r6[:, rest], cut, 1) * Kef
    ref = np.concatenate([ref4, np.stack([lam6, kap6], axis=1)])
    np.testing.assert_allclose(np.asarray(fn(cut)), ref, rtol=1e-9)
    g = lambda s: np.asarray(fn(np.exp(s)))  # noqa: E731
    _, dD = jax.jvp(lambda s: fn(jax.numpy.exp(s)), (np.log(cut),), (1.0,))
    h = 1e-5
    np.testing.assert_allclose(np.asarray(dD), (g(np.log(cut) + h) - g(np.log(cut) - h)) / (2 * h),
                               rtol=1e-6, atol=1e-9 * np.abs(ref).max())


# --- comparisons, plots, CLI -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "erf.nc"
    stats = nn.sample_correlators(nn.ErfNet(d_in=1), ERF3, widths=[5, 50], n_nets=20_000,
                                  orders=(2, 4, 6), seed=0, progress=False)
    stats.to_netcdf(path)
    return stats, path


def test_compare_point_estimates_and_plots(sampled_run, tmp_path):
    stats, _ = sampled_run
    cutoffs = [5.0, 50.0]
    fit = eft.fit_dataset(stats, cutoffs)
    dt = infer_couplings(stats, cutoffs=cutoffs, seed=7, **RUN)
    cmp = compare_point_estimates(dt, fit)
    table = cmp.table
    assert len(table) == 4 and set(table["coupling"]) == {"lambda"}
    row = table[(table["width"] == 5) & (table["cutoff"] == 50.0)].iloc[0]
    assert row["point"] == pytest.approx(float(fit["lambda_mean"].sel(width=5, cutoff=50.0)))
    assert row["point_fit"] == pytest.approx(
        float(fit["fit"].sel(width=5, cutoff=50.0, coupling="lambda")))
    assert row["z"] == pytest.approx((row["point"] - row["post_mean"]) / row["post_sd"])
    beta = beta_function(dt)
    for fig in (cmp.figure, plot_coupling_posteriors(dt, table), plot_running(dt),
                plot_beta(beta)):
        out = tmp_path / "fig.png"
        fig.savefig(out)
        assert out.stat().st_size > 1000


def test_cli_infer_flow_lattice(sampled_run, tmp_path, capsys):
    _, run = sampled_run
    post, beta, lat = tmp_path / "post.nc", tmp_path / "beta.nc", tmp_path / "lat.nc"
    args = ["--samples", "500", "--warmup", "300", "--seed", "1", "--no-progress"]
    assert cli.main(["infer", str(run), "--cutoffs", "5,50", "-o", str(post), *args]) == 0
    out = capsys.readouterr().out
    assert "r_hat" in out and "diagnostics gate" in out and post.is_file()
    assert cli.main(["flow", str(post), "-o", str(beta), "--plot",
                     str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "analytic 1" in out and beta.is_file() and (tmp_path / "b.png").is_file()
    assert cli.main(["lattice", "--ensemble", "gauss", "--sigma-b", "0.5", "--inputs", "0,0.6",
                     "--cutoff", "1", "--sites", "6", "--lambda", "-0.002", "--kappa", "0.001",
                     "--samples", "500", "--warmup", "300", "-o", str(lat)]) == 0
    ds = xr.open_dataset(lat, engine="h5netcdf")
    assert {"G4", "G4_mcse", "G4_first_order", "connected4"} <= set(ds.data_vars)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["infer", "missing.nc", "--cutoffs", "5", "-o", "{tmp}/x.nc"], "no such file"),
        (["infer", "{run}", "--cutoffs", "-5", "-o", "{tmp}/x.nc"], "cutoffs"),
        (["infer", "{run}", "--cutoffs", "5", "--couplings", "mu", "-o", "{tmp}/x.nc"],
         "couplings"),
        (["flow", "{run}", "-o", "{tmp}/b.nc"], "posterior"),
        (["lattice", "--ensemble", "gauss", "--inputs", "0", "--cutoff", "1",
          "--lambda", "-0.1", "-o", "{tmp}/l.nc"], "unbounded below"),
    ],
)
def test_cli_errors_exit_2_without_traceback_or_output(sampled_run, tmp_path, capsys, argv,
                                                        message):
    _, run = sampled_run
    argv = [a.format(run=run, tmp=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(p.suffix == ".nc" for p in tmp_path.iterdir())
