"""Single-hidden-layer network ensembles and their Gaussian-process kernels.

.. math::

    f(x) = \\sum_{i=1}^{N} a_i\\, \\sigma(w_i \\cdot x + \\beta_i) + b_1,

    w_{i\\alpha} \\sim \\mathcal N(\\mu_W, \\sigma_W^2/d_{in}),\\;
    \\beta_i \\sim \\mathcal N(\\mu_b, \\sigma_b^2),\\;
    a_i \\sim \\mathcal N(\\mu_W, \\sigma_W^2/N),\\;
    b_1 \\sim \\mathcal N(\\mu_b, \\sigma_b^2),

all independent (Halverson, Maiti, Stoner, arXiv:2008.08601, §2; physics.md §1). The
pre-activation covariance is :math:`m(x, x') = \\sigma_b^2 + \\sigma_W^2\\, x\\cdot x'/d_{in}`
and for zero means the output two-point function is the GP kernel at *every* width,
:math:`K(x,x') = \\sigma_b^2 + \\sigma_W^2\\, E[\\sigma(z)\\sigma(z')]`.

Each ensemble pairs its finite-width forward pass with its infinite-width kernel, in the
manner of neural-tangents' ``stax`` layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from ._checks import NNGPInputError


@dataclass(frozen=True)
class SingleLayerNet:
    """Hyperparameters of a single-hidden-layer ensemble (see the module docstring).

    Subclasses fix the activation and supply the closed-form kernel.
    """

    d_in: int = 1
    sigma_w: float = 1.0
    sigma_b: float = 1.0
    mu_w: float = 0.0
    mu_b: float = 0.0

    name: ClassVar[str] = "net"

    def __post_init__(self):
        object.__setattr__(self, "d_in", _checks.positive_int("d_in", self.d_in))
        for field in ("sigma_w", "sigma_b"):
            value = _checks.finite_float(field, getattr(self, field), minimum=0.0)
            object.__setattr__(self, field, value)
        for field in ("mu_w", "mu_b"):
            object.__setattr__(self, field, _checks.finite_float(field, getattr(self, field)))

    # --- hyperparameters -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain description, e.g. for file provenance: ``{"ensemble": "erf", ...}``."""
        return {"ensemble": self.name, **dataclasses.asdict(self)}

    @property
    def zero_mean(self) -> bool:
        return self.mu_w == 0.0 and self.mu_b == 0.0

    def _require_zero_mean(self, what: str):
        if not self.zero_mean:
            raise NNGPInputError(
                f"{what} is the closed form for mu_w = mu_b = 0, but this {type(self).__name__} "
                f"has mu_w={self.mu_w}, mu_b={self.mu_b}; use sampling for non-zero means"
            )

    # --- kernels ---------------------------------------------------------------------------
    def preactivation_cov(self, X, Y=None):
        """m(x, y) = σ_b² + σ_W² x·y / d_in, the covariance of the hidden pre-activations."""
        X = jnp.asarray(X)
        Y = X if Y is None else jnp.asarray(Y)
        return self.sigma_b**2 + self.sigma_w**2 * (X @ Y.T) / self.d_in

    def preactivation_var(self, X):
        """v(x) = m(x, x) = σ_b² + σ_W² |x|² / d_in, for each row of X."""
        X = jnp.asarray(X)
        return self.sigma_b**2 + self.sigma_w**2 * jnp.sum(X * X, axis=-1) / self.d_in

    def kernel(self, X, Y=None):
        """GP kernel K(x, y) as an (n, m) array; rows of X and Y are inputs of dimension d_in.

        Exact two-point function of the ensemble at every width (zero means).
        """
        self._require_zero_mean("kernel")
        X = _checks.inputs("X", X, self.d_in)
        Y = X if Y is None else _checks.inputs("Y", Y, self.d_in)
        return self._kernel(jnp.asarray(X), jnp.asarray(Y))

    def _kernel(self, X, Y):
        """Kernel on validated jnp arrays; traceable, so lattice code can jit and vmap it."""
        raise NotImplementedError

    def activation(self, z, var):
        """σ(z) for pre-activations z whose variance is ``var`` (only Gauss-net uses it)."""
        raise NotImplementedError

    # --- finite-width networks --------------------------------------------------------------
    def network_outputs(self, keys, X, width: int, dtype=jnp.float32):
        """Outputs (len(keys), n) of the networks drawn from ``keys`` (one key per network).

        Pure and traceable: the sampler jit-compiles it. One key per network makes the
        draws independent of how networks are grouped into batches, shards or devices.
        """
        n_params = width * (self.d_in + 2) + 1
        X = jnp.asarray(X, dtype)
        var = self.preactivation_var(X).astype(dtype)

        def one(key):
            eps = jax.random.normal(key, (n_params,), dtype)
            w0 = eps[: width * self.d_in].reshape(width, self.d_in)
            rest = eps[width * self.d_in :]
            b0, a, b1 = rest[:width], rest[width : 2 * width], rest[2 * width]
            # Python floats (weakly typed) keep the batch in `dtype`; np.float64 scalars
            # would silently promote it to float64 under x64 (3x slower on CPU).
            w0 = self.mu_w + float(self.sigma_w / np.sqrt(self.d_in)) * w0
            b0 = self.mu_b + self.sigma_b * b0
            a = self.mu_w + float(self.sigma_w / np.sqrt(width)) * a
            b1 = self.mu_b + self.sigma_b * b1
            z = w0 @ X.T + b0[:, None]  # (width, n)
            return a @ self.activation(z, var[None, :]) + b1

        return jax.vmap(one)(keys)

    def sample_outputs(self, seed: int, X, width: int, n_nets: int, dtype=jnp.float32):
        """(n_nets, n) outputs of ``n_nets`` freshly drawn networks of the given width.

        Network j uses the key ``fold_in(fold_in(PRNGKey(seed), width), j)``, the same
        networks the streaming sampler draws for this seed.
        """
        X = _checks.inputs("X", X, self.d_in)
        width = _checks.positive_int("width", width)
        n_nets = _checks.positive_int("n_nets", n_nets)
        keys = network_keys(seed, width, 0, n_nets)
        return np.asarray(self.network_outputs(keys, X, width, dtype))


def network_keys(seed: int, width: int, start, count: int):
    """PRNG keys of networks start..start+count-1 at this width: fold_in(seed) on (width, j)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), width)
    idx = jnp.arange(count, dtype=jnp.uint32) + jnp.asarray(start, jnp.uint32)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, idx)


@dataclass(frozen=True)
class ErfNet(SingleLayerNet):
    """Erf-net, σ(z) = erf(z).

    .. math:: K = \\sigma_b^2 + \\sigma_W^2 \\frac{2}{\\pi}
        \\arcsin\\frac{2 m(x,y)}{\\sqrt{(1+2m(x,x))(1+2m(y,y))}}

    (Williams 1997), evaluated as ``arctan2(2m', sqrt((1+2m)(1+2m'') - 4m'^2))`` for
    stability at coincident points, the form neural-tangents uses.
    """

    name: ClassVar[str] = "erf"

    def _kernel(self, X, Y):
        mxy = self.preactivation_cov(X, Y)
        vx = 1.0 + 2.0 * self.preactivation_var(X)
        vy = 1.0 + 2.0 * self.preactivation_var(Y)
        det = jnp.clip(vx[:, None] * vy[None, :] - 4.0 * mxy**2, 0.0, None)
        return self.sigma_b**2 + self.sigma_w**2 * (2.0 / jnp.pi) * jnp.arctan2(
            2.0 * mxy, jnp.sqrt(det)
        )

    def activation(self, z, var):
        return jax.lax.erf(z)


@dataclass(frozen=True)
class ReLUNet(SingleLayerNet):
    """ReLU-net, σ(z) = max(0, z); the authors used σ_b = 0 (physics.md §1).

    .. math:: K = \\sigma_b^2 + \\frac{\\sigma_W^2}{2\\pi}\\sqrt{m(x,x)\\,m(y,y)}
        \\,(\\sin\\theta + (\\pi-\\theta)\\cos\\theta),\\quad
        \\cos\\theta = \\frac{m(x,y)}{\\sqrt{m(x,x)\\,m(y,y)}}

    (the degree-1 arc-cosine kernel, Cho & Saul 2009); cos θ is clipped to [-1, 1] and a
    zero-variance input (x = 0 with σ_b = 0) gives K = σ_b².
    """

    sigma_b: float = 0.0
    name: ClassVar[str] = "relu"

    def _kernel(self, X, Y):
        mxy = self.preactivation_cov(X, Y)
        norm = jnp.sqrt(self.preactivation_var(X)[:, None] * self.preactivation_var(Y)[None, :])
        safe = jnp.where(norm > 0, norm, 1.0)
        cos = jnp.clip(mxy / safe, -1.0, 1.0)
        theta = jnp.arccos(cos)
        body = jnp.sqrt(jnp.clip(1.0 - cos**2, 0.0, None)) + (jnp.pi - theta) * cos
        return self.sigma_b**2 + self.sigma_w**2 / (2 * jnp.pi) * jnp.where(
            norm > 0, norm * body, 0.0
        )

    def activation(self, z, var):
        return jnp.maximum(z, 0.0)


@dataclass(frozen=True)
class GaussNet(SingleLayerNet):
    """Gauss-net, σ(z; x) = exp(z - v(x)), v(x) = σ_b² + σ_W² |x|²/d_in = Var z(x).

    The normalisation uses the ensemble's real σ_b, σ_W and d_in (the authors' code fixed
    them to 1, which is only right for d_in = 1 and unit σ's). Then

    .. math::

        K = \\sigma_b^2 + \\sigma_W^2
            \\exp\\!\\left(-\\frac{\\sigma_W^2 |x-y|^2}{2 d_{in}}\\right),

    since E[e^{z+z'}] = e^{(v + v' + 2m)/2}.
    """

    name: ClassVar[str] = "gauss"

    def _kernel(self, X, Y):
        d2 = (
            jnp.sum(X * X, axis=1)[:, None]
            + jnp.sum(Y * Y, axis=1)[None, :]
            - 2.0 * (X @ Y.T)
        )
        d2 = jnp.clip(d2, 0.0, None)
        decay = jnp.exp(-(self.sigma_w**2) * d2 / (2 * self.d_in))
        return self.sigma_b**2 + self.sigma_w**2 * decay

    def activation(self, z, var):
        return jnp.exp(z - var)


ENSEMBLES: dict[str, type[SingleLayerNet]] = {"erf": ErfNet, "relu": ReLUNet, "gauss": GaussNet}


def make_ensemble(name: str, **hyper) -> SingleLayerNet:
    """Ensemble by name (``erf``, ``relu``, ``gauss``) with the given hyperparameters."""
    try:
        cls = ENSEMBLES[str(name).lower()]
    except KeyError:
        raise NNGPInputError(
            f"ensemble must be one of {sorted(ENSEMBLES)}, got {name!r}"
        ) from None
    return cls(**hyper)


def ensemble_from_dict(d: dict) -> SingleLayerNet:
    """Inverse of :meth:`SingleLayerNet.to_dict`."""
    d = dict(d)
    name = d.pop("ensemble")
    fields = {f.name for f in dataclasses.fields(SingleLayerNet)}
    return make_ensemble(name, **{k: v for k, v in d.items() if k in fields})
