"""The ensemble protocol: a user's own Ensemble subclass runs through every stage unedited.

``CosNet`` below is defined here, as a user would in their own module: a single-hidden-layer
net with σ(z) = cos z and an output bias,

    f(x) = Σ_i a_i cos(w_i·x) + b,  w_i ~ N(0, σ_W²/d_in), a_i ~ N(0, 1/N), b ~ N(0, σ_b²),

whose kernel is closed form: for (u, v) of variances p, q and covariance c,
E[cos u cos v] = (E cos(u+v) + E cos(u-v))/2 = exp(-(p+q)/2) cosh c, so

    K(x, y) = σ_b² + exp(-σ_W²(|x|² + |y|²)/(2 d_in)) cosh(σ_W² x·y/d_in).

It is an exact oracle here: one hidden layer makes K the 2-pt function at every width.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import NNGPInputError
from nngp_ppl.ensembles.core import ensemble_from_dict
from nngp_ppl.inference import eft


@dataclass(frozen=True)
class CosNet(nngp_ppl.Ensemble):
    sigma_w: float = 1.0
    sigma_b: float = 0.5

    name: ClassVar[str] = "cos_net_protocol_test"
    two_point_exact: ClassVar[bool] = True

    def network_outputs(self, keys, X, width, dtype=jnp.float32):
        X = jnp.asarray(X, dtype)

        def one(key):
            kw, ka, kb = jax.random.split(key, 3)
            w = float(self.sigma_w / np.sqrt(self.d_in)) * jax.random.normal(
                kw, (width, self.d_in), dtype)
            a = float(1 / np.sqrt(width)) * jax.random.normal(ka, (width,), dtype)
            b = self.sigma_b * jax.random.normal(kb, (), dtype)
            return a @ jnp.cos(w @ X.T) + b

        return jax.vmap(one)(keys)

    def traced_kernel(self, X, Y):
        s = self.sigma_w**2 / self.d_in
        p, q = s * jnp.sum(X * X, axis=1), s * jnp.sum(Y * Y, axis=1)
        return self.sigma_b**2 + jnp.exp(-(p[:, None] + q[None, :]) / 2) * jnp.cosh(
            s * X @ Y.T)

    def kernel_constant(self) -> float:
        return self.sigma_b**2


X = np.array([[0.2], [0.5], [0.9]])


def test_user_ensemble_is_a_leafless_pytree_and_jits():
    net = CosNet(sigma_w=1.2)
    assert jax.tree_util.tree_leaves(net) == []
    assert jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(net), []) == net
    K = jax.jit(lambda n, A: n.traced_kernel(A, A))(net, jnp.asarray(X))
    np.testing.assert_allclose(np.asarray(K), net.kernel(X), rtol=1e-14)
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.sigma_w = 2.0


def test_user_ensemble_saves_by_import_path_and_reloads_as_itself():
    net = CosNet(d_in=1, sigma_w=1.2)
    d = net.to_dict()
    # Not registered: saved under the class's import path, so it reloads as CosNet.
    assert d["ensemble"].endswith(":CosNet")
    assert type(ensemble_from_dict(d)) is CosNet and ensemble_from_dict(d) == net

    @dataclass(frozen=True)
    class Local(CosNet):
        pass

    with pytest.raises(NNGPInputError, match="register_ensemble"):
        Local().to_dict()
    # A file never imports a module the session did not name (tests/test_faults_io.py).
    with pytest.raises(NNGPInputError, match="never imports the code it names"):
        ensemble_from_dict({"ensemble": "no_such_module_xyz:Net", "d_in": 1})
    with pytest.raises(NNGPInputError, match="not an nngp_ppl.Ensemble"):
        ensemble_from_dict({"ensemble": "numpy:ndarray", "d_in": 1})


def test_kernel_constant_and_growth_come_from_the_ensemble():
    net = CosNet(sigma_w=1.0, sigma_b=0.5)
    # K -> σ_b² far from the inputs (the Gaussian factor wins over cosh): p = 0 for the
    # full propagator; K - σ_b² decays faster than any power: None (coupling stops running).
    assert nngp_ppl.ensembles.core.kernel_growth_numeric(net, "full") == 0.0
    assert nngp_ppl.ensembles.core.kernel_growth_numeric(net, "bias_subtracted") is None
    assert eft.asymptotic_exponent(net, "full") == pytest.approx(1.0)
    # The bias-subtracted vertex integral uses K - kernel_constant on every leg: compare
    # with the box integral of (K - σ_b²) done here by a dense trapezoid rule.
    from nngp_ppl.theory.lattice import vertex_integrals

    cut = 4.0
    rows = np.array([[0, 1, 2, 2]])
    got = np.asarray(vertex_integrals(net, X, rows, [cut], propagator="bias_subtracted"))
    y = np.linspace(-cut, cut, 40_001)[:, None]
    Kt = net.kernel(X, y) - 0.25
    ref = np.trapezoid(Kt[0] * Kt[1] * Kt[2] ** 2, y[:, 0])
    assert got.ravel()[0] == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow
def test_user_ensemble_runs_sample_fit_infer_flow(tmp_path):
    """sample -> file -> fit -> infer -> flow, with no package edit and no name check."""
    net = CosNet(sigma_w=1.2, sigma_b=0.5)
    stats = nngp_ppl.sample_correlators(net, X, [4, 40], 20_000, seed=3, progress=False)
    # K is the exact 2-pt function (one hidden layer): the sampled G2 differs by noise only.
    z2 = (stats.correlator_tuples(2, width=4) - nngp_ppl.theory.wick.gp_correlator_tuples(
        net.kernel(X), 2)) / stats.stderr_tuples(2, width=4)
    assert np.max(np.abs(z2)) < 4.5
    path = tmp_path / "run.nc"
    stats.to_netcdf(path)
    back = nngp_ppl.CorrelatorStats.from_netcdf(path)
    assert type(back.net) is CosNet and back.net == net

    fit = eft.fit_dataset(back, [5.0, 10.0], "bias_subtracted", couplings=("lambda",))
    lam = np.asarray(fit["lambda_mean"])
    assert np.all(np.isfinite(lam))
    # No exact oracle: the posterior's noise model must be the sampled covariance.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = nngp_ppl.infer_couplings(back, cutoffs=[5.0, 10.0], widths=[4], num_chains=2,
                                        num_samples=300, num_warmup=300, seed=1,
                                        propagator="bias_subtracted", compare=False)
    assert post.attrs["covariance"] == "sample"
    g = np.asarray(post["posterior"]["lambda"])
    assert np.all(np.isfinite(g))
    beta = nngp_ppl.beta_function(post)
    # K - σ_b² decays like a Gaussian (exp(-0.72 y²) here): the vertex integrals have
    # converged by Λ = 5 (surface term ~ e^-70), so the coupling has stopped running:
    # γ = 0 analytically and β = dλ/dlog Λ vanishes draw by draw.
    assert float(beta["constant_data"]["gamma_analytic"]) == 0.0
    b = np.asarray(beta["posterior"]["beta"])
    assert np.max(np.abs(b)) < 1e-9 * np.median(np.abs(g))
