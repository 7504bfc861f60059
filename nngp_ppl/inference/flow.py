r"""β-functions from coupling posteriors: the Wilsonian running of λ with its uncertainty.

physics.md §8: every cutoff :math:`\Lambda \gg |x|` must describe the same correlators, so
the couplings run, :math:`\beta(\lambda) = d\lambda/d\log\Lambda`. At first order the model
prediction is :math:`\Delta G = D(\Lambda)\, g(\Lambda)` and the couplings at a cutoff are
the projection of the physical correction onto that cutoff's design,

.. math:: g(\Lambda) = P(\Lambda)\, m, \qquad
    P = (D^\top \Sigma^{-1} D)^{-1} D^\top \Sigma^{-1},

with :math:`\Sigma` the estimator covariance (the weights of the likelihood). A posterior
draw :math:`g_s` at cutoff :math:`\Lambda_j` fixes :math:`m_s = D(\Lambda_j) g_s`; pushing the
*same* :math:`m_s` through every cutoff's EFT gives a trajectory :math:`g_s(\Lambda)`, whose
derivative at :math:`\Lambda_j` (JAX forward mode through the vertex integrals, whose
:math:`\Lambda`-derivative is the exact surface term) is

.. math:: \beta_s(\Lambda_j) = \frac{d g_s}{d\log\Lambda}\Big|_{\Lambda_j}
    = -P(\Lambda_j)\, \frac{dD}{d\log\Lambda}(\Lambda_j)\, g_s .

The uncertainty the cutoffs share (the same data underlie all of them: the overall size of
the non-Gaussianity) moves :math:`\lambda` and :math:`\beta` together, so it cancels in
the exponent :math:`\gamma = -\beta_\lambda/\lambda = -d\log|\lambda|/d\log\Lambda`
(for one coupling with :math:`D \propto I(\Lambda)` exactly: :math:`\gamma = d\log I/d\log\Lambda`,
whatever the data). Regressing :math:`\log|\lambda|` on :math:`\log\Lambda` across
independent per-cutoff posteriors instead treats that shared uncertainty as independent
noise at every cutoff and overstates the uncertainty of :math:`\gamma` (``gamma_independent``
is reported for comparison).

The asymptotic exponent. Along the trajectory from the largest cutoff :math:`\Lambda_r`, the
local exponent is evaluated at :math:`\Lambda_r, \Lambda_r/2, \Lambda_r/4`; if it
approaches its limit as a power, :math:`\gamma(\Lambda) = \gamma_\infty - c\Lambda^{-p}`, the
ratio of successive differences is :math:`r = 2^{-p}` and
:math:`\gamma_\infty = \gamma(\Lambda_r) + \Delta\, r/(1-r)` (Aitken's extrapolation). The
size of that extrapolation is kept as a systematic error: each draw of ``gamma`` is
:math:`\gamma_\infty` plus a normal deviate of that size. If the differences do not shrink,
the running is not yet asymptotic; then ``gamma`` is the exponent at :math:`\Lambda_r` with
the last two differences as its systematic error, and a warning says so. (If
:math:`\Lambda_r/4` lies inside the inputs' extent, three times the last difference.)

Closed forms to compare with (:func:`nngp_ppl.eft.asymptotic_exponent`):
:math:`\gamma = d_{in}` where the vertex propagator tends to a non-zero constant (Gauss-net
with full K and σ_b > 0, Erf-net), :math:`d_{in} + 4` where it grows like :math:`|y|`
(ReLU-net), 0 where it decays (Gauss-net with K - σ_b²).
"""

from __future__ import annotations

import datetime
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import NNGPInputError
from ..eft import asymptotic_exponent
from ..ensembles import ensemble_from_dict


def design_function(net, X, orders, couplings, propagator: str = "full", max_cutoff=None):
    r"""Pure JAX function ``cutoff -> (T, C)``: the first-order design of physics.md §6.

    Rule 4.5 on (no two-point corrections); vertex legs carry ``propagator``, external lines
    the full K. Rows: the distinct tuples of each order in ``orders``, concatenated;
    columns: ``couplings``:

    .. math::
        \Delta G_4 &= -24\lambda\, I^{(0)}_{1234} - 360\kappa\, I^{(1)}_{1234} \\
        \Delta G_6 &= -24\lambda \textstyle\sum_{15} I^{(0)}_{abcd} K_{ef}
            - 720\kappa\, I^{(0)}_{123456} - 360\kappa \sum_{15} I^{(1)}_{abcd} K_{ef}

    with :math:`I^{(\ell)}_t = \int_{box} \prod_{a\in t}\tilde K(x_a,y)\,\tilde K(y,y)^\ell dy`.
    Built from :func:`nngp_ppl.theory.diagrams.first_order_design_function`, whose vertex
    integrals carry their exact surface-term derivative, so the design is differentiable in
    the cutoff.
    """
    from ..theory.diagrams import first_order_design_function

    fns = [
        first_order_design_function(
            net, X, n, couplings, propagator, drop_two_point=True, max_cutoff=max_cutoff
        )
        for n in orders
    ]

    def design(cutoff):
        return jnp.concatenate([fn(cutoff) for fn in fns], axis=0)

    return design


def _projection(Dfn, L):
    """t = log cutoff -> (P, dP/dt, D, dD/dt) with P = (D'S^-1 D)^-1 D'S^-1, S = L L'."""

    def proj(t):
        D = Dfn(jnp.exp(t))
        A = jax.scipy.linalg.solve_triangular(L, D, lower=True)  # L^-1 D
        Pw = jnp.linalg.solve(A.T @ A, A.T)  # (C, T) in whitened units
        P = jax.scipy.linalg.solve_triangular(L.T, Pw.T, lower=False).T  # Pw L^-1
        return P, D

    def both(t):
        (P, D), (dP, dD) = jax.jvp(proj, (t,), (jnp.ones_like(t),))
        return P, dP, D, dD

    return jax.jit(both)


def beta_function(posterior, *, reference_cutoff=None, seed: int = 0, coupling: str = "lambda"):
    r"""Posterior of the β-functions and of the running exponent γ (module docstring).

    ``posterior``: a DataTree from :func:`~nngp_ppl.infer_couplings` (or the path of one).
    ``reference_cutoff``: where the trajectories of ``lambda_flow``, ``gamma_slope`` and
    ``gamma`` start (default: the largest cutoff). ``coupling``: whose exponent γ is.

    Returns a DataTree whose ``posterior`` group holds, per width,
    ``beta`` (chain, draw, cutoff, coupling): :math:`dg/d\log\Lambda` at each cutoff from
    that cutoff's draws; ``gamma_local`` (chain, draw, cutoff):
    :math:`-\beta_\lambda/\lambda`; ``lambda_flow`` (chain, draw, cutoff): the coupling along
    the trajectory from the reference cutoff; ``gamma`` (chain, draw): the asymptotic
    exponent with its extrapolation systematic; ``gamma_slope``: minus the slope of
    :math:`\log|\lambda|` against :math:`\log\Lambda` along the trajectory (the paper's
    regression, done per draw); ``gamma_independent``: the same regression across the
    independent per-cutoff posteriors (overstated uncertainty; for comparison). Group
    ``constant_data`` has ``gamma_analytic`` and the extrapolation details.
    """
    import arviz_base
    import xarray as xr

    from .. import __version__

    if isinstance(posterior, str) or hasattr(posterior, "__fspath__"):
        posterior = xr.open_datatree(posterior, engine="h5netcdf").load()
    try:
        post = posterior["posterior"].to_dataset()
        const = posterior["constant_data"].to_dataset()
        attrs = dict(posterior.attrs)
        net = ensemble_from_dict(json.loads(attrs["ensemble"]))
        couplings = tuple(np.atleast_1d(attrs["couplings"]).tolist())
        orders = tuple(int(n) for n in np.atleast_1d(attrs["orders"]))
        propagator = str(attrs["propagator"])
    except (KeyError, TypeError, ValueError) as err:
        raise NNGPInputError(
            f"posterior must be a DataTree written by infer_couplings (missing {err})"
        ) from None
    if str(attrs.get("lattice", "default quadrature")) != "default quadrature":
        raise NNGPInputError(
            "beta_function needs posteriors computed with the default (continuum) vertex "
            f"integrals, not an explicit lattice ({attrs['lattice']}): the running is a "
            "derivative in the cutoff"
        )
    if coupling not in couplings:
        raise NNGPInputError(f"coupling must be one of the fitted couplings {couplings}")
    X = np.asarray(const["inputs"].values)
    cutoffs = np.asarray(post["cutoff"].values, dtype=np.float64)
    widths = np.asarray(post["width"].values)
    ref = float(cutoffs.max()) if reference_cutoff is None else float(reference_cutoff)
    if not np.any(np.isclose(cutoffs, ref)):
        raise NNGPInputError(
            f"reference_cutoff must be one of the posterior's cutoffs {cutoffs.tolist()}"
        )
    jref = int(np.argmin(np.abs(cutoffs - ref)))
    ci = couplings.index(coupling)
    extent = float(np.max(np.abs(X)))
    probe = np.array([ref, ref / 2, ref / 4])
    Dfn = design_function(net, X, orders, couplings, propagator, max_cutoff=float(cutoffs.max()))

    g_all = np.stack([post[c].values for c in couplings], axis=-1)  # (ch, dr, W, L, C)
    nch, ndr = g_all.shape[:2]
    nW, nL, C = len(widths), len(cutoffs), len(couplings)
    beta = np.empty((nch, ndr, nW, nL, C))
    lam_flow = np.empty((nch, ndr, nW, nL))
    gamma_probe = np.empty((nch, ndr, nW, 3))
    rng = np.random.default_rng(seed)
    for i in range(nW):
        both = _projection(Dfn, jnp.asarray(const["scale_tril"].values[i]))
        at = [both(jnp.log(c)) for c in cutoffs]
        m = np.einsum("tc,abc->abt", np.asarray(at[jref][2]), g_all[:, :, i, jref])
        for j, (P, _, _, dD) in enumerate(at):
            beta[:, :, i, j] = -np.einsum(
                "ct,tk,abk->abc", np.asarray(P), np.asarray(dD), g_all[:, :, i, j]
            )
            lam_flow[:, :, i, j] = m @ np.asarray(P)[ci]
        for q, c in enumerate(probe):
            if c < extent:
                gamma_probe[:, :, i, q] = np.nan
                continue
            P, dP, _, _ = both(jnp.log(c))
            gamma_probe[:, :, i, q] = -(m @ np.asarray(dP)[ci]) / (m @ np.asarray(P)[ci])
    lam = g_all[..., ci]
    gamma_local = -beta[..., ci] / lam

    gamma, systematic, converged = _extrapolate(gamma_probe, rng)
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
    logc = np.log(cutoffs)
    gamma_slope = _neg_slope(logc, lam_flow)
    gamma_indep = _neg_slope(logc, lam)

    dims = {
        "beta": ["width", "cutoff", "coupling"],
        "gamma_local": ["width", "cutoff"],
        "lambda_flow": ["width", "cutoff"],
        "gamma": ["width"],
        "gamma_slope": ["width"],
        "gamma_independent": ["width"],
        "gamma_at_reference": ["width"],
        "gamma_systematic": ["width"],
        "gamma_probe": ["width", "probe_cutoff"],
    }
    return arviz_base.from_dict(
        {
            "posterior": {
                "beta": beta,
                "gamma_local": gamma_local,
                "lambda_flow": lam_flow,
                "gamma": gamma,
                "gamma_slope": gamma_slope,
                "gamma_independent": gamma_indep,
            },
            "constant_data": {
                "gamma_analytic": np.asarray(asymptotic_exponent(net, propagator)),
                "gamma_at_reference": np.nanmedian(gamma_probe[..., 0], axis=(0, 1)),
                "gamma_systematic": np.nanmedian(systematic, axis=(0, 1)),
                "gamma_probe": np.nanmedian(gamma_probe, axis=(0, 1)),
                "converged": np.asarray(converged, dtype=np.int8),
            },
        },
        dims={**dims, "converged": ["width"]},
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
                "couplings": list(couplings),
                "orders": list(orders),
                "propagator": propagator,
                "gamma_coupling": coupling,
                "reference_cutoff": ref,
                "method": "posterior draws pushed through every cutoff's first-order EFT "
                "(GLS projection), differentiated in log cutoff with JAX; gamma: Aitken "
                "extrapolation from cutoff/4, /2, /1 with its size as systematic",
                "source_created": str(attrs.get("created", "")),
                "created": datetime.datetime.now(datetime.UTC).isoformat(),
            }
        },
    )


def _extrapolate(gamma_probe, rng):
    """Aitken extrapolation of γ at (Λ, Λ/2, Λ/4) → (draws, systematic, converged per width)."""
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
    draws = center + systematic * rng.standard_normal(center.shape)
    converged = np.all(ok | np.isnan(g2), axis=(0, 1))
    return draws, systematic, converged


def _neg_slope(logc, values):
    """Minus the least-squares slope of log|values| on logc along the cutoff axis (-1)."""
    if len(logc) < 2:
        return np.full(values.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.abs(values))
    x = logc - logc.mean()
    return -np.sum(x * (y - y.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(x * x)
