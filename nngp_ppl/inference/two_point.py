r"""The free part a coupling fit subtracts, and the noise it adds (physics.md §4, rule 4.5).

A first-order fit reads the couplings off the deviations :math:`r = G - G_{free}` of the
4- and 6-pt functions from a Gaussian field's. Rule 4.5 drops the diagrams that correct the
2-pt function because K *is* the finite-width 2-pt function of the paper's nets, so there
:math:`G_{free} = \mathrm{Wick}(K)`. For an ensemble where it is not (deep MLPs,
``two_point_exact = False``: :math:`G_2(N) = K + O(1/N)`),

.. math:: G_4 - \mathrm{Wick}(K) = \kappa_4 + [\mathrm{Wick}(G_2) - \mathrm{Wick}(K)],

and the bracket, :math:`\approx 2\,\delta G_2 K` per pairing, is O(1/N) like the connected
part: λ would absorb it (7–13 % in example 06). So for such ensembles the free part is the
Gaussian field with the finite-width 2-pt function,

.. math:: G^{(n)}_{free} = \sum_{\text{pairings}} \prod G_2, \qquad
    r^{(4)} = G_4 - \mathrm{Wick}(G_2) = \kappa_4,\quad
    r^{(6)} = \kappa_6 + \textstyle\sum_{15} \kappa_4\, G_2,

(``two_point="measured"``; :func:`resolve`). The 6-pt deviation keeps its disconnected
:math:`\kappa_4 G_2` terms, which the first-order design carries as λ's disconnected
diagrams. Lines and vertex legs of the diagrams keep the propagator K: replacing K by
:math:`G_2` there changes :math:`\Delta G = D g` by :math:`O(g/N) = O(1/N^2)`, beyond the
first order the design describes, whereas in the free part the same O(1/N) difference is
of the size of the signal.

**Measured** :math:`\hat G_2` comes from the same networks as :math:`\hat G_n`, so the
deviation :math:`\hat r = \hat G_n - \mathrm{Wick}(\hat G_2)` has the linearised covariance

.. math:: \mathrm{Cov}(\hat r) = [\,I\;\; -J\,]\ \mathrm{Cov}(\hat G_n, \hat G_2)\
    [\,I\;\; -J\,]^\top, \qquad J = \partial\,\mathrm{Wick}_n/\partial G_2 |_{\hat G_2}

(:func:`wick_jacobian`), from the estimator covariance of the orders (2, n) together
(:meth:`nngp_ppl.sampling.stats.CorrelatorStats.covariance`, or the exact/GP moments). The bias of
:math:`\mathrm{Wick}(\hat G_2)`, :math:`O(1/n_{nets})`, is far below its noise.

**A Monte Carlo kernel** (:class:`nngp_ppl.JaxNetwork` without a kernel formula):
:math:`\hat K = \frac1M\sum_j f_j f_j^\top` over M fixed networks. Where the free part is
:math:`\mathrm{Wick}(\hat K)` (``two_point="kernel"``), its error adds
:math:`J_K \Sigma_K J_K^\top` to the noise of :math:`\hat r`, :math:`J_K` the same Wick
Jacobian at :math:`\hat K` and :math:`\Sigma_K = \mathrm{Cov}_j(f_j(x_a) f_j(x_b),
f_j(x_c) f_j(x_d))/M` the covariance of the distinct kernel entries
(:func:`kernel_entry_covariance`). It is independent of the sampled networks' noise.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from .._checks import NNGPInputError
from ..ensembles.networks import TwoPointWarning, warn_two_point
from ..theory import lattice as _lattice
from ..theory.wick import gp_correlator_tuples
from ..tuples import distinct_tuples, expand, full_index, pairings
from ..vocabulary import propagator_shift

__all__ = [
    "TWO_POINT",
    "DESCRIPTION",
    "resolve",
    "wick_jacobian",
    "free_part",
    "propagate",
    "two_point_matrix",
    "handled",
    "kernel",
    "kernel_entry_covariance",
    "kernel_noise",
    "kernel_influence",
    "influence_from_outputs",
    "kernel_coupling_variance",
    "kernel_coupling_influence",
]

#: ``two_point`` values: how the free part of the correlators is formed (:func:`resolve`).
TWO_POINT = ("auto", "kernel", "measured")

#: What each resolved mode subtracts, as stored in result files.
DESCRIPTION = {
    "kernel": "Wick sums of the kernel K (rule 4.5: K is the finite-width 2-pt function)",
    "measured": "Wick sums of the measured finite-width 2-pt function G2 at each width "
                "(K is not this ensemble's 2-pt function); its noise and covariance with "
                "G4/G6 propagated into the noise of the deviations; propagator K on lines",
}


def resolve(net, two_point: str = "auto", have_two_point: bool = True) -> str:
    """The free part a fit subtracts: ``"kernel"`` (Wick sums of K) or ``"measured"``
    (Wick sums of the sampled 2-pt function, module docstring).

    ``"auto"``: ``"measured"`` for an ensemble whose 2-pt function is not K
    (``two_point_exact`` False) when the data hold the 2-pt function, else ``"kernel"``;
    for such an ensemble without the 2-pt function that choice warns
    (:class:`nngp_ppl.TwoPointWarning`): λ then absorbs the 2-pt shift.
    """
    if two_point not in TWO_POINT:
        raise NNGPInputError(f"two_point must be one of {TWO_POINT}, got {two_point!r}")
    exact = bool(getattr(net, "two_point_exact", True))
    if two_point == "measured" and not have_two_point:
        raise NNGPInputError(
            "two_point='measured' needs the measured 2-pt function: sample with orders "
            "including 2 (the default (2, 4, 6)), or pass a mapping {2: G2, 4: G4, ...}; or "
            "use two_point='kernel'"
        )
    if two_point != "auto":
        return two_point
    if exact:
        return "kernel"
    if have_two_point:
        return "measured"

    warn_two_point(net, stacklevel=4)
    return "kernel"


def wick_jacobian(G2, n: int) -> np.ndarray:
    r""":math:`J_{tp} = \partial\,\mathrm{Wick}_n(G_2)_t / \partial G_{2,p}`, (T_n, T_2), on the
    distinct n-tuples t and distinct pairs p of :func:`nngp_ppl.tuples.distinct_tuples`.

    ``G2`` is the symmetric (k, k) 2-pt matrix; an off-diagonal pair p = {a, b} stands for
    both entries (a, b) and (b, a). Per pairing, the derivative of a product of n/2
    factors with respect to one factor is the product of the others.
    """
    G2 = np.asarray(G2, dtype=np.float64)
    k = G2.shape[0]
    rows = distinct_tuples(k, n)
    pair = full_index(k, 2)
    J = np.zeros((len(rows), len(distinct_tuples(k, 2))))
    t = np.arange(len(rows))
    if n % 2:  # no pairing: the Wick sum of an odd order is 0 (zero mean)
        return J
    for p in pairings(n):
        factors = [G2[rows[:, a], rows[:, b]] for a, b in p]
        for i, (a, b) in enumerate(p):
            others = np.prod([f for j, f in enumerate(factors) if j != i], axis=0)
            np.add.at(J, (t, pair[rows[:, a], rows[:, b]]), others)
    return J


def free_part(G2, orders) -> tuple[np.ndarray, np.ndarray]:
    """Wick sums of the (k, k) 2-pt matrix ``G2`` on the stacked distinct tuples of
    ``orders`` and their Jacobian in the distinct 2-pt values: ((T,), (T, T_2))."""
    G2 = np.asarray(G2, dtype=np.float64)
    values = np.concatenate([gp_correlator_tuples(G2, n) for n in orders])
    jac = np.concatenate([wick_jacobian(G2, n) for n in orders])
    return values, jac


def propagate(cov_full, jac) -> np.ndarray:
    r"""Covariance of :math:`\hat r = \hat G - \mathrm{Wick}(\hat G_2)` from the covariance
    of the stacked estimates :math:`(\hat G_2, \hat G)` (2-pt block first, as
    :meth:`~nngp_ppl.sampling.stats.CorrelatorStats.covariance` orders them): :math:`L C L^\top`,
    :math:`L = [-J\;\; I]`."""
    cov_full = np.asarray(cov_full, dtype=np.float64)
    T2 = jac.shape[1]
    L = np.concatenate([-jac, np.eye(jac.shape[0])], axis=1)
    if cov_full.shape != (T2 + jac.shape[0],) * 2:
        raise NNGPInputError(f"covariance of (G2, G) must be {(L.shape[1],) * 2}, got "
                             f"{cov_full.shape}")
    out = L @ cov_full @ L.T
    return 0.5 * (out + out.T)


def two_point_matrix(data, k: int, width=None) -> np.ndarray | None:
    """The measured (k, k) 2-pt function in ``data`` (a CorrelatorStats at ``width`` or a
    mapping with key 2), or None when it holds none."""

    if hasattr(data, "correlator_tuples") and hasattr(data, "orders"):
        if 2 not in data.orders:
            return None
        return expand(np.asarray(data.correlator_tuples(2, width), np.float64), k, 2)
    if isinstance(data, Mapping) and 2 in data:
        arr = np.asarray(data[2], dtype=np.float64)
        T2 = len(distinct_tuples(k, 2))
        if arr.shape == (T2,):
            arr = expand(arr, k, 2)
        if arr.shape != (k, k) or not np.all(np.isfinite(arr)):
            raise NNGPInputError(f"the 2-pt function (key 2) must be a finite ({k}, {k}) "
                                 f"matrix or {T2} distinct values, got shape {arr.shape}")
        return arr
    return None


@contextlib.contextmanager
def handled():
    """Silence :class:`~nngp_ppl.TwoPointWarning` once :func:`resolve` has chosen the free
    part (and warned where that choice lets λ absorb the 2-pt shift): K then serves only as
    the propagator, or as the free part the caller asked for."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TwoPointWarning)
        yield


def kernel(net, X) -> np.ndarray:
    """K on the inputs, without the :class:`~nngp_ppl.TwoPointWarning` (see :func:`handled`)."""
    with handled():
        return np.asarray(net.kernel(X), dtype=np.float64)


def kernel_entry_covariance(net, X) -> np.ndarray | None:
    r"""Covariance (T_2, T_2) of a Monte Carlo kernel's distinct entries on ``X``, or None
    when the kernel is exact (a formula, or not a :class:`~nngp_ppl.JaxNetwork` MC kernel):

    .. math:: \Sigma_{K,pq} = \frac{1}{M}\,\mathrm{Cov}_j\big(f_j(x_a) f_j(x_b),\,
        f_j(x_c) f_j(x_d)\big),\quad p = \{a, b\},\ q = \{c, d\},

    over the M kernel networks (Bessel-corrected); its diagonal is ``kernel_stderr``².
    """
    if getattr(net, "kernel_fn", True) is not None or not hasattr(net, "_kernel_networks"):
        return None

    F = np.asarray(net._kernel_networks(jnp.asarray(X, dtype=jnp.float64)), np.float64)
    rows = distinct_tuples(F.shape[1], 2)
    prod = F[:, rows[:, 0]] * F[:, rows[:, 1]]
    return np.atleast_2d(np.cov(prod, rowvar=False)) / F.shape[0]


def kernel_noise(net, X, orders) -> np.ndarray:
    r""":math:`J_K \Sigma_K J_K^\top` (T, T): the covariance that a Monte Carlo kernel's error
    adds to Wick sums of :math:`\hat K` on the stacked tuples of ``orders`` (zeros for an
    exact kernel; module docstring)."""
    K = kernel(net, X)
    _, jac = free_part(K, orders)
    SK = kernel_entry_covariance(net, X)
    if SK is None:
        return np.zeros((jac.shape[0], jac.shape[0]))
    return jac @ SK @ jac.T


def kernel_influence(net, X, cutoff, propagator: str = "full"):
    r"""Influence of each Monte Carlo kernel network on the 4-leg vertex integrals and on the
    Wick sums of :math:`\hat K`, or None for an exact kernel.

    :math:`\hat K = \frac1M\sum_j u_j`, :math:`u_j(x, y) = f_j(x) f_j(y)`; a smooth functional
    F of :math:`\hat K` has the linearised (delta-method) variance
    :math:`\mathrm{Var}\,F \approx \frac1M \mathrm{Var}_j\, F'[u_j]`. For
    :math:`I_t = \int_{box}\prod_{i=1}^4 \tilde K(x_{t_i}, y)\,dy` (the λ design of the 4-pt
    function is :math:`-24 I_t`; :math:`\tilde K` is K or K − c, and :math:`u_j` the same
    for both),

    .. math:: I_t'[u_j] = \sum_{i=1}^{4} f_j(x_{t_i}) \int_{box} f_j(y)
        \prod_{i' \ne i} \tilde K(x_{t_{i'}}, y)\, dy,

    on the composite Gauss–Legendre rule of :func:`nngp_ppl.theory.lattice.box_lattice`
    (split at the inputs, panels of the kernel's length scale); and for the 4-pt Wick sums
    :math:`\mathrm{Wick}_4'[u_j] = J_K\, u_j(x_a, x_b)` (:func:`wick_jacobian`). Returns
    ``(I (T_4,), dI (M, T_4), dWick (M, T_4))``.
    """
    if getattr(net, "kernel_fn", True) is not None or not hasattr(net, "_kernel_networks"):
        return None

    X = np.asarray(X, dtype=np.float64)
    lat = _lattice.box_lattice(net.d_in, float(cutoff), split_points=X,
                               scale=_lattice.kernel_scale(net))
    FX = np.asarray(net._kernel_networks(jnp.asarray(X)), np.float64)  # (M, k)
    FY = np.asarray(net._kernel_networks(jnp.asarray(lat.points)), np.float64)  # (M, P)
    shift = propagator_shift(net, propagator)
    return influence_from_outputs(FX, FY, lat.weights, shift)


def influence_from_outputs(FX, FY, weights, shift: float = 0.0):
    """:func:`kernel_influence` from the kernel networks' outputs at the k inputs (M, k) and
    at the quadrature nodes (M, P) with their weights (P,); ``shift`` is the constant the
    propagator removes."""
    M = FX.shape[0]
    Kxy = FX.T @ FY / M - shift  # (k, P)
    rows = distinct_tuples(FX.shape[1], 4)
    I = np.prod(Kxy[rows], axis=1) @ weights
    dI = np.zeros((M, len(rows)))
    FYw = FY * weights
    for i in range(4):
        others = np.prod(Kxy[np.delete(rows, i, axis=1)], axis=1)  # (T, P)
        dI += FX[:, rows[:, i]] * (FYw @ others.T)
    pairs = distinct_tuples(FX.shape[1], 2)
    K = FX.T @ FX / M
    dW = (FX[:, pairs[:, 0]] * FX[:, pairs[:, 1]]) @ wick_jacobian(K, 4).T
    return I, dI, dW


def kernel_coupling_variance(net, X, cutoff, deviation, weights=None, mode="measured",
                             propagator: str = "full", influence=None) -> float:
    r""":math:`\mathrm{Var}_j(\psi_j)/M` of :func:`kernel_coupling_influence` (0 for an exact
    kernel)."""
    psi = kernel_coupling_influence(net, X, cutoff, deviation, weights, mode, propagator,
                                    influence)
    return 0.0 if psi is None else float(np.var(psi, ddof=1) / len(psi))


def kernel_coupling_influence(net, X, cutoff, deviation, weights=None, mode="measured",
                              propagator: str = "full", influence=None):
    r"""Influence :math:`\psi_j` (M,) of each Monte Carlo kernel network on a λ-only coupling
    fitted to the 4-pt deviations at one cutoff (None for an exact kernel), through the
    design and, where the free part is :math:`\mathrm{Wick}(\hat K)` (``mode="kernel"``),
    the baseline; its linearised variance is :math:`\mathrm{Var}_j(\psi_j)/M`.

    The coupling is :math:`g = \sum_t w_t D_t r_t / \sum_t w_t D_t^2` with
    :math:`D_t = -24 I_t`: ``weights`` ``None`` means the estimand's :math:`w_t = 1/D_t^2`
    (:math:`g = \frac1T\sum_t r_t/D_t`, the paper's λ̄), otherwise fixed per-tuple weights
    (``1/Var``, the diagonal fit). With :math:`\psi_j = \sum_t (\partial g/\partial D_t)
    D_t'[u_j] - (\partial g/\partial r_t)\,\mathrm{Wick}_t'[u_j]`,
    :math:`\mathrm{Var}_K\, g = \mathrm{Var}_j(\psi_j)/M` (:func:`kernel_influence`, or
    its result passed as ``influence``).
    """
    inf = kernel_influence(net, X, cutoff, propagator) if influence is None else influence
    if inf is None:
        return None
    I, dI, dW = inf
    D = -24.0 * I
    r = np.asarray(deviation, dtype=np.float64)
    if weights is None:  # the weights 1/D² move with D: g = mean_t r_t / D_t
        dg_dD = -r / (len(D) * D**2)
        dg_dr = 1.0 / (len(D) * D)
    else:
        w = np.asarray(weights, dtype=np.float64)
        norm = np.sum(w * D**2)
        g = np.sum(w * D * r) / norm
        dg_dD = w * (r - 2.0 * g * D) / norm
        dg_dr = w * D / norm
    psi = (-24.0 * dI) @ dg_dD
    if mode == "kernel":
        psi = psi - dW @ dg_dr
    return psi
