r"""β-functions from coupling posteriors: the Wilsonian running of the couplings, with uncertainty.

physics.md §8: every cutoff :math:`\Lambda \gg |x|` must describe the same correlators, so
the couplings run, :math:`\beta = dg/d\log\Lambda`. The couplings of a posterior are the
declared estimand of :mod:`nngp_ppl.inference.problem`, :math:`g^*(\Lambda) = B(\Lambda)\, r`, a
fixed
map of the noise-free deviations :math:`r = G - G_{GP}`; each posterior draw :math:`r_s`
(stored as ``posterior/deviation``) therefore defines a whole trajectory
:math:`g_s(\Lambda) = B(\Lambda) r_s` and its derivative

.. math:: \beta_s(\Lambda) = \frac{dB}{d\log\Lambda}(\Lambda)\, r_s ,

computed by JAX forward mode through the vertex integrals (whose cutoff derivative is the
exact surface term). A posterior drawn at second order (``infer_couplings(..., order=2)``,
attribute ``order``) gives each draw the second-order trajectory
:math:`g_s(\Lambda) = B(\Lambda)[r_s - \lambda_1(\Lambda)^2 d_2(\Lambda)]` and its
closed-form derivative instead (:mod:`nngp_ppl.inference.estimators`).
For one coupling, :math:`\lambda_s(\Lambda) = \frac1T\sum_t r_{s,t}/D_t(\Lambda)` and
:math:`\gamma = -\beta/\lambda` is the :math:`\lambda_t`-weighted mean of the per-tuple
exponents :math:`\gamma_t = d\log I_t/d\log\Lambda`: its posterior spread comes from the
networks through how the non-Gaussianity is shared between tuples, and is small where
every tuple runs alike (at large Λ, where all :math:`\gamma_t \to` the same power).

The asymptotic exponent. Along each draw's trajectory the local exponent is evaluated at
:math:`\Lambda_r, \Lambda_r/2, \Lambda_r/4` (:math:`\Lambda_r` the reference, by default
the largest cutoff); if it approaches its limit as a power,
:math:`\gamma(\Lambda) = \gamma_\infty - c\Lambda^{-p}`, the ratio of successive differences
is :math:`r = 2^{-p}` and :math:`\gamma_\infty = \gamma(\Lambda_r) + \Delta\, r/(1-r)`
(Aitken's extrapolation). The size of that extrapolation is a systematic error, kept apart
from the data's: ``gamma`` is :math:`\gamma_\infty` plus a normal deviate of that size, and
``gamma_data`` is :math:`\gamma_\infty` alone (its spread is the networks' share). If the
differences do not shrink, the running is not yet asymptotic; then ``gamma`` is the exponent
at :math:`\Lambda_r` with the last two differences as its systematic error, and a warning
says so. (If :math:`\Lambda_r/4` lies inside the inputs' extent, three times the last
difference.)

Closed forms to compare with (:func:`nngp_ppl.inference.eft.asymptotic_exponent`):
:math:`\gamma = d_{in}` where the vertex propagator tends to a non-zero constant (Gauss-net
with full K and σ_b > 0, Erf-net), :math:`d_{in} + 4` where it grows like :math:`|y|`
(ReLU-net), 0 where it decays (Gauss-net with K - σ_b²).
"""

from __future__ import annotations

import datetime
import json
import warnings

import arviz_base
import numpy as np

from .._checks import NNGPInputError
from .._version import __version__
from .eft import asymptotic_exponent, log_slope
from .posterior_file import StoredPosterior, read_posterior
from .problem import EFTTheory, design_function  # noqa: F401  (re-exported)

__all__ = [
    "beta_function",
    "METHODS",
]


def beta_function(posterior, *, reference_cutoff=None, seed: int = 0, coupling: str = "lambda"):
    r"""Posterior of the β-functions and of the running exponent γ (module docstring).

    ``posterior``: a DataTree from :func:`~nngp_ppl.infer_couplings`, the path of one
    (read and verified by :func:`~nngp_ppl.inference.posterior_file.read_posterior`), or its
    :class:`~nngp_ppl.inference.posterior_file.StoredPosterior`.
    ``reference_cutoff``: where ``gamma`` is extrapolated from (default: the largest cutoff).
    ``coupling``: whose exponent γ is.

    Returns a DataTree whose ``posterior`` group holds, per width, ``beta`` (chain, draw,
    cutoff, coupling): :math:`dg/d\log\Lambda`; ``gamma_local`` (chain, draw, cutoff):
    :math:`-\beta/g` of ``coupling``; ``gamma_data`` (chain, draw): the extrapolated
    asymptotic exponent per draw (spread from the networks only); ``gamma``: the same plus
    the extrapolation's systematic error; ``gamma_slope``: minus the slope of
    :math:`\log|g|` against :math:`\log\Lambda` across the posterior's cutoffs per draw (the
    paper's regression). Group ``constant_data`` has ``gamma_analytic`` and the
    extrapolation details; the root attribute ``interval_sources`` says where each spread
    comes from.
    """


    stored = (posterior if isinstance(posterior, StoredPosterior)
              else read_posterior(posterior))
    couplings, r, cutoffs, widths = (stored.couplings, stored.deviation, stored.cutoffs,
                                     stored.widths)
    if coupling not in couplings:
        raise NNGPInputError(f"coupling must be one of the fitted couplings {couplings}")
    ref = float(cutoffs.max()) if reference_cutoff is None else float(reference_cutoff)
    if not np.any(np.isclose(cutoffs, ref)):
        raise NNGPInputError(
            f"reference_cutoff must be one of the posterior's cutoffs {cutoffs.tolist()}"
        )
    ci = couplings.index(coupling)
    extent = float(np.max(np.abs(stored.inputs)))
    probe = np.array([ref, ref / 2, ref / 4])
    theory = stored.theory()
    est = theory.estimator(cutoffs)
    g = est.couplings(r)  # (chain, draw, width, cutoff, coupling)
    beta = est.beta(r, g)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_local = -beta[..., ci] / g[..., ci]
    gamma_probe = np.full(r.shape[:3] + (3,), np.nan)
    inside = [q for q, c in enumerate(probe) if c >= extent]
    if inside:
        est_p = theory.estimator(probe[inside])
        gp = est_p.couplings(r)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma_probe[..., inside] = -est_p.beta(r, gp)[..., ci] / gp[..., ci]

    rng = np.random.default_rng(seed)
    gamma_data, systematic, converged = _extrapolate(gamma_probe)
    gamma = gamma_data + systematic * rng.standard_normal(gamma_data.shape)
    for i, ok in enumerate(converged):
        if not ok:
            warnings.warn(
                f"width {widths[i]}: the running exponent has not reached its asymptotic "
                f"power law by cutoff {ref:g} (its local value still changes by "
                f"{float(np.nanmedian(systematic[..., i])):.3g} between {ref / 4:g} and "
                f"{ref:g}); gamma carries that as a systematic error. Add larger cutoffs.",
                RuntimeWarning,
                stacklevel=2,
            )
    gamma_slope = _neg_slope(np.log(cutoffs), g[..., ci])

    # gamma_analytic from the propagator on the vertex legs: the net's kernel, or for a net
    # with means the limit covariance of its centred theory (it has no zero-mean kernel).
    return _beta_tree(
        theory.propagator_net, stored.propagator, stored.attrs, couplings, stored.orders,
        stored.order, coupling, ref,
        widths, cutoffs, probe, beta, gamma_local, gamma, gamma_data, gamma_slope,
        gamma_probe, systematic, converged)


def _beta_tree(growth_net, propagator, attrs, couplings, orders, order, coupling, ref,
               widths, cutoffs, probe, beta, gamma_local, gamma, gamma_data, gamma_slope,
               gamma_probe, systematic, converged):
    """The β file's DataTree (docs/file_formats.md); ``growth_net``: the propagator whose
    growth sets ``gamma_analytic``."""

    dims = {
        "beta": ["width", "cutoff", "coupling"],
        "gamma_local": ["width", "cutoff"],
        "gamma": ["width"],
        "gamma_data": ["width"],
        "gamma_slope": ["width"],
        "gamma_at_reference": ["width"],
        "gamma_systematic": ["width"],
        "gamma_probe": ["width", "probe_cutoff"],
        "converged": ["width"],
    }
    return arviz_base.from_dict(
        {
            "posterior": {
                "beta": beta,
                "gamma_local": gamma_local,
                "gamma": gamma,
                "gamma_data": gamma_data,
                "gamma_slope": gamma_slope,
            },
            "constant_data": {
                "gamma_analytic": np.asarray(asymptotic_exponent(growth_net, propagator)),
                "gamma_at_reference": np.nanmedian(gamma_probe[..., 0], axis=(0, 1)),
                "gamma_systematic": np.nanmedian(systematic, axis=(0, 1)),
                "gamma_probe": np.nanmedian(gamma_probe, axis=(0, 1)),
                "converged": np.asarray(converged, dtype=np.int8),
            },
        },
        dims=dims,
        coords={
            "width": widths,
            "cutoff": cutoffs,
            "coupling": list(couplings),
            "probe_cutoff": probe,
        },
        attrs={
            "/": {
                "title": "nngp_ppl beta-function posterior",
                "nngp_ppl_version": __version__,
                "ensemble": attrs["ensemble"],
                "couplings": json.dumps(list(couplings)),
                "orders": json.dumps(list(orders)),
                "order": order,
                "propagator": propagator,
                "gamma_coupling": coupling,
                "reference_cutoff": ref,
                "method": METHODS[order],
                "interval_sources": json.dumps({
                    "beta": "networks (posterior of r)",
                    "gamma_local": "networks (posterior of r)",
                    "gamma_data": "networks (posterior of r), extrapolated",
                    "gamma": "networks + extrapolation systematic (gamma_systematic)",
                    "gamma_slope": "networks; regression over the posterior's cutoffs",
                }),
                "source_created": str(attrs.get("created", "")),
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
            }
        },
    )


#: How β is computed at each perturbative order (the β file's ``method`` attribute).
METHODS = {
    1: "each posterior draw of the noise-free deviations r gives g(cutoff) = B(cutoff) r at "
    "every cutoff; beta = dB/dlog(cutoff) r by JAX forward mode; gamma: Aitken "
    "extrapolation from cutoff/4, /2, /1",
    2: "each posterior draw of the noise-free deviations r gives the second-order estimand "
    "g(cutoff) (nonlinear least squares, nngp_ppl.inference.estimators); beta = dg/dlog(cutoff) by "
    "the implicit-function theorem on its stationarity condition, with the cutoff slopes "
    "of the first- and second-order designs; gamma: Aitken extrapolation from cutoff/4, "
    "/2, /1",
}


def _extrapolate(gamma_probe):
    """Aitken extrapolation of γ at (Λ, Λ/2, Λ/4) → (limit, systematic, converged per width)."""
    g0, g1, g2 = gamma_probe[..., 0], gamma_probe[..., 1], gamma_probe[..., 2]
    d_last, d_prev = g0 - g1, g1 - g2
    scale = 1e-10 * (1.0 + np.abs(g0))
    # np.where evaluates both branches; the unused ones may divide by zero.
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d_last / d_prev
        flat = np.abs(d_last) <= scale
        ok = flat | ((r > 0) & (r < 0.9))
        correction = np.where(flat, 0.0, np.where(ok, d_last * r / (1.0 - r), 0.0))
    systematic = np.where(ok, np.abs(correction), np.abs(d_last) + np.abs(d_prev))
    systematic = np.where(np.isnan(g2), np.abs(d_last) * 3.0, systematic)
    center = g0 + np.where(np.isnan(correction), 0.0, correction)
    converged = np.all(ok | np.isnan(g2), axis=(0, 1))
    return center, systematic, converged


def _neg_slope(logc, values):
    """Minus the least-squares slope of log|values| on logc along the cutoff axis (-1)."""
    if len(logc) < 2:
        return np.full(values.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -log_slope(logc, np.log(np.abs(values)))[0]
