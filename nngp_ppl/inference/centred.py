r"""The centred theory of symmetry-broken ensembles: build, data, point fits, posteriors.

The conventions and formulas are those of :mod:`nngp_ppl.inference.centring` (physics.md
§6b, §6d): expand around the mean, f = <f> + phi; data the centred moments of orders 3..6
from the raw moments 1..max, deviations r = C - Wick(C2) with the delta-method noise;
propagator the ``traced_kernel`` of a given object (by default the limit covariance of a
net with non-zero means); designs the ``centred=True`` first-order diagrams; estimand
physics.md §5a, :math:`g^* = B(\Lambda)\, r`.

The general entry points (for any propagator, e.g. a trained ensemble's covariance):
:func:`build_theory`, :func:`deviations_from_moments` (or
:func:`nngp_ppl.inference.problem.centred_observation` from a CorrelatorStats),
:func:`point_fit` and :func:`posterior`. ``eft.fit_couplings``, ``eft.fit_dataset``,
``infer_couplings`` and ``calibrate`` use them for nets with non-zero means.
"""

from __future__ import annotations

import jax
import numpy as np

from .. import tuples as _tuples
from .._checks import NNGPInputError
from .centring import (
    CENTRED_ORDERS,
    LimitCovariance,
    centred_moments,
    default_centred_orders,
    describe,
    deviation_and_jacobian,
    deviation_function,
    propagator_net,
    raw_orders,
)
from .couplings import sample_latent
from .models.couplings import NORMAL_DF, latent_arrays, stable_cholesky
from .problem import (
    EFTTheory,
    centred_observation,
    centred_raw_covariance,
    centred_raw_vector,
)

__all__ = [
    "CENTRED_ORDERS",
    "LimitCovariance",
    "build_theory",
    "centred_moments",
    "centred_observation",
    "centred_raw_covariance",
    "centred_raw_vector",
    "default_centred_orders",
    "describe",
    "deviation_and_jacobian",
    "deviation_function",
    "deviations_from_moments",
    "point_fit",
    "posterior",
    "propagator_net",
    "raw_orders",
]


def build_theory(net, X, couplings=("g3", "lambda"), *, kernel_net=None, orders=None,
                 data_orders=None, propagator: str = "full", max_cutoff=None):
    """The centred :class:`~nngp_ppl.problem.EFTTheory` of ``net`` on inputs ``X``:
    propagator ``kernel_net.traced_kernel`` (default: :func:`propagator_net`), designs of
    the centred moments, data orders (3, 4) for (g3, λ) (:func:`default_centred_orders`)."""
    return EFTTheory.build(net, X, couplings, orders, data_orders, propagator, max_cutoff,
                           centred=True, kernel_net=kernel_net)


def deviations_from_moments(theory, raw, raw_covariance_matrix, *, two_point="measured"):
    r"""``(r, cov)`` of a centred theory from raw moments ``raw`` ({m: (T_m,)} for m = 1..
    max data order, on distinct tuples, or their concatenation) and the covariance of
    their estimates (over the concatenation; e.g. ``stats.covariance(width, orders=
    raw_orders(...))`` or its exact counterpart / n_nets): the delta method at ``raw``."""
    orders = raw_orders(theory.data_orders)
    if isinstance(raw, dict):
        missing = [m for m in orders if m not in raw]
        if missing:
            raise NNGPInputError(f"raw: the centred moments of orders {theory.data_orders} "
                                 f"need raw moments of orders {orders}; missing {missing}")
        vec = np.concatenate([np.asarray(raw[m], np.float64) for m in orders])
    else:
        vec = np.asarray(raw, dtype=np.float64)
    size = sum(len(_tuples.distinct_tuples(theory.k, m)) for m in orders)
    cov = np.asarray(raw_covariance_matrix, dtype=np.float64)
    if vec.shape != (size,) or cov.shape != (size, size) or not (
            np.all(np.isfinite(vec)) and np.all(np.isfinite(cov))):
        raise NNGPInputError(f"raw moments of orders {orders} on {theory.k} inputs must be a "
                             f"finite ({size},) vector with a finite ({size}, {size}) "
                             f"covariance, got {vec.shape} and {cov.shape}")
    r, jac = deviation_and_jacobian(vec, theory.k, theory.data_orders, two_point,
                                    theory.kernel)
    out = jac @ cov @ jac.T
    return r, 0.5 * (out + out.T)


def point_fit(theory, r, cov, cutoffs) -> dict:
    r"""The estimand on measured deviations: :math:`\hat g = B(\Lambda)\hat r`, its
    covariance :math:`B\Sigma_r B^\top`, :math:`\hat\beta = \dot B\hat r` with
    :math:`\dot B\Sigma_r\dot B^\top`, and the model discrepancy τ, per cutoff: a dict of
    ``values`` (L, C), ``covariance`` (L, C, C), ``stderr``, ``beta``, ``beta_stderr``
    (L, C), ``tau`` (L,), ``couplings`` and ``cutoffs``."""
    cutoffs = tuple(float(c) for c in np.atleast_1d(cutoffs))
    D, B, _, dB = theory.designs(cutoffs)
    r = np.asarray(r, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    g = np.einsum("lct,t->lc", B, r)
    gc = np.einsum("lct,ts,lds->lcd", B, cov, B)
    beta = np.einsum("lct,t->lc", dB, r)
    bc = np.einsum("lct,ts,lds->lcd", dB, cov, dB)
    tau = np.array([theory.spread(r, g[j], D[j]) for j in range(len(cutoffs))])
    return {"couplings": theory.couplings, "cutoffs": np.asarray(cutoffs), "values": g,
            "covariance": gc, "stderr": np.sqrt(np.diagonal(gc, axis1=1, axis2=2)),
            "beta": beta, "beta_stderr": np.sqrt(np.diagonal(bc, axis1=1, axis2=2)),
            "tau": tau}


def posterior(theory, r, cov, cutoffs, *, num_chains: int = 4, num_samples: int = 1000,
              num_warmup: int = 500, seed: int = 0, prior_width: float = 10.0,
              df: float | None = None) -> dict:
    r"""NUTS posterior of the estimand (physics.md §5a): the noise-free deviations are
    latent, :math:`r \sim N(0, c^2\Sigma)`, :math:`\hat r | r \sim N(r, \Sigma)` (or
    Student-t with ``df``), and every draw of r gives :math:`g^* = B r` and
    :math:`\beta = \dot B r` at each cutoff. Returns ``r`` (chain, draw, T), ``couplings``
    and ``beta`` (chain, draw, L, C), and the NUTS statistics ``sample_stats``."""
    cutoffs = tuple(float(c) for c in np.atleast_1d(cutoffs))
    tril = stable_cholesky(cov)[0]
    arrays = latent_arrays(r, tril, prior_width, NORMAL_DF if df is None else df)
    draws, sstats = sample_latent(arrays, tril, jax.random.PRNGKey(seed),
                                  num_chains=num_chains, num_samples=num_samples,
                                  num_warmup=num_warmup)
    est = theory.estimator(cutoffs)
    return {"r": draws, "couplings": est.couplings(draws), "beta": est.beta(draws),
            "names": theory.couplings, "cutoffs": np.asarray(cutoffs),
            "sample_stats": sstats}
