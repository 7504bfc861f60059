r"""The declared estimand at first and second order in the couplings: deviations -> couplings.

Every coupling a fit or a posterior reports is a fixed map of the noise-free non-Gaussian
deviations :math:`r = G - G_{free}` on the distinct tuples (:mod:`nngp_ppl.inference.problem`). At
first order (:class:`LinearEstimand`) the EFT prediction is :math:`m(g) = D_1(\Lambda)\, g`
and the map is linear, :math:`g^{(1)} = B(\Lambda)\, r` (B: the fixed-weight least squares
with weights :math:`1/|D_{1,t\lambda}|`).

At second order (:class:`QuadraticEstimand`) the prediction gains the two-vertex diagrams,

.. math:: m_t(g) = \sum_c D_{1,tc}\, g_c + \lambda^2 d_{2,t}, \qquad
    d_{2,t} = \tfrac12 \partial_\lambda^2 G_t \big|_{g=0}

(:meth:`nngp_ppl.inference.problem.EFTTheory.second_designs`: the λ² bubbles and exchange, rule 4.5;
λκ and κ² are O(1/N³) and O(1/N⁴) and are left out with the three-vertex terms). Since
:math:`\lambda \sim 1/N` and :math:`\kappa \sim 1/N^2`, the consistent estimand at
O(1/N²) is solved order by order: the λ² term is evaluated at the leading-order λ,

.. math:: g^*(\Lambda) = B(\Lambda)\,\big[r - \lambda^{(1)}(\Lambda)^2\, d_2(\Lambda)\big],
    \qquad \lambda^{(1)} = B_1(\Lambda)\, r ,

with :math:`B_1` the first-order λ-only estimand on the 4-pt function (the paper's
:math:`\bar\lambda`): at O(1/N) only the connected 4-pt function is non-zero, so λ is
fixed there, and a joint (λ, κ) first-order λ would carry the far noisier 6-pt data into
the square. (Without the 4-pt function among the fitted orders, :math:`B_1` is the λ row
of B.)

a fixed quadratic map of r (so the posterior of g* is not Gaussian even where that of r
is). It differs from the minimiser of the full quadratic least squares by O(1/N³), beyond
the truncation, and unlike that minimiser it is unique: with (λ, κ) the full problem has
two stationary branches where the λ² exchange and the κ contact term trade off in the
connected 6-pt function (measured on the Erf-net, N = 5, Λ = 10, exact correlators: the
branch continued from first order gave λ = -3.1e-4, and refitting that solution's own
prediction returned λ = -5.7e-5 at zero residual).

Its running and its sensitivity to the data are closed forms of the same pieces:

.. math::
    \beta = \dot B\,(r - \lambda_1^2 d_2) - B\,(2\lambda_1\dot\lambda_1\, d_2
        + \lambda_1^2\, \dot d_2), \quad \dot\lambda_1 = \dot B_1 r, \qquad
    \frac{\partial g^*}{\partial r} = B - 2\lambda_1\, (B d_2)\, B_1,

with dots :math:`d/d\log\Lambda` (:math:`\dot B` by JAX forward mode through the vertex
integrals, :math:`\dot d_2` by :func:`~nngp_ppl.theory.diagrams.second_order_design_slope`).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "LinearEstimand",
    "QuadraticEstimand",
    "estimand",
]


class LinearEstimand:
    r"""First order: :math:`g^* = B r`, :math:`m(g) = D_1 g`, :math:`\beta = (dB/d\log\Lambda)
    r` (:mod:`nngp_ppl.inference.problem`). Arrays are per cutoff (leading axis L)."""

    order = 1

    def __init__(self, theory, cutoffs):
        self.theory = theory
        self.cutoffs = tuple(float(c) for c in np.atleast_1d(cutoffs))
        self.D, self.B, self.dD, self.dB = theory.designs(self.cutoffs)

    @property
    def scales(self) -> np.ndarray:
        """(L, T) s_t = |D_{1,tλ}| on every observation (the predictive noise scale)."""
        return self.theory.scales(self.D, fitted_only=False)

    def couplings(self, r) -> np.ndarray:
        """(..., T) deviations -> (..., L, C) couplings."""
        return np.einsum("lct,...t->...lc", self.B, np.asarray(r, dtype=np.float64))

    def predict(self, g, r=None) -> np.ndarray:
        """(..., L, C) couplings -> (..., L, T) predicted deviations m(g) (``r``, the
        deviations the couplings came from, matters only at second order)."""
        return np.einsum("ltc,...lc->...lt", self.D, g)

    def beta(self, r, g=None) -> np.ndarray:
        """(..., T) deviations -> (..., L, C) :math:`dg^*/d\\log\\Lambda`."""
        return np.einsum("lct,...t->...lc", self.dB, np.asarray(r, dtype=np.float64))

    def jacobian(self, r) -> np.ndarray:
        """:math:`\\partial g^*/\\partial r` at deviations r (T,): (L, C, T)."""
        return self.B

    def spread(self, r, g) -> np.ndarray:
        r"""Model discrepancy τ (..., L): rms over the fitted tuples of
        :math:`(r_t - m_t(g))/s_t`."""
        fit = self.theory.fitted
        # Only the fitted tuples: a model has zero scale on the orders it cannot predict
        # (λ alone on the odd correlators).
        resid = (np.asarray(r)[..., None, :] - self.predict(g, r))[..., fit] \
            / self.scales[..., fit]
        return np.sqrt(np.mean(resid**2, axis=-1))

    def second_order_share(self, r) -> np.ndarray:
        r"""(..., L): how far from a small correction the second order is at deviations r:
        :math:`\|\lambda_1^2 d_2/s\| / \|\lambda_1 D_{1\lambda}/s\| = |\lambda_1|\,
        \|d_2/s\|/\|D_{1\lambda}/s\|` over the fitted tuples, the λ² term the estimand
        removes against the first-order term of the same leading-order λ (∝ 1/N; 0 at
        first order)."""
        return np.zeros(np.shape(r)[:-1] + (len(self.cutoffs),))


class QuadraticEstimand(LinearEstimand):
    """Second order, solved order by order in 1/N (module docstring)."""

    order = 2

    def __init__(self, theory, cutoffs):
        super().__init__(theory, cutoffs)
        self.lam = theory.couplings.index("lambda")
        self.D2 = theory.second_designs(self.cutoffs)
        self.d2 = self.D2[..., self.lam, self.lam]  # (L, T)
        # The leading-order λ: the first-order λ-only estimand on the 4-pt function (λ̄),
        # where the 4-pt function is among the fitted orders — at O(1/N) only the connected
        # 4-pt function is non-zero, and the joint (λ, κ) fit's λ carries the 6-pt noise.
        lead_orders = (4,) if 4 in theory.orders else theory.orders
        if (theory.couplings, theory.orders) == (("lambda",), lead_orders):
            self.B1, self.dB1 = self.B[:, 0], self.dB[:, 0]
        else:
            lead = type(theory).build(theory.net, theory.X, ("lambda",), lead_orders,
                                      theory.data_orders, theory.propagator,
                                      theory.max_cutoff)
            _, B1, _, dB1 = lead.designs(self.cutoffs)
            self.B1, self.dB1 = B1[:, 0], dB1[:, 0]  # (L, T)

    @functools.cached_property
    def dd2(self) -> np.ndarray:
        """Cutoff slope of d2 (L, T) (only the β-functions need it)."""
        return self.theory.second_designs(self.cutoffs, slope=True)[..., self.lam, self.lam]

    def predict(self, g, r=None) -> np.ndarray:
        """m = D1 g + λ² d2. Given the deviations r that g came from, λ² is the leading-order
        λ₁(r)² the estimand removed, so that r - m is exactly the first-order residual of
        r - λ₁² d2 (consistent at O(1/N²)); without r, the fitted λ's square."""
        lam2 = (g[..., self.lam] ** 2 if r is None else self._leading(r)[0] ** 2)
        return super().predict(g) + lam2[..., None] * self.d2

    def _leading(self, r):
        """λ⁽¹⁾ (..., L) and the deviations with its λ² term removed (..., L, T)."""
        r = np.asarray(r, dtype=np.float64)
        lam1 = np.einsum("lt,...t->...l", self.B1, r)
        return lam1, r[..., None, :] - lam1[..., None] ** 2 * self.d2

    def couplings(self, r) -> np.ndarray:
        _, rest = self._leading(r)
        return np.einsum("lct,...lt->...lc", self.B, rest)

    def beta(self, r, g=None) -> np.ndarray:
        lam1, rest = self._leading(r)
        dlam1 = np.einsum("lt,...t->...l", self.dB1, np.asarray(r, np.float64))
        change = (2 * lam1 * dlam1)[..., None] * self.d2 + lam1[..., None] ** 2 * self.dd2
        return (np.einsum("lct,...lt->...lc", self.dB, rest)
                - np.einsum("lct,...lt->...lc", self.B, change))

    def jacobian(self, r) -> np.ndarray:
        lam1, _ = self._leading(r)  # (L,)
        Bd2 = np.einsum("lct,lt->lc", self.B, self.d2)
        return self.B - 2 * np.einsum("l,lc,lt->lct", lam1, Bd2, self.B1)

    def second_order_share(self, r) -> np.ndarray:
        fit = self.theory.fitted
        lam1, _ = self._leading(r)
        s = self.scales[:, fit]
        ratio = (np.linalg.norm(self.d2[:, fit] / s, axis=-1)
                 / np.linalg.norm(self.D[:, fit, self.lam] / s, axis=-1))  # (L,)
        return np.abs(lam1) * ratio


def estimand(theory, cutoffs) -> LinearEstimand:
    """The estimand of ``theory`` (its ``order``) at ``cutoffs``."""
    return (QuadraticEstimand if getattr(theory, "order", 1) == 2 else LinearEstimand)(
        theory, cutoffs)
