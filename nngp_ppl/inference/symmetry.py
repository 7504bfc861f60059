r"""The f -> -f symmetry measured from data: a Wald test on the odd correlators.

The Wilsonian recipe starts by asking which symmetries the ensemble respects (issue 17).
Under :math:`f \to -f` every odd moment vanishes,
:math:`G^{(n)}_t = E\prod_{a\in t} f(x_a) = 0` for odd n, so the hypothesis is
:math:`H_0: g = 0` for the vector g of odd correlators on all distinct tuples of the odd
orders measured (1, 3, 5; :meth:`nngp_ppl.CorrelatorStats.observables`). The sampler's
sums give the estimates :math:`\hat g = S_t / n` and, from the order-(s + t) sums, their
second moments.

Statistic
---------
.. math:: W = \hat g^T\, \Sigma_0^{+}\, \hat g, \qquad
    (\Sigma_0)_{st} = \frac{S_{s\cup t}}{n^2} = \frac1n\,\widehat{E}\Big[\prod_s f
    \prod_t f\Big],

the covariance of :math:`\hat g` *under* :math:`H_0` (uncentred second moments: the odd
means are zero there), and :math:`W \sim \chi^2_r` asymptotically, r the rank kept. The
null covariance makes W self-normalised: in one dimension :math:`W = n\bar X^2 /
\overline{X^2} \le n`, and for a symmetric distribution the self-normalised sum has tails
no heavier than Gaussian whatever the tails of X (Efron, JASA 64 (1969) 1278), which is
what the heavy-tailed products of the higher orders need. (The centred sample covariance,
the Hotelling form, over-rejected here, see below.)

Ill-conditioning: the odd observables are strongly correlated (f(x), f(x)³ and f(x)⁵ of
one input; nearby inputs), and the estimated :math:`\Sigma_0` of a few hundred tuples is
near-singular. :math:`\Sigma_0` is first scaled to unit diagonal (a correlation matrix;
orders of different sizes then weigh alike) and inverted on its eigenvectors whose
eigenvalues exceed ``rcond`` times the largest (a pseudo-inverse); the degrees of freedom
are the number kept. Directions below the cut are estimated from too few effective
networks to be trusted and are dropped, not shrunk.

Calibration (``benchmarks/symmetry.py``, measured on the loaded 2-core machine): see that
script's docstring for the false-positive rate over 200+ seeds of symmetric ensembles
and the power against the size of the mean.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from .. import _checks
from .._checks import NNGPInputError
from ..sampling.stats import CorrelatorStats, union_index

__all__ = [
    "RCOND",
    "DEFAULT_ORDERS",
    "SYMMETRIES",
    "SymmetryWarning",
    "ParityTest",
    "parity_test",
    "check_declared_symmetries",
]

#: Default relative eigenvalue cut of the pseudo-inverse of the null correlation matrix
#: (module docstring: 1e-6 kept near-degenerate directions and made the test conservative).
RCOND = 1e-3

#: Odd orders the test uses by default, where measured (module docstring: the 5-pt
#: products are so heavy-tailed that adding them made the test conservative).
DEFAULT_ORDERS = (1, 3)

#: Symmetries a study may declare (only f -> -f is testable from the odd correlators).
SYMMETRIES = ("z2",)


class SymmetryWarning(UserWarning):
    """A declared symmetry is rejected by the data (:func:`check_declared_symmetries`)."""


@dataclass(frozen=True)
class ParityTest:
    """Result of :func:`parity_test`: W, its degrees of freedom, the p-value and the verdict
    at level ``alpha`` (``reject``: True when p < alpha), with what it was computed from."""

    statistic: float
    dof: int
    p_value: float
    alpha: float
    reject: bool
    width: int
    n_nets: int
    orders: tuple[int, ...]
    n_observables: int

    @property
    def verdict(self) -> str:
        """One sentence built from the stored numbers."""
        head = ("f -> -f rejected" if self.reject else "consistent with f -> -f")
        return (f"{head} at the {self.alpha:.0%} level: Wald W = {self.statistic:.3g} on "
                f"{self.dof} degrees of freedom (odd orders {list(self.orders)}, "
                f"{self.n_observables} correlators, N = {self.width}, {self.n_nets} "
                f"networks), p = {self.p_value:.3g}")


def _null_covariance(stats: CorrelatorStats, width: int, orders) -> np.ndarray:
    """(Σ0)_st = S_(s ∪ t) / n², rows :meth:`CorrelatorStats.observables` ``(orders)``."""
    sums = stats.moment_sums(width)
    n = stats.n_nets(width)
    blocks = [[sums[a + b][union_index(stats.k, a, b)] for b in orders] for a in orders]
    return np.block(blocks) / float(n) ** 2


def parity_test(stats: CorrelatorStats, width, *, orders=None, alpha: float = 0.05,
                rcond: float = RCOND) -> ParityTest:
    r"""Test :math:`H_0`: f -> -f (every odd correlator zero) on sampled statistics.

    ``orders``: the odd orders to use (default: those of :data:`DEFAULT_ORDERS` that
    ``stats`` measured, else every odd order it measured; at least one is needed, and the
    run must have kept the covariance orders). Returns a
    :class:`ParityTest` (module docstring: the Wald statistic with the null covariance,
    pseudo-inverse at ``rcond``, χ² p-value).
    """
    if not isinstance(stats, CorrelatorStats):
        raise NNGPInputError(f"stats must be a CorrelatorStats, got {type(stats).__name__}")
    odd = tuple(n for n in stats.orders if n % 2)
    if orders is None:
        orders = tuple(n for n in odd if n in DEFAULT_ORDERS) or odd
    else:
        orders = _checks.orders("orders", orders, odd=True)
        bad = [n for n in orders if n % 2 == 0 or n not in stats.orders]
        if bad:
            raise NNGPInputError(f"orders must be odd orders the run measured ({odd}), got {bad}")
    if not orders:
        raise NNGPInputError(
            f"stats must hold odd correlators to test f -> -f (measured orders "
            f"{stats.orders}); sample with orders including 1, 3 or 5")
    if not stats.has_covariance:
        raise NNGPInputError("stats must come from a run with covariance=True (the test "
                             "needs the second moments of the odd correlators)")
    alpha = _checks.finite_float("alpha", alpha)
    if not 0 < alpha < 1:
        raise NNGPInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    rcond = _checks.finite_float("rcond", rcond)
    if not 0 < rcond < 1:
        raise NNGPInputError(f"rcond must lie strictly between 0 and 1, got {rcond}")
    width = int(width)
    g = stats.mean_vector(width, orders)
    cov = _null_covariance(stats, width, orders)
    scale = np.sqrt(np.diag(cov))
    live = scale > 0  # an observable that is zero in every network carries no evidence
    if not np.any(live):
        raise NNGPInputError("stats: every odd correlator is exactly zero in every network; "
                             "there is nothing to test")
    z = g[live] / scale[live]
    corr = cov[np.ix_(live, live)] / np.outer(scale[live], scale[live])
    vals, vecs = np.linalg.eigh(corr)
    keep = vals > rcond * vals[-1]
    proj = vecs[:, keep].T @ z
    w = float(np.sum(proj**2 / vals[keep]))
    dof = int(np.sum(keep))
    p = float(_sps.chi2.sf(w, dof))
    return ParityTest(w, dof, p, alpha, p < alpha, width, stats.n_nets(width), tuple(orders),
                      int(np.sum(live)))


def check_declared_symmetries(stats: CorrelatorStats, width, declared, *,
                              alpha: float = 0.05, stacklevel: int = 2) -> dict:
    """Test each declared symmetry the data can test; warn loudly on a rejection.

    ``declared``: symmetry names from :data:`SYMMETRIES` (``"z2"``: f -> -f). Returns
    ``{name: ParityTest}``; a rejected declared symmetry emits a :class:`SymmetryWarning`
    naming the verdict: the operator basis pruned by that symmetry would then miss
    operators the data need.
    """
    if isinstance(declared, str):
        declared = [declared]
    names = []
    for name in declared:
        if name not in SYMMETRIES:
            raise NNGPInputError(f"declared must name symmetries among {list(SYMMETRIES)}, "
                                 f"got {name!r}")
        names.append(name)
    out = {}
    for name in dict.fromkeys(names):
        result = parity_test(stats, width, alpha=alpha)
        out[name] = result
        if result.reject:
            warnings.warn(
                f"DECLARED SYMMETRY REJECTED BY THE DATA: the study declares {name} "
                f"(f -> -f), but {result.verdict}. Odd operators (f^3, f^5) pruned by this "
                "declaration are needed; drop the declaration or check the ensemble's means",
                SymmetryWarning, stacklevel=stacklevel)
    return out
