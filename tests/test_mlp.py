"""Deep MLPs (nngp_ppl.ensembles.networks.MLP): kernel recursion, finite-width 2-pt shift,
capabilities.

Oracles: the single-layer closed forms of ensembles.py (depth 1); scipy's erf through the
quadrature path (the recursion's NumPy branch against its closed-form branch); wide
networks drawn here in NumPy, independently of the package's forward pass, with the readout
layer integrated out exactly (given the last hidden layer, f is Gaussian with covariance
Σ = σ_b² + σ_W²/N Σ_i φ_i φ_i', so E[f f'] = E[Σ]).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from nngp_ppl import ActivationNet, ErfNet, NNGPInputError, ReLUNet, sample_correlators
from nngp_ppl.ensembles.core import ensemble_from_dict, network_keys
from nngp_ppl.ensembles.networks import MLP, TwoPointWarning, _quadrature_recursion
from nngp_ppl.inference.problem import choose_noise, exact_noise_available
from nngp_ppl.theory.exact import max_exact_order

X1 = np.array([[-1.0], [0.2], [1.0]])
X2 = np.array([[-1.0, 0.5], [0.3, 0.3], [1.0, -0.7]])
PHI = {"erf": special.erf, "relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}


def kernel(net, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwoPointWarning)
        return net.kernel(X)


def wide_sigma(act, depth, X, width, n_nets, sigma_w, sigma_b, seed):
    """(n_nets, k, k) readout covariances Σ of NumPy-drawn networks (module docstring)."""
    rng = np.random.default_rng(seed)
    d_in = X.shape[1]
    out = np.empty((n_nets, len(X), len(X)))
    for j in range(n_nets):
        z = rng.normal(0, sigma_w / np.sqrt(d_in), (width, d_in)) @ X.T
        z += rng.normal(0, sigma_b, (width, 1))
        for _ in range(depth - 1):
            z = rng.normal(0, sigma_w / np.sqrt(width), (width, width)) @ PHI[act](z)
            z += rng.normal(0, sigma_b, (width, 1))
        h = PHI[act](z)
        out[j] = sigma_b**2 + sigma_w**2 * (h.T @ h) / width
    return out


@pytest.mark.parametrize("act,ref", [("erf", ErfNet(d_in=2, sigma_w=1.3, sigma_b=0.4)),
                                     ("relu", ReLUNet(d_in=2, sigma_w=1.3, sigma_b=0.4)),
                                     ("tanh", ActivationNet("tanh", 2, 1.3, 0.4))])
def test_depth_one_is_the_single_layer_net(act, ref):
    net = MLP(1, act, 2, 1.3, 0.4)
    assert net.two_point_exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", TwoPointWarning)  # depth 1: K is the 2-pt function
        np.testing.assert_allclose(net.kernel(X2), ref.kernel(X2), rtol=1e-12, atol=1e-14)


def test_quadrature_recursion_matches_the_arcsine_recursion():
    # The NumPy quadrature branch with scipy's erf against the closed-form JAX branch.
    net = MLP(3, "erf", 2, 1.5, 0.3)
    vx = np.broadcast_to(np.asarray(net.preactivation_var(X2))[:, None], (3, 3))
    m = np.asarray(net.preactivation_cov(X2))
    quad = _quadrature_recursion(special.erf, 3, 0.09, 2.25, vx, vx.T, m)
    np.testing.assert_allclose(quad, kernel(net, X2), rtol=1e-10)


@pytest.mark.parametrize("act,depth,sw,sb", [("erf", 2, 1.5, 0.5), ("relu", 3, 1.2, 0.3),
                                             ("tanh", 2, 1.4, 0.5)])
def test_kernel_matches_wide_networks(act, depth, sw, sb):
    """K against E[Σ] of 150 NumPy networks of width 384: the tolerance is 5 standard errors
    plus 0.2/N for the O(1/N) finite-width shift (N·|G2 - K| <= 0.05 measured for these
    settings at N = 2..100)."""
    net = MLP(depth, act, 1, sw, sb)
    S = wide_sigma(act, depth, X1, 384, 150, sw, sb, seed=3)
    se = S.std(axis=0, ddof=1) / np.sqrt(len(S))
    err = np.abs(S.mean(axis=0) - kernel(net, X1))
    assert np.all(err < 5 * se + 0.2 / 384), (err, se)
    # The check can fail: the kernel one layer shallower is far outside it.
    shallower = kernel(MLP(depth - 1, act, 1, sw, sb), X1)
    assert np.max(np.abs(S.mean(axis=0) - shallower) / (5 * se + 0.2 / 384)) > 3


@pytest.mark.slow
def test_two_point_function_differs_from_K_at_small_width():
    """ReLU depth 2 at N = 2: the package's sampled 2-pt function (2·10⁵ nets) is more than
    6 standard errors from K at its worst tuple, and within 4.5 combined standard errors of
    an independent NumPy estimate E[Σ] (4·10⁴ nets)."""
    net = MLP(2, "relu", 1, 1.0, 0.5)
    f = net.sample_outputs(0, X1, 2, 200_000).astype(np.float64)
    prod = f[:, :, None] * f[:, None, :]
    G, se = prod.mean(axis=0), prod.std(axis=0, ddof=1) / np.sqrt(len(f))
    assert np.max(np.abs(G - kernel(net, X1)) / se) > 6
    S = wide_sigma("relu", 2, X1, 2, 40_000, 1.0, 0.5, seed=5)
    se_s = S.std(axis=0, ddof=1) / np.sqrt(len(S))
    assert np.all(np.abs(G - S.mean(axis=0)) < 4.5 * np.hypot(se, se_s))


def _erf_pair(a, b, c):
    return (2 / jnp.pi) * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * a) * (1 + 2 * b)))


def test_two_point_shift_converges_as_one_over_width():
    r"""Depth-2 Erf-net: δ(N) = G2(N) - K = σ_W² E[p(Σ¹) - p(K¹)], p the arcsine pair map,
    Σ¹ the second layer's pre-activation covariance given the first layer, whose mean K¹ is
    the single-layer kernel (physics.md §2). The control variate ∇p·(Σ¹ - K¹) has mean
    zero and removes the O(N^-1/2) noise, leaving a relative error ~ M^-1/2. Measured:
    N·δ = 0.088, 0.084, 0.081, 0.080 at N = 8, 16, 32, 64 (slope -1.05); asserted: slope
    -1 within 0.1."""
    sw, sb, M = 1.5, 0.3, 20_000
    net = MLP(2, "erf", 1, sw, sb)
    x = np.array([-1.0, 1.0])
    m = sb**2 + sw**2 * np.outer(x, x)  # first-layer pre-activation covariance
    K1 = sb**2 + sw**2 * np.asarray(_erf_pair(np.diag(m)[:, None], np.diag(m)[None, :], m))
    base = (K1[0, 0], K1[1, 1], K1[0, 1])  # E Σ¹: the single-layer Erf kernel
    rng = np.random.default_rng(11)
    shifts = []
    widths = (8, 16, 32, 64)
    for N in widths:
        z = rng.normal(0, sw, (M, N, 1)) * x + rng.normal(0, sb, (M, N, 1))
        h = special.erf(z)
        S = sb**2 + sw**2 * np.einsum("mik,mil->mkl", h, h) / N
        tangent = (S[:, 0, 0] - base[0], S[:, 1, 1] - base[1], S[:, 0, 1] - base[2])
        primal = tuple(jnp.full(M, b) for b in base)
        p0, dp = jax.jvp(_erf_pair, primal, tuple(jnp.asarray(t) for t in tangent))
        p = _erf_pair(S[:, 0, 0], S[:, 1, 1], S[:, 0, 1])
        vals = np.asarray(sw**2 * (p - p0 - dp))
        shifts.append((vals.mean(), vals.std(ddof=1) / np.sqrt(M)))
        assert abs(vals.mean()) > 8 * shifts[-1][1]  # resolved at every width
    mean = np.array([s[0] for s in shifts])
    slope = np.polyfit(np.log(widths), np.log(np.abs(mean)), 1)[0]
    assert abs(slope + 1) < 0.1, (slope, shifts)
    # and the package's K is the N -> ∞ limit these shifts are measured from
    K = kernel(net, x[:, None])[0, 1]
    np.testing.assert_allclose(K, sb**2 + sw**2 * float(_erf_pair(*base)), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::nngp_ppl.HeavyTailWarning")
def test_capabilities_and_warning():
    net = MLP(2, "tanh", 1)
    assert not net.two_point_exact and net.exact_moments is None
    assert max_exact_order(net) == 0 and not exact_noise_available(net, (4,))
    with pytest.warns(TwoPointWarning, match="O\\(1/N\\)"):
        net.kernel(X1)
    stats = sample_correlators(MLP(2, "erf", 1), X1, [3], 1024, orders=(2, 4), seed=1,
                               covariance=True, progress=False)
    assert stats.correlator(2, 3).shape == (3, 3)
    # no oracle: the sampled noise model, or (without a sampled covariance) the GP one
    assert choose_noise("auto", net, (4,), stats) == "sample"
    with pytest.warns(RuntimeWarning, match="no exact finite-width moments"):
        assert choose_noise("auto", net, (4,)) == "gp"


@pytest.mark.filterwarnings("ignore::nngp_ppl.HeavyTailWarning")
def test_serialisation_and_bad_input(tmp_path):
    net = MLP(3, "gelu", 2, 1.2, 0.1)
    assert ensemble_from_dict(net.to_dict()) == net
    stats = sample_correlators(MLP(2, "relu", 1, sigma_b=0.2), X1, [4], 64, orders=(2,),
                               seed=0, progress=False)
    back = type(stats).from_netcdf(stats.to_netcdf(tmp_path / "run.nc"))
    assert back.net == stats.net and isinstance(back.net, MLP)
    for kwargs, word in (({"depth": 0}, "depth"), ({"activation": "swishy"}, "activation"),
                         ({"activation": np.tanh}, "activation"), ({"sigma_w": -1}, "sigma_w")):
        with pytest.raises(NNGPInputError, match=word):
            MLP(**kwargs)


@pytest.mark.slow
def test_forward_pass_is_one_network_per_key():
    # Batching does not change a network (the sampler's reproducibility contract).
    net = MLP(3, "tanh", 2, 1.0, 0.5)
    keys = network_keys(7, 5, 0, 12)
    whole = np.asarray(net.network_outputs(keys, X2, 5))
    parts = np.concatenate([np.asarray(net.network_outputs(keys[i:i + 3], X2, 5))
                            for i in range(0, 12, 3)])
    np.testing.assert_allclose(whole, parts, rtol=1e-6)


def test_default_batches_count_the_hidden_weights():
    # A depth-3 net of width 1000 draws 2·10⁶ numbers per network, not 3·10³: its default
    # batch (about 16 MiB of forward-pass memory) must be ~700 times smaller than Erf-net's.
    from nngp_ppl.sampling.sampler import _memory_d_in, batch_bytes, plan_run

    deep, shallow = MLP(3, "relu", 1), ErfNet()
    assert plan_run(deep, X1, [1000], 4096).batch_size(1000) == 8
    assert plan_run(shallow, X1, [1000], 4096).batch_size(1000) >= 128
    assert batch_bytes(1000, 8, 3, _memory_d_in(deep, 1000)) >= 4 * 8 * deep.parameter_count(1000)
    assert _memory_d_in(shallow, 1000) == 1 and _memory_d_in(MLP(1, "erf", 2), 50) == 2


def test_growth_exponents_of_deep_kernels():
    """Analytic: the ReLU recursion with σ_b = 0 is homogeneous of degree 1 in each input at
    every depth (K(x, t y) = t K(x, y), t > 0), so γ = d_in + 4; the Erf kernel is bounded
    and tends to a direction-dependent constant, so γ = d_in (physics.md §8)."""
    from nngp_ppl.inference.eft import asymptotic_exponent

    relu, erf = MLP(2, "relu", 2, 1.0, 0.0), MLP(3, "erf", 2, 1.0, 0.5)
    x, y = np.array([[0.3, -0.2]]), np.array([[1.0, 0.4]])
    np.testing.assert_allclose(kernel(relu, np.vstack([x, 7.0 * y]))[0, 1],
                               7.0 * kernel(relu, np.vstack([x, y]))[0, 1], rtol=1e-12)
    assert relu.kernel_growth("full") == 1.0 and asymptotic_exponent(relu, "full") == 6.0
    assert erf.kernel_growth("bias_subtracted") == 0.0
    assert asymptotic_exponent(erf, "bias_subtracted") == 2.0


def test_two_point_corrected_lambda_is_the_connected_one():
    """Depth-2 Erf MLP at N = 2 (σ_W = 1.5, σ_b = 0.3), where G2 - K is 10-14 standard
    errors of Ĝ2. Independent oracle for the connected 4-pt function: given the hidden
    layer the output is exactly Gaussian with covariance Σ, so κ4 = Cov(Σ12, Σ34) + 2 more
    (law of total cumulance), estimated from the hidden layers of other networks
    (benchmarks/mlp_scaling.py; its λ̄ error is 10x smaller). The fit that subtracts
    Wick(Ĝ2) agrees with it within 4 combined standard errors; the rule-4.5 fit (Wick(K))
    does not, and moves from the corrected one by B (Wick(Ĝ2) - Wick(K)) predicted from the
    hidden-layer G2 = E[Σ] (measured: -0.00353 ± 0.00009 corrected, -0.00348 oracle,
    -0.00243 rule 4.5, at 2·10⁵ networks)."""
    from nngp_ppl.inference import eft
    from nngp_ppl.inference import two_point as tp
    from nngp_ppl.theory.diagrams import first_order_design
    from nngp_ppl.theory.wick import gp_correlator_tuples
    from nngp_ppl.tuples import distinct_tuples, expand

    net, X, N, M, cut = MLP(2, "erf", 1, 1.5, 0.3), np.array([[-1.0], [1.0]]), 2, 100_000, 5.0
    stats = sample_correlators(net, X, [N], M, orders=(2, 4), seed=3, progress=False)
    h = np.asarray(net.hidden_features(network_keys(11, N, 0, M), X, N, jnp.float32),
                   np.float64)
    S = net.sigma_b**2 + net.sigma_w**2 * np.einsum("mik,mil->mkl", h, h) / N
    a, b, c, d = distinct_tuples(2, 4).T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwoPointWarning)
        D = first_order_design(net, X, 4, [cut], ("lambda",))[0, :, 0]

    def lam_hidden(S):
        dev = S - S.mean(axis=0)
        cov = lambda i, j, m, n: np.mean(dev[:, i, j] * dev[:, m, n], axis=0)  # noqa: E731
        return np.mean((cov(a, b, c, d) + cov(a, c, b, d) + cov(a, d, b, c)) / D)

    oracle = lam_hidden(S)
    oracle_se = np.std([lam_hidden(g) for g in np.array_split(S, 20)], ddof=1) / np.sqrt(20)
    kw = dict(width=N, couplings=("lambda",), orders=(4,), weighting="estimand")
    fixed = eft.fit_couplings(stats, [cut], **kw)
    old = eft.fit_couplings(stats, [cut], two_point="kernel", **kw)
    assert fixed.two_point == "measured" and old.two_point == "kernel"
    se = np.hypot(fixed.stderr[0, 0], oracle_se)
    assert abs(fixed.values[0, 0] - oracle) < 4 * se
    assert abs(old.values[0, 0] - oracle) > 4 * np.hypot(old.stderr[0, 0], oracle_se)
    # The move is the projection of the 2-pt shift; its error is Ĝ2's, propagated.
    K = tp.kernel(net, X)
    predicted = np.mean((gp_correlator_tuples(S.mean(axis=0), 4) - gp_correlator_tuples(K, 4))
                        / D)
    B = 1.0 / (len(D) * D)
    J = tp.wick_jacobian(expand(stats.correlator_tuples(2, N), 2, 2), 4)
    move_se = np.sqrt(B @ J @ stats.covariance(N, orders=(2,)) @ J.T @ B)
    assert abs(old.values[0, 0] - fixed.values[0, 0] - predicted) < 4 * move_se
    assert abs(predicted) > 8 * move_se
