"""Coupling posteriors, their calibration on real networks, the ArviZ workflow, β-functions, CLI.

Oracles: the paper's λ̄ of :func:`nngp_ppl.inference.eft.mean_coupling` and an independent numpy
least-squares fit (the declared estimand); the closed-form Gaussian posterior of the latent
model; the exact finite-width correlators of :mod:`nngp_ppl.theory.exact` (the estimand's
target, and noise-free data); real sampled networks for calibration; the closed-form exponents
of physics.md §8 and the vertex-integral exponents of :mod:`nngp_ppl.theory.lattice` for the
running. Statistical tolerances are multiples of binomial or Monte Carlo standard errors and
say so; every seed is fixed.
"""

from __future__ import annotations

import warnings

import arviz as az
import arviz_base
import arviz_stats
import jax
import numpy as np
import pytest
import xarray as xr

import nngp_ppl as nn
import nngp_ppl.cli.main as cli
from nngp_ppl import NNGPInputError
from nngp_ppl.inference import (
    DiagnosticsWarning,
    beta_function,
    compare_point_estimates,
    diagnostics_gate,
    eft,
    infer_couplings,
)
from nngp_ppl.inference.calibration import calibrate
from nngp_ppl.inference.compare import select_problem
from nngp_ppl.inference.flow import design_function
from nngp_ppl.inference.plots import plot_beta, plot_coupling_posteriors, plot_running
from nngp_ppl.inference.problem import EFTTheory
from nngp_ppl.sampling.stats import HeavyTailWarning
from nngp_ppl.theory.diagrams import first_order_design
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.tuples import distinct_tuples

RUN = {"num_chains": 4, "num_samples": 500, "num_warmup": 300}
#: For tests of what is done with a posterior (files, ELPD, CLI), not of its convergence: the
#: settings of tests/test_arviz_file.py, so that one width of the 4- and 6-pt functions on
#: three inputs compiles one NUTS program for all of them (the persistent cache reuses it).
PLUMB = {"num_chains": 2, "num_samples": 200, "num_warmup": 150}
ERF3 = np.array([[-1.0], [0.2], [1.0]])
GAUSS = nn.GaussNet(d_in=1)
GAUSS_X = np.array([[-0.01], [0.002], [0.01]])


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
    """Noise-free correlators: the exact finite-width moments as if measured on n_nets nets."""
    means = {w: {n: exact_correlator_tuples(net, X, w, n) for n in orders} for w in widths}
    return ArrayStats(net, X, means, {w: n_nets for w in widths}, orders)


def _quiet_infer(stats, **kw):
    with warnings.catch_warnings():
        # The gate's 400-ESS threshold is for production runs; short test runs are checked
        # for divergences where it matters.
        warnings.simplefilter("ignore", DiagnosticsWarning)
        return infer_couplings(stats, **{**RUN, **kw})


def _draws(dt, name, width, cutoff):
    return dt["posterior"][name].sel(width=width, cutoff=cutoff).values.ravel()


# --- the declared estimand -------------------------------------------------------------------


def test_estimand_is_the_papers_lambda_bar_and_a_fixed_weight_least_squares_fit():
    """λ alone: B r equals the paper's λ̄ (eft.mean_coupling, quadrature design); (λ, κ):
    the least-squares fit with weights 1/|D_tλ| assembled independently with numpy."""
    net = nn.ErfNet()
    X = nn.paper_inputs("erf")
    cutoffs = [10.0, 100.0]
    lam = EFTTheory.build(net, X, ("lambda",), data_orders=(4,))
    g4 = exact_correlator_tuples(net, X, 5, 4)
    np.testing.assert_allclose(lam.estimand(lam.exact_deviation(5), cutoffs)[:, 0],
                               eft.mean_coupling(net, X, g4, cutoffs), rtol=1e-9)
    joint = EFTTheory.build(net, X, ("lambda", "kappa"), data_orders=(4, 6))
    r = joint.exact_deviation(5)
    D = np.concatenate([first_order_design(net, X, n, cutoffs, ("lambda", "kappa"))
                        for n in (4, 6)], axis=1)  # (L, T, 2)
    for j in range(len(cutoffs)):
        w = 1.0 / np.abs(D[j, :, 0])
        ref = np.linalg.lstsq(D[j] * w[:, None], r * w, rcond=None)[0]
        np.testing.assert_allclose(joint.estimand(r, cutoffs)[j], ref, rtol=1e-7)


@pytest.mark.slow
def test_posterior_on_exact_correlators_sits_on_the_estimand_whatever_n_nets_and_rcond():
    """Erf-net, three inputs, N = 5, Λ = 10, exact correlators with the exact estimator
    covariance of 10⁵ networks, and of 10⁴ and 10⁶ networks, and with rcond 1e-4 and 1e-8:
    every posterior mean is within 4 of its Monte Carlo standard errors (sd/sqrt(ESS), ~0.09
    of its own sd at 4 × 500 draws) of the estimand, and the sd follows the noise,
    sd ∝ 1/sqrt(n_nets), within 4 standard errors of a ratio of sds (sqrt(1/(2 ESS₁) +
    1/(2 ESS₂)) with the ESS of the squared deviations, ~0.13 relative). RUN's settings on
    the 4-pt function of three inputs: the NUTS program of the γ and β tests, compiled
    once."""
    net, X = nn.ErfNet(), ERF3
    theory = EFTTheory.build(net, X, ("lambda",), data_orders=(4,))
    target = theory.estimand(theory.exact_deviation(5), [10.0])[0, 0]
    run = {"cutoffs": [10.0], "compare": False}
    means, sds, ess, ess_sq = {}, {}, {}, {}
    for n_nets, rcond in ((100_000, 1e-6), (10_000, 1e-6), (1_000_000, 1e-6),
                          (100_000, 1e-4), (100_000, 1e-8)):
        dt = _quiet_infer(exact_stats(net, X, (5,), n_nets, orders=(4,)), rcond=rcond, **run)
        assert dt.attrs["covariance"] == "exact"
        d = _draws(dt, "lambda", 5, 10.0)
        key = n_nets, rcond
        means[key], sds[key] = d.mean(), d.std()
        lam = dt["posterior"]["lambda"].sel(width=5, cutoff=10.0)
        ess[key] = float(arviz_stats.ess(lam, method="bulk"))
        # An sd's error follows the draws of (λ - mean)², whose ESS is not the mean's.
        ess_sq[key] = float(arviz_stats.ess((lam - lam.mean()) ** 2, method="bulk"))
    for key, m in means.items():
        assert abs(m - target) < 4 * sds[key] / np.sqrt(ess[key]), key
    a, b = (10_000, 1e-6), (100_000, 1e-6)
    se = np.sqrt(1 / (2 * ess_sq[a]) + 1 / (2 * ess_sq[b]))
    assert sds[a] / sds[b] == pytest.approx(np.sqrt(10), rel=4 * se)


@pytest.mark.slow
def test_nuts_reproduces_the_closed_form_gaussian_posterior(erf_posterior):
    """The latent model is conjugate: λ | data ~ N(k B r̂, k B Σ Bᵀ), k = c²/(1 + c²). NUTS's
    mean lies within 4 Monte Carlo standard errors (sd/sqrt(ESS)) of it and its sd within 4
    standard errors of an sd (sd/sqrt(2 ESS))."""
    dt = erf_posterior
    const = dt["constant_data"]
    ess = arviz_stats.ess(dt["posterior"].to_dataset()[["lambda"]], method="bulk")["lambda"]
    for w in (5, 50):
        for c in (5.0, 50.0):
            d = _draws(dt, "lambda", w, c)
            point = float(const["point_estimate"].sel(width=w, cutoff=c, coupling="lambda"))
            sd = float(const["point_sd"].sel(width=w, cutoff=c, coupling="lambda"))
            n_eff = float(ess.sel(width=w, cutoff=c))
            assert abs(d.mean() - point) < 4 * sd / np.sqrt(n_eff)
            assert abs(d.std() / sd - 1) < 4 / np.sqrt(2 * n_eff)


# --- calibration on real networks ------------------------------------------------------------


@pytest.mark.slow
def test_intervals_cover_the_exact_estimand_on_real_sampled_networks():
    """Erf-net N = 5, three inputs, 40 seeds × 2·10⁴ real networks, Λ = 10: the 90%
    intervals of λ and of its running β = dλ/d log Λ (which depends on the data through the
    per-tuple couplings) contain the estimand on the exact correlators in 0.9 of the seeds
    within 3 binomial standard errors (sqrt(0.09/40) = 0.047); mean z within 3/sqrt(40) and
    sd z within 3 standard errors of an sd (1/sqrt(2·39) = 0.11) of 1."""
    # Two batches of 20 seeds share one compiled NUTS program (25 + 15 compiled two); a
    # seed's draws do not depend on its batch (sample_latent's problem_ids).
    rows = calibrate(nn.ErfNet(), ERF3, 5, ("lambda",), (10.0,), seeds=range(40),
                     n_nets=20_000, num_samples=400, num_warmup=300, batch=20)
    assert {r["quantity"] for r in rows} == {"lambda", "beta_lambda"}
    for r in rows:
        assert r["noise"] == "exact" and not r["tails"]
        assert 0.9 - 3 * 0.047 <= r["cover"] <= 1.0, r
        assert abs(r["mean_z"]) < 3 / np.sqrt(40), r
        assert abs(r["sd_z"] - 1) < 3 * 0.113, r


@pytest.mark.slow
def test_heavy_tails_switch_to_sampled_noise_with_a_student_t_likelihood():
    """Gauss-net σ = 1 (log-normal products, physics.md §4): the heavy-tail warning fires,
    'auto' sees the run miss the exact variance's tail mass and takes the sampled noise
    with a Cauchy (ν = 1) likelihood, and the file says so. The Cauchy posterior's tails
    make NUTS diverge now and then at these short settings: 0-7 of the 2000 draws over NUTS
    seeds 0-5 (measured since NUTS runs in pieces; before, seed 0 happened to give none), so
    the test bounds the share at 1%, where a broken likelihood diverges far more often."""
    with pytest.warns(HeavyTailWarning):
        stats = nn.sample_correlators(GAUSS, GAUSS_X, [100], 20_000, orders=(4,), seed=1,
                                      progress=False)
    with pytest.warns(HeavyTailWarning):
        dt = _quiet_infer(stats, cutoffs=[10.0], compare=False)
    assert dt.attrs["covariance"] == "sample"
    assert dt.attrs["likelihood"].startswith("Student-t")
    assert float(dt["constant_data"]["effective_networks"].sel(width=100)) < 10
    assert float(dt["constant_data"]["likelihood_df"].sel(width=100)) == 1.0
    assert int(dt["sample_stats"]["diverging"].sum()) <= 0.01 * 4 * 500


# --- the ArviZ workflow ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled_run(erf_run):
    """20 000 Erf-nets at N = 5, 50 on ERF3, seed 0 (the session's run: tests/conftest.py)."""
    return erf_run


@pytest.fixture(scope="module")
def erf_posterior(sampled_run):
    """The converged posterior (RUN: 4 × 500 draws) of the session's run at Λ = 5, 50, seed 3:
    one NUTS run that the closed-form check and the point-estimate comparison both read."""
    stats, _ = sampled_run
    return _quiet_infer(stats, cutoffs=[5.0, 50.0], seed=3, compare=False)


@pytest.mark.slow
def test_posterior_file_supports_loo_compare_and_the_arviz_plots(sampled_run, tmp_path):
    """The DataTree as written and read back carries prior, prior_predictive,
    posterior_predictive (with the 6-pt prediction of a λ-only fit) and log_likelihood, and
    az.loo, az.compare, plot_ppc_dist (per cutoff), plot_prior_posterior and plot_energy
    (per width: each width is one NUTS run) run on it."""
    stats, _ = sampled_run
    files = {}
    for name, couplings in (("lambda", ("lambda",)), ("lambda+kappa", ("lambda", "kappa"))):
        dt = _quiet_infer(stats, cutoffs=[5.0], widths=[5], couplings=couplings, seed=2,
                          **PLUMB)
        files[name] = tmp_path / f"{name}.nc"
        dt.to_netcdf(files[name], engine="h5netcdf")
    read = {k: xr.open_datatree(v, engine="h5netcdf").load() for k, v in files.items()}
    lam = read["lambda"]
    assert {"posterior", "sample_stats", "log_likelihood", "posterior_predictive", "prior",
            "prior_predictive", "observed_data", "constant_data"} <= set(lam.children)
    assert lam.attrs["orders"] == "[4]" and lam.attrs["data_orders"] == "[4, 6]"
    assert "G6" in lam["posterior_predictive"].data_vars
    # One problem per (width, cutoff), on the draws the pointwise groups keep; each
    # compared model's density is a log_likelihood variable named after it.
    one = {k: select_problem(v, width=5, cutoff=5.0) for k, v in read.items()}
    loo = az.loo(one["lambda"], var_name="lambda")
    assert np.isfinite(float(loo.elpd))
    table = az.compare({k: az.loo(v, var_name=k, pointwise=True) for k, v in one.items()})
    assert set(table.index) == set(read)
    # One posterior predictive per cutoff, one NUTS run per width: select them.
    az.plot_ppc_dist(lam.sel(cutoff=5.0), var_names=["G4", "G6"])
    az.plot_prior_posterior(lam, var_names=["lambda"])
    az.plot_energy(lam.sel(width=5))
    # infer's own ranking is the same computation per (width, cutoff).
    elpd = lam["constant_data"]["elpd"].sel(width=5, cutoff=5.0)
    assert list(elpd["model"].values) == ["gp", "lambda", "lambda+kappa"]
    assert np.all(np.isfinite(elpd.values))


def test_elpd_ranks_the_gp_last_where_the_non_gaussianity_dwarfs_the_noise():
    """Erf-net at N = 2 with the noise of 10⁸ networks: the connected 4-pt function is
    thousands of standard errors, so a model without couplings must lose to both EFTs (by
    thousands of nats: a short run's posterior is enough)."""
    stats = exact_stats(nn.ErfNet(), ERF3, (2,), 100_000_000)
    dt = _quiet_infer(stats, cutoffs=[10.0], **PLUMB)
    elpd = dt["constant_data"]["elpd"].sel(width=2, cutoff=10.0)
    assert float(elpd.sel(model="gp")) < float(elpd.sel(model="lambda"))
    assert float(elpd.sel(model="gp")) < float(elpd.sel(model="lambda+kappa"))
    assert dt.attrs["elpd_best"] != '{"2/10": "gp"}'


def test_infer_couplings_rejects_bad_input(sampled_run):
    stats, _ = sampled_run
    for kw, match in (({"couplings": ("kappa",)}, "couplings"),
                      ({"widths": []}, "widths"),
                      ({"widths": [7]}, "not sampled"),
                      ({"orders": (2,)}, "orders"),
                      ({"cutoffs": [-1.0]}, "cutoffs"),
                      ({"num_chains": 1}, "num_chains"),
                      ({"covariance": "robust"}, "covariance"),
                      ({"progress": "no"}, "progress")):
        with pytest.raises(NNGPInputError, match=match):
            infer_couplings(stats, **kw)


# --- the gate --------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "net,X,gamma",
    [
        (GAUSS, GAUSS_X, 1.0),
        (nn.GaussNet(d_in=2), 0.01 * np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]]), 2.0),
        (nn.ReLUNet(d_in=1, sigma_b=0.0), np.array([[0.2], [0.6], [1.2]]), 5.0),
    ],
    ids=["gauss-d1", "gauss-d2", "relu-sb0-d1"],
)
@pytest.mark.slow
def test_gamma_posterior_contains_the_analytic_exponent(net, X, gamma):
    """physics.md §8: Gauss-net with full K runs with γ = d_in, ReLU-net with σ_b = 0 with
    γ = 5 (exactly, at every cutoff). The asymptotic γ's 90% interval contains it."""
    dt = _quiet_infer(exact_stats(net, X, (100,), 100_000, orders=(4,)), cutoffs=[1e4, 1e5],
                      seed=5, compare=False)
    assert int(dt["sample_stats"]["diverging"].sum()) == 0
    beta = beta_function(dt)
    g = beta["posterior"]["gamma"].values.ravel()
    lo, hi = np.quantile(g, [0.05, 0.95])
    assert float(beta["constant_data"]["gamma_analytic"]) == gamma
    assert lo - 1e-9 <= gamma <= hi + 1e-9


def test_beta_is_the_running_of_the_exact_lambda_bar():
    """On exact correlators the β posterior is centred (within 4 Monte Carlo errors) on
    dλ̄/d log Λ = -mean_t γ_t λ_t of eft.running, whose per-tuple exponents γ_t come from
    the vertex integrals' surface terms (nngp_ppl.theory.lattice), not from JAX."""
    net, width, cutoffs = nn.ErfNet(), 5, [10.0, 100.0]
    dt = _quiet_infer(exact_stats(net, ERF3, (width,), 100_000, orders=(4,)),
                      cutoffs=cutoffs, seed=4, compare=False)
    beta = beta_function(dt)
    ref = eft.running(net, ERF3, exact_correlator_tuples(net, ERF3, width, 4), cutoffs).beta
    ess = arviz_stats.ess(beta["posterior"].to_dataset()[["beta"]], method="bulk")["beta"]
    for j, c in enumerate(cutoffs):
        b = beta["posterior"]["beta"].sel(width=width, cutoff=c, coupling="lambda").values
        n_eff = float(ess.sel(width=width, cutoff=c, coupling="lambda"))
        assert abs(b.mean() - ref[j]) < 4 * b.std() / np.sqrt(n_eff)
    sources = beta.attrs["interval_sources"]
    assert "networks" in sources and "systematic" in sources


@pytest.mark.slow
def test_design_function_matches_physics_md_formulas_and_its_derivative():
    """The differentiable design equals an independent assembly of physics.md §6
    (ΔG4 = -24λ I - 360κ I⁽¹⁾, ΔG6 = -24λ Σ15 I K - 720κ I₆ - 360κ Σ15 I⁽¹⁾ K) from
    scipy-free Gauss–Legendre quadrature, and its JAX derivative in log Λ equals a central
    finite difference."""
    net = nn.ErfNet(d_in=1, sigma_b=0.7)
    X = ERF3
    fn = design_function(net, X, (4, 6), ("lambda", "kappa"), max_cutoff=100.0)
    t, w = np.polynomial.legendre.leggauss(400)
    kernels = {}  # cutoff -> (K(x, y), K(y, y), weights) on the nodes: 33 integrals share one

    def integral(rows, cutoff, loops):
        if cutoff not in kernels:
            y = np.concatenate([(t + 1) / 2 * (-cutoff), (t + 1) / 2 * cutoff])[:, None]
            kernels[cutoff] = (np.asarray(net.kernel(X, y)), np.diag(np.asarray(net.kernel(y))),
                               np.concatenate([w, w]) * cutoff / 2)
        Ky, Kyy, ww = kernels[cutoff]
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


@pytest.mark.slow
def test_compare_point_estimates_and_plots(sampled_run, erf_posterior, tmp_path):
    stats, _ = sampled_run
    fit = eft.fit_dataset(stats, [5.0, 50.0])
    dt = erf_posterior
    cmp = compare_point_estimates(dt, fit)
    table = cmp.table
    assert len(table) == 4 and set(table["coupling"]) == {"lambda"}
    row = table[(table["width"] == 5) & (table["cutoff"] == 50.0)].iloc[0]
    assert row["point"] == pytest.approx(float(fit["lambda_mean"].sel(width=5, cutoff=50.0)))
    assert row["z"] == pytest.approx((row["point"] - row["post_mean"]) / row["post_sd"])
    # The paper's λ̄ of the sampled G4 is the estimand's plug-in estimate: the posterior is
    # centred on it within 4 Monte Carlo errors of the mean (4000 draws).
    assert abs(row["z"]) < 4 / np.sqrt(1000)
    beta = beta_function(dt)
    for fig in (cmp.figure, plot_coupling_posteriors(dt, table), plot_running(dt),
                plot_beta(beta)):
        out = tmp_path / "fig.png"
        fig.savefig(out)
        assert out.stat().st_size > 1000


@pytest.mark.slow
def test_cli_infer_flow_lattice(sampled_run, tmp_path, capsys):
    _, run = sampled_run
    post, beta, lat = tmp_path / "post.nc", tmp_path / "beta.nc", tmp_path / "lat.nc"
    # The PLUMB settings on one width: the commands' plumbing, not a converged posterior;
    # the lattice's size and NUTS settings are those of tests/test_cli.py's uniform lattice
    # (the couplings are traced: one compiled program).
    args = ["--widths", "5", "--chains", "2", "--samples", "200", "--warmup", "150",
            "--seed", "1", "--no-progress", "--allow-failed-gate"]
    assert cli.main(["infer", str(run), "--cutoffs", "5,50", "-o", str(post), *args]) == 0
    out = capsys.readouterr().out
    assert "r_hat" in out and "diagnostics gate" in out and "ELPD" in out and post.is_file()
    assert "noise model exact" in out and "orders [4]" in out
    assert cli.main(["flow", str(post), "-o", str(beta), "--plot",
                     str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "analytic 1" in out and beta.is_file() and (tmp_path / "b.png").is_file()
    assert "extrapolation systematic" in out
    assert cli.main(["lattice", "--ensemble", "gauss", "--sigma-b", "0.5", "--inputs", "0,0.6",
                     "--cutoff", "1", "--sites", "4", "--lambda", "-0.002", "--kappa", "0.001",
                     "--chains", "2", "--samples", "100", "--warmup", "100",
                     "-o", str(lat)]) == 0


@pytest.mark.slow
def test_cli_infer_exits_3_when_the_gate_fails_unless_allowed(sampled_run, tmp_path, capsys):
    """2 × 50 draws cannot reach 400 effective draws (ArviZ caps the ESS of n draws at
    n log10 n = 200): the gate fails. The warm-up is PLUMB's, whose program is compiled."""
    _, run = sampled_run
    out = tmp_path / "post.nc"
    argv = ["infer", str(run), "--cutoffs", "5", "--widths", "5", "--chains", "2",
            "--samples", "50", "--warmup", "150", "--no-progress", "-o", str(out)]
    assert cli.main(argv) == 3
    assert "FAILS the diagnostics gate" in capsys.readouterr().err
    out.unlink()
    assert cli.main([*argv, "--allow-failed-gate"]) == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["infer", "missing.nc", "--cutoffs", "5", "-o", "{tmp}/x.nc"], "no such file"),
        (["infer", "{run}", "--cutoffs", "-5", "-o", "{tmp}/x.nc"], "cutoffs"),
        (["infer", "{run}", "--cutoffs", "5", "--couplings", "mu", "-o", "{tmp}/x.nc"],
         "couplings"),
        (["infer", "{run}", "--cutoffs", "5", "--couplings", "kappa", "-o", "{tmp}/x.nc"],
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


def test_point_fit_with_the_estimand_weighting_is_the_posteriors_plug_in(sampled_run):
    """eft.fit_couplings(weighting='estimand') and the posterior's stored point estimate are
    the same map of the same data, and agree with the paper's λ̄ for λ alone."""
    stats, _ = sampled_run
    fit = eft.fit_couplings(stats, [5.0, 50.0], width=5, couplings=("lambda",), orders=(4,),
                            weighting="estimand")
    np.testing.assert_allclose(fit["lambda"], eft.mean_coupling(stats.net, stats.X, stats,
                                                                [5.0, 50.0], width=5),
                               rtol=1e-9)
    theory = EFTTheory.build(stats.net, stats.X, ("lambda",), data_orders=(4,))
    r = stats.correlator_tuples(4, 5) - theory.gp
    np.testing.assert_allclose(theory.estimand(r, [5.0, 50.0])[:, 0], fit["lambda"],
                               rtol=1e-8)
