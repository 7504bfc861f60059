r"""The paper's point-estimate EFT fits and the running of the couplings (physics.md §7–§8).

Conventions: :math:`P[f] \propto e^{-S}`, :math:`S = S_{GP} + \int_{[-\Lambda,\Lambda]^{d_{in}}}
(\lambda f^4 + \kappa f^6)`, unit coefficients, so at first order (physics.md §6)

.. math:: \Delta G^{(4)}_t = -24\,\lambda\, I_t(\Lambda) - 360\,\kappa\, I^{(1)}_t(\Lambda),
   \qquad I_t = \int_{box} \prod_{a\in t} \tilde K(x_a, y)\, dy .

**Per-tuple coupling** (the paper's estimator, sign from §5, not from the authors' scripts):

.. math:: \lambda_t(\Lambda) = -\frac{G^{(4)}_{exp,t} - G^{(4)}_{GP,t}}{24\, I_t(\Lambda)},
   \qquad \bar\lambda(\Lambda) = \frac{1}{T}\sum_t \lambda_t(\Lambda).

Finite-width nets have a non-negative connected 4-pt function at coincident points, so
:math:`\bar\lambda < 0`: heavier-than-Gaussian tails.

**Joint fit** of :math:`(\lambda, \kappa)` to the 4- and 6-pt deviations
:math:`y = G_{exp} - G_{GP}` (distinct tuples of both orders stacked) with the first-order
design :math:`A(\Lambda)` of :func:`nngp_ppl.theory.diagrams.first_order_design`: weighted
least squares with weights :math:`1/\Sigma_{tt}` from the estimator covariance
:math:`\Sigma` of :class:`~nngp_ppl.sampling.stats.CorrelatorStats`, and coupling errors from the
full :math:`\Sigma` by the sandwich formula; generalised least squares with the
eigen-pseudo-inverse of :math:`\Sigma` is available (``weighting="full"``) but unstable for
sample covariances of hundreds of strongly correlated products (:func:`fit_couplings`).
Without a covariance (noise-free correlators) each tuple is weighted by
:math:`1/G_{GP,t}^2` (relative least squares).

**6-pt check** (§7): :math:`G^{(6)}_{GP} + \Delta G^{(6)}(\bar\lambda, \kappa = 0)` against
experiment; the improvement is the ratio of the normalised deviations
:math:`m_6 = \langle |G_{exp} - G_{pred}| / |G_{GP}| \rangle_t` of the GP and of the EFT.

**Running** (§8): with one coupling, :math:`\lambda_t \propto 1/I_t`, so
:math:`\beta_t = d\lambda_t/d\log\Lambda = -\gamma_t \lambda_t` with
:math:`\gamma_t = d\log I_t/d\log\Lambda`, evaluated exactly from the surface term of the
vertex integral. The fitted exponent is minus the slope of :math:`\log|\bar\lambda|`
against :math:`\log\Lambda`; the analytic asymptotic one follows from the kernel's
large-:math:`|y|` behaviour (:func:`asymptotic_exponent`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from .._io import read_netcdf, sha256_file, write_netcdf
from .._version import __version__
from ..theory import diagrams as _diagrams
from ..theory import lattice as _lattice
from ..theory import operators as _operators
from ..theory.wick import gp_correlator_tuples
from . import centred as _centred
from . import problem as _problem
from . import two_point as _two_point
from .problem import EFTTheory, estimand_projection, perturbative_order

__all__ = [
    "FIT_FORMAT",
    "FIT_VERSION",
    "observed_tuples",
    "free_correlators",
    "coupling_per_tuple",
    "mean_coupling",
    "CouplingFit",
    "WEIGHTINGS",
    "fit_couplings",
    "SixPointCheck",
    "six_point_check",
    "asymptotic_exponent",
    "Running",
    "log_slope",
    "running",
    "fit_dataset",
    "write_fit",
    "load_fit",
]

FIT_FORMAT = "nngp_ppl.EFTFit"
# 2: a ``checksum`` attribute (required); dimension tuple_4/position_4 names unchanged.
FIT_VERSION = 2


# --- observed correlators -------------------------------------------------------------------


def _is_stats(data) -> bool:
    return hasattr(data, "correlator_tuples") and hasattr(data, "widths")


def _stats_width(stats, width) -> int:
    if width is None:
        if len(stats.widths) != 1:
            raise NNGPInputError(
                f"width must be given: the statistics hold widths {tuple(stats.widths)}"
            )
        return int(stats.widths[0])
    width = _checks.positive_int("width", width)
    if width not in stats.widths:
        raise NNGPInputError(f"width must be one of {tuple(stats.widths)}, got {width}")
    return width


def observed_tuples(data, n: int, k: int, width=None, name: str = "G") -> np.ndarray:
    """Correlator values on ``distinct_tuples(k, n)`` from a CorrelatorStats (at ``width``),
    a mapping ``{n: values}``, a (T_n,) vector on the distinct tuples or a full (k,)*n array
    (e.g. :func:`nngp_ppl.exact_correlator` output)."""
    if _is_stats(data):
        return np.asarray(data.correlator_tuples(n, _stats_width(data, width)), np.float64)
    if isinstance(data, Mapping):
        if n not in data:
            raise NNGPInputError(f"{name} must hold the {n}-point function, got orders "
                                 f"{sorted(data)}")
        data = data[n]
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise NNGPInputError(f"{name} must be an array of {n}-point correlators") from None
    T = len(_tuples.distinct_tuples(k, n))
    if arr.shape == (k,) * n and not (n == 1 and arr.shape == (T,)):
        arr = _tuples.compress(arr, k, n)
    if arr.shape != (T,):
        raise NNGPInputError(
            f"{name} must be the {n}-point function of the {k} inputs, as a full {(k,) * n} "
            f"array or on the {T} distinct tuples; got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise NNGPInputError(f"{name} must be finite")
    return arr


def _setup(net, X, cutoffs):
    X = _checks.inputs("X", X, net.d_in)
    lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs")
    if lam.ndim > 1:
        raise NNGPInputError(f"cutoffs must be a number or a 1-d array, got shape {lam.shape}")
    return X, lam.reshape(-1)


def _net_and_inputs(data, net, X):
    if _is_stats(data):
        # The inputs must be the statistics' own; a net given supplies the theory (e.g. a
        # Monte Carlo kernel of another size) for the same network.
        return _checks.sampled_at(data, net, X, same_net=False)
    if net is None or X is None:
        raise NNGPInputError("net and X must be given when the correlators are plain arrays")
    return net, X


def _design(net, X, n, lam, names, propagator, cache):
    """first_order_design, memoised in ``cache`` (a dict) when one is given, so that the fits
    of several widths share one set of vertex integrals. A cached design with more couplings
    serves a request for fewer; a miss computes the union of the names."""
    names = tuple(names)
    if cache is None:
        return _diagrams.first_order_design(net, X, n, lam, names, propagator)
    key = (n, propagator, tuple(np.asarray(lam).tolist()))
    have_names, have = cache.get(key, ((), None))
    if not set(names) <= set(have_names):
        have_names = tuple(dict.fromkeys(have_names + names))
        have = _diagrams.first_order_design(net, X, n, lam, have_names, propagator)
        cache[key] = (have_names, have)
    return have[..., [have_names.index(c) for c in names]]


# --- per-tuple and mean couplings -----------------------------------------------------------


def free_correlators(net, X, data, orders, width=None, two_point: str = "auto"):
    """The free part the fits subtract, on the stacked distinct tuples of ``orders``:
    ``(values (T,), mode, jacobian (T, T_2) or None)``.

    ``two_point`` (:func:`nngp_ppl.inference.two_point.resolve`): ``"kernel"`` gives Wick sums of K
    (rule 4.5), ``"measured"`` Wick sums of the 2-pt function held by ``data`` (a
    CorrelatorStats at ``width``, or a mapping with key 2), with their Jacobian for the
    noise; ``"auto"`` picks ``"measured"`` for an ensemble whose 2-pt function is not K.
    """
    k = X.shape[0]
    G2 = _two_point.two_point_matrix(data, k, _stats_width(data, width) if _is_stats(data)
                                     else None)
    mode = _two_point.resolve(net, two_point, G2 is not None)
    if mode == "kernel":
        K = _two_point.kernel(net, X)
        return np.concatenate([gp_correlator_tuples(K, n) for n in orders]), mode, None
    values, jac = _two_point.free_part(G2, orders)
    return values, mode, jac


def coupling_per_tuple(net, X, G4, cutoffs, propagator: str = "full", *, width=None,
                       two_point: str = "auto", _cache=None):
    """:math:`\\lambda_t(\\Lambda)` for every distinct 4-tuple: array (C, T_4) (module docstring).

    ``G4`` is a CorrelatorStats (give ``width``), a (T_4,) vector, a full (k,)^4 array or a
    mapping ``{2: G2, 4: G4}``. The free part subtracted is chosen by ``two_point``
    (:func:`free_correlators`): Wick(K), or Wick(Ĝ2) of the data for an ensemble whose
    2-pt function is not K.
    """
    net, X = _net_and_inputs(G4, net, X)
    X, lam = _setup(net, X, cutoffs)
    k = X.shape[0]
    g4 = observed_tuples(G4, 4, k, width, "G4")
    free, mode, _ = free_correlators(net, X, G4, (4,), width, two_point)
    delta = g4 - free
    with _two_point.handled():
        design = _design(net, X, 4, lam, ("lambda",), propagator, _cache)[..., 0]
    return delta[None, :] / design  # design = -24 I_t


def mean_coupling(net, X, G4, cutoffs, propagator: str = "full", *, width=None,
                  two_point: str = "auto") -> np.ndarray:
    """:math:`\\bar\\lambda(\\Lambda)`, the mean of :func:`coupling_per_tuple` over tuples, (C,)."""
    return coupling_per_tuple(net, X, G4, cutoffs, propagator, width=width,
                              two_point=two_point).mean(axis=1)


# --- joint weighted least squares -----------------------------------------------------------


class CouplingFit(NamedTuple):
    """Least-squares couplings per cutoff (see :func:`fit_couplings`)."""

    names: tuple[str, ...]
    cutoffs: np.ndarray  # (C,)
    values: np.ndarray  # (C, n_couplings)
    covariance: np.ndarray  # (C, n_couplings, n_couplings); NaN without a data covariance
    chi2: np.ndarray  # (C,) weighted residual sum of squares under the fit's weights
    dof: int
    weighting: str  # "diagonal", "full" or "relative"
    two_point: str = "kernel"  # the free part subtracted: Wick of K or of the measured G2
    kernel_variance: np.ndarray | None = None  # (C, n_couplings): a Monte Carlo K's share
    kernel_error: str = "none (exact kernel)"  # which parts of a Monte Carlo K's error
    order: int = 1  # perturbative order of the prediction (nngp_ppl.inference.estimators)

    @property
    def stderr(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diagonal(self.covariance, axis1=1, axis2=2), 0.0, None))

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no coupling {key!r}; fitted {self.names}")
            return self.values[:, self.names.index(key)]
        return tuple.__getitem__(self, key)


WEIGHTINGS = ("diagonal", "full", "relative", "estimand")


def _whitener(cov: np.ndarray, rcond: float) -> np.ndarray:
    """W with W^T W = Σ^+ (eigen-pseudo-inverse): rows are eigenvectors / sqrt(eigenvalue)."""
    cov = 0.5 * (cov + cov.T)
    vals, vecs = np.linalg.eigh(cov)
    keep = vals > rcond * max(vals.max(), 0.0)
    if not np.any(keep):
        raise NNGPInputError("covariance has no positive eigenvalue: nothing to weight the "
                             "fit with (too few networks?)")
    return (vecs[:, keep] / np.sqrt(vals[keep])).T


def fit_couplings(
    data,
    cutoffs,
    *,
    net=None,
    X=None,
    width=None,
    couplings=("lambda", "kappa"),
    orders=(4, 6),
    covariance=None,
    weighting: str | None = None,
    propagator: str = "full",
    rcond: float = 1e-10,
    two_point: str = "auto",
    order: int = 1,
    _cache=None,
) -> CouplingFit:
    r"""Fit the couplings to the stacked 4- and 6-pt deviations at each cutoff.

    Model: :math:`y = G_{exp} - G_{free} = A(\Lambda)\, g`, with the first-order design
    :math:`A` (rule 4.5 applied). The free part (``two_point``, :func:`free_correlators`)
    is :math:`\mathrm{Wick}(K)`, or for an ensemble whose 2-pt function is not K
    (``two_point_exact`` False, e.g. deep MLPs) :math:`\mathrm{Wick}(\hat G_2)` of the
    measured 2-pt function at that width, whose noise and covariance with the 4-/6-pt
    estimates are then propagated into the covariance (:mod:`nngp_ppl.inference.two_point`); a
    ``covariance`` given explicitly is taken as that of :math:`y` already. A Monte Carlo
    kernel (:class:`nngp_ppl.JaxNetwork` without a formula) adds its own error: for λ
    alone on the 4-pt function (weighting ``"estimand"`` or ``"diagonal"``) through the
    design and the free part jointly, linearised per kernel network
    (:func:`nngp_ppl.inference.two_point.kernel_coupling_variance`, the field ``kernel_variance``);
    otherwise through a :math:`\mathrm{Wick}(\hat K)` free part only,
    :math:`J_K\Sigma_K J_K^\top` (the field ``kernel_error`` says which).

    ``data`` is a CorrelatorStats (``width`` selects the width; its estimator covariance
    of the stacked ``orders`` is used unless ``covariance`` is given) or a mapping
    ``{2: G2, 4: G4, 6: G6}`` of plain arrays (then ``net`` and ``X`` are required).

    ``weighting``:

    * ``"diagonal"`` (default with a covariance): weights :math:`1/\Sigma_{tt}`, and the
      coupling covariance by the sandwich
      :math:`B \Sigma B^T`, :math:`B = (A^T W A)^{-1} A^T W`, which uses the full
      estimator covariance. This is the stable choice: the sample covariance of hundreds
      of strongly correlated products is nearly singular (Erf-net with six inputs and
      2·10⁴ nets: rank ~200 of 588 above 10⁻¹⁰ of its largest eigenvalue), and generalised
      least squares with it moved λ by several standard errors as ``rcond`` changed
      (measured).
    * ``"full"``: generalised least squares with the eigen-pseudo-inverse of
      :math:`\Sigma` (eigenvalues below ``rcond`` times the largest dropped).
    * ``"relative"`` (default without a covariance, e.g. noise-free exact correlators):
      weights :math:`1/G_{GP,t}^2`; no coupling covariance (NaN).
    * ``"estimand"``: weights :math:`1/D_{t\lambda}^2`, the declared estimand of the
      posteriors (:func:`nngp_ppl.inference.problem.estimand_projection`; λ alone: the paper's
      λ̄), with the sandwich covariance when a covariance is given (NaN otherwise).

    ``order=2``: the second-order estimand of :mod:`nngp_ppl.inference.estimators` (weighting
    ``"estimand"``; the λ² diagrams removed at the leading-order λ̄), errors J Σ Jᵀ.

    A net with non-zero means (μ_W, μ_b) is fitted centred, to its centred moments
    (:mod:`nngp_ppl.inference.centred`; ``orders`` then names centred orders, by
    default those of the basis; weighting ``"estimand"``).
    """
    net, X = _net_and_inputs(data, net, X)
    if not getattr(net, "zero_mean", True):  # symmetry broken: the centred theory
        if order != 1:
            raise NNGPInputError("order: a net with non-zero means is fitted centred, at "
                                 "order 1 only")
        return _centred_fit(data, cutoffs, net, X, width, couplings,
                            None if tuple(orders) == (4, 6) else orders, covariance,
                            weighting, propagator, two_point)
    X, lam = _setup(net, X, cutoffs)
    names = _problem.coupling_names(couplings)
    # Odd correlators are fitted where an odd operator (g3, g5) is (zero-mean ensembles,
    # the source convention of physics.md §6b).
    orders = _checks.orders("orders", orders,
                            odd=any(not _operators.operator(c).even for c in names))
    _operators.check_visible(names, orders)
    if orders == (2,):
        raise NNGPInputError("orders must include 4 or 6: the 2-pt function is not corrected")
    k = X.shape[0]
    gp, mode, jac = free_correlators(net, X, data, orders, width, two_point)
    if mode == "measured" and 2 in orders:
        raise NNGPInputError("orders must not include 2 when the measured 2-pt function is "
                             "the free part (its deviation vanishes identically)")
    y, blocks = [], []
    with _two_point.handled():
        for n in orders:
            y.append(observed_tuples(data, n, k, width, f"G{n}"))
            blocks.append(_design(net, X, n, lam, names, propagator, _cache))
    y = np.concatenate(y)
    A = np.concatenate(blocks, axis=1)  # (C, T, nc)
    resid = y - gp
    # A Monte Carlo kernel's error: for λ alone on the 4-pt function through the design and
    # the free part jointly (coupling space, per cutoff); otherwise through Wick(K̂) only.
    mc_kernel = _two_point.kernel_entry_covariance(net, X) is not None
    joint = (mc_kernel and names == ("lambda",) and orders == (4,) and order == 1
             and weighting in (None, "estimand", "diagonal"))
    cov = _fit_covariance(data, covariance, width, mode, jac, net, X, orders, len(y),
                          kernel_noise=not joint)
    if order != 1:
        return _second_order_fit(net, X, names, orders, propagator, lam, resid, cov,
                                 weighting, mode, order)
    weighting, W = _fit_weights(weighting, cov, gp, rcond, names)
    joint = joint and weighting in ("estimand", "diagonal")
    values, covs, chi2, kvar, W = _solve_cutoffs(A, resid, W, cov, weighting, names, joint,
                                                 net, X, lam, mode, propagator)
    dof = int(np.count_nonzero(np.any(W != 0, axis=1)) - len(names))
    return CouplingFit(names, lam, values, covs, chi2, dof, weighting, mode, kvar,
                       _kernel_error(mc_kernel, joint, mode))


def _solve_cutoffs(A, resid, W, cov, weighting, names, joint, net, X, lam, mode, propagator):
    """The first-order fit at every cutoff: values, covariances (with a Monte Carlo
    kernel's design error where ``joint``), χ², that error's variances, and the last W."""
    values, covs, chi2, kvar = [], [], [], []
    for c in range(len(lam)):
        coef, ccov, W_c, x2 = _solve_at_cutoff(A[c], resid, W, cov, weighting, names)
        kvar.append(np.zeros(len(names)))
        if joint:
            weights = None if weighting == "estimand" else np.diag(W) ** 2
            kvar[-1][0] = _two_point.kernel_coupling_variance(net, X, lam[c], resid, weights,
                                                              mode, propagator)
        values.append(coef)
        covs.append(ccov + np.diag(kvar[-1]))
        chi2.append(x2)
        W = W_c
    return np.array(values), np.array(covs), np.array(chi2), np.array(kvar), W


def _kernel_error(mc_kernel: bool, joint: bool, mode: str) -> str:
    """Which parts of a Monte Carlo kernel's error a fit carries (``kernel_error``)."""
    if not mc_kernel:
        return "none (exact kernel)"
    if joint:
        return "design and free part, linearised per kernel network"
    where = ("lambda alone on the 4-pt function with weighting 'estimand' or 'diagonal'")
    if mode == "kernel":
        return f"free part only (J Sigma_K J^T); the design's error is propagated for {where}"
    return f"not propagated: the design's error is propagated for {where}"


def _second_order_fit(net, X, names, orders, propagator, lam, resid, cov, weighting, mode,
                      order) -> CouplingFit:
    r"""``fit_couplings(..., order=2)``: the second-order estimand
    :math:`g^* = B\,[r - ar\lambda_1^2 d_2]` (:mod:`nngp_ppl.inference.estimators`) at every cutoff,
    its covariance :math:`J\Sigma J^	op` with the closed-form sensitivity J, and the
    χ² of the second-order prediction under the estimand's weights."""

    perturbative_order(order)
    if weighting not in (None, "estimand"):
        raise NNGPInputError("weighting must be 'estimand' (or None) with order=2: the "
                             f"second-order fit is the posteriors' estimand; got {weighting!r}")
    if "lambda" not in names:
        raise NNGPInputError("order=2 needs lambda among the couplings (its square enters)")
    theory = EFTTheory.build(net, X, names, orders, orders, propagator,
                             max_cutoff=float(np.max(lam)), order=order)
    est = theory.estimator(lam)
    values = est.couplings(resid)  # (C, nc)
    J = est.jacobian(resid)  # (C, nc, T)
    covs = (np.einsum("lct,ts,lds->lcd", J, cov, J) if cov is not None
            else np.full((len(lam), len(names), len(names)), np.nan))
    chi2 = np.sum(((resid - est.predict(values, resid)) / est.scales) ** 2, axis=-1)
    return CouplingFit(names, lam, values, covs, chi2, int(len(resid) - len(names)),
                       "estimand", mode, np.zeros_like(values), "not propagated at order 2",
                       order)


def _fit_covariance(data, covariance, width, mode, jac, net, X, orders, n_obs,
                    kernel_noise=True):
    """The covariance of y = G_exp - G_free the fit weights with: as given, else the run's
    estimator covariance of the stacked orders (with the measured 2-pt function's noise
    propagated when it is the free part), plus a Monte Carlo kernel's own error; None
    where the data carry none."""
    if covariance is None and _is_stats(data) and getattr(data, "has_covariance", True):
        w = _stats_width(data, width)
        if mode == "measured":  # Ĝ2 and Ĝ4/Ĝ6 come from the same networks
            covariance = _two_point.propagate(data.covariance(w, orders=(2, *orders)), jac)
        else:
            covariance = data.covariance(w, orders=orders)
    if covariance is None:
        return None
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (n_obs, n_obs) or not np.all(np.isfinite(cov)):
        raise NNGPInputError(
            f"covariance must be a finite ({n_obs}, {n_obs}) matrix over the stacked "
            f"tuples of orders {orders}, got shape {cov.shape}"
        )
    if mode == "kernel" and kernel_noise:  # a Monte Carlo K in the free part adds its error
        cov = cov + _two_point.kernel_noise(net, X, orders)
    return cov


def _fit_weights(weighting, cov, gp, rcond, names):
    """The weighting (its default resolved and checked) and its weight matrix W; for
    ``"estimand"`` W depends on the cutoff and is set per cutoff (None here)."""
    if weighting is None:
        weighting = "diagonal" if cov is not None else "relative"
    if weighting not in WEIGHTINGS:
        raise NNGPInputError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "estimand" and "lambda" not in names:
        raise NNGPInputError("weighting='estimand' scales each tuple by λ's design: fit lambda")
    if weighting in ("diagonal", "full") and cov is None:
        raise NNGPInputError(f"weighting={weighting!r} needs a covariance (a CorrelatorStats "
                             "sampled with covariance, or covariance=...)")
    if weighting == "estimand":
        return weighting, None
    if weighting == "full":
        return weighting, _whitener(cov, rcond)
    if weighting == "diagonal":
        var = np.diag(cov).copy()
        floor = rcond * max(var.max(), 0.0)
        if not np.any(var > floor):
            raise NNGPInputError("covariance has no positive variance: nothing to weight the "
                                 "fit with (too few networks?)")
        return weighting, np.diag(
            np.where(var > floor, 1.0 / np.sqrt(np.where(var > floor, var, 1.0)), 0.0))
    return weighting, np.diag(1.0 / np.where(gp != 0, np.abs(gp), 1.0))


def _scale_columns(A, names) -> np.ndarray:
    """Per row of the design A (T, C), the coupling whose sensitivity scales it in the
    estimand (:meth:`nngp_ppl.inference.problem.EFTTheory.scale_columns`): λ, except on the rows
    where
    λ has no first-order diagram (exactly zero there: the odd correlators), which take the
    leading odd coupling g3."""
    lam = names.index("lambda")
    cols = np.full(A.shape[0], lam)
    odd = [c for c, n in enumerate(names) if not _operators.operator(n).even]
    if odd:
        cols[A[:, lam] == 0] = odd[0]
    return cols


def _solve_at_cutoff(A, resid, W, cov, weighting, names):
    """The couplings ĝ = B y at one cutoff (design A), their covariance (sandwich B Σ Bᵀ,
    GLS, or NaN) and the weighted χ²; returns W too (the estimand's depends on A)."""
    nan = np.full((len(names), len(names)), np.nan)
    if weighting == "estimand":

        cols = _scale_columns(A, names)
        W = np.diag(1.0 / np.abs(A[np.arange(len(cols)), cols]))
        B = estimand_projection(A, np.ones(len(resid), bool), cols)
        coef = B @ resid
        ccov = B @ cov @ B.T if cov is not None else nan
        return coef, ccov, W, float(np.sum((W @ (resid - A @ coef)) ** 2))
    WA = W @ A
    B = np.linalg.pinv(WA) @ W  # ĝ = B y
    coef = B @ resid
    if weighting == "full":
        ccov = np.linalg.pinv(WA.T @ WA)
    elif weighting == "diagonal":
        ccov = B @ cov @ B.T
    else:
        ccov = nan
    return coef, ccov, W, float(np.sum((W @ resid - WA @ coef) ** 2))

# --- the 6-pt check -------------------------------------------------------------------------


class SixPointCheck(NamedTuple):
    cutoffs: np.ndarray  # (C,)
    lambda_mean: np.ndarray  # (C,)
    gp: np.ndarray  # (T_6,)
    prediction: np.ndarray  # (C, T_6)  GP + ΔG6(λ̄, κ = 0)
    m6_gp: float  # <|G6 - GP| / |GP|>
    m6_eft: np.ndarray  # (C,)  <|G6 - prediction| / |GP|>

    @property
    def improvement(self) -> np.ndarray:
        """m6(GP) / m6(EFT): above 1 where λ̄ moves the prediction towards experiment."""
        return self.m6_gp / self.m6_eft


def six_point_check(net, X, G4, G6, cutoffs, propagator: str = "full", *,
                    width=None, two_point: str = "auto", order: int = 1,
                    _cache=None) -> SixPointCheck:
    """The paper's 6-pt test (§7): G6 against GP and against GP + ΔG6(λ̄) with κ = 0.

    "GP" is the free part of :func:`free_correlators` (``two_point``): Wick(K), or Wick(Ĝ2)
    of the 2-pt function in ``G4`` for an ensemble whose 2-pt function is not K. With
    ``order=2`` λ̄ is the second-order estimand on the 4-pt function (its λ² bubbles
    removed) and the prediction adds the λ̄² diagrams of the 6-pt function (exchange and
    the disconnected second-order terms; :mod:`nngp_ppl.inference.estimators`): the tree-level 6-pt
    prediction with κ = 0."""
    net, X = _net_and_inputs(G4, net, X)
    X, lam = _setup(net, X, cutoffs)
    k = X.shape[0]
    g6 = observed_tuples(G6, 6, k, width, "G6")
    gp, mode, _ = free_correlators(net, X, G4, (6,), width, two_point)
    if order != 1:
        lbar, pred = _second_order_six_point(net, X, G4, g6, gp, lam, propagator, width,
                                             mode, order)
    else:
        lbar = coupling_per_tuple(net, X, G4, lam, propagator, width=width, two_point=mode,
                                  _cache=_cache).mean(1)
        with _two_point.handled():
            design = _design(net, X, 6, lam, ("lambda",), propagator, _cache)[..., 0]
        pred = gp[None, :] + lbar[:, None] * design
    scale = np.abs(gp)
    m6_gp = float(np.mean(np.abs(g6 - gp) / scale))
    m6_eft = np.mean(np.abs(g6[None, :] - pred) / scale[None, :], axis=1)
    return SixPointCheck(lam, lbar, gp, pred, m6_gp, m6_eft)


def _second_order_six_point(net, X, G4, g6, gp6, lam, propagator, width, mode, order):
    """(λ̄ at second order (C,), the GP + second-order 6-pt prediction (C, T_6))."""

    k = X.shape[0]
    free4, _, _ = free_correlators(net, X, G4, (4,), width, mode)
    r = np.concatenate([observed_tuples(G4, 4, k, width, "G4") - free4, g6 - gp6])
    theory = EFTTheory.build(net, X, ("lambda",), (4,), (4, 6), propagator,
                             max_cutoff=float(np.max(lam)), order=order)
    est = theory.estimator(lam)
    g = est.couplings(r)  # (C, 1)
    return g[:, 0], gp6[None, :] + est.predict(g, r)[:, len(free4):]


# --- running --------------------------------------------------------------------------------


def asymptotic_exponent(net, propagator: str = "full", legs: int = 4, loops: int = 0) -> float:
    """Analytic :math:`\\gamma = \\lim d\\log I/d\\log\\Lambda` from the kernel at large |y|.

    physics.md §8: with :math:`\\tilde K(x, y) \\sim |y|^p` and :math:`\\tilde K(y,y) \\sim
    |y|^{2p}`, the integrand grows like :math:`|y|^{p(\\text{legs} + 2\\,\\text{loops})}` and
    :math:`I \\propto \\Lambda^{d_{in} + p(\\text{legs} + 2\\,\\text{loops})}` when that
    integrand does not decay:

    * Erf-net: K tends to a direction-dependent constant (nonzero for generic inputs, also
      after subtracting σ_b²): p = 0, γ = d_in.
    * Gauss-net: full K tends to σ_b² (γ = d_in if σ_b > 0); K - σ_b² (or σ_b = 0) decays
      like a Gaussian, the integral converges and γ = 0: λ stops running.
    * ReLU-net: K grows like |y| (p = 1), γ = d_in + legs + 2 loops; 5 for the 4-pt
      coupling at d_in = 1 (exact at every Λ when σ_b = 0 and the inputs are positive).
    * Any other ensemble (e.g. ActivationNet): p from ``net.kernel_growth``, measured from
      the kernel at large |y| (tanh 0, GELU and softplus 1, sin: decaying K - σ_b²).
    """
    _lattice.check_propagator(propagator)
    # The ensemble says how its kernel grows (analytic for the three nets above, measured
    # from the kernel otherwise: Ensemble.kernel_growth), no name lookup.
    growth = getattr(net, "kernel_growth", None)
    if growth is None:
        raise NNGPInputError(f"net must be an nngp_ppl.Ensemble, got {net!r}")
    p = growth(propagator)
    return 0.0 if p is None else float(net.d_in + p * (legs + 2 * loops))


class Running(NamedTuple):
    cutoffs: np.ndarray  # (C,)
    lambda_tuple: np.ndarray  # (C, T_4)
    lambda_mean: np.ndarray  # (C,)
    beta: np.ndarray  # (C,)  dλ̄/d log Λ, exact at first order
    gamma_local: np.ndarray  # (C,)  -β/λ̄
    gamma_fit: float  # minus the slope of log|λ̄| on log Λ over the fitted cutoffs
    gamma_fit_stderr: float
    gamma_tuple_fit: np.ndarray  # (T_4,) the same regression per tuple (the paper's RG plot)
    gamma_analytic: float
    fit_cutoffs: np.ndarray  # cutoffs used by the regression


def log_slope(logx: np.ndarray, logy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of logy (..., C) on logx (C,) and its standard error (NaN with
    fewer than three points): the one log-log regression of the package."""
    x = logx - logx.mean()
    sxx = float(np.sum(x * x))
    yc = logy - logy.mean(axis=-1, keepdims=True)
    slope = (yc @ x) / sxx
    if len(x) < 3:
        return slope, np.full(np.shape(slope), np.nan)
    resid = yc - slope[..., None] * x
    s2 = np.sum(resid**2, axis=-1) / (len(x) - 2)
    return slope, np.sqrt(s2 / sxx)


def running(net, X, G4, cutoffs, propagator: str = "full", *, width=None,
            fit_from: float | None = None, two_point: str = "auto", _cache=None) -> Running:
    """Running of the quartic coupling with the cutoff (module docstring, physics.md §8).

    The regression of :math:`\\log|\\bar\\lambda|` on :math:`\\log\\Lambda` uses the cutoffs
    >= ``fit_from`` (all of them by default; at least two are needed). ``two_point``: the
    free part subtracted (:func:`free_correlators`).
    """
    net, X = _net_and_inputs(G4, net, X)
    X, lam = _setup(net, X, cutoffs)
    lam_t = coupling_per_tuple(net, X, G4, lam, propagator, width=width, two_point=two_point,
                               _cache=_cache)
    beta, gamma_local = _beta(net, X, lam, lam_t, propagator, _cache)
    lbar = lam_t.mean(axis=1)
    sel = lam >= (fit_from if fit_from is not None else -np.inf)
    if np.count_nonzero(sel) < 2:
        raise NNGPInputError(
            f"fit_from={fit_from} leaves {np.count_nonzero(sel)} cutoff(s); the regression of "
            "log|λ| on log Λ needs at least two"
        )
    # A tuple whose deviation vanishes exactly (by a symmetry of the inputs) has λ_t = 0 and
    # no exponent: its regression gives NaN rather than a number.
    with np.errstate(divide="ignore", invalid="ignore"):
        slope, err = log_slope(np.log(lam[sel]), np.log(np.abs(lbar[sel])))
        tslope, _ = log_slope(np.log(lam[sel]), np.log(np.abs(lam_t[sel].T)))
    return Running(lam, lam_t, lbar, beta, gamma_local, float(-slope), float(err), -tslope,
                   asymptotic_exponent(net, propagator), lam[sel])


def _beta(net, X, lam, lam_t, propagator, cache) -> tuple[np.ndarray, np.ndarray]:
    r"""(β, γ_local) at each cutoff from the per-tuple couplings ``lam_t`` (C, T_4):
    :math:`\beta = d\bar\lambda/d\log\Lambda = \langle -\gamma_t \lambda_t\rangle_t` with
    the exact surface-term exponents :math:`\gamma_t = d\log I_t/d\log\Lambda` of the vertex
    integrals (physics.md §8), so one cutoff suffices;
    :math:`\gamma_{local} = -\beta/\bar\lambda`."""
    key = ("exponents", propagator, tuple(lam.tolist()))
    if cache is not None and key in cache:
        gamma_t = cache[key]
    else:
        rows = _tuples.distinct_tuples(X.shape[0], 4)
        with _two_point.handled():
            gamma_t = _lattice.vertex_integral_exponents(net, X, rows, lam, propagator)
        if cache is not None:
            cache[key] = gamma_t
    beta = np.mean(-gamma_t * lam_t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return beta, -beta / lam_t.mean(axis=1)


# --- everything the CLI stores --------------------------------------------------------------


def fit_dataset(stats, cutoffs, propagator: str = "full", *, widths=None,
                couplings=("lambda", "kappa"), fit_from: float | None = None,
                two_point: str = "auto", order: int = 1):
    """All point estimates for every width of a CorrelatorStats, as an xarray Dataset.

    Per width and cutoff: λ̄ and the per-tuple λ_t, the joint (λ, κ) fit with standard
    errors and χ², the 6-pt check (m6 of GP and EFT, improvement), β and the local γ; per
    width the fitted γ; the analytic γ as an attribute. ``two_point``: the free part
    subtracted (:func:`free_correlators`), recorded in the attribute ``two_point``.
    A net with non-zero means gets the centred fit (:func:`_centred_dataset`).
    ``order=2``: the joint ``fit`` is the second-order estimand, and ``lambda_mean2``,
    ``m6_eft2``, ``improvement6_2`` (λ̄ and the 6-pt check at second order,
    :func:`six_point_check`) are added beside the first-order ones.
    """

    if _is_stats(stats) and not getattr(stats.net, "zero_mean", True):  # centred
        if order != 1:
            raise NNGPInputError("order: a net with non-zero means is fitted centred, at "
                                 "order 1 only")
        return _centred_dataset(stats, cutoffs, propagator, widths, couplings, two_point)
    names, X, lam, widths = _fit_dataset_inputs(stats, cutoffs, propagator, widths, couplings)
    k = X.shape[0]
    T4 = len(_tuples.distinct_tuples(k, 4))
    shape = (len(widths), len(lam))
    out = {key: np.full(shape, np.nan) for key in
           ("lambda_mean", "beta", "gamma_local", "m6_gp", "m6_eft", "improvement6", "chi2")}
    lam_tuple = np.full(shape + (T4,), np.nan)
    fit_vals = np.full(shape + (len(names),), np.nan)
    fit_err = np.full(shape + (len(names),), np.nan)
    gamma_fit = np.full(len(widths), np.nan)
    gamma_fit_err = np.full(len(widths), np.nan)
    dof, weighting = 0, "diagonal"
    second = {key: np.full(shape, np.nan) for key in
              ("lambda_mean2", "m6_eft2", "improvement6_2")}
    mode = _two_point.resolve(stats.net, two_point, 2 in stats.orders)
    cache: dict = {}
    with _two_point.handled():
        for n in (4, 6):  # every design the fits below need, computed once
            _design(stats.net, X, n, lam, tuple(dict.fromkeys(("lambda",) + names)),
                    propagator, cache)
    for i, w in enumerate(widths):
        run = None
        if len(lam) >= 2:
            run = running(stats.net, X, stats, lam, propagator, width=w, fit_from=fit_from,
                          two_point=mode, _cache=cache)
        lt = coupling_per_tuple(stats.net, X, stats, lam, propagator, width=w,
                                two_point=mode, _cache=cache)
        lam_tuple[i] = lt
        out["lambda_mean"][i] = lt.mean(axis=1)
        # β is a derivative at each cutoff (exact surface terms): one cutoff suffices.
        out["beta"][i], out["gamma_local"][i] = _beta(stats.net, X, lam, lt, propagator, cache)
        if run is not None:
            gamma_fit[i], gamma_fit_err[i] = run.gamma_fit, run.gamma_fit_stderr
        check = six_point_check(stats.net, X, stats, stats, lam, propagator, width=w,
                                two_point=mode, _cache=cache)
        out["m6_gp"][i] = check.m6_gp
        out["m6_eft"][i] = check.m6_eft
        out["improvement6"][i] = check.improvement
        fit = fit_couplings(stats, lam, width=w, couplings=names, propagator=propagator,
                            two_point=mode, order=order, _cache=cache)
        fit_vals[i], fit_err[i], out["chi2"][i] = fit.values, fit.stderr, fit.chi2
        dof, weighting = fit.dof, fit.weighting
        if order == 2:
            check2 = six_point_check(stats.net, X, stats, stats, lam, propagator, width=w,
                                     two_point=mode, order=2)
            for key, v in zip(second, (check2.lambda_mean, check2.m6_eft, check2.improvement),
                              strict=True):
                second[key][i] = v
    wdim, cdim = ("width", "cutoff")
    data = {
        "lambda_mean": ((wdim, cdim), out["lambda_mean"],
                        {"long_name": "mean over 4-tuples of lambda_t = -(G4 - G4_GP)/(24 I_t)"}),
        "lambda_tuple": ((wdim, cdim, "tuple_4"), lam_tuple,
                         {"long_name": "per-tuple quartic coupling lambda_t"}),
        "beta": ((wdim, cdim), out["beta"],
                 {"long_name": "d lambda_mean / d log cutoff (exact surface-term derivative)"}),
        "gamma_local": ((wdim, cdim), out["gamma_local"],
                        {"long_name": "-beta / lambda_mean"}),
        "gamma_fit": ((wdim,), gamma_fit,
                      {"long_name": "minus the slope of log|lambda_mean| on log cutoff",
                       **({} if len(lam) >= 2 else {
                           "comment": "NaN: one cutoff, and the regression needs two "
                                      "(beta and gamma_local are exact at each cutoff)"})}),
        "gamma_fit_stderr": ((wdim,), gamma_fit_err, {}),
        "m6_gp": ((wdim, cdim), out["m6_gp"], {"long_name": "<|G6 - G6_GP| / |G6_GP|>"}),
        "m6_eft": ((wdim, cdim), out["m6_eft"],
                   {"long_name": "<|G6 - G6_GP - dG6(lambda_mean)| / |G6_GP|>"}),
        "improvement6": ((wdim, cdim), out["improvement6"], {"long_name": "m6_gp / m6_eft"}),
        "fit": ((wdim, cdim, "coupling"), fit_vals,
                {"long_name": "weighted least-squares couplings from the 4- and 6-pt data"}),
        "fit_stderr": ((wdim, cdim, "coupling"), fit_err, {}),
        "fit_chi2": ((wdim, cdim), out["chi2"], {"long_name": f"chi^2 with {dof} dof"}),
        "tuples_4": (("tuple_4", "position_4"), np.asarray(_tuples.distinct_tuples(k, 4)), {}),
    }
    if order == 2:
        data.update({k: ((wdim, cdim), v, {"long_name": _SECOND_ORDER_NAMES[k]})
                     for k, v in second.items()})
    coords = {"width": ("width", np.asarray(widths, np.int64)),
              "cutoff": ("cutoff", lam), "coupling": ("coupling", list(names))}
    attrs = _fit_attrs(stats.net, X, propagator, fit_from, mode, weighting)
    attrs["order"] = int(order)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _fit_dataset_inputs(stats, cutoffs, propagator, widths, couplings):
    """Checked (coupling names, inputs, cutoffs, widths) of :func:`fit_dataset`."""
    if not _is_stats(stats):
        raise NNGPInputError("stats must be a CorrelatorStats (see nngp_ppl.sample_correlators)")
    _checks.sampled_orders("stats", stats.orders, (4, 6),
                           "fitting lambda and kappa and the 6-pt check")
    _lattice.check_propagator(propagator)
    names = _operators.check_visible(_problem.coupling_names(couplings), (4, 6))
    X, lam = _setup(stats.net, stats.X, cutoffs)
    widths = stats.widths if widths is None else _checks.positive_ints("widths", widths)
    for w in widths:
        _stats_width(stats, w)
    return names, X, lam, widths


#: The fit file's second-order variables (``fit --order 2``).
_SECOND_ORDER_NAMES = {
    "lambda_mean2": "second-order lambda-bar: B [r4 - lambda1^2 d2]",
    "m6_eft2": "<|G6 - G6_GP - dG6(lambda_mean2) - lambda_mean2^2 d2_6| / |G6_GP|>",
    "improvement6_2": "m6_gp / m6_eft2",
}


def _fit_attrs(net, X, propagator, fit_from, mode, weighting, growth_net=None) -> dict:
    """Provenance and conventions of a fit file (docs/file_formats.md). ``growth_net``:
    the propagator whose growth sets ``gamma_analytic`` (default ``net``; a centred fit's
    limit covariance, since a net with means has no zero-mean kernel)."""

    return {
        "nngp_ppl_format": FIT_FORMAT,
        "nngp_ppl_format_version": FIT_VERSION,
        "nngp_ppl_version": __version__,
        "ensemble": json.dumps(net.to_dict()),
        "inputs": json.dumps(np.asarray(X).tolist()),
        "propagator": propagator,
        "gamma_analytic": asymptotic_exponent(net if growth_net is None else growth_net,
                                              propagator),
        "fit_from": "all cutoffs" if fit_from is None else float(fit_from),
        "sign_convention": "P ~ exp(-S), S = S_GP + int_box (lambda f^4 + kappa f^6); "
                           "lambda < 0 means heavier-than-Gaussian tails",
        "rule_4_5": "2-pt corrections dropped" + (
            " (K is the exact 2-pt function)" if mode == "kernel" else
            " (the measured finite-width 2-pt function is the free part)"),
        "two_point": mode,
        "free_part": _two_point.DESCRIPTION[mode],
        "vertex_integrals": "composite Gauss-Legendre on [-cutoff, cutoff]^d_in "
                            "(nngp_ppl.theory.lattice)",
        "fit_weighting": (
            "diagonal: weights 1/Var per tuple, coupling errors by the sandwich with the full "
            "estimator covariance of the stacked 4- and 6-pt tuples"
            if weighting == "diagonal" else
            "estimand: weights 1/|D_t,lambda| per tuple, the second-order estimand of "
            "nngp_ppl.inference.estimators, errors J Sigma J^T" if weighting == "estimand" else
            "relative: 1/G_GP^2 per tuple (the run kept no covariance; no errors)"
        ),
    }


def write_fit(ds, path, run_path) -> Path:
    """Write a :func:`fit_dataset` atomically, with a checksum and the run file's identity."""

    ds = ds.copy()
    ds.attrs["run_file"] = str(Path(run_path).resolve())
    ds.attrs["run_sha256"] = sha256_file(run_path)
    return write_netcdf(ds, Path(path), file_format=FIT_FORMAT, version=FIT_VERSION)


def load_fit(path, run_path=None):
    """Read a fit file, refusing one that was edited or damaged after writing (checksum);
    with ``run_path``, refuse it also unless it was made from that run file."""

    ds = read_netcdf(path, name="fit file", what="nngp_ppl EFT fit", file_format=FIT_FORMAT,
                     version=FIT_VERSION)
    path = Path(path)
    if run_path is not None:
        run_path = Path(run_path)
        if not run_path.is_file():
            raise NNGPInputError(f"run file: no such file: {run_path}")
        if ds.attrs.get("run_sha256") != sha256_file(run_path):
            raise NNGPInputError(
                f"fit file {path} was not made from run file {run_path}: it records "
                f"{ds.attrs.get('run_file', '?')} (sha256 {str(ds.attrs.get('run_sha256'))[:12]}"
                f"...), which differs; refit with `nngp-ppl fit {run_path}`"
            )
    return ds


def _centred_fit(data, cutoffs, net, X, width, couplings, orders, covariance, weighting,
                 propagator, two_point):
    r"""The point fit of :func:`fit_couplings` for a net with non-zero means:
    the estimand on the sampled centred deviations, :math:`\hat g = B\hat r` (weighting
    ``"estimand"``, the only one here) with the sandwich covariance :math:`B\Sigma_r
    B^\top`. ``data``: a CorrelatorStats holding the raw orders 1..max(orders) (its
    estimator covariance is used unless ``covariance``, that of the concatenated raw
    moments, is given), or a mapping {m: raw m-pt moments} with ``covariance``. Returns a
    :class:`CouplingFit` (``chi2``: the sum of squared scaled residuals
    :math:`\sum_t ((r_t - D_t g)/s_t)^2` over the fitted tuples)."""
    if weighting not in (None, "estimand"):
        raise NNGPInputError(f"weighting: a net with non-zero means is fitted by the estimand "
                             f"of its centred moments (weighting='estimand'), got "
                             f"{weighting!r}")
    mode = "measured" if two_point == "auto" else two_point
    th = _centred.build_theory(net, X, couplings, data_orders=orders, propagator=propagator,
                      max_cutoff=float(np.max(np.atleast_1d(cutoffs))))
    if hasattr(data, "correlator_tuples") and hasattr(data, "widths"):
        w = _stats_width(data, width)
        raw = {m: data.correlator_tuples(m, w) for m in _centred.raw_orders(th.data_orders)
               if m in data.orders}
        if covariance is None:
            _problem.centred_raw_vector(data, w, th.data_orders)  # names missing orders
            covariance = data.covariance(w, orders=_centred.raw_orders(th.data_orders))
    elif isinstance(data, dict):
        raw = data
    else:
        raise NNGPInputError("data must be a CorrelatorStats or a mapping of raw moments "
                             "{1: G1, 2: G2, ...} for a net with non-zero means")
    if covariance is None:
        raise NNGPInputError("covariance must be given (that of the concatenated raw "
                             "moments) when the data are plain arrays")
    r, cov = _centred.deviations_from_moments(th, raw, covariance, two_point=mode)
    lam = _checks.cutoffs("cutoffs", cutoffs, _checks.extent(th.X)).reshape(-1)
    pf = _centred.point_fit(th, r, cov, lam)
    n_fit = int(np.count_nonzero(th.fitted))
    chi2 = pf["tau"] ** 2 * n_fit
    return CouplingFit(th.couplings, np.asarray(lam, dtype=np.float64), pf["values"],
                       pf["covariance"], chi2, n_fit - len(th.couplings), "estimand", mode)


def _centred_dataset(stats, cutoffs, propagator, widths, couplings, two_point):
    """:func:`fit_dataset` for a net with non-zero means: per width and cutoff
    the centred point fit (:func:`_centred_fit`: ``fit``, ``fit_stderr``, ``fit_chi2``)
    and its running (``beta_fit``, ``beta_fit_stderr``: the estimand's cutoff derivative
    on the same deviations), the model discrepancy ``tau``. The paper's per-tuple λ_t and
    the 6-pt check of the zero-mean fit file are not defined here (their free part is
    Wick(K) of raw moments) and are absent."""
    names = tuple(couplings)
    widths = stats.widths if widths is None else _checks.positive_ints("widths", widths)
    mode = "measured" if two_point == "auto" else two_point
    th = _centred.build_theory(stats.net, stats.X, names, propagator=propagator,
                      max_cutoff=float(np.max(np.atleast_1d(cutoffs))))
    lam = _checks.cutoffs("cutoffs", cutoffs, _checks.extent(th.X)).reshape(-1)
    shape = (len(widths), len(lam), len(th.couplings))
    out = {k: np.full(shape, np.nan) for k in ("fit", "fit_stderr", "beta", "beta_se")}
    chi2 = np.full(shape[:2], np.nan)
    tau = np.full(shape[:2], np.nan)
    for i, w in enumerate(widths):
        vec = _problem.centred_raw_vector(stats, w, th.data_orders)
        cov = stats.covariance(w, orders=_centred.raw_orders(th.data_orders))
        r, rc = _centred.deviations_from_moments(th, vec, cov, two_point=mode)
        pf = _centred.point_fit(th, r, rc, lam)
        out["fit"][i], out["fit_stderr"][i] = pf["values"], pf["stderr"]
        out["beta"][i], out["beta_se"][i] = pf["beta"], pf["beta_stderr"]
        tau[i] = pf["tau"]
        chi2[i] = pf["tau"] ** 2 * int(np.count_nonzero(th.fitted))
    dims = ("width", "cutoff", "coupling")
    data = {
        "fit": (dims, out["fit"], {"long_name": "centred estimand B r of the centred "
                                                "moments (nngp_ppl.inference.centred)"}),
        "fit_stderr": (dims, out["fit_stderr"], {}),
        "beta_fit": (dims, out["beta"], {"long_name": "d fit / d log cutoff"}),
        "beta_fit_stderr": (dims, out["beta_se"], {}),
        "fit_chi2": (dims[:2], chi2, {"long_name": "sum of squared scaled residuals"}),
        "tau": (dims[:2], tau, {"long_name": "model discrepancy (coupling units)"}),
    }
    coords = {"width": ("width", np.asarray(widths, np.int64)), "cutoff": ("cutoff", lam),
              "coupling": ("coupling", list(th.couplings))}
    attrs = _fit_attrs(stats.net, th.X, propagator, None, "measured", "estimand",
                       growth_net=th.propagator_net)
    attrs.update(two_point=mode, free_part=_centred.describe(mode), centred=1, order=1,
                 data_orders=str(th.data_orders))
    return xr.Dataset(data, coords=coords, attrs=attrs)
