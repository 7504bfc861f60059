r"""The centred couplings of a study's runs with non-zero means, as the report shows them.

A run whose ensemble has non-zero parameter means (μ_W, μ_b) breaks f -> -f; where the
centred theory describes it (physics.md §6d; :attr:`nngp_ppl.study.spec.RunSpec.centred`) the
study fits it expanded around the measured mean: the centred point fit (``fit_<key>.nc``),
the posterior of its basis (``posterior_<key>.nc``, by default g₃ and λ), the β-functions
(``beta_<key>.nc``) and, where the ensemble's exact oracle reaches the basis' orders, the
exact centred target :math:`g^* = B(\Lambda)\, r` of the exact finite-width moments
(``target_<key>.json``, physics.md §5a). This module reads those files -- it computes no
physics, only quantiles and means of stored draws -- into the summary's
``symmetry_runs.<key>.centred`` and writes its part of the section "Symmetry and operator
basis": per coupling, width and cutoff the point fit, the posterior and its 90% interval
against the exact target, and how many intervals hold it.
"""

from __future__ import annotations

import json

import numpy as np

from ..._checks import NNGPInputError
from ...theory.operators import operator
from .files import gate_summary, nearest

__all__ = ["summary", "section_lines"]

#: The equal-tailed interval the report compares with the exact target.
LEVEL = 0.90


def _quantiles(values) -> dict:
    """Mean, sd and the 5%, 50%, 95% quantiles over the leading (draw) axis."""
    q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95], axis=0)
    return {"mean": values.mean(axis=0), "sd": values.std(axis=0, ddof=1), "q05": q05,
            "median": q50, "q95": q95}


def _target(run) -> dict | None:
    path = run.spec["files"].get("target")
    return None if not path else json.loads((run.out / path).read_text())


def _fit(run) -> dict:
    out = {}
    for p in run.spec["propagators"]:
        ds = run.fit(p)
        out[p] = {"widths": [int(w) for w in ds["width"].values],
                  "cutoffs": [float(c) for c in ds["cutoff"].values],
                  "couplings": [str(c) for c in ds["coupling"].values],
                  "data_orders": str(ds.attrs.get("data_orders", "")),
                  "free_part": str(ds.attrs.get("free_part", "")),
                  **{k: ds[k].values for k in ("fit", "fit_stderr", "beta_fit",
                                               "beta_fit_stderr", "tau")}}
    return out


def _compare(stats: dict, exact) -> None:
    """Add the exact values, z and whether the 90% interval holds them (None without)."""
    if exact is None:
        stats["exact"] = np.full(np.shape(stats["mean"]), np.nan)
        stats["z_exact"] = np.full(np.shape(stats["mean"]), np.nan)
        stats["exact_inside90"] = np.full(np.shape(stats["mean"]), None, dtype=object)
        return
    stats["exact"] = exact
    stats["z_exact"] = (stats["mean"] - exact) / stats["sd"]
    stats["exact_inside90"] = (stats["q05"] <= exact) & (exact <= stats["q95"])


def _count(entries: dict) -> tuple[int | None, int]:
    """(intervals holding the exact value, intervals compared); None held without a target."""
    cells = [np.asarray(e["exact_inside90"], dtype=object).ravel() for e in entries.values()]
    flat = np.concatenate(cells) if cells else np.array([], dtype=object)
    if flat.size == 0 or any(v is None for v in flat):
        return None, int(flat.size)
    return int(sum(bool(v) for v in flat)), int(flat.size)


def summary(run) -> dict | None:
    """The centred stages' results of ``run`` (a
    :class:`~nngp_ppl.study.report.files.StudyRun` of the plan's ``symmetry_runs``), or None
    for a run without them."""
    if not run.spec.get("centred"):
        return None
    return run.cached("centred", lambda: _summary(run))


def _summary(run) -> dict:
    dt = run.posterior
    attrs = dt.attrs
    post = dt["posterior"].to_dataset()
    couplings = json.loads(attrs["couplings"])
    widths = [int(w) for w in post["width"].values]
    cutoffs = [float(c) for c in post["cutoff"].values]
    target = _target(run)
    if target is not None and (target["widths"] != widths or target["cutoffs"] != cutoffs
                               or target["couplings"] != couplings):
        raise NNGPInputError(f"{run.spec['files']['target']} does not describe "
                             f"{run.spec['files']['posterior']} (other widths, cutoffs or "
                             "couplings): rerun its target stage")
    exact = None if target is None else np.asarray(target["target"], dtype=np.float64)
    exact_beta = None if target is None else np.asarray(target["beta"], dtype=np.float64)
    entries, betas = {}, {}
    bpost = run.beta["posterior"].to_dataset()
    for c, name in enumerate(couplings):
        v = post[name].transpose("chain", "draw", "width", "cutoff").values
        entries[name] = _quantiles(v.reshape(-1, *v.shape[2:]))
        _compare(entries[name], None if exact is None else exact[:, :, c])
        b = bpost["beta"].sel(coupling=name).transpose("chain", "draw", "width", "cutoff")
        betas[name] = _quantiles(b.values.reshape(-1, *b.shape[2:]))
        _compare(betas[name], None if exact_beta is None else exact_beta[:, :, c])
    held, compared = _count(entries)
    beta_held, beta_compared = _count(betas)
    return {
        "basis": couplings, "widths": widths, "cutoffs": cutoffs,
        "orders": json.loads(attrs["orders"]), "data_orders": json.loads(attrs["data_orders"]),
        "noise": str(attrs["covariance"]), "likelihood": str(attrs["likelihood"]),
        "free_part": str(attrs.get("free_part", "")),
        "target_available": target is not None,
        "target_oracle": run.spec.get("centred_oracle"),
        "target_source": None if target is None else target["source"],
        "couplings": entries, "beta": betas,
        "exact_inside90": held, "compared": compared,
        "beta_exact_inside90": beta_held, "beta_compared": beta_compared,
        "fit": _fit(run), "gate": gate_summary(run),
    }


def _f(x, spec=".3g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def _point(fit: dict, name: str, width: int, cutoff: float) -> str:
    """The point fit ± s.e. at ``width`` and ``cutoff`` (– where the fit has neither)."""
    if (name not in fit["couplings"] or width not in fit["widths"]
            or not np.any(np.isclose(fit["cutoffs"], cutoff))):
        return "–"
    i = fit["widths"].index(width)
    j = nearest(fit["cutoffs"], cutoff)
    c = fit["couplings"].index(name)
    return f"{_f(fit['fit'][i][j][c])} ± {_f(fit['fit_stderr'][i][j][c])}"


def _inside(v, fail: str) -> str:
    return "–" if v is None else ("yes" if v else f"no {fail}")


def _rows(label: str, s: dict, fail: str) -> tuple[list, list]:
    fit = next(iter(s["fit"].values()))
    rows, brows = [], []
    for name in s["basis"]:
        e, b = s["couplings"][name], s["beta"][name]
        symbol = operator(name).symbol
        for i, w in enumerate(s["widths"]):
            for j, cut in enumerate(s["cutoffs"]):
                rows.append([label, w, _f(cut), symbol, _point(fit, name, w, cut),
                             f"{_f(e['mean'][i][j])} ± {_f(e['sd'][i][j])}",
                             f"[{_f(e['q05'][i][j])}, {_f(e['q95'][i][j])}]",
                             _f(e["exact"][i][j]), _inside(e["exact_inside90"][i][j], fail),
                             _f(e["z_exact"][i][j], "+.2f")])
                brows.append([label, w, _f(cut), symbol, _f(b["median"][i][j]),
                              f"[{_f(b['q05'][i][j])}, {_f(b['q95'][i][j])}]",
                              _f(b["exact"][i][j]), _inside(b["exact_inside90"][i][j], fail)])
    return rows, brows


def _count_sentence(label: str, held, compared: int, what: str) -> str:
    if held is None:
        return ""
    return (f"{label}: the {LEVEL:.0%} intervals of {what} hold the exact target in {held} "
            f"of {compared} (coupling, width, cutoff) cases (at nominal coverage about "
            f"{LEVEL * compared:.1f} expected; the cases share their networks, so they are "
            "not independent).")


def _unavailable(label: str, s: dict) -> str:
    o = s.get("target_oracle") or {}
    moments = o.get("moments")
    declared = (f"exact moments '{moments}' up to order {o.get('max_order')}" if moments
                else "no exact-moment oracle")
    return (f"*{label}: exact comparison unavailable* — its ensemble declares {declared}; "
            f"the exact centred target of its basis needs the raw moments to order "
            f"{o.get('needed_order')}, so the posteriors are shown alone.")


def section_lines(tested_only: dict, table, fail: str) -> list[str]:
    """Markdown of the centred couplings of the summary's ``symmetry_runs`` (label ->
    entry with ``centred``); ``table(header, rows)`` draws a table, ``fail`` marks an
    interval that misses the exact target."""
    runs = {k: r for k, r in tested_only.items() if r.get("centred")}
    if not runs:
        return []
    L = ["### Centred couplings of the runs with non-zero means", "",
         "Expanded around the measured mean (physics.md §6d): the point fit B r̂ ± s.e. of "
         "the centred deviations (fit file), the posterior mean ± sd and its 90% "
         "equal-tailed interval (posterior file), and the exact centred target, B r of the "
         "exact finite-width moments (target file; the estimand, physics.md §5a), with "
         "z = (posterior mean − exact) / sd.", ""]
    rows, brows = [], []
    for r in runs.values():
        s = r["centred"]
        gate = s["gate"]
        L += [f"{r['label']}: basis {', '.join(operator(c).symbol for c in s['basis'])}, "
              f"conditioned on the centred orders {s['data_orders']} (estimand on "
              f"{s['orders']}), noise model '{s['noise']}', {s['likelihood']} likelihood; "
              f"{s['free_part']}. Diagnostics gate "
              f"{'PASSED' if gate['passed'] else 'FAILED ' + fail} (max R-hat "
              f"{_f(gate['max_r_hat'], '.3f')}, min bulk ESS {_f(gate['min_ess_bulk'], '.0f')}, "
              f"{gate['divergences']} divergences).", ""]
        if s["target_available"]:
            L += [_count_sentence(r["label"], s["exact_inside90"], s["compared"],
                                  "the couplings"),
                  "", _count_sentence(r["label"], s["beta_exact_inside90"],
                                      s["beta_compared"], "the β-functions"), ""]
        else:
            L += [_unavailable(r["label"], s), ""]
        a, b = _rows(r["label"], s, fail)
        rows += a
        brows += b
    L += table(["ensemble", "N", "Λ", "coupling", "point fit ± s.e.", "posterior mean ± sd",
                "90% interval", "exact target", "holds exact", "z"], rows)
    L += ["β-functions dg/d log Λ of the same posteriors (flow file) against the exact "
          "target's running:", ""]
    L += table(["ensemble", "N", "Λ", "coupling", "β median", "90% interval", "exact β",
                "holds exact"], brows)
    return L
