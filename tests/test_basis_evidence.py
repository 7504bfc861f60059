"""The basis by evidence (issue 17, part 5, symmetric nets): the discrepancy each compared
model states, net of noise and per parity block, the nested models, and the ELPD of an
odd basis on a symmetric Erf-net."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import nngp_ppl as nn
from nngp_ppl.inference.compare import model_loo
from nngp_ppl.inference.couplings import model_bases, model_couplings_of
from nngp_ppl.inference.diagnostics import DiagnosticsWarning
from nngp_ppl.inference.estimators import estimand
from nngp_ppl.inference.evidence import discrepancy_variance, richer_model_earns_its_place
from nngp_ppl.inference.problem import EFTTheory

X5 = np.array([[-1.0], [-0.4], [0.1], [0.6], [1.2]])
X3 = np.array([[-1.0], [0.2], [1.0]])


@pytest.fixture(scope="module")
def odd_estimand():
    net = nn.make_ensemble("erf", sigma_b=1.0)
    theory = EFTTheory.build(net, X5, ("g3", "lambda"), None, (1, 3, 4, 6))
    return estimand(theory, [10.0])


def _blocks(est):
    th = est.theory
    odd = np.concatenate([np.full(b, n % 2 == 1) for n, b in zip(th.data_orders, th.blocks,
                                                                 strict=True)])
    return odd, np.asarray(th.fitted, bool)


def _data(est, rng, tau_even=0.0, tau_odd=0.0, noise_scale=1.0):
    """r̂ = D g + discrepancy + noise, with noise sd = noise_scale · s_t / 100 (diagonal)."""
    odd, _ = _blocks(est)
    D, s = est.D[0], est.scales[0]
    g = np.array([2e-3, -5e-2])  # (g3, lambda): any first-order theory
    sd = noise_scale * np.where(s > 0, s, 1.0) * 1e-2
    tau = np.where(odd, tau_odd, tau_even)
    rhat = D @ g + tau * s * rng.standard_normal(s.size) + sd * rng.standard_normal(s.size)
    return rhat, np.diag(sd**2), tau, sd


def test_discrepancy_is_net_of_noise(odd_estimand):
    """Pure noise around a first-order theory: the stated discrepancy is small against the
    noise (it would be ~1x the noise variance if the noise were not subtracted: the
    residual's own variance is v_t ~ Σ_tt). Fixed seed; over the 70 + 35 fitted tuples the
    ML variance is 0 or a few percent of Σ."""
    rng = np.random.default_rng(11)
    rhat, cov, _, sd = _data(odd_estimand, rng)
    extra = discrepancy_variance(odd_estimand, rhat, cov)[0]
    _, fitted = _blocks(odd_estimand)
    assert np.mean(extra[fitted] / sd[fitted] ** 2) < 0.25


def test_discrepancy_is_recovered_per_parity_block(odd_estimand):
    """A known discrepancy τ s_t (3 noise sd) on the even tuples only: its ML variance is
    recovered (70 fitted 4-pt tuples: relative s.e. of a variance ~ sqrt(2/70) = 0.17, so
    |τ̂²/τ² − 1| < 0.5 is ~3 s.e.), and the odd block, whose residuals are noise, is not
    widened by the even block's discrepancy (one τ over both blocks would be)."""
    rng = np.random.default_rng(5)
    est = odd_estimand
    odd, fitted = _blocks(est)
    rhat, cov, tau, sd = _data(est, rng, tau_even=3e-2)
    extra = discrepancy_variance(est, rhat, cov)[0]
    s = est.scales[0]
    even_fit = fitted & ~odd
    ratio = extra[even_fit] / (tau[even_fit] * s[even_fit]) ** 2
    assert np.allclose(ratio, ratio[0])  # one τ for the block
    assert abs(ratio[0] - 1) < 0.5
    assert np.mean(extra[odd & fitted] / sd[odd & fitted] ** 2) < 0.25
    # and the other way round: a discrepancy on the odd tuples leaves the even ones alone
    rhat, cov, tau, sd = _data(est, np.random.default_rng(6), tau_odd=3e-2)
    extra = discrepancy_variance(est, rhat, cov)[0]
    assert np.mean(extra[even_fit] / sd[even_fit] ** 2) < 0.25
    assert np.mean(extra[odd & fitted] / sd[odd & fitted] ** 2) > 2.0


def test_an_order_a_model_cannot_reach_gets_no_discrepancy():
    """λ alone on odd data: scale 0 on the odd tuples, so the model's density there is the
    GP's (mean 0, noise only)."""
    net = nn.make_ensemble("erf", sigma_b=1.0)
    theory = EFTTheory.build(net, X3, ("lambda",), None, (1, 3, 4, 6))
    est = estimand(theory, [10.0])
    odd, _ = _blocks(est)
    rng = np.random.default_rng(0)
    rhat = rng.standard_normal(odd.size) * 1e-3
    extra = discrepancy_variance(est, rhat, np.eye(odd.size) * 1e-8)[0]
    assert np.all(extra[odd] == 0)


def test_nested_models_of_the_data_orders():
    assert list(model_bases((4, 6))) == ["gp", "lambda", "lambda+kappa"]
    assert list(model_bases((1, 3, 4, 6))) == ["gp", "lambda", "lambda+kappa", "g3+lambda",
                                               "g3+lambda+kappa"]
    assert list(model_bases((1, 3, 4, 5, 6)))[-2:] == ["g3+lambda+g5", "g3+lambda+g5+kappa"]
    assert model_couplings_of("g3+lambda+g5+kappa") == ("g3", "lambda", "g5", "kappa")
    assert model_couplings_of("lambda+kappa@2") == ("lambda", "kappa")
    assert model_couplings_of("gp") == ()


@pytest.fixture(scope="module")
def symmetric_posterior(symmetric_erf_posterior):
    """20 000 Erf-nets (σ_b = 1, zero means: f -> -f symmetric) at N = 5 on X3, orders
    1..6, posterior in the basis (g3, lambda): the session's basis study's
    (tests/conftest.py)."""
    return symmetric_erf_posterior[1]


def test_adding_an_odd_coupling_changes_only_the_odd_tuples(symmetric_posterior):
    """λ's estimand and its even block's discrepancy do not depend on g₃ (physics.md §6d),
    so λ and g₃ + λ have the same pointwise density on every even tuple, draw by draw:
    the ELPD of the nested pair is decided by the odd correlators alone."""
    dt = symmetric_posterior
    ll = dt["log_likelihood"]
    even = np.concatenate([np.full(len(dt["constant_data"][f"tuples_{n}"]), n % 2 == 0)
                           for n in json.loads(dt.attrs["data_orders"])])
    a = ll["lambda"].sel(width=5, cutoff=10.0).values[..., even]
    b = ll["g3+lambda"].sel(width=5, cutoff=10.0).values[..., even]
    np.testing.assert_array_equal(a, b)
    odd_a = ll["lambda"].sel(width=5, cutoff=10.0).values[..., ~even]
    assert np.all(odd_a == odd_a[:1, :1])  # λ alone predicts 0 there, in every draw
    assert not np.allclose(ll["g3+lambda"].sel(width=5, cutoff=10.0).values[..., ~even],
                           odd_a)


def test_elpd_prefers_the_even_basis_on_a_symmetric_net(symmetric_posterior):
    """On the symmetric net g₃'s exact target is 0; its posterior is noise, and the ELPD
    ranks λ above g₃ + λ (benchmarks/basis_elpd.py measures the rate over 20 seeds)."""
    dt = symmetric_posterior
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiagnosticsWarning)
        lam = model_loo(dt, width=5, cutoff=10.0, model="lambda")
        odd = model_loo(dt, width=5, cutoff=10.0, model="g3+lambda")
    assert float(lam.elpd) > float(odd.elpd)
    stored = dt["constant_data"]["elpd"].sel(width=5, cutoff=10.0)
    assert float(stored.sel(model="lambda")) == pytest.approx(float(lam.elpd))


def test_conditional_density_is_the_normal_conditional():
    """log p(r̂_t | r̂_-t) of N(m, L Lᵀ + diag(extra)) against the partitioned-covariance
    formula μ_t + C_t,-t C_-t⁻¹ (r̂_-t − m_-t), C_tt − C_t,-t C_-t⁻¹ C_-t,t."""
    from scipy.stats import norm

    from nngp_ppl.inference.evidence import conditional_loglik

    rng = np.random.default_rng(2)
    T = 6
    L = np.tril(rng.standard_normal((T, T))) + 3 * np.eye(T)
    extra = rng.uniform(0, 1, T)
    rhat, mean = rng.standard_normal(T), rng.standard_normal((4, T))
    got = conditional_loglik(L, rhat, mean, extra)
    C = L @ L.T + np.diag(extra)
    for k in range(4):
        for t in range(T):
            o = [s for s in range(T) if s != t]
            w = np.linalg.solve(C[np.ix_(o, o)], C[o, t])
            mu = mean[k, t] + w @ (rhat[o] - mean[k, o])
            var = C[t, t] - C[t, o] @ w
            assert got[k, t] == pytest.approx(norm.logpdf(rhat[t], mu, np.sqrt(var)),
                                              rel=1e-9)


@pytest.mark.parametrize("delta, se, kept", [
    (3.9, 0.1, False),   # below 4: no preference, however small its error
    (4.1, 1.0, True),    # above 4 and above 2 s.e.
    (6.0, 3.1, False),   # above 4 but within 2 s.e.
    (6.3, 3.1, True),
    (-20.0, 1.0, False),
])
def test_the_richer_basis_is_kept_above_max_4_and_two_standard_errors(delta, se, kept):
    assert richer_model_earns_its_place(delta, se) is kept


def test_the_decision_rule_refuses_non_finite_input():
    for bad in ((np.nan, 1.0), (1.0, np.inf), (5.0, -1.0)):
        with pytest.raises(ValueError, match="delta and delta_se must be finite"):
            richer_model_earns_its_place(*bad)


def _pointwise(rng, n=20):
    """Pointwise ELPDs of nested models on n observations: the GP; λ far better (+3 each);
    λ + κ better again (+1 each); g₃ added to either raises the sum by ~2 (noise fitted:
    below the rule's margin of 4, yet the highest ELPD)."""
    gp = rng.normal(-2.0, 1.0, n)
    lam = gp + 3.0
    lk = lam + 1.0
    wiggle = rng.normal(0.0, 0.05, n)
    wiggle += 0.1 - wiggle.mean()  # sums to +2 exactly
    return {"gp": gp, "lambda": lam, "lambda+kappa": lk, "g3+lambda": lam + wiggle,
            "g3+lambda+kappa": lk + wiggle}


def test_nested_choice_is_the_rule_not_the_argmax():
    from nngp_ppl.inference.evidence import choose_nested_basis, nested_in, paired_difference

    rng = np.random.default_rng(7)
    pw = _pointwise(rng)
    sums = {m: v.sum() for m, v in pw.items()}
    assert max(sums, key=sums.get) == "g3+lambda+kappa"  # the argmax keeps the noise fit
    chosen, path = choose_nested_basis(pw)
    assert (chosen, path) == ("lambda+kappa", ["gp", "lambda", "lambda+kappa"])
    # Each step earned its place and the refused one did not, by the package's rule.
    for a, b in zip(path[:-1], path[1:], strict=True):
        assert nested_in(a, b)
        assert richer_model_earns_its_place(*paired_difference(pw[b], pw[a]))
    assert not richer_model_earns_its_place(*paired_difference(pw["g3+lambda+kappa"],
                                                               pw["lambda+kappa"]))
    # Without κ the same: λ, not g₃ + λ.
    no_kappa = {m: pw[m] for m in ("gp", "lambda", "g3+lambda")}
    assert choose_nested_basis(no_kappa)[0] == "lambda"
    # A gain above 4 but within 2 paired s.e. does not count either: +10 with s.e. ~ 9.
    noisy = {"gp": pw["gp"], "lambda": pw["gp"] + 0.5 + rng.normal(0.0, 2.0, 20)}
    noisy["lambda"] += 0.5 - (noisy["lambda"] - pw["gp"]).mean()
    d, dse = paired_difference(noisy["lambda"], noisy["gp"])
    assert d > 4 and d < 2 * dse
    assert choose_nested_basis(noisy)[0] == "gp"
    # Order is nesting too: λ at second order over λ at first.
    assert nested_in("lambda", "lambda@2") and not nested_in("lambda@2", "lambda")
    assert nested_in("gp", "g3+lambda") and not nested_in("lambda+kappa", "g3+lambda")
    second = {"gp": pw["gp"], "lambda": pw["lambda"], "lambda@2": pw["lambda"] + 0.5}
    assert choose_nested_basis(second)[0] == "lambda@2"  # +10 with s.e. 0


def test_infer_prints_the_basis_the_rule_chooses(monkeypatch):
    """The CLI's ELPD table keeps the stored numbers and names the rule's choice, with the
    argmax beside it where they differ."""
    import xarray as xr

    from nngp_ppl.cli.commands import infer
    from nngp_ppl.inference import compare

    pw = _pointwise(np.random.default_rng(7))
    models = list(pw)
    elpd = np.array([[[pw[m].sum() for m in models]]])
    const = xr.Dataset(
        {"elpd": (("width", "cutoff", "model"), elpd),
         "elpd_se": (("width", "cutoff", "model"), np.full_like(elpd, 3.0))},
        coords={"width": [5], "cutoff": [10.0], "model": models})
    dt = xr.DataTree.from_dict({"constant_data": const, "log_likelihood": xr.Dataset()})
    dt.attrs["data_orders"] = json.dumps([1, 3, 4, 6])
    # A tree without the stored choice (elpd_kept): the rule runs on its pointwise ELPD.
    monkeypatch.setattr(compare, "pointwise_elpd", lambda dt, w, c, ms: {m: pw[m] for m in ms})
    text = infer.elpd_table(dt)
    row = [line for line in text.splitlines() if line.split()[:2] == ["5", "10"]][0]
    assert row.rstrip().endswith("lambda+kappa [highest: g3+lambda+kappa]")
    for m in models:  # the ELPD numbers as stored
        assert f"{pw[m].sum():.1f} ± 3.0" in row
    assert "max(4, 2 paired s.e.)" in text and "choose_nested_basis" in text
    # Without pointwise values the table says it fell back to the highest ELPD.
    bare = xr.DataTree.from_dict({"constant_data": const})
    bare.attrs["data_orders"] = json.dumps([1, 3, 4, 6])
    text = infer.elpd_table(bare)
    assert "g3+lambda+kappa\n" in text and "cannot be applied" in text
