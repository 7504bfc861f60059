"""The f -> -f test from the odd correlators (nngp_ppl.inference.symmetry).

Oracles: the Wald statistic computed by hand from the same networks' outputs (plain
NumPy, no sums); the false-positive rate over 200 fixed seeds of a symmetric ensemble
(the issue's bound: 2%..8% at the 5% level; a rate's standard error over 200 seeds is
1.5 points); a broken symmetry (non-zero means) rejected at fixed seeds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps

from nngp_ppl import ErfNet, GaussNet, NNGPInputError, sample_correlators
from nngp_ppl.inference.symmetry import (
    SymmetryWarning,
    check_declared_symmetries,
    parity_test,
)
from nngp_ppl.tuples import distinct_tuples

X = np.array([[-1.0], [0.2], [1.0]])


def _stats(net, n_nets, seed, orders=(1, 3, 5), **kw):
    return sample_correlators(net, X, [3], n_nets, orders=orders, seed=seed, progress=False,
                              **kw)


def test_statistic_equals_the_hand_computed_wald_form():
    """W = ĝᵀ Σ0⁺ ĝ with Σ0 = (1/n) mean of the outer products (uncentred), on the same
    networks' outputs, through the correlation scaling and the eigenvalue cut."""
    net, n = GaussNet(sigma_w=0.5, sigma_b=0.3, mu_b=0.05), 512
    stats = _stats(net, n, 7)
    f = net.sample_outputs(7, X, 3, n).astype(np.float64)
    obs = np.concatenate([np.prod(f[:, distinct_tuples(3, m)], axis=2) for m in (1, 3)], axis=1)
    g = obs.mean(0)
    cov = obs.T @ obs / n**2
    s = np.sqrt(np.diag(cov))
    vals, vecs = np.linalg.eigh(cov / np.outer(s, s))
    keep = vals > 1e-3 * vals[-1]
    w = np.sum((vecs[:, keep].T @ (g / s)) ** 2 / vals[keep])
    got = parity_test(stats, 3)
    assert got.orders == (1, 3) and got.dof == int(keep.sum())
    assert got.statistic == pytest.approx(w, rel=1e-6)
    assert got.p_value == pytest.approx(sps.chi2.sf(w, keep.sum()), rel=1e-5)


@pytest.mark.slow
def test_false_positive_rate_on_a_symmetric_ensemble_lies_in_2_to_8_percent():
    rejections = [parity_test(_stats(ErfNet(), 1024, 1000 + s), 3).reject for s in range(200)]
    rate = float(np.mean(rejections))
    assert 0.02 <= rate <= 0.08, rate


def test_non_zero_means_are_detected_and_the_verdict_says_so():
    result = parity_test(_stats(ErfNet(mu_b=0.2), 1024, 3), 3)
    assert result.reject and result.p_value < 1e-4
    assert result.verdict.startswith("f -> -f rejected at the 5% level")
    assert f"p = {result.p_value:.3g}" in result.verdict and "1024 networks" in result.verdict
    calm = parity_test(_stats(ErfNet(), 1024, 3), 3)
    assert not calm.reject and calm.verdict.startswith("consistent with f -> -f")


def test_declared_symmetry_rejected_by_the_data_warns_loudly():
    with pytest.warns(SymmetryWarning, match="DECLARED SYMMETRY REJECTED"):
        out = check_declared_symmetries(_stats(ErfNet(mu_w=0.3, mu_b=0.2), 1024, 5), 3,
                                        ["z2"])
    assert out["z2"].reject
    # A symmetric ensemble is rejected on ~4% of seeds (the false-positive rate,
    # benchmarks/symmetry.py; seed 5 is one of them); seed 11 is not.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SymmetryWarning)
        assert not check_declared_symmetries(_stats(ErfNet(), 1024, 11), 3, "z2")["z2"].reject
    with pytest.raises(NNGPInputError, match="declared"):
        check_declared_symmetries(_stats(ErfNet(), 128, 5), 3, ["lorentz"])


def test_bad_input_is_refused_with_clear_messages():
    even = _stats(ErfNet(), 128, 1, orders=(2, 4))
    with pytest.raises(NNGPInputError, match="odd correlators"):
        parity_test(even, 3)
    odd = _stats(ErfNet(), 128, 1)
    with pytest.raises(NNGPInputError, match="orders must be odd"):
        parity_test(odd, 3, orders=(2,))
    with pytest.raises(NNGPInputError, match="alpha"):
        parity_test(odd, 3, alpha=1.5)
    nocov = _stats(ErfNet(), 128, 1, covariance=False)
    with pytest.raises(NNGPInputError, match="covariance=True"):
        parity_test(nocov, 3)


def test_show_prints_the_symmetry_verdict_of_a_run_with_odd_orders(tmp_path, capsys):
    from nngp_ppl.cli.main import main

    path = _stats(ErfNet(mu_b=0.3), 1024, 2, orders=(1, 3, 4)).to_netcdf(tmp_path / "odd.nc")
    assert main(["show", "--no-exact", str(path)]) == 0
    out = capsys.readouterr().out
    assert "symmetry, N=3: f -> -f rejected at the 5% level" in out
    assert "non-zero means: no zero-mean GP" in out
