r"""The centring map and propagator of the centred theory (fits: :mod:`.centred`).

Expand around the mean, for ensembles whose f -> -f symmetry is broken.

An ensemble with non-zero parameter means (μ_W, μ_b; physics.md §1) has an O(1) mean
:math:`\langle f(x)\rangle` at every width, which no first-order tadpole describes. So the
fit expands around it (physics.md §6b, "expand around the mean"): :math:`f = \langle
f\rangle + \phi`, with :math:`\phi` a zero-mean field of covariance K and the action

.. math:: S[\phi] = S_{GP}[\phi; K] + \sum_c g_c \int_{box} \phi^{k_c} .

**Data.** The centred moments :math:`C_n(t) = \langle\prod_{a\in t}(f(x_a) - \langle
f(x_a)\rangle)\rangle` of orders 2..6, estimated by plugging the sampled raw moments into

.. math:: C_n(t) = \sum_{S\subseteq t} G_{|S|}(t_S) \prod_{a\in t\setminus S}(-G_1(x_a)),
    \qquad G_0 = 1

(the binomial expansion of the product; the sample mean replaces the mean). The deviations
the couplings are fitted to are

.. math:: r_n = C_n - \mathrm{Wick}_n(C_2) \quad (\text{odd } n:\ r_n = C_n),

the free part the Gaussian field with the *centred 2-pt function* ``two_point="measured"``,
the default): with μ_W ≠ 0 the finite-width covariance is the limit covariance K plus
:math:`(\mu_W^2/N)(M_{12} - M_1 M_2)` (:mod:`nngp_ppl.theory.exact`), an O(1/N) shift of
the size of the connected 4-pt function, which Wick(K) would hand to λ (the same argument
as :mod:`nngp_ppl.two_point` for deep MLPs). Then :math:`r_4 = \kappa_4`,
:math:`r_3 = \kappa_3`, :math:`r_5 = \kappa_5 + \sum_{10}\kappa_3 C_2`,
:math:`r_6 = \kappa_6 + \sum_{15}\kappa_4 C_2 + \sum_{10}\kappa_3\kappa_3`.
``two_point="kernel"`` subtracts Wick(K) instead.

The map :math:`\hat G \mapsto \hat r` (raw moments of orders 1..max, concatenated) is a
polynomial; it is written in JAX and its Jacobian J taken by forward-mode differentiation,
so the noise of :math:`\hat r` is the delta method :math:`J\,\Sigma_G\,J^\top` with
:math:`\Sigma_G` the estimator covariance of the raw moments (exact finite-width moments
up to twice the highest order, linearised at the exact moments; or the sampled covariance,
linearised at the estimates). The plug-in bias is O(1/n_nets), below the noise.

**Propagator.** Lines and vertex legs carry the covariance K of the field φ, from the
ensemble's ``traced_kernel``. For a single-layer net with non-zero means that is the
N -> infinity covariance :func:`nngp_ppl.theory.exact.limit_kernel`,
:math:`K = \sigma_b^2 + \sigma_W^2 E[\sigma(z_x)\sigma(z_y)]` with pre-activations of mean
:math:`\nu(x) = \mu_W\sum_\alpha x_\alpha + \mu_b`, as a traceable function of the lattice
points (:class:`LimitCovariance`): closed form for Gauss-net; for Erf-net by Price's
theorem in the correlation c of the two pre-activations,

.. math:: E[\mathrm{erf}\,z_x\,\mathrm{erf}\,z_y] =
    \mathrm{erf}\frac{\nu_x}{\sqrt{1+2a}}\,\mathrm{erf}\frac{\nu_y}{\sqrt{1+2b}}
    + \frac4\pi\int_0^{c} \frac{d c'}{\sqrt{D(c')}}
    \exp\!\Big(-\frac{(1+2b)\nu_x^2 - 4c'\nu_x\nu_y + (1+2a)\nu_y^2}{D(c')}\Big),

:math:`D = (1+2a)(1+2b) - 4c'^2`, a = m(x,x), b = m(y,y), c = m(x,y) (∂/∂c E[f(z_x)g(z_y)]
= E[f'g'] and :math:`E[e^{-z^\top z}] = \det(I+2\Sigma)^{-1/2} e^{-\nu^\top(I+2\Sigma)^{-1}
\nu}`); the integrand is analytic on [0, c] (D >= 1), so 48 Gauss–Legendre nodes give
round-off accuracy; at ν = 0 it is the arcsine kernel. For an
:class:`~nngp_ppl.ActivationNet` (tanh, gelu, sin, softplus, registered activations)
:math:`E[\sigma(z_x)\sigma(z_y)]` is the trapezoid quadrature of
:func:`nngp_ppl.ensembles.quadrature.pair_expectation` with the means ``nu`` (relative
error <= 1e-12 of :math:`E|\sigma\sigma'|`; the shift moves the activation's argument
along the real axis, leaving the analyticity strip that sets the step and the Gaussian
tail that sets the radius as they were), run through ``jax.pure_callback`` and memoised
on (a, b, c, ν_x, ν_y): traceable under jit and vmap, not differentiable. ReLU-net is
refused (its cone oracle needs zero-mean pre-activations). Any other object with a
``traced_kernel`` (e.g. a trained ensemble's covariance) can be the propagator.

**Designs.** The first-order designs of the centred moments (``centred=True`` of
:func:`nngp_ppl.theory.diagrams.first_order_design_function`): no connected piece holds
exactly one external point, rule 4.5 on. With μ_a = μ_W/N the odd cumulants are
κ_3 = O(1/N), κ_5 = O(1/N²) (:mod:`nngp_ppl.theory.exact`), so g₃ ~ 1/N like λ and the g₃²
exchange in the 4-pt function is O(1/N²), beyond first order.

**Estimand.** physics.md §5a on these r: :math:`g^* = B(\Lambda)\,r`, evaluated on the
exact centred moments of the exact finite-width oracle (:func:`exact_deviation`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from .. import tuples as _tuples
from .._checks import NNGPInputError
from ..ensembles.core import Ensemble, SingleLayerNet, quadrature_pair_moment

__all__ = [
    "CENTRED_ORDERS",
    "CENTRED_TWO_POINT",
    "ERF_PRICE_NODES",
    "LimitCovariance",
    "MEAN_NET_MOMENTS",
    "check_mean_net",
    "propagator_net",
    "raw_orders",
    "centred_moments",
    "wick",
    "deviation_function",
    "deviation_and_jacobian",
    "default_centred_orders",
    "describe",
]

#: Centred correlator orders a centred fit can use (the 2-pt function is the free part's).
CENTRED_ORDERS = (3, 4, 5, 6)
#: ``two_point`` values of the centred free part (module docstring).
CENTRED_TWO_POINT = ("measured", "kernel")

#: Gauss–Legendre nodes of the Erf limit kernel's Price integral (module docstring).
ERF_PRICE_NODES = 48


# --------------------------------------------------------------------------------------------
# the propagator: the limit covariance as a traced kernel
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LimitCovariance(Ensemble):
    r"""The N -> infinity covariance of a single-layer net with non-zero means, as an
    ensemble-like propagator (``traced_kernel``, ``kernel``, ``kernel_constant``): the
    field φ = f - <f> of the centred theory (module docstring). ``base`` is the net:
    Gauss-net (closed form), Erf-net (Price integral) or an ActivationNet (quadrature with
    the means, through ``jax.pure_callback``: traceable, not differentiable); ReLU-net
    refused."""

    d_in: int = 1
    base: object = None
    name: ClassVar[str] = "limit_covariance"
    two_point_exact: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        check_mean_net(self.base)

    def traced_kernel(self, X, Y):
        net = self.base
        nx = net.mu_w * jnp.sum(X, axis=1) + net.mu_b
        ny = net.mu_w * jnp.sum(Y, axis=1) + net.mu_b
        if net.exact_moments == "lognormal":
            d2 = sum((X[:, None, i] - Y[None, :, i]) ** 2 for i in range(X.shape[1]))
            body = jnp.exp(nx[:, None] + ny[None, :] - net.sigma_w**2 * d2 / (2 * net.d_in))
        elif net.exact_moments == "price":
            body = _erf_mean_moment(net.preactivation_var(X)[:, None],
                                    net.preactivation_var(Y)[None, :],
                                    net.preactivation_cov(X, Y), nx[:, None], ny[None, :])
        else:  # "quadrature": ActivationNet
            body = quadrature_pair_moment(net, X, Y, nx, ny)
        return net.sigma_b**2 + net.sigma_w**2 * body

    def kernel_constant(self) -> float:
        """σ_b²: the output bias is exactly Gaussian around its mean μ_b."""
        return float(self.base.sigma_b) ** 2

    def kernel_length_scale(self) -> float:
        return self.base.kernel_length_scale()


def _erf_mean_moment(a, b, c, nx, ny):
    """E[erf(z_x) erf(z_y)] for means (nx, ny), variances (a, b), covariance c (broadcast)."""
    s, w = leggauss(ERF_PRICE_NODES)
    s, w = 0.5 * (s + 1.0), 0.5 * w
    pa, pb = 1.0 + 2.0 * a, 1.0 + 2.0 * b
    start = jax.lax.erf(nx / jnp.sqrt(pa)) * jax.lax.erf(ny / jnp.sqrt(pb))
    # The nodes on a leading axis, summed in one reduction: a loop over them traced 48
    # copies of the integrand (0.16 s of tracing per kernel call, 30 s of a centred
    # posterior's model comparison).
    dims = len(jnp.broadcast_shapes(*(jnp.shape(v) for v in (a, b, c, nx, ny))))
    sj = jnp.asarray(s).reshape((-1,) + (1,) * dims)
    cp = sj * c
    det = pa * pb - 4.0 * cp**2
    quad = (pb * nx**2 - 4.0 * cp * nx * ny + pa * ny**2) / det
    total = jnp.tensordot(jnp.asarray(w), jnp.exp(-quad) / jnp.sqrt(det), axes=1)
    return start + (4.0 / jnp.pi) * c * total


#: ``exact_moments`` of the single-layer nets whose limit covariance with means is traced
#: here: Gauss-net's closed form, Erf-net's Price integral, ActivationNet's quadrature.
MEAN_NET_MOMENTS = ("lognormal", "price", "quadrature")


def check_mean_net(net) -> None:
    """Refuse a net whose limit covariance with means has no traced form here."""
    if not isinstance(net, SingleLayerNet):
        raise NNGPInputError(f"net: the limit covariance with non-zero means is defined for "
                             f"single-layer nets (ErfNet, GaussNet, ActivationNet), got "
                             f"{type(net).__name__}")
    if net.exact_moments not in MEAN_NET_MOMENTS:
        raise NNGPInputError(
            f"net: the centred theory of a non-zero-mean {type(net).__name__} needs its limit "
            "covariance as a traced kernel and an exact oracle, which exist for ErfNet, "
            "GaussNet and ActivationNet (tanh, gelu, sin, softplus, registered activations), "
            "not for ReLUNet (its cone oracle needs zero-mean pre-activations); got "
            f"mu_w={net.mu_w}, mu_b={net.mu_b}")


def propagator_net(net):
    """The propagator object of the centred theory of ``net``: ``net`` itself for a
    zero-mean ensemble (its kernel is the covariance), :class:`LimitCovariance` for a
    single-layer net with non-zero means (refused where that has no traced form)."""
    if getattr(net, "zero_mean", True):
        return net
    check_mean_net(net)
    return LimitCovariance(net.d_in, net)


# --------------------------------------------------------------------------------------------
# the data: centred moments and their deviations from the free part
# --------------------------------------------------------------------------------------------
def raw_orders(data_orders) -> tuple[int, ...]:
    """The raw moment orders 1..max(data_orders) the centred deviations are built from."""
    return tuple(range(1, max(data_orders) + 1))


@functools.lru_cache(maxsize=32)
def _centring_terms(k: int, n: int):
    """Per subset S of the n positions: (|S|, rows of t_S in distinct_tuples(k, |S|),
    (T_n, n - |S|) inputs of the positions outside S)."""
    rows = _tuples.distinct_tuples(k, n)
    out = []
    for mask in range(2 ** n):
        inside = [j for j in range(n) if mask >> j & 1]
        outside = [j for j in range(n) if not mask >> j & 1]
        sub = _tuples.rows_of(k, np.sort(rows[:, inside], axis=1)) if inside else None
        out.append((len(inside), sub, rows[:, outside]))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _pairing_rows(k: int, n: int) -> tuple[np.ndarray, ...]:
    """Per pairing of n positions: (T_n, n/2) rows of each pair in distinct_tuples(k, 2)."""
    rows = _tuples.distinct_tuples(k, n)
    pair = _tuples.full_index(k, 2)
    return tuple(np.stack([pair[rows[:, a], rows[:, b]] for a, b in p], axis=1)
                 for p in _tuples.pairings(n))


def centred_moments(raw: dict, k: int, n: int, *, xp=jnp):
    r""":math:`C_n` on distinct n-tuples from raw moments ``raw`` {m: (T_m,)} of orders
    1..n (module docstring) in the array module ``xp``: ``jnp`` traces; ``np`` for concrete
    data, which jax would run op by op, compiling some 40 small programs per shape (1-2 s;
    the same bits)."""
    mean = raw[1]
    total = 0.0
    for size, sub, outside in _centring_terms(k, n):
        term = raw[size][sub] if size else 1.0
        if outside.shape[1]:
            term = term * xp.prod(-mean[outside], axis=1)
        total = total + term
    return total


def wick(c2, k: int, n: int):
    """Wick sum of the distinct 2-pt values ``c2`` on distinct n-tuples (0 for odd n)."""
    if n % 2:
        return jnp.zeros(len(_tuples.distinct_tuples(k, n)))
    return sum(jnp.prod(c2[p], axis=1) for p in _pairing_rows(k, n))


def deviation_function(k: int, data_orders, two_point: str = "measured", K=None):
    r"""Pure JAX map: raw moments of :func:`raw_orders` concatenated -> the centred
    deviations :math:`r` of ``data_orders`` concatenated (module docstring). ``K``: the
    (k, k) propagator on the inputs, used by ``two_point="kernel"``."""
    data_orders, kern = _deviation_args(k, data_orders, two_point, K)
    fn = _deviation_map(k, data_orders, two_point)
    return lambda vec: fn(vec, kern)


def _deviation_args(k: int, data_orders, two_point: str, K):
    if two_point not in CENTRED_TWO_POINT:
        raise NNGPInputError(f"two_point must be one of {CENTRED_TWO_POINT} for a centred "
                             f"fit, got {two_point!r}")
    data_orders = tuple(int(n) for n in data_orders)
    # A placeholder where the free part is measured: the compiled map takes it but reads
    # nothing from it.
    kern = (jnp.zeros(1) if K is None
            else jnp.asarray(_tuples.compress(np.asarray(K), k, 2)))
    return data_orders, kern


@functools.lru_cache(maxsize=64)
def _deviation_map(k: int, data_orders: tuple[int, ...], two_point: str):
    """(vec, kern) -> r of :func:`deviation_function`, one per shape: the propagator is an
    argument, not a constant, so that one compiled program serves every K."""
    orders = raw_orders(data_orders)
    sizes = [len(_tuples.distinct_tuples(k, m)) for m in orders]
    cuts = np.cumsum([0] + sizes)

    def fn(vec, kern):
        raw = {m: vec[cuts[i]:cuts[i + 1]] for i, m in enumerate(orders)}
        c2 = centred_moments(raw, k, 2) if two_point == "measured" else kern
        return jnp.concatenate([centred_moments(raw, k, n) - wick(c2, k, n)
                                for n in data_orders])

    return fn


@functools.lru_cache(maxsize=64)
def _deviation_program(k: int, data_orders: tuple[int, ...], two_point: str):
    # One compiled program for the value and the Jacobian: run op by op, the map and its
    # forward-mode derivative dispatched some 200 small programs per call (10 s of a CLI
    # fit's compilation).
    fn = _deviation_map(k, data_orders, two_point)
    return jax.jit(lambda vec, kern: (fn(vec, kern), jax.jacfwd(fn)(vec, kern)))


def deviation_and_jacobian(raw_vector, k: int, data_orders, two_point: str = "measured",
                           K=None):
    """(r (T,), J (T, T_raw)) at ``raw_vector`` (:func:`deviation_function`)."""
    data_orders, kern = _deviation_args(k, data_orders, two_point, K)
    vec = jnp.asarray(raw_vector, dtype=jnp.float64)
    r, jac = _deviation_program(k, data_orders, two_point)(vec, kern)
    return np.asarray(r), np.asarray(jac)


def default_centred_orders(couplings) -> tuple[int, ...]:
    """Centred data orders of a basis: the 4-pt function, the 6-pt function with κ, the
    3-pt function with an odd coupling and the 5-pt function with g5."""
    names = set(couplings)
    odd = {"g3", "g5"} & names
    out = [4] + ([6] if "kappa" in names else [])
    out += [3] if odd else []
    out += [5] if "g5" in names else []
    return tuple(sorted(out))


def describe(two_point: str) -> str:
    """The free-part description stored with a centred fit."""
    what = ("Wick sums of the measured centred 2-pt function C2 (the finite-width "
            "covariance; its noise propagated)" if two_point == "measured"
            else "Wick sums of the propagator K")
    return (f"centred moments <prod (f - <f>)> from the raw moments (delta method); free "
            f"part: {what}; propagator: the field's covariance K on lines")
