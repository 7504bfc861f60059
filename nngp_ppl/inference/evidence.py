r"""The model discrepancy a compared model states in its predictive density, net of noise.

Every model of the ELPD table (:mod:`nngp_ppl.inference.couplings`: the GP, λ, λ + κ and
the bases with odd couplings) predicts each correlator as

.. math:: \hat r_t \sim \mathcal N\big(m_t(g),\ \Sigma_{tt} + \tau_b^2\, s_t^2\big),

:math:`m = D(\Lambda) g` (plus the λ² term at second order), :math:`\Sigma_{tt}` the noise
variance of the estimate and :math:`\tau_b\, s_t` the spread of the per-tuple couplings the
model cannot describe (physics.md §5a), in units of the scale :math:`s_t` of its parity
block b (:math:`|D_{t\lambda}|` on even tuples, :math:`|D_{t,g_3}|` on odd ones).

Why net of noise, and one :math:`\tau` per parity block. The discrepancy τ of a posterior
draw (the ``spread`` the posterior reports) is the rms of :math:`(r_t - m_t)/s_t` over the
fitted tuples of that draw's r. A draw of r carries the observation noise twice (r̂ = r +
e, and the posterior's own width), so as a predictive variance it counts the noise the
:math:`\Sigma_{tt}` term already holds two more times. Measured on the symmetric Erf-net
(N = 5, 2·10⁴ networks, seed 1000, Λ = 10; ``benchmarks/basis_elpd.py``): every parametric
model lost to the GP by 250–950 (λ: −705 ± 20), 462 of 462 Pareto k of the 6-pt tuples
exceeded 0.7, and p_loo reached 636 for one coupling. A single τ over both parities also
mixed units: the odd tuples' residuals in g₃ units widened the even tuples' densities (and
the reverse), so a basis with g₃ lost on tuples where its predictions equal λ's.

Here each block's :math:`\tau_b^2` is the maximum-likelihood value, over the block's fitted
tuples, of the observed residual :math:`\rho = \hat r - m(g^*(\hat r))` under
:math:`\rho_t \sim \mathcal N(0, v_t + \tau_b^2 s_t^2)`, with :math:`v_t` the noise
variance of the residual itself, :math:`v = \operatorname{diag}((1 - P)\Sigma(1 - P)^\top)`,
:math:`P = D B` the estimand's projection (a fit absorbs part of the noise). It is 0 where
the noise explains the residuals (a symmetric net's odd tuples), and it is fixed per model,
width and cutoff (one number per block from 10²–10³ tuples; its own uncertainty is
neglected), so the draws differ only through their couplings.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def _ml_variance(resid, v, a) -> float:
    r"""argmax over :math:`u \ge 0` of :math:`-\tfrac12\sum_t[\rho_t^2/(v_t + u a_t)
    + \log(v_t + u a_t)]`, the variance of a discrepancy of scale :math:`\sqrt{a_t}`."""
    def nll(u):
        w = v + u * a
        return 0.5 * float(np.sum(resid**2 / w + np.log(w)))

    u0 = float(np.mean(resid**2 / a))
    if not np.isfinite(u0) or u0 <= 0:
        return 0.0
    res = minimize_scalar(lambda x: nll(10.0**x), bounds=(np.log10(u0) - 12,
                                                          np.log10(u0) + 2),
                          method="bounded", options={"xatol": 1e-6})
    best = 10.0 ** float(res.x)
    return best if nll(best) < nll(0.0) else 0.0


def discrepancy_variance(est, rhat, cov) -> np.ndarray:
    r"""(L, T) the predictive variance :math:`\tau_b^2 s_t^2` a model adds to each
    observation's noise at each cutoff (module docstring).

    ``est``: the model's estimand (:class:`~nngp_ppl.inference.estimators.LinearEstimand`
    or :class:`~nngp_ppl.inference.estimators.QuadraticEstimand`) on the data orders;
    ``rhat`` (T,): the observed deviations; ``cov`` (T, T): their noise covariance.
    Observations with scale 0 (an order no coupling of the model reaches) get 0: the model
    predicts exactly 0 there, as the GP does.
    """
    theory = est.theory
    rhat = np.asarray(rhat, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    fitted = np.asarray(theory.fitted, dtype=bool)
    odd = np.concatenate([np.full(b, n % 2 == 1) for n, b in zip(
        theory.data_orders, theory.blocks, strict=True)])
    scales = np.asarray(est.scales, dtype=np.float64)  # (L, T)
    resid = rhat[None, :] - est.predict(est.couplings(rhat), rhat)  # (L, T)
    eye = np.eye(rhat.size)
    out = np.zeros_like(scales)
    for j in range(scales.shape[0]):
        R = eye - est.D[j] @ est.B[j]
        # diag(R C Rᵀ) by matrix products: np.einsum's unoptimised three-operand loop took
        # 0.7 s per call at a few hundred observations, where this takes milliseconds.
        v = np.sum((R @ cov) * R, axis=1)
        for block in (odd, ~odd):
            sel = block & fitted & (scales[j] > 0)
            if not np.any(sel):
                continue
            u = _ml_variance(resid[j, sel], v[sel], scales[j, sel] ** 2)
            out[j, block] = u * scales[j, block] ** 2
    return out


def conditional_loglik(L, rhat, mean, extra):
    r"""log p(r̂_t | r̂_-t, θ) (..., T) under r̂ ~ N(m, C), C = L Lᵀ + diag(extra): with
    P = C⁻¹ and e = r̂ − m, the conditional is N(r̂_t; r̂_t − (Pe)_t/P_tt, 1/P_tt)
    (Bürkner, Gabry and Vehtari, Comput. Stat. 36 (2021) 1243: leave-one-out of
    non-factorised normal models)."""
    C = L @ L.T + np.diag(np.broadcast_to(np.asarray(extra, dtype=np.float64), L.shape[:1]))
    P = np.linalg.inv(C)
    d = np.diag(P)
    g = (np.asarray(rhat) - np.asarray(mean)) @ P
    return -0.5 * g**2 / d + 0.5 * np.log(d / (2 * np.pi))


#: An ELPD gain below this does not count as a preference: models this close predict alike,
#: and the normal approximation of the difference's error is poor there (Sivula, Magnusson,
#: Matamoros and Vehtari, "Uncertainty in Bayesian leave-one-out cross-validation based model
#: comparison", arXiv:2008.10296; Vehtari's cross-validation FAQ).
ELPD_NEGLIGIBLE = 4.0
#: Above it, a gain counts once it exceeds this many standard errors of the paired pointwise
#: differences.
ELPD_SE_MULTIPLE = 2.0


def richer_model_earns_its_place(delta: float, delta_se: float) -> bool:
    r"""Whether the ELPD keeps a richer nested model (more couplings) over the simpler one.

    :math:`\Delta = \mathrm{ELPD}(\text{richer}) - \mathrm{ELPD}(\text{simpler})` and its
    standard error :math:`\mathrm{se}_\Delta = \sqrt{n}\,\mathrm{sd}_i(\mathrm{elpd}_i(
    \text{richer}) - \mathrm{elpd}_i(\text{simpler}))` (``az.compare``'s dse). The richer
    model is kept when :math:`\Delta > \max(4, 2\,\mathrm{se}_\Delta)`
    (:data:`ELPD_NEGLIGIBLE`, :data:`ELPD_SE_MULTIPLE`): the decision rule of the sources
    cited there, applied to nested bases. Why a rule and not the sign of Δ: a coupling
    whose exact value is 0 (g₃ on an f -> -f symmetric net) raises the in-sample fit by
    fitting noise, and PSIS-LOO takes back only part of that where the left-out tuple
    shares its noise with the others (odd correlators of nearby inputs); the sign of Δ then
    favours the richer basis on ~30% of seeds (physics.md §6d, ``benchmarks/basis_elpd.py``).
    """
    delta, delta_se = float(delta), float(delta_se)
    if not (np.isfinite(delta) and np.isfinite(delta_se)) or delta_se < 0:
        raise ValueError(f"delta and delta_se must be finite (delta_se >= 0), got {delta!r}, "
                         f"{delta_se!r}")
    return delta > max(ELPD_NEGLIGIBLE, ELPD_SE_MULTIPLE * delta_se)


def paired_difference(richer, simpler) -> tuple[float, float]:
    r""":math:`\Delta = \sum_i (e_i - e'_i)` and its standard error
    :math:`\sqrt n\,\mathrm{sd}_i(e_i - e'_i)` of two models' pointwise ELPDs on the same
    observations (``az.compare``'s elpd_diff and dse)."""
    d = np.asarray(richer, dtype=np.float64).ravel() - np.asarray(simpler,
                                                                  dtype=np.float64).ravel()
    return float(d.sum()), float(np.sqrt(d.size) * d.std(ddof=1)) if d.size > 1 else 0.0


def _model_key(name: str) -> tuple[frozenset, int]:
    """(couplings, perturbative order) of a compared model's name: ``"gp"``, ``"lambda"``,
    ``"g3+lambda+kappa"``, ``"lambda+kappa@2"``."""
    base, _, order = name.partition("@")
    return (frozenset() if base == "gp" else frozenset(base.split("+")),
            int(order) if order else 1)


def nested_in(simpler: str, richer: str) -> bool:
    """Whether model ``richer`` contains ``simpler``: every coupling of it, at the same or a
    higher perturbative order, and more (the GP is nested in every model)."""
    (cs, os_), (cr, or_) = _model_key(simpler), _model_key(richer)
    return cs <= cr and os_ <= or_ and (cs, os_) != (cr, or_)


def choose_nested_basis(pointwise: dict) -> tuple[str, list[str]]:
    """The basis the ELPD keeps among nested models, and the path to it.

    ``pointwise``: {model name: its pointwise PSIS-LOO ELPDs}, on the same observations.
    Start at the simplest model (fewest couplings, lowest order; the GP where it is
    compared) and step to a richer model nested over the current one
    (:func:`nested_in`) only where it earns its place
    (:func:`richer_model_earns_its_place`: ΔELPD > max(4, 2 paired s.e.)); of several,
    the smallest step (fewest couplings, then lowest order), and of equally small ones the
    highest ELPD; stop where none earns it. So a coupling enters only on its own evidence:
    a richer basis whose ELPD is highest by less than the rule's margin is not chosen (the
    argmax of ELPD would be). Returns (chosen model, models visited from the simplest)."""
    if not pointwise:
        raise ValueError("choose_nested_basis needs at least one model")
    elpd = {m: float(np.sum(v)) for m, v in pointwise.items()}

    def size(m):
        cs, order = _model_key(m)
        return len(cs), order

    current = min(pointwise, key=lambda m: (*size(m), -elpd[m]))
    path = [current]
    while True:
        earned = [m for m in pointwise if nested_in(current, m)
                  and richer_model_earns_its_place(*paired_difference(pointwise[m],
                                                                      pointwise[current]))]
        if not earned:
            return current, path
        current = min(earned, key=lambda m: (*size(m), -elpd[m]))
        path.append(current)


__all__ = ["ELPD_NEGLIGIBLE", "ELPD_SE_MULTIPLE", "choose_nested_basis", "conditional_loglik",
           "discrepancy_variance", "nested_in", "paired_difference",
           "richer_model_earns_its_place"]
