"""Ensembles: GP kernels against Monte Carlo, independent transcriptions and quadrature."""

import math

import numpy as np
import pytest
from scipy import integrate, special

from nngp_ppl import ErfNet, GaussNet, NNGPInputError, ReLUNet, make_ensemble

ENSEMBLES = {"erf": ErfNet, "relu": ReLUNet, "gauss": GaussNet}


def _inputs(d_in, k, seed, scale=1.0):
    return scale * np.random.default_rng(seed).uniform(-1.0, 1.0, size=(k, d_in))


# --------------------------------------------------------------------------------------------
# Formulas transcribed independently of nngp_ppl.ensembles.core (physics.md §2 and the
# neural-tangents papers), written in a different but equivalent form.
# --------------------------------------------------------------------------------------------
def _m(net, x, y):
    return net.sigma_b**2 + net.sigma_w**2 * float(np.dot(x, y)) / net.d_in


def _reference_kernel(net, x, y):
    mxy, mxx, myy = _m(net, x, y), _m(net, x, x), _m(net, y, y)
    if isinstance(net, ErfNet):
        # Williams (1997): arcsin form, not the arctan2 form of the implementation.
        return net.sigma_b**2 + net.sigma_w**2 * 2 / math.pi * math.asin(
            2 * mxy / math.sqrt((1 + 2 * mxx) * (1 + 2 * myy))
        )
    if isinstance(net, ReLUNet):
        # neural-tangents' arctan2 form: theta = atan2(sqrt(det), m_xy), and
        # sqrt(mxx myy) (sin t + (pi - t) cos t) = sqrt(det) + (pi - t) m_xy.
        det = max(mxx * myy - mxy**2, 0.0)
        theta = math.atan2(math.sqrt(det), mxy)
        return net.sigma_b**2 + net.sigma_w**2 / (2 * math.pi) * (
            math.sqrt(det) + (math.pi - theta) * mxy
        )
    # Gauss-net: E[e^{z - v} e^{z' - v'}] = exp((v + v' + 2m)/2 - v - v') = exp(m - (v+v')/2).
    return net.sigma_b**2 + net.sigma_w**2 * math.exp(mxy - 0.5 * (mxx + myy))


def _activation(net, z, var):
    if isinstance(net, ErfNet):
        return special.erf(z)
    if isinstance(net, ReLUNet):
        return np.maximum(z, 0.0)
    return np.exp(z - var)


def _quadrature_kernel(net, x, y):
    """sigma_b^2 + sigma_W^2 E[s(z) s(z')] by nested adaptive quadrature on the 2-d Gaussian.

    z = L11 g1, z' = L21 g1 + L22 g2 with standard normal g; the inner integral is split
    where z' changes sign (the ReLU kink), the outer one at g1 = 0.
    """
    mxy, mxx, myy = _m(net, x, y), _m(net, x, x), _m(net, y, y)
    L11 = math.sqrt(mxx)
    L21 = mxy / L11
    L22 = math.sqrt(max(myy - L21**2, 0.0))
    phi = lambda g: math.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)  # noqa: E731

    def inner(g1):
        z1 = L11 * g1
        s1 = float(_activation(net, z1, mxx))

        def f(g2):
            return float(_activation(net, L21 * g1 + L22 * g2, myy)) * phi(g2)

        pts = [-L21 * g1 / L22] if L22 > 0 and abs(L21 * g1 / L22) < 12 else None
        val = integrate.quad(f, -12, 12, points=pts, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        return s1 * val * phi(g1)

    val = integrate.quad(inner, -12, 12, points=[0.0], epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return net.sigma_b**2 + net.sigma_w**2 * val


NETS = [
    ErfNet(d_in=1, sigma_w=1.0, sigma_b=1.0),
    ErfNet(d_in=2, sigma_w=1.3, sigma_b=0.4),
    ErfNet(d_in=3, sigma_w=0.8, sigma_b=0.0),
    ReLUNet(d_in=1, sigma_w=1.0, sigma_b=0.0),
    ReLUNet(d_in=2, sigma_w=1.0, sigma_b=1.0),
    ReLUNet(d_in=3, sigma_w=1.4, sigma_b=0.3),
    GaussNet(d_in=1, sigma_w=1.0, sigma_b=1.0),
    GaussNet(d_in=2, sigma_w=0.7, sigma_b=0.5),
    GaussNet(d_in=3, sigma_w=1.2, sigma_b=0.2),
]


def _id(net):
    return f"{net.name}-d{net.d_in}"


@pytest.mark.parametrize("net", NETS, ids=_id)
def test_kernel_matches_independent_formula(net):
    X = _inputs(net.d_in, 6, seed=net.d_in)
    Y = _inputs(net.d_in, 4, seed=10 + net.d_in, scale=2.0)
    K = np.asarray(net.kernel(X, Y))
    assert K.shape == (6, 4)
    ref = np.array([[_reference_kernel(net, x, y) for y in Y] for x in X])
    np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("net", NETS, ids=_id)
def test_kernel_matches_quadrature(net):
    X = _inputs(net.d_in, 3, seed=20 + net.d_in)
    K = np.asarray(net.kernel(X))
    # Adaptive quadrature to ~1e-11; distinct pairs and one diagonal entry.
    for i, j in [(0, 1), (1, 2), (0, 2), (1, 1)]:
        assert K[i, j] == pytest.approx(_quadrature_kernel(net, X[i], X[j]), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("net", NETS, ids=_id)
def test_kernel_is_symmetric_and_positive_semidefinite(net):
    X = _inputs(net.d_in, 10, seed=30 + net.d_in, scale=1.5)
    K = np.asarray(net.kernel(X))
    np.testing.assert_allclose(K, K.T, rtol=1e-14)
    eig = np.linalg.eigvalsh(K)
    assert eig.min() >= -1e-12 * eig.max()
    # kernel(X, Y) is the corresponding block of the kernel on the union.
    np.testing.assert_allclose(np.asarray(net.kernel(X[:4], X[4:])), K[:4, 4:], rtol=1e-14)


def test_relu_kernel_at_zero_variance_input():
    # x = 0 with sigma_b = 0 gives z = 0, so h = 0 and K = sigma_b^2 = 0 in that row.
    net = ReLUNet(d_in=2, sigma_w=1.0, sigma_b=0.0)
    K = np.asarray(net.kernel(np.array([[0.0, 0.0], [1.0, 0.5]])))
    assert np.all(np.isfinite(K))
    assert K[0, 0] == 0.0 and K[0, 1] == 0.0
    assert K[1, 1] == pytest.approx(0.5 * _m(net, [1.0, 0.5], [1.0, 0.5]), rel=1e-14)


# Monte Carlo: the kernel is the exact 2-point function at every width (physics.md §2).
# Gauss-net at tame sigma's: at sigma = 1 its products are log-normal and heavy-tailed
# (physics.md §4), which makes the naive standard error unreliable.
MC_NETS = [
    ErfNet(d_in=1, sigma_w=1.0, sigma_b=1.0),
    ErfNet(d_in=2, sigma_w=1.0, sigma_b=1.0),
    ErfNet(d_in=3, sigma_w=1.0, sigma_b=1.0),
    ReLUNet(d_in=1, sigma_w=1.0, sigma_b=0.0),
    ReLUNet(d_in=2, sigma_w=1.0, sigma_b=1.0),
    ReLUNet(d_in=3, sigma_w=1.0, sigma_b=1.0),
    GaussNet(d_in=1, sigma_w=0.5, sigma_b=0.3),
    GaussNet(d_in=2, sigma_w=0.5, sigma_b=0.3),
    GaussNet(d_in=3, sigma_w=0.5, sigma_b=0.3),
]


@pytest.mark.parametrize("net", MC_NETS, ids=_id)
def test_kernel_matches_monte_carlo_at_width_two(net):
    # 60k networks of width 2 (the least Gaussian width; K is exact at every width). Each
    # entry of the sample mean of f(x) f(x') is compared with K in units of its sample
    # standard error; the worst of the 10 distinct entries must stay within 5 sigma
    # (fixed seed; measured worst |z| over the nine cases: 1.7).
    X = _inputs(net.d_in, 4, seed=40 + net.d_in)
    f = net.sample_outputs(7, X, width=2, n_nets=60_000).astype(np.float64)
    assert f.shape == (60_000, 4)
    iu = np.triu_indices(4)
    prod = f[:, iu[0]] * f[:, iu[1]]
    stderr = prod.std(axis=0, ddof=1) / math.sqrt(len(f))
    z = (prod.mean(axis=0) - np.asarray(net.kernel(X))[iu]) / stderr
    assert np.max(np.abs(z)) < 5.0


def test_sample_outputs_is_reproducible_and_seed_dependent():
    net = ErfNet(d_in=2)
    X = _inputs(2, 3, seed=0)
    a = net.sample_outputs(3, X, width=5, n_nets=16)
    np.testing.assert_array_equal(a, net.sample_outputs(3, X, width=5, n_nets=16))
    assert not np.allclose(a, net.sample_outputs(4, X, width=5, n_nets=16))


def test_make_ensemble_and_round_trip_of_hyperparameters():
    net = make_ensemble("ReLU", d_in=2, sigma_w=1.5)
    assert isinstance(net, ReLUNet) and net.sigma_b == 0.0 and net.sigma_w == 1.5
    assert net.to_dict()["ensemble"] == "relu"


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_nonzero_mean_kernel_is_refused(name):
    net = ENSEMBLES[name](d_in=1, mu_w=0.1)
    with pytest.raises(NNGPInputError, match="mu_w"):
        net.kernel(np.array([[0.5]]))
    with pytest.raises(NNGPInputError, match="mu_b"):
        ENSEMBLES[name](d_in=1, mu_b=-0.2).kernel(np.array([[0.5]]))


@pytest.mark.parametrize(
    "X, match",
    [
        ([[0.1, 0.2], [0.3]], "ragged"),
        (np.zeros((0, 2)), "at least one"),
        ([[0.1, np.nan]], "finite"),
        ([[0.1, np.inf]], "finite"),
        (np.zeros((3, 3)), "d_in=2"),
        ([["a", "b"]], "ragged or non-numeric"),
    ],
)
def test_bad_inputs_are_rejected(X, match):
    net = ErfNet(d_in=2)
    with pytest.raises(NNGPInputError, match=match):
        net.kernel(X)
    with pytest.raises(NNGPInputError, match=match):
        net.sample_outputs(0, X, width=2, n_nets=4)


def test_bad_second_argument_is_rejected():
    with pytest.raises(NNGPInputError, match="Y"):
        GaussNet(d_in=2).kernel(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    "hyper, match",
    [
        ({"sigma_w": -1.0}, "sigma_w"),
        ({"sigma_b": -0.1}, "sigma_b"),
        ({"sigma_w": float("nan")}, "sigma_w"),
        ({"d_in": 0}, "d_in"),
        ({"d_in": 1.5}, "d_in"),
        ({"mu_b": float("inf")}, "mu_b"),
    ],
)
@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_bad_hyperparameters_are_rejected(name, hyper, match):
    with pytest.raises(NNGPInputError, match=match):
        ENSEMBLES[name](**hyper)


def test_unknown_ensemble_name_is_rejected():
    with pytest.raises(NNGPInputError, match="ensemble must be one of"):
        make_ensemble("swish")


@pytest.mark.parametrize(
    "width, n_nets, match",
    [(0, 4, "width"), (2, 0, "n_nets"), (-3, 4, "width"), (2, 2.5, "n_nets")],
)
def test_bad_width_or_count_is_rejected(width, n_nets, match):
    with pytest.raises(NNGPInputError, match=match):
        ReLUNet(d_in=1).sample_outputs(0, [[0.5]], width=width, n_nets=n_nets)


# --------------------------------------------------------------------------------------------
# ActivationNet: any elementwise activation
# --------------------------------------------------------------------------------------------
_NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "gelu": lambda z: z * special.ndtr(z),
    "sin": np.sin,
    "softplus": lambda z: np.log1p(np.exp(-abs(z))) + max(z, 0.0),
}


def _adaptive_pair(h, a, b, c):
    """E[h(z) h(z')] by nested adaptive scipy quadrature, z = L11 g1, z' = L21 g1 + L22 g2."""
    L11 = math.sqrt(a)
    L21 = c / L11
    L22 = math.sqrt(max(b - L21**2, 0.0))
    phi = lambda g: math.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)  # noqa: E731

    def outer(g1):
        inner = integrate.quad(lambda g2: float(h(L21 * g1 + L22 * g2)) * phi(g2), -12, 12,
                               epsabs=1e-14, epsrel=1e-13, limit=200)[0]
        return float(h(L11 * g1)) * inner * phi(g1)

    return integrate.quad(outer, -12, 12, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


@pytest.mark.parametrize("activation", sorted(_NUMPY_ACTIVATIONS))
def test_activation_kernel_matches_adaptive_integration(activation):
    # The kernel's trapezoid rule against scipy's adaptive Gauss-Kronrod, on inputs of
    # pre-activation variance 0.2 ... 7. Promised 1e-10 relative; measured <= 1e-14.
    from nngp_ppl import ActivationNet

    net = ActivationNet(activation, d_in=2, sigma_w=1.4, sigma_b=0.6)
    X = _inputs(2, 3, seed=3, scale=1.5)
    K = net.kernel(X)
    assert isinstance(K, np.ndarray)
    m = net.sigma_b**2 + net.sigma_w**2 * (X @ X.T) / net.d_in
    h = _NUMPY_ACTIVATIONS[activation]
    for i, j in [(0, 0), (0, 1), (1, 2), (2, 2)]:
        ref = net.sigma_b**2 + net.sigma_w**2 * _adaptive_pair(h, m[i, i], m[j, j], m[i, j])
        assert K[i, j] == pytest.approx(ref, rel=1e-10, abs=1e-13)


def test_registered_erf_activation_reproduces_the_arcsine_kernel_at_large_variance():
    # erf as a user activation: the quadrature kernel against Williams' closed form, up to
    # pre-activation variance 1.7e4 (|x| = 100, a far lattice point at cutoff 100), where
    # the rule needs its finest steps. Measured <= 1.5e-14 relative.
    import jax

    from nngp_ppl import ActivationNet, register_activation

    register_activation("erf_as_user", jax.lax.erf, special.erf)
    net = ActivationNet("erf_as_user", sigma_w=1.3, sigma_b=0.4)
    X = np.array([[-100.0], [-3.0], [-1.0], [0.0], [0.2], [5.0], [10.0]])
    closed = ErfNet(sigma_w=1.3, sigma_b=0.4).kernel(X)
    np.testing.assert_allclose(net.kernel(X), closed, rtol=1e-10, atol=1e-13)
    # Through jit and vmap (the lattice traces the kernel this way).
    diag = jax.vmap(jax.jit(lambda y: net._kernel(y[None, :], y[None, :])[0, 0]))(X)
    np.testing.assert_allclose(np.asarray(diag), np.diag(closed), rtol=1e-10)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_activation_kernel_matches_monte_carlo(activation):
    # 200k width-2 networks: E f(x) f(y) = K at every width; z from the sample sd.
    from nngp_ppl import ActivationNet

    net = ActivationNet(activation, d_in=1)
    X = np.array([[-1.0], [0.2], [1.0]])
    f = net.sample_outputs(1, X, width=2, n_nets=200_000).astype(np.float64)
    K = net.kernel(X)
    for i in range(3):
        for j in range(i, 3):
            p = f[:, i] * f[:, j]
            z = (p.mean() - K[i, j]) / (p.std(ddof=1) / math.sqrt(len(p)))
            assert abs(z) < 4.0  # 6 entries, Bonferroni at p ~ 4e-4


def test_activation_nets_round_trip_and_are_made_by_name():
    from nngp_ppl import ActivationNet
    from nngp_ppl.ensembles.core import ensemble_from_dict

    for name in ("tanh", "gelu", "sin", "softplus"):
        net = make_ensemble(name, d_in=2, sigma_w=0.9)
        assert isinstance(net, ActivationNet) and net.name == name
        back = ensemble_from_dict(net.to_dict())
        assert type(back) is ActivationNet and back == net
    assert ActivationNet("TANH").activation == "tanh"
    with pytest.raises(NNGPInputError, match="inconsistent"):
        ensemble_from_dict({"ensemble": "tanh", "activation": "gelu", "d_in": 1})


def test_callable_activation_works_in_memory_but_is_refused_on_save():
    import jax.numpy as jnp

    from nngp_ppl import ActivationNet, register_activation
    from nngp_ppl.ensembles.core import ensemble_from_dict

    def swish_like(z):
        return z * jnp.tanh(z)

    net = ActivationNet(swish_like, sigma_w=0.8)
    assert net.name == "swish_like" and net.kernel([[0.3]]).shape == (1, 1)
    with pytest.raises(NNGPInputError, match="register_activation"):
        net.to_dict()
    register_activation("swish_like", swish_like)
    saved = ActivationNet("swish_like", sigma_w=0.8)
    np.testing.assert_allclose(saved.kernel([[0.3]]), net.kernel([[0.3]]), rtol=1e-13)
    assert ensemble_from_dict(saved.to_dict()) == saved
    # A file naming an activation this session does not know says how to fix it.
    with pytest.raises(NNGPInputError, match="before loading a file"):
        ensemble_from_dict({"ensemble": "never_registered", "d_in": 1})
    with pytest.raises(NNGPInputError, match="already registered"):
        register_activation("swish_like", jnp.sin)
    with pytest.raises(NNGPInputError, match="taken by the ErfNet"):
        register_activation("erf", jnp.sin)


def test_subclass_without_its_own_name_does_not_reload_as_its_parent():
    from dataclasses import dataclass
    from typing import ClassVar

    from nngp_ppl import ActivationNet, register_ensemble
    from nngp_ppl.ensembles.core import ensemble_from_dict

    @dataclass(frozen=True)
    class MyErf(ErfNet):
        pass

    with pytest.raises(NNGPInputError, match="belongs to ErfNet"):
        MyErf().to_dict()
    with pytest.raises(NNGPInputError, match="its own"):
        register_ensemble(MyErf)

    @dataclass(frozen=True)
    class Scaled(ErfNet):
        name: ClassVar[str] = "scaled_erf_test"

    with pytest.raises(NNGPInputError, match="not registered"):
        Scaled().to_dict()
    register_ensemble(Scaled)
    assert type(ensemble_from_dict(Scaled(sigma_w=2.0).to_dict())) is Scaled

    class TanhChild(ActivationNet):
        pass

    with pytest.raises(NNGPInputError, match="reload as ActivationNet"):
        TanhChild("tanh").to_dict()


@pytest.mark.parametrize(
    "activation, match",
    [("swish", "activation must be one of"), (3.0, "activation must be a name or a callable")],
)
def test_bad_activations_are_refused(activation, match):
    from nngp_ppl import ActivationNet

    with pytest.raises(NNGPInputError, match=match):
        ActivationNet(activation)


def test_kernel_returns_numpy_for_every_ensemble():
    for net in (ErfNet(), ReLUNet(), GaussNet()):
        assert type(net.kernel([[0.1], [0.4]])) is np.ndarray


def test_activation_nets_pickle_by_their_fields():
    # The Dask executor ships nets to workers by pickle; the cached NumPy forms need not.
    import pickle

    from nngp_ppl import ActivationNet

    for name in ("tanh", "gelu", "sin", "softplus"):
        net = ActivationNet(name, d_in=2, sigma_w=0.7, sigma_b=0.2)
        back = pickle.loads(pickle.dumps(net))
        assert back == net and back.name == name
        np.testing.assert_array_equal(back.kernel([[0.1, 0.3]]), net.kernel([[0.1, 0.3]]))


def test_activation_forward_pass_stays_in_the_requested_precision():
    # The sampler computes batches in float32; a float64 constant would promote them.
    from nngp_ppl import ActivationNet
    from nngp_ppl.ensembles.core import network_keys

    keys = network_keys(0, 3, 0, 4)
    for name in ("tanh", "gelu", "sin", "softplus"):
        out = ActivationNet(name).network_outputs(keys, np.array([[0.1], [0.5]]), 3)
        assert out.dtype == np.float32, name


# --------------------------------------------------------------------------------------------
# large-|y| growth of the kernel (sets the beta-function exponent)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "net",
    [ErfNet(), ErfNet(d_in=2, sigma_w=1.3, sigma_b=0.4), ErfNet(d_in=3, sigma_b=0.0),
     ReLUNet(), ReLUNet(d_in=2, sigma_b=1.0), ReLUNet(d_in=3, sigma_w=1.4, sigma_b=0.3),
     GaussNet(), GaussNet(d_in=3, sigma_b=0.0)],
    ids=_id,
)
def test_numeric_kernel_growth_matches_the_analytic_exponents(net):
    # The measured exponent (unrounded) against each closed-form ensemble's own: within
    # 1e-3 (measured <= 1e-4), for both vertex propagators.
    from nngp_ppl.ensembles.core import kernel_growth_numeric

    for propagator in ("full", "bias_subtracted"):
        analytic = net.kernel_growth(propagator)
        numeric = kernel_growth_numeric(net, propagator, integer=False)
        if analytic is None:
            assert numeric is None
        else:
            assert numeric == pytest.approx(analytic, abs=1e-3)


def test_activation_kernel_growth_and_beta_exponent():
    from nngp_ppl import ActivationNet
    from nngp_ppl.inference.eft import asymptotic_exponent

    tanh, gelu, sin = ActivationNet("tanh"), ActivationNet("gelu"), ActivationNet("sin")
    assert tanh.kernel_growth("full") == 0.0
    assert gelu.kernel_growth("bias_subtracted") == 1.0
    # E[sin z sin z'] decays like exp(-Var/2): only the output bias sigma_b^2 survives.
    assert sin.kernel_growth("bias_subtracted") is None
    assert asymptotic_exponent(tanh, "full") == 1.0  # d_in: asymptotically free like Erf
    assert asymptotic_exponent(gelu, "bias_subtracted") == 5.0  # d_in + 4, like ReLU
    assert asymptotic_exponent(sin, "bias_subtracted") == 0.0
    with pytest.raises(NNGPInputError, match="propagator"):
        tanh.kernel_growth("cutoff")


# --- a user's own JAX network (nngp_ppl.ensembles.networks.JaxNetwork) ---------------
# Module-level functions: importable as "test_ensembles:erf_init", so the net can be saved.
def erf_init(key, width):
    """One Erf-net of physics.md §1 (σ_W = σ_b = 1, d_in = 1), written as a user would."""
    import jax

    kw, kb, ka, kc = jax.random.split(key, 4)
    return {"w": jax.random.normal(kw, (width, 1)), "b": jax.random.normal(kb, (width,)),
            "a": jax.random.normal(ka, (width,)) / width**0.5, "c": jax.random.normal(kc, ())}


def erf_apply(params, X):
    import jax

    return jax.lax.erf(X @ params["w"].T + params["b"]) @ params["a"] + params["c"]


def test_jax_network_kernel_and_correlators_match_erf_net():
    """Oracles: ErfNet's closed-form kernel (the Monte Carlo kernel within 5 of its own
    standard errors; the single-layer 2-pt function is K at every width, so no bias) and the
    exact finite-width 4-pt function at N = 3 (sampled, within 4.5 standard errors)."""
    from nngp_ppl import JaxNetwork, sample_correlators
    from nngp_ppl.theory.exact import exact_correlator_tuples

    X = np.array([[-1.0], [0.2], [1.0]])
    net = JaxNetwork(erf_init, erf_apply, 1, name="my_erf", sigma_b=1.0, kernel_width=16,
                     kernel_nets=4000, two_point_exact=True)
    K, se = net.kernel(X), net.kernel_stderr(X)
    assert np.all(se > 0) and np.all(np.abs(K - ErfNet().kernel(X)) < 5 * se)
    assert np.max(np.abs(K - ErfNet(sigma_w=1.2).kernel(X)) / se) > 5  # it can fail
    stats = sample_correlators(net, X, [3], 8000, orders=(2, 4), seed=4, progress=False)
    z = ((stats.correlator_tuples(4, 3) - exact_correlator_tuples(ErfNet(), X, 3, 4))
         / stats.stderr_tuples(4, 3))
    assert np.max(np.abs(z)) < 4.5
    assert net.exact_moments is None


@pytest.mark.slow
def test_jax_network_saves_by_import_path_and_refuses_closures(tmp_path):
    from nngp_ppl import JaxNetwork, sample_correlators
    from nngp_ppl.ensembles.core import ensemble_from_dict

    X = np.array([[0.5], [1.0]])
    net = JaxNetwork(erf_init, erf_apply, 1, name="my_erf", kernel_nets=64)
    assert net.kernel_growth("full") == 0.0  # bounded like Erf-net's kernel
    d = net.to_dict()
    assert d["init"].endswith("test_ensembles:erf_init")
    back = ensemble_from_dict(d)
    assert isinstance(back, JaxNetwork) and back == net and back.label == "my_erf"
    stats = sample_correlators(JaxNetwork(d["init"], d["apply"], 1, name="my_erf"), X, [2],
                               16, orders=(2,), progress=False)
    loaded = type(stats).from_netcdf(stats.to_netcdf(tmp_path / "own.nc"))
    assert loaded.net == stats.net
    np.testing.assert_array_equal(loaded.correlator(2, 2), stats.correlator(2, 2))

    # An ensemble as the kernel: exact, saved with the network.
    exact = JaxNetwork(erf_init, erf_apply, 1, name="my_erf", kernel=ErfNet(), sigma_b=1.0,
                       two_point_exact=True)
    np.testing.assert_array_equal(exact.kernel(X), ErfNet().kernel(X))
    assert ensemble_from_dict(exact.to_dict()) == exact
    with pytest.raises(NNGPInputError, match="d_in"):
        JaxNetwork(erf_init, erf_apply, 1, kernel=ErfNet(d_in=2))

    def local_apply(params, X):  # a closure: no import path resolves to it
        return erf_apply(params, X)

    closure = JaxNetwork(erf_init, local_apply, 1, kernel=lambda A, B: A @ B.T)
    np.testing.assert_allclose(closure.kernel(X), X @ X.T)
    assert np.all(closure.kernel_stderr(X) == 0)
    with pytest.raises(NNGPInputError, match="import path"):
        closure.to_dict()


def test_jax_network_bad_input():
    from nngp_ppl import JaxNetwork

    X = np.array([[0.5], [1.0]])
    for kwargs, word in (({"init": 3}, "init"), ({"apply": "nomodule_xyz:f"}, "apply"),
                         ({"name": "erf"}, "name"), ({"kernel_nets": 0}, "kernel_nets")):
        args = {"init": erf_init, "apply": erf_apply, "d_in": 1, **kwargs}
        with pytest.raises(NNGPInputError, match=word):
            JaxNetwork(**args)
    wrong = JaxNetwork(erf_init, lambda p, X: np.zeros(3), 1)
    with pytest.raises(NNGPInputError, match="one output per input"):
        wrong.sample_outputs(0, X, 2, 4)
