r"""The coupling model: the noise-free correlators as latent variables, the couplings their map.

The measured non-Gaussian deviations :math:`\hat r = \hat G - G_{GP}` (the distinct 4-pt,
and 6-pt, functions of one width, concatenated) are modelled as

.. math::

    r \sim \mathcal N(0, c^2\Sigma), \qquad \hat r \mid r \sim \mathcal N(r, \Sigma),

with :math:`r = G - G_{GP}` the deviations of the *exact* finite-width correlators and
:math:`\Sigma = LL^\top` the covariance of the estimator over the sampled networks (the noise
model of :func:`nngp_ppl.inference.problem.noise_covariance`: exact finite-width moments where the
oracle covers the ensemble). The couplings at every cutoff are the declared estimand of
:mod:`nngp_ppl.inference.problem`, a fixed linear map of :math:`r`,

.. math:: g^*(\Lambda) = B(\Lambda)\, r ,

so one posterior over :math:`r` gives the couplings at all cutoffs, their β-functions
(:math:`dB/d\log\Lambda\; r`) and every model's predictions with the correlations between
them intact. Unlike a likelihood :math:`\hat r \sim \mathcal N(D g, \Sigma)` with a few
couplings, this does not let the ill-conditioned :math:`\Sigma` choose the weights of the
tuples: for the paper's Erf-net those weights had negative parts summing to −45 and put the
posterior outside the range of every per-tuple coupling (issue 9's audit); here the weights
are the estimand's, and :math:`\Sigma` only sets the width.

The model is written in whitened coordinates, :math:`r = L z`, :math:`\hat w = L^{-1}\hat r`:

.. math:: z \sim \mathcal N(0, c^2 I), \qquad \hat w \mid z \sim \mathcal N(z, I),

(for heavy-tailed ensembles a multivariate Student-t of ``df`` degrees of freedom,
:func:`whitened_log_likelihood`), the same model, with a potential that costs O(T)
instead of O(T²) per gradient (T = 588 observables for six inputs with the 6-pt function)
and a posterior NUTS explores with a unit mass matrix whatever the conditioning of
:math:`\Sigma`. The prior scale :math:`c = w \max(1, \lVert\hat w\rVert_\infty)`
(``prior_width`` w = 10) is scaled by the data so that every deviation the data support
lies well inside it; its pull on the posterior mean is the factor
:math:`1/(1 + c^2) \le 1\%`, i.e. at most
:math:`|\hat w_i|/c^2 \le 1/(100\,|\hat w_i|)` standard deviations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg
from jax.scipy.special import gammaln

from ..._checks import NNGPInputError, finite_float
from ..problem import (
    NORMAL_DF,
    coupling_names,
    estimator_covariance,
    gaussian_moments,
)

COUPLINGS = ("lambda", "kappa")

#: Default eigenvalue floor of the estimator's correlation matrix, relative to its largest
#: eigenvalue (see :func:`stable_cholesky`).
RCOND = 1e-6

__all__ = [
    "COUPLINGS",
    "RCOND",
    "LatentArrays",
    "NORMAL_DF",
    "coupling_model",
    "coupling_names",
    "estimator_covariance",
    "gaussian_moments",
    "latent_arrays",
    "latent_draws",
    "stable_cholesky",
    "whitened_log_likelihood",
]


class LatentArrays(NamedTuple):
    """What :func:`coupling_model` reads (a pytree: one compiled sampler serves every
    problem of the same size)."""

    whitened: jnp.ndarray  # (T,) w_hat = L^{-1} (G_hat - G_GP)
    prior_scale: jnp.ndarray  # () c
    df: jnp.ndarray  # () degrees of freedom of the likelihood; NORMAL_DF: normal

    @property
    def student(self) -> bool:
        """Whether the likelihood is Student-t (a finite ``df``)."""
        return bool(np.any(np.asarray(self.df) < NORMAL_DF))


def latent_arrays(residual, scale_tril, prior_width: float = 10.0,
                  df: float = NORMAL_DF) -> LatentArrays:
    """Arrays of the model for measured deviations ``residual`` (T,), noise factor (T, T)
    and likelihood degrees of freedom ``df`` (default: normal)."""
    r = _vector("residual", residual)
    L = np.asarray(scale_tril, dtype=np.float64)
    if L.shape != (r.size, r.size) or not np.all(np.isfinite(L)):
        raise NNGPInputError(f"scale_tril must be a finite ({r.size}, {r.size}) matrix, "
                             f"got shape {L.shape}")
    prior_width = finite_float("prior_width", prior_width, minimum=0.0)
    if prior_width == 0:
        raise NNGPInputError("prior_width must be > 0")
    df = finite_float("df", df, minimum=0.0)
    if df <= 0:
        raise NNGPInputError(f"df must be > 0, got {df}")
    w = scipy.linalg.solve_triangular(L, r, lower=True)
    scale = prior_width * max(1.0, float(np.max(np.abs(w))))
    return LatentArrays(jnp.asarray(w), jnp.asarray(scale), jnp.asarray(df))


def whitened_log_likelihood(whitened, z, df):
    r"""Isotropic multivariate Student-t log density of the whitened deviations,

    .. math:: \log p(\hat w\mid z) = \log\Gamma(\tfrac{\nu+T}{2}) - \log\Gamma(\tfrac\nu2)
        - \tfrac T2\log(\nu\pi) - \tfrac{\nu+T}{2}\log\!\big(1 + |\hat w - z|^2/\nu\big),

    which tends to the standard normal's as :math:`\nu\to\infty` (``NORMAL_DF``). One
    shared scale for all components: every linear statistic of :math:`\hat w`, such as a
    coupling, is then Student-t with :math:`\nu` degrees of freedom (independent t's would
    average back to a normal).
    """

    T = whitened.shape[-1]
    d2 = jnp.sum((whitened - z) ** 2, axis=-1)
    student = (gammaln(0.5 * (df + T)) - gammaln(0.5 * df) - 0.5 * T * jnp.log(df * jnp.pi)
               - 0.5 * (df + T) * jnp.log1p(d2 / df))
    # The difference of log-gammas cancels catastrophically for huge df: use the limit.
    normal = -0.5 * d2 - 0.5 * T * jnp.log(2 * jnp.pi)
    return jnp.where(df >= NORMAL_DF, normal, student)


def coupling_model(arrays: LatentArrays, student: bool = False):
    r"""numpyro model of the whitened deviations (module docstring), in coordinates centred
    on the data.

    Normal likelihood: :math:`z = \hat w + \xi`. The site ``xi`` (T,) carries
    :math:`\log\mathcal N(\hat w; z, I) = \log\mathcal N(\xi; 0, I)` and the factor
    ``prior`` adds :math:`\log\mathcal N(z; 0, c^2 I)`: the same joint density as
    :math:`z\sim\mathcal N(0, c^2)`, :math:`\hat w\mid z\sim\mathcal N(z, I)` (unit
    Jacobian), with a posterior close to a standard normal in ``xi``.

    Student-t likelihood (``student=True``, heavy tails), as a scale mixture: a precision
    :math:`u\sim\mathrm{Gamma}(\nu/2, \nu/2)` (site ``precision``) and
    :math:`\hat w\mid z, u\sim\mathcal N(z, I/u)`, whose marginal over u is
    :func:`whitened_log_likelihood`. Non-centred, :math:`z = \hat w + \xi/\sqrt u`: the
    likelihood times the Jacobian :math:`u^{-T/2}` is again :math:`\mathcal N(\xi; 0, I)`,
    so NUTS sees two nearly independent blocks instead of the 588-dimensional funnel of a
    t posterior in z (measured: the z-parametrisation failed the gate at ν ≈ 1, R-hat 2.0).

    The couplings are the deterministic map :math:`B(\Lambda) L z` (:func:`latent_draws`
    gives z), applied to the draws by :func:`nngp_ppl.infer_couplings`.
    """
    T = arrays.whitened.shape[-1]
    xi = numpyro.sample("xi", dist.Normal(jnp.zeros(T), 1.0).to_event(1))
    if student:
        u = numpyro.sample("precision", dist.Gamma(0.5 * arrays.df, 0.5 * arrays.df))
        z = arrays.whitened + xi / jnp.sqrt(u)
    else:
        z = arrays.whitened + xi
    numpyro.factor("prior", jnp.sum(dist.Normal(0.0, arrays.prior_scale).log_prob(z)))


def latent_draws(arrays: LatentArrays, xi, precision=None):
    """z from the sampled sites of :func:`coupling_model` (``precision`` None: normal)."""
    xi = jnp.asarray(xi)
    if precision is None:
        return arrays.whitened + xi
    return arrays.whitened + xi / jnp.sqrt(jnp.asarray(precision))[..., None]


def _vector(name, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise NNGPInputError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NNGPInputError(f"{name} must be finite")
    return arr


def stable_cholesky(covariance, name: str = "covariance", rcond: float = RCOND):
    r"""Cholesky factor of an estimator covariance, regularised where it cannot be trusted.

    The covariance of hundreds of correlator estimates is numerically singular: the
    products :math:`\prod_{a\in t} f(x_a)` of a few strongly correlated network outputs
    are nearly collinear (Erf-net, the paper's six inputs, 2·10⁴ nets: of the 588
    eigenvalues of the correlation matrix only ~150 exceed 1e-10 of the largest, ~40
    exceed 1e-6; measured), and directions of such tiny variance are set by sampling
    noise and the float32 products of the sampler rather than by the ensemble. So with
    :math:`D = \operatorname{diag}\Sigma`, the correlation matrix
    :math:`R = D^{-1/2}\Sigma D^{-1/2} = V \operatorname{diag}(e) V^\top` has its
    eigenvalues floored at ``rcond`` times the largest,
    :math:`\Sigma' = D^{1/2} V \operatorname{diag}(\max(e, r\,e_{max})) V^\top D^{1/2}`,
    which only ever inflates variances (the likelihood becomes more conservative, never more
    confident). Returns ``(L, n_floored)`` with :math:`L L^\top = \Sigma'` and the number of
    eigenvalues raised to the floor.
    """
    try:
        cov = np.asarray(covariance, dtype=np.float64)
    except (TypeError, ValueError):
        raise NNGPInputError(f"{name} must be a square (T, T) array of numbers") from None
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise NNGPInputError(f"{name} must be a square (T, T) matrix, got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise NNGPInputError(f"{name} must be finite (NaN: fewer than two networks?)")
    rcond = finite_float("rcond", rcond, minimum=0.0)
    if not rcond < 1:
        raise NNGPInputError(f"rcond must be in [0, 1), got {rcond}")
    var = np.diag(cov).copy()
    if not np.all(var > 0):
        raise NNGPInputError(
            f"{name} must have a positive diagonal: every correlator needs a non-zero "
            "estimator variance"
        )
    sd = np.sqrt(var)
    corr = 0.5 * (cov + cov.T) / np.outer(sd, sd)
    e, V = np.linalg.eigh(corr)
    floor = max(rcond, 1e-15) * e[-1]
    n_floored = int(np.sum(e < floor))
    corr = (V * np.maximum(e, floor)) @ V.T
    L = np.linalg.cholesky(0.5 * (corr + corr.T)) * sd[:, None]
    return L, n_floored
