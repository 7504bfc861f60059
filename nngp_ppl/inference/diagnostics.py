"""The diagnostics gate for coupling posteriors: R-hat, bulk ESS and divergences.

A posterior is trusted at a (width, cutoff) only if every sampled variable has rank-
normalised split R-hat <= 1.01 and bulk effective sample size >= 400 (Vehtari, Gelman,
Simpson, Carpenter, Bürkner, Bayesian Analysis 16 (2021) 667: the thresholds they
recommend), and NUTS reported no divergent transition. The numbers come from arviz-stats.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._checks import NNGPInputError

RHAT_MAX = 1.01
ESS_MIN = 400


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
    posterior, *, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN, warn: bool = True
) -> GateResult:
    """Apply the gate to every variable of ``posterior`` (a DataTree from
    :func:`~nngp_ppl.infer_couplings`) at every width and cutoff.

    Columns: ``width``, ``cutoff``, ``variable``, ``r_hat``, ``ess_bulk``, ``ess_tail``,
    ``divergences``, ``ok``. With ``warn`` a failure raises a :class:`DiagnosticsWarning`
    that names each failing width and cutoff and what failed there.
    """
    import arviz_stats
    import pandas as pd

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
    rhat = arviz_stats.rhat(post[names])
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
            rh = float(r.isel(sel))
            eb = float(ess_bulk[name].isel(sel))
            et = float(ess_tail[name].isel(sel))
            nd = (
                int(div.isel({d: i for d, i in sel.items() if d in div.dims}))
                if div is not None else 0
            )
            # A variable with no spread (e.g. cbar pinned at 0) has undefined R-hat: NaN.
            ok = (np.isnan(rh) or rh <= rhat_max) and (np.isnan(eb) or eb >= ess_min) and nd == 0
            rows.append(
                {
                    **{d: v.item() if hasattr(v, "item") else v for d, v in coords.items()},
                    "variable": name,
                    "r_hat": rh,
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
                f"  {where} {row['variable']}: r_hat={row['r_hat']:.4f} (max {rhat_max}), "
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
