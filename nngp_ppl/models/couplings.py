r"""The coupling model at one cutoff: first-order EFT correlators with an inferred truncation error.

The measured correlators :math:`y` (the distinct 4-pt, and 6-pt, functions of one width,
concatenated) are modelled as

.. math::

    y = G_{GP} + D(\Lambda)\, g + \delta + \epsilon, \qquad
    \epsilon \sim \mathcal N(0, \Sigma), \qquad
    \delta \sim \mathcal N\big(0, \bar c^{\,2} A^2\big),

with

* :math:`G_{GP}` the Wick correlators of the kernel (physics.md §3),
* :math:`D(\Lambda)` the first-order design, :math:`\Delta G = \sum_c g_c D_{\cdot c}`, from the
  Feynman rules of physics.md §6 (rule 4.5 on), so that :math:`g = (\lambda, \kappa)` enter
  linearly,
* :math:`\Sigma` the covariance of the estimator of the correlators (the spread of the mean
  over the sampled networks), supplied by :class:`nngp_ppl.stats.CorrelatorStats`,
* :math:`\delta` the EFT truncation error: the orders the first-order model leaves out.
  Following the Bayesian treatment of EFT truncation errors (Furnstahl, Klco, Phillips,
  Wesolowski, PRC 92 (2015) 024005; Melendez et al., PRC 100 (2019) 044001, "BUQEYE"), the
  size of what is missing is tied to the size of the correction that is known: observable
  :math:`t` gets an error of standard deviation :math:`\bar c\, a_t` with
  :math:`a_t = |\Delta G_t(\hat g)|`, the first-order correction at the least-squares
  couplings :math:`\hat g` (weights :math:`1/\Sigma_{tt}`: generalised least squares would
  lean on the poorly estimated small-variance directions of :math:`\Sigma`; λ alone is
  anchored on the 4-pt block, where it first appears), and the
  dimensionless :math:`\bar c` (the relative size of the missing orders) is inferred
  with a half-normal prior of scale ``cbar_scale`` (1: the missing orders are at most
  about as large as the first-order correction). Missing orders of one correlator order
  come from the same higher-order diagrams, so their errors are correlated: within the
  block of each order (4-pt, 6-pt) the error coefficients have correlation
  :math:`\rho` (``truncation_correlation``, default 0.5; BUQEYE's Gaussian process over the
  coefficients in its simplest form), across orders none:

  .. math:: \delta \sim \mathcal N(0, \bar c^{\,2} M), \qquad
      M = (1-\rho)\,A^2 + \rho \textstyle\sum_{n} a_n a_n^\top,

  with :math:`A = \operatorname{diag}(a)` and :math:`a_n` the vector :math:`a` restricted
  to order n. (With independent errors, :math:`\rho = 0`, a misfit shared by all 6-pt
  tuples, such as a connected 6-pt function the first-order λ model lacks, averages away
  and still pulls λ many standard deviations; measured on Gauss-net correlators.) The
  coherent part is degenerate with the couplings, so :math:`\rho` cannot be learned from
  one data set; it is a stated assumption. Where first order is enough the data drive
  :math:`\bar c` towards 0 and the model reduces to the plain one; where it is not,
  :math:`\bar c` grows until the misfit is explained and the coupling posteriors widen
  accordingly instead of becoming confidently wrong.

Marginalising :math:`\delta` gives :math:`y \sim \mathcal N(G_{GP} + D g, \Sigma + \bar c^2 M)`.
Refactorising that covariance at every leapfrog step would cost :math:`O(T^3)` (T = 588
observables for 6 inputs), so the factorisation is done once: with the Cholesky factor
:math:`\Sigma = L L^\top` and the eigen-decomposition
:math:`L^{-1} M L^{-\top} = U \operatorname{diag}(\mu) U^\top`,

.. math::

    \Sigma + \bar c^2 M = L U \operatorname{diag}(1 + \bar c^2 \mu) U^\top L^\top,

so the rotated residual :math:`u = U^\top L^{-1}(y - G_{GP})` has independent components,
:math:`u \sim \mathcal N(U^\top L^{-1} D g, \operatorname{diag}(1 + \bar c^2\mu))`. That is the
same likelihood up to the constant :math:`\log|\det L|`. Without the truncation term the
model is literally ``MultivariateNormal(G_GP + D g, scale_tril=L)`` with the Cholesky factor
computed once.

The one hyperparameter :math:`\bar c` is integrated out on a grid rather than sampled. Its
likelihood is flat below :math:`1/\sqrt{\max\mu}` and falls off a cliff a little above
(the :math:`\mu_i` span many decades, since the estimator covariance of 6-pt products is
very ill-conditioned); NUTS needs hundreds of leapfrog steps to cross such a plateau, on a
log or a linear scale. So the half-normal prior is discretised on ``grid_size``
log-spaced nodes :math:`\bar c_k` (spacing about 0.1 in :math:`\log\bar c`, trapezoid weights
:math:`p(\bar c_k)\,\bar c_k\,h`, from where the likelihood stops changing up to 5 prior
scales, plus a node at 0 carrying the prior mass below), and the likelihood is the mixture
:math:`\sum_k w_k\, \mathcal N(u; U^\top L^{-1}Dg, 1 + \bar c_k^2\mu)`. NUTS then samples
the couplings alone; a draw of :math:`\bar c` per coupling draw comes afterwards from its
exact conditional on the grid (:func:`sample_cbar`).

The model's arrays carry a leading "block" axis (:func:`stack_problems`): independent
problems, one plate each, in one model.

Priors (weakly informative, scaled by the data): each coupling :math:`g_c \sim
\mathcal N(0, s_c^2)` with

.. math:: s_c = w\, \frac{\max(\lVert y - G_{GP}\rVert, \lVert \sqrt{\operatorname{diag}\Sigma}
    \rVert)}{\lVert D_{\cdot c}\rVert},

the coupling whose first-order correction alone is as large (Euclidean norm over all
observables) as the whole observed non-Gaussianity, or as the noise if that is larger, times
``prior_width`` w = 10. Any coupling the data can support lies well inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import scipy.linalg
import scipy.stats

from .._checks import NNGPInputError, finite_float, positive_int

COUPLINGS = ("lambda", "kappa")

#: Default eigenvalue floor of the estimator's correlation matrix, relative to its largest
#: eigenvalue (see :func:`stable_cholesky`).
RCOND = 1e-6


def coupling_names(couplings) -> tuple[str, ...]:
    """Validated coupling names: a non-empty ordered subset of ``("lambda", "kappa")``."""
    if isinstance(couplings, str):
        couplings = (couplings,)
    couplings = tuple(couplings)
    if (
        not couplings
        or any(c not in COUPLINGS for c in couplings)
        or len(set(couplings)) != len(couplings)
    ):
        raise NNGPInputError(
            f"couplings must be distinct names from {COUPLINGS}, e.g. ('lambda',) or "
            f"('lambda', 'kappa'); got {couplings!r}"
        )
    return couplings


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


class CouplingArrays(NamedTuple):
    """What the numpyro model reads; every field has a leading block axis of length B.

    A pytree of arrays, so that MCMC (``jit_model_args=True``) reuses its compiled code for
    every problem of the same shape.
    """

    observed: jnp.ndarray  # (B, T) measured correlators
    gp: jnp.ndarray  # (B, T) Wick correlators
    design: jnp.ndarray  # (B, T, C) first-order design
    scale_tril: jnp.ndarray  # (B, T, T) Cholesky factor of the estimator covariance
    rotated_residual: jnp.ndarray  # (B, T) u = U^T L^{-1} (y - G_GP)
    rotated_design: jnp.ndarray  # (B, T, C) U^T L^{-1} D
    rotated_precision: jnp.ndarray  # (B, K, T) 1 / (1 + cbar_k^2 mu) on the cbar grid
    cbar_log_weights: jnp.ndarray  # (B, K) log prior mass of each node + log normalisation
    prior_scale: jnp.ndarray  # (B, C)


@dataclass(frozen=True, eq=False)
class CouplingProblem:
    """The coupling model's data at one width and one cutoff, factorised once.

    Build with :meth:`build`. Fields are numpy arrays; :func:`stack_problems` turns one or
    more problems into the :class:`CouplingArrays` the model reads.
    """

    couplings: tuple[str, ...]
    truncation: bool
    observed: np.ndarray  # (T,)
    gp: np.ndarray  # (T,)
    design: np.ndarray  # (T, C)
    scale_tril: np.ndarray  # (T, T)
    n_floored: int  # eigenvalues of the correlation matrix raised to the floor
    rotated_residual: np.ndarray  # (T,)
    rotated_design: np.ndarray  # (T, C)
    truncation_eigenvalues: np.ndarray  # (T,) mu
    truncation_shape: np.ndarray  # (T,) a_t = |Delta G_t(g_hat)|
    prior_scale: np.ndarray  # (C,)
    cbar_scale: float
    truncation_correlation: float
    blocks: tuple[int, ...]  # observables per correlator order
    grid_size: int
    point_estimate: np.ndarray  # (C,) least squares weighted by 1/Var (module docstring)
    point_covariance: np.ndarray  # (C, C) its sandwich covariance

    @classmethod
    def build(
        cls,
        observed,
        covariance,
        gp,
        design,
        couplings=("lambda",),
        *,
        truncation: bool = True,
        prior_width: float = 10.0,
        cbar_scale: float = 1.0,
        truncation_correlation: float = 0.5,
        blocks=None,
        grid_size: int = 256,
        scale_tril=None,
        n_floored: int = -1,
        rcond: float = RCOND,
    ) -> CouplingProblem:
        r"""Factorise the likelihood once.

        ``observed``, ``gp``: (T,) correlators on the concatenated distinct tuples;
        ``covariance``: (T, T) estimator covariance; ``design``: (T, C) with
        :math:`\Delta G = D g`, columns in the order of ``couplings``. The covariance is
        regularised and factorised by :func:`stable_cholesky` (``rcond``); a ready
        ``scale_tril`` replaces ``covariance`` when several cutoffs share one
        factorisation. ``grid_size``: nodes of the :math:`\bar c` grid (a fixed
        number, so that every problem of T observables has the same array shapes and the
        compiled sampler is reused). ``blocks``: the number of observables of each
        correlator order, in order (default: one block); ``truncation_correlation``: the
        correlation of the truncation errors within a block (module docstring).
        """
        couplings = coupling_names(couplings)
        y = _vector("observed", observed)
        g0 = _vector("gp", gp)
        T = y.shape[0]
        if g0.shape != (T,):
            raise NNGPInputError(f"gp must have shape ({T},) like observed, got {g0.shape}")
        D = np.asarray(design, dtype=np.float64)
        if D.ndim == 1:
            D = D[:, None]
        if D.shape != (T, len(couplings)):
            raise NNGPInputError(
                f"design must have shape ({T}, {len(couplings)}) for couplings {couplings}, "
                f"got {D.shape}"
            )
        if not np.all(np.isfinite(D)):
            raise NNGPInputError("design must be finite")
        prior_width = finite_float("prior_width", prior_width, minimum=0.0)
        cbar_scale = finite_float("cbar_scale", cbar_scale, minimum=0.0)
        grid_size = positive_int("grid_size", grid_size)
        rho = finite_float("truncation_correlation", truncation_correlation, minimum=0.0)
        if rho > 1:
            raise NNGPInputError(f"truncation_correlation must be in [0, 1], got {rho}")
        if prior_width == 0 or cbar_scale == 0 or grid_size < 16:
            raise NNGPInputError(
                "prior_width and cbar_scale must be > 0 and grid_size >= 16; got "
                f"{prior_width}, {cbar_scale}, {grid_size}"
            )
        if scale_tril is None:
            L, n_floored = stable_cholesky(covariance, rcond=rcond)
        else:
            L = np.asarray(scale_tril, dtype=np.float64)
            if L.shape != (T, T):
                raise NNGPInputError(f"scale_tril must have shape ({T}, {T}), got {L.shape}")

        norms = np.linalg.norm(D, axis=0)
        if np.any(norms == 0):
            dead = [c for c, nrm in zip(couplings, norms, strict=True) if nrm == 0]
            raise NNGPInputError(
                f"couplings {dead} have no first-order effect on these correlators "
                "(their design column is zero); drop them"
            )
        resid = y - g0
        noise = np.sqrt(np.sum(L**2))  # sqrt(trace Sigma)
        prior_scale = prior_width * max(np.linalg.norm(resid), noise) / norms

        Lr = scipy.linalg.solve_triangular(L, resid, lower=True)
        LD = scipy.linalg.solve_triangular(L, D, lower=True)
        # Reference couplings: least squares weighted by the variances alone, with the
        # sandwich covariance B Sigma B^T. Unlike generalised least squares it does not lean
        # on the poorly estimated small-variance directions of Sigma, so it is a stable
        # anchor for the truncation scale and for the sampler's starting point. A single
        # coupling is anchored on the first block alone (the 4-pt function, where lambda
        # first appears): the 6-pt block can carry large missing terms (e.g. its
        # connected part) that would drag the anchor, and with it the truncation scale.
        sd = np.sqrt(np.sum(L**2, axis=1))
        use = np.zeros(T, dtype=bool)
        first, last = _block_bounds(blocks, T)[0]
        use[first:last] = True
        if len(couplings) > 1 or not np.any(D[use] != 0):
            use[:] = True
        B = np.zeros((len(couplings), T))
        B[:, use] = np.linalg.pinv(D[use] / sd[use, None]) / sd[None, use]  # g_hat = B r
        ghat = B @ resid
        BL = B @ L
        gcov = BL @ BL.T
        shape = np.abs(D @ ghat)
        if truncation:
            # Truncation covariance c^2 F F^T: an independent part and one fully coherent
            # part per block (correlator order), with correlation rho within a block.
            cols = [np.sqrt(1.0 - rho) * np.diag(shape)]
            for start, stop in _block_bounds(blocks, T):
                col = np.zeros(T)
                col[start:stop] = shape[start:stop]
                cols.append(np.sqrt(rho) * col[:, None])
            M = scipy.linalg.solve_triangular(L, np.concatenate(cols, axis=1), lower=True)
            mu, U = np.linalg.eigh(M @ M.T)
            mu = np.clip(mu, 0.0, None)  # round-off leaves tiny negative eigenvalues
            u, UD = U.T @ Lr, U.T @ LD
        else:
            mu, u, UD = np.zeros(T), Lr, LD
        return cls(
            couplings=couplings,
            truncation=bool(truncation),
            observed=y,
            gp=g0,
            design=D,
            scale_tril=L,
            n_floored=int(n_floored),
            rotated_residual=u,
            rotated_design=UD,
            truncation_eigenvalues=mu,
            truncation_shape=shape,
            prior_scale=prior_scale,
            cbar_scale=cbar_scale,
            truncation_correlation=rho,
            blocks=tuple(b - a for a, b in _block_bounds(blocks, T)),
            grid_size=grid_size,
            point_estimate=ghat,
            point_covariance=gcov,
        )

    def truncation_matrix(self) -> np.ndarray:
        """M of the module docstring: the truncation covariance per unit cbar squared."""
        a, rho = self.truncation_shape, self.truncation_correlation
        M = (1.0 - rho) * np.diag(a**2)
        for start, stop in _block_bounds(self.blocks, a.size):
            M[start:stop, start:stop] += rho * np.outer(a[start:stop], a[start:stop])
        return M

    def loglik(self, couplings, cbar) -> float:
        r"""Marginal log-likelihood :math:`\log\mathcal N(y; G_{GP} + Dg, \Sigma + \bar c^2 M)`
        up to the constant :math:`-\log|\det L|`, from the rotated form (for checks)."""
        g = np.atleast_1d(np.asarray(couplings, dtype=np.float64))
        var = 1.0 + float(cbar) ** 2 * self.truncation_eigenvalues
        r = self.rotated_residual - self.rotated_design @ g
        return float(-0.5 * np.sum(r**2 / var + np.log(2 * np.pi * var)))


def stack_problems(problems) -> tuple[CouplingArrays, np.ndarray]:
    """Stack problems of equal shape and settings into blocks; returns (arrays, cbar grid).

    The blocks share one :math:`\bar c` grid, wide enough for the most ill-conditioned.
    """
    problems = list(problems)
    if not problems:
        raise NNGPInputError("problems must contain at least one CouplingProblem")
    first = problems[0]
    for p in problems[1:]:
        if (p.couplings, p.truncation, p.observed.shape, p.cbar_scale, p.grid_size) != (
            first.couplings,
            first.truncation,
            first.observed.shape,
            first.cbar_scale,
            first.grid_size,
        ):
            raise NNGPInputError(
                "problems to stack must share couplings, truncation, number of observables, "
                "cbar_scale and grid_size"
            )
    mu = np.stack([p.truncation_eigenvalues for p in problems])  # (B, T)
    if first.truncation:
        grid, logw = cbar_grid(mu, first.cbar_scale, first.grid_size)
    else:
        grid, logw = np.zeros(1), np.zeros(1)
    var = 1.0 + grid[None, :, None] ** 2 * mu[:, None, :]  # (B, K, T)
    arrays = CouplingArrays(
        observed=jnp.asarray(np.stack([p.observed for p in problems])),
        gp=jnp.asarray(np.stack([p.gp for p in problems])),
        design=jnp.asarray(np.stack([p.design for p in problems])),
        scale_tril=jnp.asarray(np.stack([p.scale_tril for p in problems])),
        rotated_residual=jnp.asarray(np.stack([p.rotated_residual for p in problems])),
        rotated_design=jnp.asarray(np.stack([p.rotated_design for p in problems])),
        rotated_precision=jnp.asarray(1.0 / var),
        cbar_log_weights=jnp.asarray(logw[None, :] - 0.5 * np.sum(np.log(var), axis=2)),
        prior_scale=jnp.asarray(np.stack([p.prior_scale for p in problems])),
    )
    return arrays, grid


def coupling_model(arrays: CouplingArrays, couplings=("lambda",), truncation: bool = True):
    r"""numpyro model of the correlators at one cutoff, for B independent blocks.

    Sites: one per coupling (``lambda``, ``kappa``; shape (B,)) and the observed
    ``correlators`` (plain MVN with the fixed ``scale_tril``) or, with ``truncation``,
    ``rotated`` (the decorrelated residual :math:`u` under the mixture over the
    :math:`\bar c` grid). Bind ``couplings`` and ``truncation`` with ``functools.partial``.
    """
    B = arrays.observed.shape[0]
    with numpyro.plate("block", B):
        g = jnp.stack(
            [
                numpyro.sample(name, dist.Normal(0.0, arrays.prior_scale[:, c]))
                for c, name in enumerate(couplings)
            ],
            axis=-1,
        )
        if truncation:
            loc = jnp.einsum("btc,bc->bt", arrays.rotated_design, g)
            numpyro.sample(
                "rotated",
                ScaleMixtureNormal(loc, arrays.rotated_precision, arrays.cbar_log_weights),
                obs=arrays.rotated_residual,
            )
        else:
            loc = arrays.gp + jnp.einsum("btc,bc->bt", arrays.design, g)
            numpyro.sample(
                "correlators",
                dist.MultivariateNormal(loc, scale_tril=arrays.scale_tril),
                obs=arrays.observed,
            )


def cbar_grid(mu, cbar_scale: float = 1.0, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes and normalised log prior weights of the half-normal prior on :math:`\bar c`.

    ``size`` nodes: log-spaced ones from :math:`10^{-3}/\sqrt{\max\mu}` (below it every
    :math:`1 + \bar c^2\mu_i` differs from 1 by less than 1e-6, so the likelihood is that of
    :math:`\bar c = 0`) to 5 ``cbar_scale`` (the prior mass beyond is 6e-7), trapezoid
    weights :math:`p(\bar c)\,\bar c\,h` in :math:`\log\bar c`, and a first node at 0 that
    carries the prior mass below the grid.
    """
    mu_max = float(np.max(mu)) if np.size(mu) else 0.0
    top = 5.0 * cbar_scale
    low = min(1e-3 / np.sqrt(mu_max), top / 10.0) if mu_max > 0 else top / 10.0
    theta = np.linspace(np.log(low), np.log(top), size - 1)
    c = np.exp(theta)
    w = scipy.stats.halfnorm.pdf(c, scale=cbar_scale) * c * (theta[1] - theta[0])
    w[[0, -1]] *= 0.5
    nodes = np.concatenate([[0.0], c])
    weights = np.concatenate([[scipy.stats.halfnorm.cdf(low, scale=cbar_scale)], w])
    return nodes, np.log(weights / weights.sum())


def sample_cbar(rng_key, arrays: CouplingArrays, grid, couplings_draws) -> jnp.ndarray:
    r"""Draws of :math:`\bar c` from its exact conditional :math:`p(\bar c_k | y, g)` on the grid.

    ``couplings_draws``: (..., B, C) draws of the couplings of each block; returns (..., B).
    With the NUTS draws of g these are draws from the joint posterior of
    :math:`(g, \bar c)` under the grid prior the model uses.
    """
    g = jnp.asarray(couplings_draws)
    resid = arrays.rotated_residual - jnp.einsum("btc,...bc->...bt", arrays.rotated_design, g)
    logits = arrays.cbar_log_weights - 0.5 * jnp.einsum(
        "...bt,bkt->...bk", resid**2, arrays.rotated_precision
    )
    idx = jax.random.categorical(rng_key, logits, axis=-1)
    return jnp.asarray(grid)[idx]


class ScaleMixtureNormal(dist.Distribution):
    r"""Independent normals whose precisions are a finite mixture shared by all coordinates.

    .. math:: p(u) = \sum_k e^{\ell_k} \prod_{i=1}^{T} \frac{1}{\sqrt{2\pi}}
        \exp\!\big(-\tfrac12 P_{ki} (u_i - m_i)^2\big)

    with ``log_weights`` :math:`\ell_k` already including :math:`\tfrac12\sum_i\log P_{ki}`
    (log prior weight plus log normalisation), so one evaluation is one (K, T) mat-vec: the
    mixture over the :math:`\bar c` grid in :func:`coupling_model`. Shapes: ``loc`` (..., T),
    ``precision`` (..., K, T), ``log_weights`` (..., K).
    """

    arg_constraints = {
        "loc": dist.constraints.real_vector,
        "precision": dist.constraints.independent(dist.constraints.positive, 2),
        "log_weights": dist.constraints.real_vector,
    }
    support = dist.constraints.real_vector

    def __init__(self, loc, precision, log_weights, *, validate_args=None):
        self.loc, self.precision, self.log_weights = loc, precision, log_weights
        super().__init__(
            batch_shape=jnp.shape(loc)[:-1],
            event_shape=jnp.shape(loc)[-1:],
            validate_args=validate_args,
        )

    def log_prob(self, value):
        d2 = (value - self.loc) ** 2
        quad = jnp.einsum("...t,...kt->...k", d2, self.precision)
        n = self.loc.shape[-1]
        return jax.nn.logsumexp(self.log_weights - 0.5 * quad, axis=-1) - 0.5 * n * jnp.log(
            2 * jnp.pi
        )

    def sample(self, key, sample_shape=()):
        k1, k2 = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        # log_weights include the normalisation 1/2 sum log P; the mixture weights do not.
        logits = self.log_weights - 0.5 * jnp.sum(jnp.log(self.precision), axis=-1)
        idx = jax.random.categorical(k1, logits, shape=shape)
        prec = jnp.take_along_axis(
            jnp.broadcast_to(self.precision, shape + self.precision.shape[-2:]),
            idx[..., None, None],
            axis=-2,
        )[..., 0, :]
        return self.loc + prec**-0.5 * jax.random.normal(k2, shape + self.event_shape)


def _block_bounds(blocks, T: int) -> list[tuple[int, int]]:
    """(start, stop) of each block of observables; ``None`` is one block of all T."""
    if blocks is None:
        return [(0, T)]
    sizes = [positive_int("blocks", b) for b in np.atleast_1d(blocks)]
    if sum(sizes) != T:
        raise NNGPInputError(f"blocks must add up to the {T} observables, got {sizes}")
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _vector(name, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise NNGPInputError(f"{name} must be a non-empty 1-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NNGPInputError(f"{name} must be finite")
    return arr


def gaussian_moments(K, n: int) -> np.ndarray:
    r"""Moments :math:`E[\prod_{a\in t} f(x_a)]` of :math:`f \sim GP(0, K)` on the distinct
    n-tuples, for even n up to 12 (Isserlis).

    Up to n = 10 from :func:`nngp_ppl.theory.wick.gp_correlator_tuples`; n = 12 by the
    recursion :math:`E[f_1 \cdots f_{12}] = \sum_{j=2}^{12} K_{1j}\,E[\prod_{a\ne 1,j} f_a]`.
    """
    from ..theory.wick import gp_correlator_tuples
    from ..tuples import distinct_tuples

    K = np.asarray(K, dtype=np.float64)
    if n <= 10:
        return gp_correlator_tuples(K, n)
    if n != 12:
        raise NNGPInputError(f"n must be an even order <= 12, got {n}")
    k = K.shape[0]
    rows = distinct_tuples(k, 12)
    lower = gp_correlator_tuples(K, 10)
    weights = k ** np.arange(9, -1, -1, dtype=np.int64)
    table = distinct_tuples(k, 10) @ weights
    total = np.zeros(len(rows))
    for j in range(1, 12):
        rest = np.delete(rows, [0, j], axis=1)  # still sorted
        total += K[rows[:, 0], rows[:, j]] * lower[np.searchsorted(table, rest @ weights)]
    return total


def estimator_covariance(moments, k: int, orders, n_nets: int) -> np.ndarray:
    r"""Covariance of the sample means of the products over ``n_nets`` independent draws:

    .. math:: \mathrm{Cov}(\hat G_s, \hat G_t) = \frac{G_{s\cup t} - G_s G_t}{n_{nets}},

    rows and columns the distinct tuples of ``orders`` concatenated. ``moments(m)`` returns
    the m-point moments on the distinct m-tuples (orders and their pairwise sums are used):
    e.g. :func:`gaussian_moments` of the kernel (the noise-free GP covariance) or the exact
    finite-width correlators of :mod:`nngp_ppl.theory.exact`.
    """
    from ..stats import union_index

    n_nets = positive_int("n_nets", n_nets)
    cache = {}

    def moment(m):
        if m not in cache:
            cache[m] = np.asarray(moments(m), dtype=np.float64)
        return cache[m]

    blocks = [
        [
            moment(a + b)[union_index(k, a, b)] - np.outer(moment(a), moment(b))
            for b in orders
        ]
        for a in orders
    ]
    return np.block(blocks) / n_nets
