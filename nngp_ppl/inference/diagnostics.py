r"""The diagnostics gate for coupling posteriors: R-hat, bulk ESS and divergences.

A posterior is trusted at a (width, cutoff) only if every sampled variable has bulk
effective sample size >= 400, NUTS reported no divergent transition, and its rank-
normalised split R-hat (Vehtari, Gelman, Simpson, Carpenter, Bürkner, Bayesian Analysis 16
(2021) 667) is <= 1.01 *or* within the Monte Carlo error that chains drawn from one
stationary distribution would show at the measured ESS (:func:`rhat_limit`).

Why not 1.01 alone: split R-hat is a random variable. For M split chains of n draws each,
with effective size ESS in all, chains that sample one distribution give

.. math:: \hat R^2 \approx \frac{n-1}{n} + \frac{M}{\mathrm{ESS}}\,
    \frac{\chi^2_{M-1}}{M-1}

(the variance of the chain means over the within-chain variance; Vats and Knudson,
Statistical Science 36 (2021) 518, relate R-hat and ESS the same way). At 4 chains x 1000
draws and a bulk ESS of a few hundred to a thousand (slowly mixing posteriors; the demo's
have 1159 and more) 1.01 lies inside that spread: stationary chains at ESS 452 / 713 fail
it 30% / 5% of the time, and a review saw correct posteriors fail at about 1 seed in 40. The
limit used here is the 1 - ``RHAT_ALPHA`` quantile of that spread at the ESS measured for
the same rank-normalised (bulk) or folded (tail) draws (an ESS below 400 counts as 400),
never below 1.01: at 4 x 1000 draws no R-hat above 1.033 passes, and at ESS >= 2000 the
limit is 1.01 itself. The false-alarm rate and the power against chains that have not met
were measured (``benchmarks/rhat_gate.py``; docs/cli.md "The diagnostics gate"). The
numbers come from arviz-stats.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz_stats
import numpy as np
import pandas as pd
from arviz_stats.base import array_stats
from scipy.stats import chi2

from .._checks import NNGPInputError

__all__ = [
    "RHAT_MAX",
    "ESS_MIN",
    "RHAT_ALPHA",
    "GATE_RULE",
    "rhat_limit",
    "rhat_components",
    "DiagnosticsWarning",
    "GateResult",
    "diagnostics_gate",
]

RHAT_MAX = 1.01
ESS_MIN = 400
#: False-alarm probability per R-hat component of one variable at one (width, cutoff)
#: for chains that do sample one distribution (the limit's quantile; :func:`rhat_limit`).
RHAT_ALPHA = 1e-3
#: One line for reports and logs.
GATE_RULE = (f"R-hat <= {RHAT_MAX} or within its Monte Carlo error at the measured ESS "
             f"(the {1 - RHAT_ALPHA:.1%} range of well-mixed chains), bulk ESS >= {ESS_MIN}, "
             "no divergences")


def rhat_limit(ess, split_chains: int, split_draws: int, alpha: float = RHAT_ALPHA,
               floor: float = RHAT_MAX, ess_min: float = ESS_MIN):
    r"""The largest split R-hat that ``split_chains`` chains of ``split_draws`` draws each,
    sampling one stationary distribution with effective sample size ``ess`` in all, exceed
    with probability ``alpha``: :math:`\sqrt{(n-1)/n + (M/\mathrm{ESS})\, q_{1-\alpha}
    (\chi^2_{M-1})/(M-1)}` (module docstring), and at least ``floor``. An ESS below
    ``ess_min`` counts as ``ess_min``: a run that short fails the ESS check anyway, and R-hat
    stays a check of its own (never above ``rhat_limit(ess_min)``, 1.033 at 4 x 1000).
    ``ess`` may be an array; NaN stays NaN."""

    m, n = int(split_chains), int(split_draws)
    ess = np.maximum(np.asarray(ess, dtype=np.float64), ess_min)
    spread = chi2.ppf(1.0 - alpha, m - 1) / (m - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.sqrt((n - 1) / n + m / ess * spread)
    return np.where(np.isnan(limit), np.nan, np.maximum(limit, floor))


def rhat_components(draws, alpha: float = RHAT_ALPHA, floor: float = RHAT_MAX,
                    ess_min: float = ESS_MIN) -> dict:
    """Rank-normalised split R-hat of ``draws`` (..., chain, draw) and its limit.

    The bulk (rank-normalised z) and tail (folded) components each meet
    :func:`rhat_limit` (at least ``floor``) at the ESS of the same transformed draws.
    Returns arrays over the leading axes: ``r_hat`` (the larger component, arviz-stats'
    default R-hat), ``r_hat_limit`` (the limit of that component) and ``rhat_ok`` (both
    within theirs).
    """

    draws = np.asarray(draws, dtype=np.float64)
    chains, n = draws.shape[-2], draws.shape[-1]
    out = {}
    for kind, rmethod, emethod in (("bulk", "z_scale", "z_scale"), ("tail", "folded", "folded")):
        rh = np.asarray(array_stats.rhat(draws, method=rmethod))
        ess = np.asarray(array_stats.ess(draws, method=emethod))
        out[kind] = (rh, rhat_limit(ess, 2 * chains, n // 2, alpha, floor, ess_min))
    (rb, lb), (rt, lt) = out["bulk"], out["tail"]
    tail_worse = rt > rb
    with np.errstate(invalid="ignore"):
        ok = ((np.isnan(rb) | (rb <= lb)) & (np.isnan(rt) | (rt <= lt)))
    return {"r_hat": np.where(tail_worse, rt, rb), "r_hat_limit": np.where(tail_worse, lt, lb),
            "rhat_ok": ok}


class DiagnosticsWarning(RuntimeWarning):
    """A posterior failed the diagnostics gate: do not trust it without a longer run."""


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`diagnostics_gate`: ``table`` (a pandas DataFrame, one row per
    width, cutoff and variable), ``passed`` and the failing ``(width, cutoff)`` pairs."""

    table: object
    passed: bool
    failures: tuple

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return f"diagnostics gate {verdict}\n{self.table.to_string()}"


def diagnostics_gate(
    posterior, *, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN, warn: bool = True,
    alpha: float = RHAT_ALPHA,
) -> GateResult:
    """Apply the gate to every variable of ``posterior`` (a DataTree from
    :func:`~nngp_ppl.infer_couplings`) at every width and cutoff.

    Columns: ``width``, ``cutoff``, ``variable``, ``r_hat`` (rank-normalised split R-hat),
    ``r_hat_limit`` (the largest R-hat passed there: ``rhat_max`` or, above it, the
    1 - ``alpha`` quantile of well-mixed chains at the measured ESS, :func:`rhat_limit`),
    ``ess_bulk``, ``ess_tail``, ``divergences``, ``ok``. ``alpha = 0`` gives the fixed
    rule R-hat <= ``rhat_max``. With ``warn`` a failure raises a :class:`DiagnosticsWarning`
    that names each failing width and cutoff and what failed there.
    """

    if "posterior" not in getattr(posterior, "children", {}):
        raise NNGPInputError("posterior must be an ArviZ DataTree with a posterior group")
    post = posterior["posterior"].to_dataset()
    # Per-observation latents (e.g. ``deviation``) are judged through the couplings they
    # map to: one row per (width, cutoff) and coupling, not per tuple.
    names = [
        v for v in post.data_vars
        if {"chain", "draw"} <= set(post[v].dims)
        and set(post[v].dims) <= {"chain", "draw", "width", "cutoff"}
    ]
    if not names:
        raise NNGPInputError("the posterior group has no sampled variables")
    if post.sizes["chain"] < 2:
        raise NNGPInputError("the diagnostics gate needs at least 2 chains for R-hat")
    rhat = {name: rhat_components(np.moveaxis(post[name].transpose("chain", "draw", ...)
                                              .values, (0, 1), (-2, -1)), alpha, rhat_max,
                                   ess_min)
            for name in names}
    ess_bulk = arviz_stats.ess(post[names], method="bulk")
    ess_tail = arviz_stats.ess(post[names], method="tail")
    if "sample_stats" in posterior.children and "diverging" in posterior["sample_stats"]:
        div = posterior["sample_stats"]["diverging"].to_dataset()["diverging"]
        div = div.sum(("chain", "draw"))
    else:
        div = None

    rows = []
    extra_dims = [d for d in post[names[0]].dims if d not in ("chain", "draw")]
    for name in names:
        r = rhat[name]
        for idx in np.ndindex(*[post.sizes[d] for d in extra_dims]):
            sel = dict(zip(extra_dims, idx, strict=True))
            coords = {d: post[d].values[i] for d, i in sel.items()}
            at = tuple(sel[d] for d in extra_dims)
            rh, limit = float(r["r_hat"][at]), float(r["r_hat_limit"][at])
            eb = float(ess_bulk[name].isel(sel))
            et = float(ess_tail[name].isel(sel))
            nd = (
                int(div.isel({d: i for d, i in sel.items() if d in div.dims}))
                if div is not None else 0
            )
            # A variable with no spread (e.g. cbar pinned at 0) has undefined R-hat: NaN.
            rhat_ok = bool(r["rhat_ok"][at]) if alpha > 0 else (np.isnan(rh) or rh <= rhat_max)
            ok = rhat_ok and (np.isnan(eb) or eb >= ess_min) and nd == 0
            rows.append(
                {
                    **{d: v.item() if hasattr(v, "item") else v for d, v in coords.items()},
                    "variable": name,
                    "r_hat": rh,
                    "r_hat_limit": limit if alpha > 0 else rhat_max,
                    "ess_bulk": eb,
                    "ess_tail": et,
                    "divergences": nd,
                    "ok": bool(ok),
                }
            )
    table = pd.DataFrame(rows)
    bad = table[~table["ok"]]
    failures = tuple(
        dict.fromkeys(tuple(row[d] for d in extra_dims) for _, row in bad.iterrows())
    )
    result = GateResult(table=table, passed=bad.empty, failures=failures)
    if warn and not result.passed:
        lines = []
        for _, row in bad.iterrows():
            where = ", ".join(f"{d}={row[d]:g}" for d in extra_dims)
            lines.append(
                f"  {where} {row['variable']}: r_hat={row['r_hat']:.4f} "
                f"(max {row['r_hat_limit']:.4f}), "
                f"ess_bulk={row['ess_bulk']:.0f} (min {ess_min}), "
                f"divergences={row['divergences']}"
            )
        warnings.warn(
            "POSTERIOR FAILS THE DIAGNOSTICS GATE; do not use these draws without a longer "
            "run (more num_samples / num_warmup):\n" + "\n".join(lines),
            DiagnosticsWarning,
            stacklevel=2,
        )
    return result
