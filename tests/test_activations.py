"""One Activation record per activation (nngp_ppl.ensembles.activations): every ensemble reads
it, and its closed forms agree with independent quadrature of its own functions."""

import jax
import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import ActivationNet, ErfNet, GaussNet, ReLUNet
from nngp_ppl._checks import NNGPInputError
from nngp_ppl.ensembles.activations import ACTIVATIONS, quadrature_names
from nngp_ppl.ensembles.networks import MLP
from nngp_ppl.ensembles.quadrature import pair_expectation
from nngp_ppl.theory.lattice import propagator_kernels
from nngp_ppl.theory.ntk import _derivative

# (a, b, c) with c² < ab: variances and covariance of (u, v), away from the degenerate edge.
A = np.array([0.3, 1.2, 2.0, 0.8])
B = np.array([0.7, 0.5, 2.0, 0.8])
C = np.array([0.2, -0.6, 1.5, -0.7])


@pytest.mark.parametrize("cls", [ErfNet, ReLUNet, GaussNet])
def test_single_layer_nets_read_their_record(cls):
    net = cls()
    spec = ACTIVATIONS[net.name]
    assert net.spec is spec
    assert (net.exact_moments, net.exact_max_order) == (spec.exact_moments,
                                                         spec.exact_max_order)
    z, var = np.linspace(-2, 2, 5), np.full(5, 0.7)
    want = spec.jax_fn(z, var) if spec.needs_variance else spec.jax_fn(z)
    np.testing.assert_array_equal(net.activation(z, var), want)


def test_activation_net_and_mlp_read_the_same_registry():
    assert ActivationNet("gelu").spec is ACTIVATIONS["gelu"]
    for name in ("erf", "relu", "tanh"):
        assert MLP(2, name).spec is ACTIVATIONS[name]
    # Gauss-net's activation needs the pre-activation variance: no MLP layer can use it.
    with pytest.raises(NNGPInputError, match="activation must be one of"):
        MLP(2, "gauss")
    # Closed-form activations have their own classes; ActivationNet takes quadrature ones.
    # (Other tests in the session may have registered activations: check the built-ins
    # are offered and erf, a closed form, is not.)
    with pytest.raises(NNGPInputError, match="activation must be one of") as refused:
        ActivationNet("erf")
    offered = str(refused.value).split("one of ", 1)[1].split("]", 1)[0]
    assert all(f"'{n}'" in offered for n in ("gelu", "sin", "softplus", "tanh"))
    assert "'erf'" not in offered and "'relu'" not in offered


def test_registered_activation_reaches_activation_net_and_mlp():
    nngp_ppl.register_activation("sin_for_registry_test", jax.numpy.sin, np.sin)
    assert "sin_for_registry_test" in quadrature_names()
    X = np.array([[-0.5], [0.4]])
    K_mlp = MLP(1, "sin_for_registry_test").kernel(X)
    np.testing.assert_allclose(K_mlp, ActivationNet("sin_for_registry_test").kernel(X),
                               rtol=1e-12)
    np.testing.assert_allclose(K_mlp, ActivationNet("sin").kernel(X), rtol=1e-12)


def test_erf_layer_maps_match_quadrature():
    # The trapezoid quadrature of the record's own NumPy function and of its derivative
    # (relative error <= 1e-12 for a smooth σ; ReLU's kink makes that quadrature too slow
    # for a unit test: test_ensembles checks its arc-cosine kernel against a kink-split
    # adaptive quadrature).
    spec = ACTIVATIONS["erf"]
    np.testing.assert_allclose(np.asarray(spec.pair(A, B, C)),
                               pair_expectation(spec.numpy_fn, A, B, C), rtol=1e-10)
    np.testing.assert_allclose(spec.dpair(A, B, C),
                               pair_expectation(_derivative(spec.jax_fn), A, B, C), rtol=1e-9)


def test_propagator_kernels_remove_the_kernel_constant():
    net = ErfNet(1, 1.3, 0.7)
    X, Y = np.array([[-1.0], [0.5]]), np.array([[0.2], [3.0], [-2.0]])
    for prop, shift in (("full", 0.0), ("bias_subtracted", 0.7**2)):
        cross, diag = propagator_kernels(net, prop)
        np.testing.assert_allclose(np.asarray(cross(X, Y)), net.kernel(X, Y) - shift,
                                   rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(np.asarray(diag(Y)), np.diag(net.kernel(Y)) - shift,
                                   rtol=1e-14, atol=1e-15)
    with pytest.raises(NNGPInputError, match="propagator must be one of"):
        propagator_kernels(net, "bias")
