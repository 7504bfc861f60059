r"""Every number the report shows, gathered from the stored files into one plain dict.

:func:`collect_summary` is written as ``summary.json``; :mod:`nngp_ppl.study.report.markdown`
renders the report from it alone, so that the two cannot disagree. The only arithmetic here
is on stored values: quantiles and means of stored draws, the diagnostics gate's R-hat and
ESS of the stored chains, and m_6 of the stored 6-pt predictions against the stored
experiment; no kernel, Wick sum, diagram or fit is evaluated (physics.md §3, §7, §8).
For a run without an exact file (its ensemble has no exact oracle) every exact value is
None (``null`` in the JSON) and ``exact_curve`` records the capability the ensemble declares.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from pathlib import Path

import jax
import numpy as np

from ..._version import __version__
from ...inference.compare import stored_choice
from ...inference.diagnostics import GATE_RULE
from ..spec import SHIPPED
from . import second_order, symmetry, training
from .files import (
    StudyRun,
    StudyRuns,
    deviation,
    gate_summary,
    nearest,
    six_point,
    study_runs,
)

__all__ = [
    "nearest",
    "orders_text",
    "exact_summary",
    "fit_summary",
    "gate_summary",
    "posterior_summary",
    "beta_summary",
    "six_point_summary",
    "collect_summary",
    "PAPER",
    "study_title",
    "sign_sentence",
    "propagator_sentence",
    "conventions",
]


def _clean(obj):
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def orders_text(orders) -> str:
    """"4-pt and 6-pt" for the orders [4, 6]: figure labels and report text say which
    correlators a setting used from the stored attribute, not by hand."""
    return " and ".join(f"{n}-pt" for n in orders)


def exact_summary(run: StudyRun) -> dict:
    """The exact oracle's m_n, c_n curves against N and their stored log-log slopes.

    ``available`` says whether the run has an exact file; ``oracle`` is the capability its
    ensemble declares (from the plan: ``moments``, ``max_order``, ``needed_order``), which
    the report states for a run without one, whose curves and slopes are then None."""
    ex = run.exact
    out = {"available": ex is not None, "oracle": run.spec.get("exact_oracle")}
    if ex is None:
        out["widths"] = []
        for q in ("m4", "m6", "c4", "c6"):
            out[q], out[f"{q}_slope"] = None, None
        return out
    out["widths"] = [int(w) for w in ex["curve_width"].values]
    for q in ("m4", "m6", "c4", "c6"):
        out[q] = ex[f"{q}_exact"].values.tolist()
        out[f"{q}_slope"] = float(ex[f"{q}_slope"])
    return out


def fit_summary(run: StudyRun) -> dict:
    """The point estimates per propagator, with γ of the exact λ̄ from the exact file (None
    per width and cutoff for a run without an exact oracle)."""
    out = {}
    ex = run.exact
    for p in run.spec["propagators"]:
        fit = run.fit(p)
        names = [str(c) for c in fit["coupling"].values]
        if ex is None:
            # NaN becomes null in summary.json and "–" in the report: absent, not a number.
            lam_exact = np.full(fit["lambda_mean"].shape, np.nan)
            gamma_exact = np.full(fit.sizes["width"], np.nan)
        else:
            lam_exact = ex["lambda_mean_exact"].sel(propagator=p).values
            gamma_exact = ex["gamma_fit_exact"].sel(propagator=p).values
        entry = {
            "widths": [int(w) for w in fit["width"].values],
            "cutoffs": fit["cutoff"].values.tolist(),
            "lambda_mean_exact": lam_exact,
            "gamma_fit_exact": gamma_exact,
            "gamma_analytic": float(fit.attrs["gamma_analytic"]),
        }
        for name in ("lambda_mean", "beta", "gamma_local", "gamma_fit", "gamma_fit_stderr",
                     "m6_gp", "m6_eft", "improvement6"):
            entry[name] = fit[name].values
        for c, name in enumerate(names):
            entry[f"wls_{name}"] = fit["fit"].values[..., c]
            entry[f"wls_{name}_stderr"] = fit["fit_stderr"].values[..., c]
        out[p] = entry
    return out


def posterior_summary(run: StudyRun) -> dict:
    """The posterior's couplings beside the exact estimand, its settings read from the file
    (the exact estimand, its z and coverage are None for a run without an exact oracle)."""
    dt = run.posterior
    post = dt["posterior"].to_dataset()
    const = dt["constant_data"].to_dataset()
    attrs = dt.attrs
    lam = post["lambda"].transpose("chain", "draw", "width", "cutoff").values
    flat = lam.reshape(-1, *lam.shape[2:])
    spread = post["spread"].transpose("chain", "draw", "width", "cutoff").values
    widths = [int(w) for w in post["width"].values]
    cutoffs = [float(c) for c in post["cutoff"].values]
    propagator = str(attrs.get("propagator", "full"))
    q05, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95], axis=0)
    mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    if run.has_exact:
        # The estimand on the exact correlators, from the exact-summary file of the run.
        ex = run.exact["lambda_mean_exact"].sel(propagator=propagator)
        exact = np.array([[float(ex.sel(width=w).values[nearest(ex["cutoff"].values, c)])
                           for c in cutoffs] for w in widths])
        inside = (q05 <= exact) & (exact <= q95)
    else:
        exact = np.full(mean.shape, np.nan)
        inside = np.full(mean.shape, None, dtype=object)
    out = {
        "widths": widths,
        "cutoffs": cutoffs,
        "propagator": propagator,
        "orders": json.loads(attrs["orders"]),
        "data_orders": json.loads(attrs["data_orders"]),
        "couplings": json.loads(attrs["couplings"]),
        "noise": str(attrs["covariance"]),
        "likelihood": str(attrs["likelihood"]),
        "estimand": str(attrs["estimand"]),
        "two_point": str(attrs.get("two_point", "kernel")),
        "free_part": str(attrs.get("free_part", "")),
        "lambda_mean": mean,
        "lambda_sd": sd,
        "lambda_q05": q05,
        "lambda_median": q50,
        "lambda_q95": q95,
        "lambda_exact": exact,
        "z_exact": (mean - exact) / sd,
        "exact_inside90": inside,
        "plugin": const["point_estimate"].sel(coupling="lambda").values,
        "plugin_sd": const["point_sd"].sel(coupling="lambda").values,
        "spread_median": np.median(spread.reshape(-1, *spread.shape[2:]), axis=0),
        "gate": gate_summary(run),
    }
    if "elpd" in const:
        out["elpd_models"] = [str(m) for m in const["model"].values]
        out["elpd"] = const["elpd"].values
        out["elpd_se"] = const["elpd_se"].values
        if "elpd_pareto_k_max" in const:
            out["elpd_pareto_k_max"] = const["elpd_pareto_k_max"].values
        if "log_likelihood" in dt.children:
            # The basis the nested rule keeps (what `nngp-ppl infer` prints; stored by
            # the posterior, else from its pointwise log-likelihoods): the argmax alone
            # favours richer models.
            out["elpd_kept"] = [[stored_choice(dt, w, c, out["elpd_models"])
                                 for c in cutoffs] for w in widths]
    return out


def beta_summary(run: StudyRun) -> dict:
    """Quantiles of the stored β-function and γ draws."""
    b = run.beta
    post = b["posterior"].to_dataset()
    const = b["constant_data"].to_dataset()

    def q(name, *dims):
        v = post[name].transpose("chain", "draw", *dims).values
        flat = v.reshape(-1, *v.shape[2:])
        return np.nanquantile(flat, [0.05, 0.5, 0.95], axis=0), np.nanstd(flat, axis=0)

    (g05, g50, g95), gsd = q("gamma", "width")
    (d05, d50, d95), dsd = q("gamma_data", "width")
    (s05, s50, s95), ssd = q("gamma_slope", "width")
    beta = post["beta"].sel(coupling="lambda").transpose("chain", "draw", "width", "cutoff")
    b05, b50, b95 = np.nanquantile(
        beta.values.reshape(-1, post.sizes["width"], post.sizes["cutoff"]), [0.05, 0.5, 0.95],
        axis=0)
    return {
        "widths": [int(w) for w in post["width"].values],
        "cutoffs": [float(c) for c in post["cutoff"].values],
        "reference_cutoff": float(b.attrs["reference_cutoff"]),
        "interval_sources": json.loads(b.attrs["interval_sources"]),
        "gamma_analytic": float(const["gamma_analytic"]),
        "gamma_q05": g05, "gamma_median": g50, "gamma_q95": g95, "gamma_sd": gsd,
        "gamma_data_q05": d05, "gamma_data_median": d50, "gamma_data_q95": d95,
        "gamma_data_sd": dsd,
        "gamma_slope_q05": s05, "gamma_slope_median": s50, "gamma_slope_q95": s95,
        "gamma_slope_sd": ssd,
        "gamma_systematic": const["gamma_systematic"].values,
        "converged": const["converged"].values.astype(bool),
        "beta_q05": b05, "beta_median": b50, "beta_q95": b95,
    }


def six_point_summary(run: StudyRun, cutoff: float) -> dict:
    """The 6-pt check at the run's NGP width and ``cutoff``: m_6 of GP, of GP + ΔG6(λ̄) and
    of GP + ΔG6(posterior-mean λ) against the experiment, improvement = m6(GP) / m6(EFT)."""
    pred = six_point(run, cutoff)
    g6, gp, se = pred["experiment"], pred["gp"], pred["stderr"]

    def m6(p):
        return float(np.mean(np.abs(g6 - p) / np.abs(gp)))

    m_gp = m6(gp)
    m_point, m_post = m6(pred["point"]), m6(pred["posterior"])
    return {
        "width": pred["width"], "cutoff": cutoff,
        "lambda_mean_point": pred["lambda_point"], "lambda_posterior_mean": pred["lambda_post"],
        "m6_gp": m_gp, "m6_eft_point": m_point, "m6_eft_posterior": m_post,
        "improvement_point": m_gp / m_point, "improvement_posterior": m_gp / m_post,
        "m6_background": float(np.mean(se / np.abs(gp))),
    }


def _run_entry(run: StudyRun, preset: dict) -> dict:
    entry = {k: run.spec[k] for k in ("label", "ensemble", "sigma_b", "d_in", "role",
                                      "widths", "infer_widths", "ngp_width", "inputs",
                                      "propagators")}
    entry["inputs_source"] = run.spec.get("inputs_source")
    entry["n_nets"] = int(preset["n_nets"])
    entry["deviation"] = deviation(run)
    entry["exact_curve"] = exact_summary(run)
    entry["fit"] = fit_summary(run)
    entry["posterior"] = posterior_summary(run)
    entry["beta"] = beta_summary(run)
    entry["six_point"] = six_point_summary(run, float(preset["six_point_cutoff"]))
    entry["second_order"] = second_order.summary(run)
    entry["symmetry"] = symmetry.summary(run)
    return entry


def collect_summary(out, plan: dict, timings: dict | None = None, *, warnings=None,
                    runs=None) -> dict:
    """Every number the report shows, as a JSON-ready dict (see the module docstring)."""

    out = Path(out)
    preset = plan["preset"]
    runs = study_runs(out, plan) if runs is None else StudyRuns.of(runs)
    entries = {run.key: _run_entry(run, preset) for run in runs}
    summary = {
        "title": study_title(plan),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nngp_ppl_version": __version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__,
                    "devices": [str(d) for d in jax.devices()]},
        "preset": preset,
        "conventions": conventions(entries, even_sections=bool(entries)),
        "runs": entries,
        "symmetry_runs": symmetry.tested_only(out, plan),
        "training": training.summary(out, plan, runs),
        "timings_s": timings or {},
        "warnings": warnings or {},
    }
    return _clean(summary)


#: The paper this package reproduces; a study's title names it only for the shipped presets
#: on the authors' inputs.
PAPER = "Halverson, Maiti, Stoner, arXiv:2008.08601"


def study_title(plan: dict) -> str:
    """The report's title, from the plan: the paper's reproduction for the shipped presets
    run on the authors' inputs, otherwise the study's own name and its runs' labels (those
    with non-zero means too)."""
    name, runs = plan["preset"]["name"], plan["runs"]
    if name in SHIPPED and runs and all(r.get("inputs_source") == "paper" for r in runs):
        return f"nngp_ppl reproduction of {PAPER}"
    # Every run of the study, those with non-zero means (symmetry_runs) too.
    labels = list(dict.fromkeys(r["label"] for r in [*runs, *plan.get("symmetry_runs", [])]))
    return f"nngp_ppl study '{name}': " + ", ".join(labels)


def sign_sentence(runs: dict) -> str:
    """What the study's own λ̄ says about its sign: per run, the signs of the sampled λ̄ of
    the first propagator over every width and cutoff (fit file), and, where there is one,
    of the exact λ̄."""
    parts = []
    for r in runs.values():
        fit = r["fit"][r["propagators"][0]]
        lam = np.asarray(fit["lambda_mean"], dtype=float)
        ex = np.asarray(fit["lambda_mean_exact"], dtype=float)
        text = _signs(lam, "sampled")
        if np.any(np.isfinite(ex)):
            text += "; " + _signs(ex, "exact")
        parts.append(f"{r['label']}: {text}")
    return ("lambda < 0 means heavier-than-Gaussian tails, lambda > 0 lighter; in this "
            "study's point estimates (every width and cutoff) " + "; ".join(parts))


def _signs(values, what: str) -> str:
    v = values[np.isfinite(values)]
    neg, pos = int(np.sum(v < 0)), int(np.sum(v > 0))
    if neg == v.size:
        return f"lambda-bar {what} < 0 in all {v.size}"
    if pos == v.size:
        return f"lambda-bar {what} > 0 in all {v.size}"
    return f"lambda-bar {what} < 0 in {neg} and > 0 in {pos} of {v.size}"


def propagator_sentence(runs: dict) -> str:
    """Which propagators the study's runs use, from their stored settings."""
    bs = [r["label"] for r in runs.values() if "bias_subtracted" in r["propagators"]]
    text = "vertex legs carry the full kernel K (posteriors and main point fits)"
    if bs:
        text += (f"; {', '.join(bs)} also fitted with K - sigma_b^2 (the paper's revised "
                 "EFT, 'bias_subtracted')")
    return text


def conventions(runs: dict | None = None, *, even_sections: bool = True) -> dict:
    """The conventions every number of the report uses (physics.md §5–§8); the sign and
    propagator lines are read from ``runs`` (the summary's run entries). ``even_sections``:
    whether the report has its zero-mean sections (a study with a zero-mean run); without
    them each posterior's settings are stated in section 5c, not 2."""

    runs = runs or {}
    settings = "section 2" if even_sections else "section 5c"
    return {
        "action": "P[f] ~ exp(-S), S = S_GP + int_[-L,L]^d_in (lambda f^4 + kappa f^6) dy, "
                  "unit coefficients (no 1/4!)",
        "sign": sign_sentence(runs) if runs else "lambda < 0 means heavier-than-Gaussian "
                                                 "tails, lambda > 0 lighter",
        "propagator": propagator_sentence(runs),
        "rule_4_5": "diagrams in which the vertex corrects the 2-pt function are dropped (K "
                    "is the exact 2-pt function at every width for one hidden layer; where "
                    "it is not, e.g. a deep MLP, the free part is the Wick sum of the "
                    f"measured 2-pt function instead, stated per run in {settings})",
        "per_tuple_coupling": "lambda_t = -(G4_exp - G4_GP)_t / (24 int_box prod_a K(x_a,y) "
                              "dy); lambda_bar = mean over the distinct 4-tuples",
        "cutoffs": "vertex integrals over the box [-L, L]^d_in by composite Gauss-Legendre "
                   "quadrature (nngp_ppl.theory.lattice)",
        "posterior_model": "the noise-free deviations r = G - G_GP are latent, the sampled "
                           "correlators are r plus the noise of a mean over n_nets networks; "
                           "the coupling at each cutoff is the declared estimand B(L) r "
                           "(nngp_ppl.inference.problem); the noise model and the orders are read "
                           f"from each posterior file ({settings})",
        "diagnostics_gate": f"{GATE_RULE}, for every width and cutoff",
        "m_n": "<|G_n - G_n,GP| / |G_n,GP|> over the distinct tuples; background "
               "<stderr / |G_n,GP|>",
        "c_n": "<|kappa_n| / |G_n,GP|> over the distinct tuples (connected n-pt function)",
    }
