"""The NTK and the infinite-width training oracle (nngp_ppl.theory.ntk) against independent
computations: quadrature of σ'σ', the finite-width empirical NTK averaged over networks
(an unbiased estimate of Θ at every width for one hidden layer), and the linearised
gradient-descent recursion iterated step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import ActivationNet, ErfNet, GaussNet, ReLUNet
from nngp_ppl._checks import NNGPInputError
from nngp_ppl.ensembles.activations import ERF, GAUSS
from nngp_ppl.ensembles.networks import MLP
from nngp_ppl.ensembles.quadrature import pair_expectation
from nngp_ppl.theory import ntk as ntk_mod
from nngp_ppl.theory.ntk import ntk, ntk_and_nngp, training_oracle
from nngp_ppl.training.trainer import draw_parameters, forward

X = np.array([-1.0, -0.3, 0.4, 1.1])
X_TRAIN = np.array([-0.8, 0.1, 0.9])
Y_TRAIN = np.array([0.4, -0.3, 0.6])


def test_erf_derivative_pair_matches_quadrature():
    a, b = np.array([0.3, 1.2, 2.0]), np.array([0.7, 0.5, 2.0])
    c = np.array([0.2, -0.6, 1.99])
    derf = ntk_mod._derivative(jax.lax.erf)
    assert np.allclose(ERF.dpair(a, b, c), pair_expectation(derf, a, b, c),
                       rtol=1e-9, atol=0)


def test_gauss_pair_is_the_lognormal_moment():
    # E[e^{u - a} e^{v - b}] = e^{(a + b)/2 + c - a - b}: check by Gauss-Hermite quadrature
    # (the package's trapezoid rule refuses exponentially growing integrands).
    a, b, c = 0.4, 0.9, 0.3
    t, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    L21, L22 = c / np.sqrt(a), np.sqrt(b - c * c / a)
    u = np.sqrt(a) * t[:, None]
    v = L21 * t[:, None] + L22 * t[None, :]
    quad = np.einsum("i,j,ij->", w, w, np.exp(u - a) * np.exp(v - b))
    assert np.isclose(GAUSS.pair(a, b, c), quad, rtol=1e-10)


def _empirical_ntk(net, width, n_nets, X, seed=0):
    """Per-network NTK in the NTK parametrisation, from jax.jacobian: (n_nets, k, k)."""
    Xj = jnp.asarray(np.asarray(X, np.float32).reshape(len(X), -1))
    keys = nngp_ppl.ensembles.core.network_keys(seed, width, 0, n_nets)

    def one(key):
        p = draw_parameters(net, key, width, "ntk")
        J = jax.jacobian(lambda q: forward(net, q, Xj, width, "ntk"))(p)
        flat = jnp.concatenate([j.reshape(len(X), -1) for j in J], axis=1)
        return flat @ flat.T

    return np.asarray(jax.vmap(one)(keys), np.float64)


@pytest.mark.parametrize("net", [ErfNet(sigma_w=1.2, sigma_b=0.5),
                                 ReLUNet(sigma_w=1.0, sigma_b=0.4),
                                 GaussNet(sigma_w=0.8, sigma_b=0.3),
                                 ActivationNet("tanh", sigma_w=1.1, sigma_b=0.6)],
                         ids=lambda n: n.name)
def test_ntk_is_the_mean_empirical_ntk(net):
    # For one hidden layer the empirical NTK is unbiased at any width: the readout part
    # (1/N) sum h h' has mean E[h h'], and a_i is independent of z_i in a_i^2 σ'σ' m.
    # Tolerance: 5 standard errors of the mean over 4000 networks (fixed seed).
    emp = _empirical_ntk(net, 16, 4000, X)
    mean, se = emp.mean(0), emp.std(0) / np.sqrt(len(emp))
    z = (mean - ntk(net, X)) / se
    assert np.max(np.abs(z)) < 5.0, z


def test_ntk_minus_nngp_is_the_input_layer_term():
    net = ErfNet(sigma_w=1.3, sigma_b=0.7)
    theta, K = ntk_and_nngp(net, X)
    assert np.allclose(K, net.kernel(X), rtol=1e-12)
    m = 0.7**2 + 1.3**2 * np.outer(X, X)
    v = np.diag(m)
    dE = (4 / np.pi) / np.sqrt((1 + 2 * v[:, None]) * (1 + 2 * v[None, :]) - 4 * m**2)
    assert np.allclose(theta - K, 1.3**2 * dE * m, rtol=1e-12)


def test_mlp_depth_one_is_the_single_layer_ntk_and_deep_recursion_matches_quadrature():
    assert np.allclose(ntk(MLP(1, "erf", sigma_w=1.2, sigma_b=0.5), X),
                       ntk(ErfNet(sigma_w=1.2, sigma_b=0.5), X), rtol=1e-12)
    assert np.allclose(ntk(MLP(1, "relu", sigma_w=1.0, sigma_b=0.4), X),
                       ntk(ReLUNet(sigma_w=1.0, sigma_b=0.4), X), rtol=1e-12)
    # Depth 3: the closed-form erf recursion against the same recursion by quadrature
    # (erf registered under another name, so both σσ' and σ'σ' are integrated).
    nngp_ppl.register_activation("erf_by_quadrature", jax.lax.erf)
    closed = ntk(MLP(3, "erf", sigma_w=1.2, sigma_b=0.5), X)
    quad = ntk(MLP(3, "erf_by_quadrature", sigma_w=1.2, sigma_b=0.5), X)
    assert np.allclose(closed, quad, rtol=1e-8)


def test_standard_parametrisation_ntk_grows_with_width():
    net = ErfNet(sigma_w=1.0, sigma_b=0.5)
    t1 = ntk(net, X, parametrisation="standard", width=10)
    t2 = ntk(net, X, parametrisation="standard", width=20)
    K = net.kernel(X)
    assert np.allclose(t2 - t1, 10 * (K - 0.25), rtol=1e-12)  # d/dN = E[σσ'] = (K - σ_b²)/σ_W²
    with pytest.raises(NNGPInputError, match="width"):
        ntk(net, X, parametrisation="standard")


def _iterate(net, steps, eta):
    """The linearised GD recursion iterated: mean and covariance of (f(X), f(X_train))."""
    both = np.concatenate([X, X_TRAIN])
    theta, K = ntk_and_nngp(net, both)
    k, n = len(X), len(X_TRAIN)
    # f_{t+1} = f_t - (η/n) Θ[:, train] (f_t[train] - Y) is affine: f_{t+1} = T f_t + c.
    T = np.eye(k + n)
    T[:, k:] -= eta / n * theta[:, k:]
    c = eta / n * theta[:, k:] @ Y_TRAIN
    mu, cov, out = np.zeros(k + n), K.copy(), {}
    for t in range(max(steps) + 1):
        if t in steps:
            out[t] = (mu[:k].copy(), cov[:k, :k].copy())
        mu, cov = T @ mu + c, T @ cov @ T.T
    return out


@pytest.mark.parametrize("net", [ErfNet(sigma_w=1.0, sigma_b=0.5),
                                 ReLUNet(sigma_w=1.2, sigma_b=0.3)], ids=lambda n: n.name)
def test_oracle_closed_form_equals_the_iterated_recursion(net):
    steps = [0, 1, 7, 60, 400]
    mu, cov = training_oracle(net, X, X_TRAIN, Y_TRAIN, steps, 0.8)
    ref = _iterate(net, steps, 0.8)
    for i, t in enumerate(steps):
        assert np.allclose(mu[i], ref[t][0], rtol=1e-9, atol=1e-12)
        assert np.allclose(cov[i], ref[t][1], rtol=1e-9, atol=1e-12)


def test_oracle_at_step_zero_is_the_gp_and_late_steps_interpolate_the_data():
    net = ErfNet(sigma_w=1.0, sigma_b=0.5)
    both = np.concatenate([X, X_TRAIN])
    mu, cov = training_oracle(net, both, X_TRAIN, Y_TRAIN, [0, 100000], 1.0)
    assert np.allclose(mu[0], 0) and np.allclose(cov[0], net.kernel(both), rtol=1e-12)
    k = len(X)
    assert np.allclose(mu[1][k:], Y_TRAIN, atol=1e-8)  # the training points are fitted
    assert np.allclose(cov[1][k:, k:], 0, atol=1e-8)  # ... by every network alike


def test_oracle_refuses_bad_input():
    net = ErfNet()
    with pytest.raises(NNGPInputError, match="y_train"):
        training_oracle(net, X, X_TRAIN, Y_TRAIN[:2], [0], 0.1)
    with pytest.raises(NNGPInputError, match="steps"):
        training_oracle(net, X, X_TRAIN, Y_TRAIN, [-1], 0.1)
    with pytest.raises(NNGPInputError, match="parametrisation"):
        ntk(net, X, parametrisation="mup")
    with pytest.raises(NNGPInputError, match="mu_w"):
        ntk(ErfNet(mu_w=0.1), X)


def test_gaussian_moments_with_a_mean_match_monte_carlo_and_wick():
    from nngp_ppl.theory.ntk import gaussian_moment_tuples
    from nngp_ppl.theory.wick import gp_correlator_tuples
    from nngp_ppl.tuples import distinct_tuples

    K = ErfNet().kernel(X[:3])
    assert np.allclose(gaussian_moment_tuples(np.zeros(3), K, 4), gp_correlator_tuples(K, 4))
    mu = np.array([0.3, -0.5, 0.8])
    # exact by brute force: E over a 3-d Gauss-Hermite product rule (degree 7 is exact)
    t, w = np.polynomial.hermite_e.hermegauss(8)
    w = w / w.sum()
    L = np.linalg.cholesky(K)
    g = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
    wt = np.einsum("i,j,k->ijk", w, w, w).ravel()
    f = mu + g @ L.T
    rows = distinct_tuples(3, 5)
    brute = np.array([wt @ np.prod(f[:, r], axis=1) for r in rows])
    assert np.allclose(gaussian_moment_tuples(mu, K, 5), brute, rtol=1e-10)
