"""Point-estimate EFT fits (physics.md §7–§8) on noise-free exact correlators and on samples.

Measured with nngp_ppl.theory.exact at the paper's inputs, d_in = 1, full propagator
(m6 = <|G6 - prediction| / |G6_GP|>; improvement = m6(GP) / m6(GP + ΔG6(λ̄))); reported
for orientation: the test derives what the correction leaves instead of pinning these:

    Erf N=5          Λ = 10, 100, 1000: improvement 6.9, 5.6, 5.3
    Gauss N=100      every Λ: 1.20   (m6 GP 2.43 -> 2.03: 6-pt far from Gaussian at σ = 1)
    Gauss N=1000     every Λ: 2.98
    ReLU σ_b=0 N=20  every Λ: 7.8   (degenerate f = x S: λ_t equal for all tuples)
    ReLU σ_b=1 N=20  Λ = 10, 100, 1000: 7.6, 2.4, 2.1
With K - σ_b² on Erf-net the vertex integrals change sign between tuples and λ̄ is not a
useful summary (improvement 1.3, 0.93, 0.99); that case is reported, not asserted.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nngp_ppl as nn
import nngp_ppl.cli.main as cli
from nngp_ppl import tuples
from nngp_ppl.inference import eft
from nngp_ppl.theory.diagrams import first_order_design
from nngp_ppl.theory.exact import exact_correlator_tuples, exact_cumulant_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples


def _exact(net, X, width, n):
    return exact_correlator_tuples(net, X, width, n)


# --- the estimators invert the first-order model ---------------------------------------------


def test_estimators_recover_couplings_of_synthetic_eft_data():
    """Correlators generated from the EFT itself at Λ0: every λ_t equals λ0 (κ = 0), and the
    joint fit returns (λ0, κ0) (κ ≠ 0) whatever the weighting."""
    net = nn.GaussNet(d_in=1, sigma_b=0.7)
    X = nn.paper_inputs("gauss", 1)[:4]
    K = np.asarray(net.kernel(X))
    cut, lam0, kap0 = 50.0, -3e-4, 2e-6
    g4_lam = gp_correlator_tuples(K, 4) + lam0 * first_order_design(net, X, 4, cut,
                                                                     ("lambda",))[0, :, 0]
    lt = eft.coupling_per_tuple(net, X, g4_lam, [cut, 500.0])
    np.testing.assert_allclose(lt[0], lam0, rtol=1e-12)
    assert np.all(np.abs(lt[1]) < np.abs(lt[0]))  # a larger box needs a smaller coupling
    data = {n: gp_correlator_tuples(K, n)
            + first_order_design(net, X, n, cut)[0] @ np.array([lam0, kap0]) for n in (4, 6)}
    fit = eft.fit_couplings(data, cut, net=net, X=X)
    assert fit.weighting == "relative"
    np.testing.assert_allclose(fit.values[0], [lam0, kap0], rtol=1e-8)
    cov = np.diag(np.concatenate([gp_correlator_tuples(K, n) for n in (4, 6)]) ** 2 * 1e-6)
    for weighting in ("diagonal", "full"):
        fit = eft.fit_couplings(data, cut, net=net, X=X, covariance=cov, weighting=weighting)
        np.testing.assert_allclose(fit["lambda"], lam0, rtol=1e-8)
        np.testing.assert_allclose(fit["kappa"], kap0, rtol=1e-8)
        assert np.all(np.isfinite(fit.stderr)) and fit.chi2[0] < 1e-10


def test_relu_degenerate_ensemble_has_one_coupling_running_as_minus_five():
    """physics.md §9: ReLU σ_b = 0 with positive 1-d inputs gives f(x) = x S, so
    G4 - G4_GP = κ4(S) Π x_a and I_t = (σ_W⁴/2)^4 Π x_a Λ^5 / 5: λ_t = -5 κ4(S) / (24 (σ_W⁴/2)^4
    Λ^5) for every tuple, negative, and γ = 5 exactly."""
    net = nn.ReLUNet(d_in=1)
    X = nn.paper_inputs("relu", 1)
    width = 20
    g4 = _exact(net, X, width, 4)
    cuts = np.asarray(nn.PAPER_CUTOFFS)
    lt = eft.coupling_per_tuple(net, X, g4, cuts)
    # κ4(S) from the single-input cumulant: S = f(x)/x at x = X[0].
    x0 = X[0, 0]
    kappa4_s = (g4[0] - gp_correlator_tuples(np.asarray(net.kernel(X)), 4)[0]) / x0**4
    expected = -5 * kappa4_s / (24 * (1 / 2) ** 4 * cuts**5)
    np.testing.assert_allclose(lt, np.broadcast_to(expected[:, None], lt.shape), rtol=1e-9)
    assert np.all(lt < 0)
    run = eft.running(net, X, g4, cuts)
    assert run.gamma_fit == pytest.approx(5.0, rel=1e-10)
    np.testing.assert_allclose(run.gamma_local, 5.0, rtol=1e-10)
    np.testing.assert_allclose(run.gamma_tuple_fit, 5.0, rtol=1e-10)
    assert run.gamma_analytic == 5.0


@pytest.mark.parametrize("name, sigma_b", [("gauss", 1.0), ("erf", 1.0)])
def test_lambda_is_negative_and_scales_as_inverse_width(name, sigma_b):
    """G4 - G4_GP is the connected 4-pt function, exactly ∝ 1/N (physics.md §4), and
    non-negative at coincident points, so N λ̄ is width-independent and λ̄ < 0."""
    net = nn.make_ensemble(name, d_in=1, sigma_b=sigma_b)
    X = nn.paper_inputs(name, 1)[:4]
    cuts = [10.0, 1e3]
    lam = {N: eft.mean_coupling(net, X, _exact(net, X, N, 4), cuts) for N in (5, 50, 500)}
    assert all(np.all(v < 0) for v in lam.values())
    np.testing.assert_allclose(5 * lam[5], 50 * lam[50], rtol=1e-7)
    np.testing.assert_allclose(5 * lam[5], 500 * lam[500], rtol=1e-7)


def _splits(k: int):
    """For each distinct 6-tuple: its 15 (4-tuple row, pair) splits, as index arrays."""
    row4 = {tuple(int(i) for i in r): j for j, r in enumerate(tuples.distinct_tuples(k, 4))}
    rows6 = tuples.distinct_tuples(k, 6)
    four, pair = [], []
    for r in rows6:
        f_, p_ = [], []
        for e, f in itertools.combinations(range(6), 2):
            rest = tuple(int(r[i]) for i in range(6) if i not in (e, f))
            f_.append(row4[rest])
            p_.append((int(r[e]), int(r[f])))
        four.append(f_)
        pair.append(p_)
    return np.asarray(four), np.asarray(pair)


@pytest.mark.parametrize(
    "name, width, sigma_b",
    [("erf", 5, 1.0), ("gauss", 100, 1.0), ("gauss", 1000, 1.0), ("relu", 20, 0.0),
     ("relu", 20, 1.0)],
)
def test_lambda_improves_the_six_point_prediction(name, width, sigma_b):
    r"""The paper's 6-pt check at its NGP widths, derived instead of pinned.

    With zero means and :math:`\kappa_2 = K` exactly, the cumulant expansion gives
    G6 = Wick(K) + Σ_15 κ4(abcd) K(ef) + κ6. The first-order λ correction is
    λ̄ Σ_15 D(abcd) K(ef), with D the 4-pt vertex design (-24 ∫ ΠK), and the fit defines
    λ_t = κ4(t) / D(t). So what the corrected prediction leaves is exactly

        G6 - GP - ΔG6(λ̄) = κ6 + Σ_15 (λ_abcd - λ̄) D(abcd) K(ef):

    the connected 6-pt function (O(1/N²)) plus the spread of the per-tuple couplings,
    checked to round-off against κ4, κ6 of the exact oracle, which fixes the improvement
    (module docstring) without a pinned threshold. The physics claim, asserted: the
    correction moves the prediction towards the exact G6 (improvement > 1 at every cutoff).
    """
    net = nn.make_ensemble(name, d_in=1, sigma_b=sigma_b)
    X = nn.paper_inputs(name, 1)
    cuts = [10.0, 100.0, 1000.0]
    g4, g6 = _exact(net, X, width, 4), _exact(net, X, width, 6)
    check = eft.six_point_check(net, X, g4, g6, cuts)
    assert np.all(check.lambda_mean < 0)
    K = np.asarray(net.kernel(X))
    kappa4 = exact_cumulant_tuples(net, X, width, 4)
    kappa6 = exact_cumulant_tuples(net, X, width, 6)
    four, pair = _splits(len(X))
    k_ef = K[pair[..., 0], pair[..., 1]]
    for c, cut in enumerate(cuts):
        D = first_order_design(net, X, 4, cut, ("lambda",))[0, :, 0]
        lbar = np.mean(kappa4 / D)
        assert lbar == pytest.approx(check.lambda_mean[c], rel=1e-9)
        left = kappa6 + np.sum((kappa4 - lbar * D)[four] * k_ef, axis=1)
        np.testing.assert_allclose(g6 - check.prediction[c], left, rtol=1e-8,
                                   atol=1e-10 * np.max(np.abs(check.gp)))
    assert np.all(check.improvement > 1), check.improvement


# --- running ---------------------------------------------------------------------------------


@pytest.mark.parametrize("d_in", [1, 2, 3])
def test_gauss_net_full_kernel_runs_with_exponent_d_in(d_in):
    """physics.md §8: K → σ_b² at large |y|, I ∝ Λ^d_in, β = -d_in λ (asymptotic freedom)."""
    net = nn.GaussNet(d_in=d_in)
    X = nn.paper_inputs("gauss", d_in)
    cuts = [1e3, 1e4, 1e5] if d_in < 3 else [1e3, 1e5]
    run = eft.running(net, X, _exact(net, X, 100, 4), cuts)
    assert run.gamma_analytic == d_in
    assert run.gamma_fit == pytest.approx(d_in, rel=0.05)
    assert run.gamma_local[-1] == pytest.approx(d_in, rel=1e-3)


def test_gauss_net_bias_subtracted_coupling_stops_running():
    net = nn.GaussNet(d_in=1)
    X = nn.paper_inputs("gauss", 1)
    cuts = np.asarray(nn.PAPER_CUTOFFS)
    run = eft.running(net, X, _exact(net, X, 100, 4), cuts, "bias_subtracted")
    assert run.gamma_analytic == 0.0
    np.testing.assert_allclose(run.lambda_mean, run.lambda_mean[0], rtol=1e-9)
    assert abs(run.gamma_fit) < 1e-8 and np.all(np.abs(run.beta) < 1e-9 * abs(run.lambda_mean))
    full = eft.running(net, X, _exact(net, X, 100, 4), cuts, "full")
    assert full.lambda_mean[-1] / full.lambda_mean[0] < 1e-3  # the full-K coupling runs


def test_beta_is_the_derivative_of_lambda_bar():
    net = nn.ErfNet(d_in=1)
    X = nn.paper_inputs("erf", 1)
    g4 = _exact(net, X, 5, 4)
    cut, h = 30.0, 1e-4
    run = eft.running(net, X, g4, [cut, 2 * cut])
    up, down = eft.mean_coupling(net, X, g4, [cut * np.exp(h), cut * np.exp(-h)])
    assert run.beta[0] == pytest.approx((up - down) / (2 * h), rel=1e-6)
    assert eft.asymptotic_exponent(net) == 1.0
    assert eft.asymptotic_exponent(nn.ReLUNet(d_in=2), legs=6, loops=1) == 10.0


# --- fits on sampled statistics, the CLI -----------------------------------------------------


@pytest.fixture(scope="module")
def run_file(erf_run):
    """20 000 Erf-nets at N = 5, 50 on three inputs (the session's run: tests/conftest.py;
    3 inputs keep the exact Erf 6-pt oracle quick)."""
    stats, path = erf_run
    return path, stats


def test_sandwich_errors_cover_the_noise_free_fit(run_file):
    """The diagonal-weighted fit of sampled data lies within 4 sandwich standard errors of the
    same fit (same weights) applied to the exact correlators; fixed seed."""
    _, stats = run_file
    net, X = stats.net, stats.X
    cuts = [10.0, 1e3]
    for width in stats.widths:
        sampled = eft.fit_couplings(stats, cuts, width=width)
        exact = eft.fit_couplings({n: _exact(net, X, width, n) for n in (4, 6)}, cuts,
                                  net=net, X=X, covariance=stats.covariance(width, (4, 6)),
                                  weighting="diagonal")
        z = (sampled.values - exact.values) / sampled.stderr
        assert np.all(np.abs(z) < 4), z


def test_cli_fit_writes_verifies_and_refuses(run_file, tmp_path, capsys):
    run_path, stats = run_file
    out = tmp_path / "fit.nc"
    rc = cli.main(["fit", str(run_path), "--cutoffs", "10,100,1000", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "γ fitted" in text and "analytic asymptotic γ = 1" in text and "impr6" in text
    ds = eft.load_fit(out, run_path=run_path)
    assert ds.attrs["propagator"] == "full"
    assert list(ds["width"].values) == list(stats.widths)
    assert ds["lambda_mean"].shape == (2, 3) and ds["fit"].shape == (2, 3, 2)
    np.testing.assert_allclose(
        ds["lambda_mean"].values[0],
        eft.mean_coupling(stats.net, stats.X, stats, [10.0, 100.0, 1000.0], width=5),
        rtol=1e-12,
    )
    assert cli.main(["fit", str(run_path), "--verify", str(out)]) == 0

    other = tmp_path / "other.nc"
    stats.merge(nn.sample_correlators(stats.net, stats.X, [5], 10, seed=stats.seed, progress=False,
                                      start=20_000)).to_netcdf(other)
    capsys.readouterr()
    assert cli.main(["fit", str(other), "--verify", str(out)]) == 2
    assert "was not made from" in capsys.readouterr().err
    with pytest.raises(nn.NNGPInputError, match="not made from"):
        eft.load_fit(out, run_path=other)

    bad = tmp_path / "bad.nc"
    for args in (["--cutoffs", "0,10"], ["--cutoffs", "0.5"], ["--cutoffs", "10,x"],
                 ["--cutoffs", "10", "--propagator", "eft"],
                 ["--cutoffs", "10", "--couplings", "lambda,mu"],
                 ["--cutoffs", "10", "--widths", "7"]):
        assert cli.main(["fit", str(run_path), *args, "-o", str(bad)]) == 2, args
        assert not bad.exists()
    assert "nngp-ppl fit: error" in capsys.readouterr().err
    assert cli.main(["fit", str(tmp_path / "missing.nc"), "--cutoffs", "10", "-o",
                     str(bad)]) == 2
    assert not bad.exists()


def test_correlators_are_accepted_in_every_form():
    net = nn.GaussNet(d_in=1)
    X = nn.paper_inputs("gauss", 1)[:3]
    g4 = _exact(net, X, 10, 4)
    full = tuples.expand(g4, 3, 4)
    a = eft.mean_coupling(net, X, g4, 10.0)
    np.testing.assert_array_equal(eft.mean_coupling(net, X, full, 10.0), a)
    np.testing.assert_array_equal(eft.mean_coupling(net, X, {4: g4}, 10.0), a)
    with pytest.raises(nn.NNGPInputError, match="G4"):
        eft.mean_coupling(net, X, g4[:-1], 10.0)
    with pytest.raises(nn.NNGPInputError, match="net and X"):
        eft.fit_couplings({4: g4, 6: _exact(net, X, 10, 6)}, 10.0)
    with pytest.raises(nn.NNGPInputError, match="weighting"):
        eft.fit_couplings({4: g4, 6: _exact(net, X, 10, 6)}, 10.0, net=net, X=X,
                          weighting="diagonal")
