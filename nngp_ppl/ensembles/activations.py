r"""Activations: one record per activation, one registry for every ensemble that uses one.

An :class:`Activation` holds everything the package knows about an activation σ:

* ``jax_fn`` (the forward pass, inside the jit-compiled sampler) and ``numpy_fn`` (the
  quadrature oracle);
* ``pair`` — the closed form of the layer map :math:`E[\sigma(u)\sigma(v)]` for
  :math:`(u, v) \sim \mathcal N(0, [[a, c], [c, b]])`, or None: then the kernel comes from
  the 2-D quadrature :func:`nngp_ppl.theory.quadrature.pair_expectation`;
* ``dpair`` — the closed form of :math:`E[\sigma'(u)\sigma'(v)]` (the NTK's layer map), or
  None: quadrature of σ';
* ``exact_moments`` / ``exact_max_order`` — which exact finite-width moment oracle of
  :mod:`nngp_ppl.theory.exact` covers a single-layer net with this activation
  (one of :data:`nngp_ppl.vocabulary.EXACT_METHODS`) and up to which order;
* ``growth`` — the analytic growth exponent p of :math:`\tilde K(x, y) \sim |y|^p` of the
  single-layer kernel (physics.md §8) as a function ``(net, propagator)``, or None: measured
  from the kernel (:func:`nngp_ppl.ensembles.kernel_growth_numeric`);
* ``needs_variance`` — σ depends on the pre-activation's variance as well (Gauss-net's
  :math:`\sigma(z; x) = e^{z - v(x)}`, ``jax_fn(z, var)``): not elementwise, so only its own
  ensemble uses it.

ErfNet, ReLUNet, GaussNet, ActivationNet and MLP read their activation from
:data:`ACTIVATIONS`; a closed-form activation is one entry here. Names are added with
:func:`nngp_ppl.register_activation` (quadrature ones only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special as _special

__all__ = [
    "ACTIVATIONS",
    "ERF",
    "GAUSS",
    "RELU",
    "Activation",
    "numpy_from_jax",
    "quadrature_names",
]


@dataclass(frozen=True)
class Activation:
    """An activation and what the package knows about it in closed form (module docstring).

    ``numpy_fn`` None means ``jax_fn`` through NumPy <-> JAX conversion (set by
    :func:`numpy_from_jax` at construction). ``pair`` / ``dpair`` take and return arrays of
    a common broadcast shape (traceable ``jnp`` code for ``pair``: the kernels jit it).
    """

    name: str
    jax_fn: Callable
    numpy_fn: Callable | None = None
    pair: Callable | None = None
    dpair: Callable | None = None
    exact_moments: str | None = "quadrature"
    exact_max_order: int = 12
    growth: Callable | None = None
    needs_variance: bool = False

    def __post_init__(self):
        if self.numpy_fn is None and not self.needs_variance:
            object.__setattr__(self, "numpy_fn", numpy_from_jax(self.jax_fn))


def numpy_from_jax(fn: Callable) -> Callable:
    """``fn`` (on JAX arrays) as a float64 NumPy function, for the quadrature oracle."""
    def numpy_fn(z):
        return np.asarray(fn(jnp.asarray(z, dtype=jnp.float64)), dtype=np.float64)

    return numpy_fn


# --------------------------------------------------------------------------------------------
# closed-form layer maps for (u, v) ~ N(0, [[a, c], [c, b]])
# --------------------------------------------------------------------------------------------
def _erf_pair(a, b, c):
    r""":math:`E[\mathrm{erf}\,u\,\mathrm{erf}\,v] = \frac2\pi
    \arcsin\frac{2c}{\sqrt{(1+2a)(1+2b)}}` (Williams 1997), evaluated as
    ``arctan2(2c, sqrt((1+2a)(1+2b) - 4c²))`` for stability at c² = ab, the form
    neural-tangents uses."""
    det = jnp.clip((1.0 + 2.0 * a) * (1.0 + 2.0 * b) - 4.0 * c * c, 0.0, None)
    return (2.0 / jnp.pi) * jnp.arctan2(2.0 * c, jnp.sqrt(det))


def _erf_dpair(a, b, c):
    r""":math:`E[\mathrm{erf}'u\,\mathrm{erf}'v] = \frac4\pi\,((1+2a)(1+2b) - 4c^2)^{-1/2}`
    (NumPy; the determinant floored at 1e-300)."""
    det = np.clip((1.0 + 2.0 * a) * (1.0 + 2.0 * b) - 4.0 * c * c, 1e-300, None)
    return (4.0 / np.pi) / np.sqrt(det)


def _relu_pair(a, b, c):
    r"""The degree-1 arc-cosine kernel (Cho & Saul 2009): :math:`E[u_+ v_+] =
    \frac{\sqrt{ab}}{2\pi}(\sin\theta + (\pi - \theta)\cos\theta)`, :math:`\cos\theta =
    c/\sqrt{ab}` clipped to [-1, 1]; 0 where a variance is 0 (x = 0 with σ_b = 0)."""
    norm = jnp.sqrt(jnp.clip(a * b, 0.0, None))
    safe = jnp.where(norm > 0, norm, 1.0)
    cos = jnp.clip(c / safe, -1.0, 1.0)
    body = jnp.sqrt(jnp.clip(1.0 - cos**2, 0.0, None)) + (jnp.pi - jnp.arccos(cos)) * cos
    return jnp.where(norm > 0, norm * body / (2.0 * jnp.pi), 0.0)


def _relu_dpair(a, b, c):
    r""":math:`E[\theta(u)\theta(v)] = (\pi - \theta)/(2\pi)` (NumPy); a zero-variance
    pre-activation is 0, where σ'(0) = 1_{0>0} = 0."""
    norm = np.sqrt(np.clip(a * b, 0.0, None))
    cos = np.clip(c / np.where(norm > 0, norm, 1.0), -1.0, 1.0)
    return np.where(norm > 0, (np.pi - np.arccos(cos)) / (2.0 * np.pi), 0.0)


def _gauss_pair(a, b, c):
    r""":math:`E[e^{u-a} e^{v-b}] = e^{c - (a+b)/2}` (NumPy; σ' = σ, so it is also the
    derivative map). Gauss-net's kernel evaluates the same expectation from
    :math:`|x - y|^2` (:class:`nngp_ppl.GaussNet`), whose derivatives at coincident points
    are exact."""
    return np.exp(c - (a + b) / 2.0)


def _constant_growth(p: float) -> Callable:
    def growth(net, propagator: str) -> float:
        return p

    return growth


def _gauss_growth(net, propagator: str) -> float | None:
    # K -> σ_b² far away: growth 0 for the full K with σ_b > 0, else a Gaussian decay.
    return 0.0 if propagator == "full" and net.sigma_b > 0 else None


_INV_SQRT2 = float(1.0 / np.sqrt(2.0))


def _gelu_jax(z):
    # A Python float keeps a float32 batch in float32 (an np.float64 would promote it).
    return 0.5 * z * (1.0 + jax.lax.erf(z * _INV_SQRT2))


def _gelu_numpy(z):
    return 0.5 * z * (1.0 + _special.erf(z / np.sqrt(2.0)))


def _softplus_numpy(z):
    return np.logaddexp(0.0, z)


def _relu(z):
    return jnp.maximum(z, 0.0)


def _gauss(z, var):
    return jnp.exp(z - var)


#: erf: closed-form kernel and NTK; exact moments by Price's theorem; K tends to a
#: direction-dependent constant (growth 0), also after σ_b² is removed.
ERF = Activation("erf", jax.lax.erf, _special.erf, _erf_pair, _erf_dpair, "price", 12,
                 _constant_growth(0.0))
#: ReLU: the arc-cosine kernel; exact moments by cone integrals; K grows like |y|
#: (homogeneous of degree 1).
RELU = Activation("relu", _relu, None, _relu_pair, _relu_dpair, "cones", 12,
                  _constant_growth(1.0))
#: Gauss-net's normalised exponential (variance-dependent); log-normal exact moments.
GAUSS = Activation("gauss", _gauss, None, _gauss_pair, _gauss_pair, "lognormal", 12,
                   _gauss_growth, needs_variance=True)

#: Every activation known by name: the closed-form ones above, the quadrature built-ins
#: (GELU is the exact z Φ(z), not the tanh approximation) and those added by
#: :func:`nngp_ppl.register_activation`.
ACTIVATIONS: dict[str, Activation] = {
    a.name: a for a in (
        ERF, RELU, GAUSS,
        Activation("tanh", jnp.tanh, np.tanh),
        Activation("gelu", _gelu_jax, _gelu_numpy),
        Activation("sin", jnp.sin, np.sin),
        Activation("softplus", jax.nn.softplus, _softplus_numpy),
    )
}


def quadrature_names() -> list[str]:
    """Sorted names of the activations whose kernel is a quadrature (no closed form):
    those :class:`nngp_ppl.ActivationNet` takes by name."""
    return sorted(n for n, a in ACTIVATIONS.items() if a.pair is None)
