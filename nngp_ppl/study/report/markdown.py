"""``report.md``, rendered from the summary dict alone (:mod:`nngp_ppl.study.report.summary`).

:func:`render_report` joins one named step per section; each step takes the summary (or
its runs and preset) and returns markdown lines. Figures are referenced by file name
(:data:`~nngp_ppl.study.report.figures.FIGURES`); every number shown is a value of the summary,
so ``report.md`` and ``summary.json`` cannot disagree.
"""

from __future__ import annotations

import numpy as np

from ...inference.evidence import ELPD_NEGLIGIBLE, ELPD_SE_MULTIPLE
from . import second_order, symmetry, training
from .summary import nearest, orders_text

__all__ = [
    "FAIL",
    "Z_MAX",
    "ELPD_SIGMAS",
    "PARETO_K_MAX",
    "GAMMA_FLAT",
    "ZERO_MEAN_SECTIONS",
    "render_report",
]


#: The headings of the sections built on the zero-mean GP kernel (the study's zero-mean
#: runs: exact summary, λ̄, γ, 6-pt check, posteriors against point estimates); a study
#: whose every run has non-zero means leaves them out and says why (:func:`_left_out`).
ZERO_MEAN_SECTIONS = (
    "1. Deviation from the Gaussian process against width",
    "2. The quartic coupling at a cutoff",
    "3. Running with the cutoff: β-function and exponent γ",
    "4. Predicting the 6-pt function from the 4-pt coupling",
    "5. Posterior against point estimates, per width",
)


def _f(x, spec=".3g") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return format(x, spec)


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _no_oracle(runs: dict, roles=None) -> list[dict]:
    """The runs (of ``roles``, default all) without an exact file."""
    return [r for r in runs.values() if not r["exact_curve"].get("available", True)
            and (roles is None or r["role"] in roles)]


def _oracle_lines(runs: dict) -> list[str]:
    """For the conventions: each run without an exact oracle and the capability its
    ensemble declares (read from the summary), so the reader knows why the exact columns
    of that run are empty."""
    L = []
    for r in _no_oracle(runs):
        o = r["exact_curve"].get("oracle") or {}
        moments = o.get("moments")
        declared = (f"exact moments '{moments}' up to order {o.get('max_order')}" if moments
                    else "no exact-moment oracle")
        L += [f"- **{r['label']}: no exact finite-width oracle.** Its ensemble declares "
              f"{declared}; the exact stage needs order {o.get('needed_order')}. The run has "
              "no exact file, so every exact value of it below is – and each section shows "
              "the sampled values and posteriors alone."]
    return L + [""] if L else []


def _no_oracle_note(runs: dict, shown: str, roles=None) -> list[str]:
    """One line per run without an exact oracle: the exact comparison is unavailable, and
    what the section shows instead."""
    return [f"*{r['label']}: exact comparison unavailable (no exact oracle, see Conventions)*"
            f" — {shown}." for r in _no_oracle(runs, roles)] + (
        [""] if _no_oracle(runs, roles) else [])


def _header(summary: dict) -> list[str]:
    p = summary["preset"]
    # The input dimensions of the runs that sweep the study's widths (role "main").
    dims = sorted({r["d_in"] for r in summary["runs"].values() if r["role"] == "main"})
    dim_text = f" (d_in = {', '.join(map(str, dims))})" if dims else ""
    L = [f"# {summary['title']}", ""]
    L += [f"Study **{p['name']}**: {p['n_nets']:,} networks per width, widths "
          f"{', '.join(map(str, p['widths']))}{dim_text}, seed {p['seed']}; point estimates "
          f"at {len(p['fit_cutoffs'])} cutoffs Λ = {_f(min(p['fit_cutoffs']))} … "
          f"{_f(max(p['fit_cutoffs']))}; posteriors at Λ = "
          f"{', '.join(_f(c) for c in p['infer_cutoffs'])} with {p['num_chains']} chains × "
          f"{p['num_samples']} draws ({p['num_warmup']} warm-up), noise model "
          f"'{p.get('covariance', 'gp')}'. nngp_ppl "
          f"{summary['nngp_ppl_version']}, JAX {summary['machine']['jax']} on "
          f"{', '.join(summary['machine']['devices'])}; created {summary['created']}.", ""]
    total = sum(v for v in summary["timings_s"].values() if v)
    if total:
        L += [f"Compute time of the stages (as last run): {total:.0f} s.", ""]
    return L


def _conventions(summary: dict) -> list[str]:
    conv, runs = summary["conventions"], summary["runs"]
    L = ["## Conventions", ""]
    labels = {"action": "action", "sign": "sign", "propagator": "propagator",
              "rule_4_5": "rule 4.5", "per_tuple_coupling": "per-tuple coupling",
              "cutoffs": "cutoffs", "posterior_model": "posterior model", "m_n": "m_n",
              "c_n": "c_n", "diagnostics_gate": "diagnostics gate"}
    L += [f"- **{label}**: {conv[k]}" for k, label in labels.items()]
    L += [""] + _oracle_lines(runs)
    # Every run of the study: those with non-zero means (symmetry_runs) too.
    every = {**runs, **summary.get("symmetry_runs", {})}
    L += [_inputs_sentence(every), ""]
    L += _table(["run", "ensemble", "σ_b", "d_in", "inputs", "widths", "posterior widths"],
                [[k, r["label"], _f(r["sigma_b"]), r["d_in"],
                  "; ".join(",".join(_f(v) for v in x) for x in r["inputs"]),
                  ",".join(map(str, r["widths"])),
                  ",".join(map(str, r["infer_widths"])) or "–"]
                 for k, r in every.items()])
    return L


def _means(r: dict) -> str:
    """A run's non-zero parameter means, as its plan stored them."""
    return ", ".join(f"{k} = {v:g}" for k, v in r["params"].items()
                     if k in ("mu_w", "mu_b") and v)


def _left_out(summary: dict) -> list[str]:
    """Where no run of the study has zero means: which sections are left out and why, from
    the left-out headings and the stored runs (their labels and means)."""
    if summary["runs"]:
        return []
    shown = summary.get("symmetry_runs", {})
    first, last = (h.split(".")[0] for h in (ZERO_MEAN_SECTIONS[0], ZERO_MEAN_SECTIONS[-1]))
    titles = "; ".join(t[0].lower() + t[1:] for t in
                       (h.split(". ", 1)[1] for h in ZERO_MEAN_SECTIONS))
    names = "; ".join(f"{r['label']}: {_means(r)}" for r in shown.values())
    centred = [r["label"] for r in shown.values() if r.get("centred")]
    shows = "the test of f -> -f on the odd correlators" + (
        f" and the centred couplings of {', '.join(centred)} (their posteriors' gate in "
        "section 6)" if centred else "")
    return [f"**Sections {first}–{last} are left out** ({titles}): they expand around the "
            "zero-mean GP kernel, and every run of this study has non-zero parameter means "
            f"({names}). Section 5c, \"Symmetry and operator basis\", shows {shows}.", ""]


def _inputs_sentence(runs: dict) -> str:
    """Where each run's inputs come from, as the plan stored it."""
    paper = [k for k, r in runs.items() if r.get("inputs_source") == "paper"]
    own = [k for k, r in runs.items() if r.get("inputs_source") == "study"]
    if paper and not own:
        return "Ensembles and inputs (the authors', physics.md §9):"
    if own and not paper:
        return "Ensembles and inputs (the study's own):"
    parts = ([f"the authors' (physics.md §9) for {', '.join(paper)}"] if paper else []) + (
        [f"the study's own for {', '.join(own)}"] if own else [])
    return "Ensembles and inputs" + (f" (inputs: {'; '.join(parts)}):" if parts else ":")


def _deviation_section(runs: dict) -> list[str]:
    L = ["## " + ZERO_MEAN_SECTIONS[0], "",
         "![m_n against N](figures/deviation_vs_width.png)", "",
         "Sampled m_n next to the exact finite-width value and the statistical background "
         "(z = (sampled − exact) / background):", ""]
    rows = []
    for r in runs.values():
        if r["role"] != "main":
            continue
        d = r["deviation"]
        for i, w in enumerate(d["widths"]):
            rows.append([r["label"], w] + [
                _z_cell(d[f"m{n}_z"][i]) if q == "z" else _f(d[f"m{n}_{q}"][i])
                for n in (4, 6) for q in ("sampled", "exact", "background", "z")])
    L += _table(["ensemble", "N", "m4 sampled", "m4 exact", "m4 background", "z4",
                 "m6 sampled", "m6 exact", "m6 background", "z6"], rows)
    if any(FAIL in str(c) for row in rows for c in row):
        L += [f"{FAIL} fails its check: |z| > {Z_MAX:g}, the sampled m_n is further from the "
              "exact value than its statistical background allows (a sampling fault, or an "
              "error bar that heavy tails make too small).", ""]
    L += _no_oracle_note(runs, "the sampled m_n and their statistical background are shown "
                         "alone", roles=("main",))
    # m_n is taken against Wick(K) (the fit file's definition); where the stored posterior
    # says K is not the 2-pt function, m_n also holds the O(1/N) 2-pt shift, c_n does not.
    shifted = [r["label"] for r in runs.values() if r["role"] == "main"
               and r["posterior"].get("two_point", "kernel") != "kernel"]
    if shifted:
        L += [f"For {', '.join(shifted)} K is not the finite-width 2-pt function (2-pt "
              "function 'measured', section 2): m_n against the Wick sum of K contains the "
              "2-pt function's O(1/N) shift as well as the connected part; c_n below, from "
              "the measured moments, does not.", ""]
    L += ["![connected correlators](figures/connected_vs_width.png)", "",
          "Slopes of log c_n and log m_n against log N from the exact oracle (widths ≥ 10):",
          ""]
    rows = [[r["label"]] + [_f(r["exact_curve"].get(f"{q}_slope"), ".3f")
                            for q in ("m4", "m6", "c4", "c6")]
            for r in runs.values() if r["role"] == "main"]
    L += _table(["ensemble", "m4 slope", "m6 slope", "c4 slope (−1)", "c6 slope (−2)"], rows)
    L += _no_oracle_note(runs, "its connected functions are the sampled c_n of the figure, "
                         "with no exact curve and no exact slope", roles=("main",))
    return L


#: The mark of a number that fails its check, placed where the number stands.
FAIL = "✗"
#: |z| beyond which a sampled value disagrees with its exact value.
Z_MAX = 3.0


def _z_cell(z) -> str:
    """z with the failure mark where |z| > Z_MAX."""
    if z is None or not np.isfinite(z):
        return _f(z)
    return f"**{z:.2f}** {FAIL}" if abs(z) > Z_MAX else f"{z:.2f}"


def _spread_cell(spread, coupling) -> str:
    """The model discrepancy, marked where it exceeds the coupling it qualifies: the tuples
    then do not share one coupling, and the interval (which excludes the spread by design)
    describes an average of couplings of different sizes or signs."""
    if spread is None or coupling is None or coupling == 0:
        return _f(spread)
    ratio = spread / abs(coupling)
    if ratio > 1:
        return f"**{_f(spread)}** {FAIL} ({ratio:.1f}× the coupling)"
    return _f(spread)


def _inside(flag) -> str:
    """The coverage cell: yes, **no**, or – where there is no exact value to cover."""
    return "–" if flag is None else ("yes" if flag else "**no**")


def _settings(r: dict) -> tuple:
    po = r["posterior"]
    return (tuple(po["orders"]), tuple(po["data_orders"]), po["noise"], po["likelihood"])


def _coupling_settings(runs: dict) -> list[str]:
    """One line per distinct posterior setting, generated from the stored attributes."""
    L = []
    for setting in sorted({_settings(r) for r in runs.values()}):
        orders, data_orders, noise, lik = setting
        names = [r["label"] for r in runs.values() if _settings(r) == setting]
        L += [f"- {', '.join(names)}: couplings from the {orders_text(orders)} function; "
              f"the posterior conditions on the {orders_text(data_orders)} function; noise "
              f"model '{noise}', {lik} likelihood."]
    # Where K is not the 2-pt function at finite width (rule 4.5 fails, e.g. a deep MLP),
    # the stored free part says what replaced Wick(K).
    for r in runs.values():
        po = r["posterior"]
        if po.get("two_point", "kernel") != "kernel":
            L += [f"- {r['label']}: 2-pt function '{po['two_point']}' — free part: "
                  f"{po['free_part']}."]
    return L


def _coupling_table(runs: dict) -> list[str]:
    rows = []
    for r in runs.values():
        if r["role"] == "dim":
            continue
        po = r["posterior"]
        fit = r["fit"][po["propagator"]]
        w = r["ngp_width"] if r["ngp_width"] in po["widths"] else po["widths"][0]
        i, fi = po["widths"].index(w), fit["widths"].index(w)
        for j, c in enumerate(po["cutoffs"]):
            jc = nearest(fit["cutoffs"], c)
            rows.append([r["label"], w, _f(c), _f(fit["lambda_mean"][fi][jc]),
                         _f(po["lambda_exact"][i][j]), _f(po["lambda_median"][i][j]),
                         f"[{_f(po['lambda_q05'][i][j])}, {_f(po['lambda_q95'][i][j])}]",
                         _inside(po["exact_inside90"][i][j]),
                         _f(po["z_exact"][i][j], ".2f"),
                         _spread_cell(po["spread_median"][i][j], po["lambda_median"][i][j])])
    L = _table(["ensemble", "N", "Λ", "λ̄ sampled", "λ̄ exact", "posterior median",
                "90% interval", "exact in 90%", "z(exact)", "spread"], rows)
    if any(FAIL in str(row[-1]) for row in rows):
        L += [f"{FAIL} in 'spread': the model discrepancy exceeds the coupling — the tuples' "
              "λ_t do not share one value, so λ here is an average of couplings of different "
              "sizes (or signs), not a coupling the tuples obey.", ""]
    L += _no_oracle_note(runs, "its posteriors and the sampled λ̄ are shown alone, with no "
                         "coverage check")
    return L + _coverage_lines(runs)


def _coverage_lines(runs: dict) -> list[str]:
    """How often the 90% interval contains the exact λ̄, counted by independent checks: one
    NUTS run per (run, width) serves every cutoff, so its cutoffs' intervals move together
    (the same draws of r) and count as one check, covered only if all of them are."""
    checks, misses, intervals = 0, [], 0
    for r in runs.values():
        po = r["posterior"]
        for i, w in enumerate(po["widths"]):
            flags = [f for f in po["exact_inside90"][i] if f is not None]
            if not flags:
                continue  # no exact value (no oracle): nothing to cover
            checks += 1
            intervals += len(flags)
            missed = [j for j, f in enumerate(po["exact_inside90"][i]) if f is False]
            if missed:
                misses.append(f"{r['label']} N={w} at Λ = " + ", ".join(
                    f"{_f(po['cutoffs'][j])} (z = {_f(po['z_exact'][i][j], '.2f')})"
                    for j in missed))
    if not checks:
        return []
    scope = "" if not _no_oracle(runs) else " of the runs with an exact oracle"
    per_run = intervals // checks if intervals % checks == 0 else None
    shared = ("each for one cutoff" if per_run == 1 else f"each serving its {per_run} "
              "cutoffs" if per_run else "each serving all its cutoffs")
    L = [f"Coverage{scope}: {checks} independent check{'s' if checks != 1 else ''} — one "
         f"NUTS run per ensemble and width, {shared} with the same draws"
         + (f", so the {intervals} intervals over every width and cutoff are not {intervals} "
            "independent checks" if intervals > checks else "")
         + f". The 90% intervals contain the exact λ̄ at every cutoff in "
         f"{checks - len(misses)} of the {checks} NUTS runs."]
    if misses:
        L[-1] += (" Missed: " + "; ".join(misses) + ". The posteriors of one run also share "
                  "their networks across cutoffs; the calibration over independent seeds is in "
                  "`benchmarks/calibration.py` (docs/comparison.md).")
    return L + [""]


def _elpd_table(runs: dict) -> list[str]:
    L = ["Models ranked by PSIS-LOO ELPD (GP only, λ, λ + κ; each correlator under its "
         "noise and the model's stated discrepancy; higher is better) — the Bayesian answer "
         "to 'is first order enough here?'. Each is PSIS-LOO of the model's `log_likelihood` "
         "variable in the posterior file: `nngp_ppl.inference.model_loo(dt, width=N, "
         "cutoff=Λ, model=m)` (for the EFT models `az.loo(select_problem(dt, width=N, "
         "cutoff=Λ), var_name=m)`) gives the number shown (docs/file_formats.md).", ""]
    rows, models = [], []
    for r in runs.values():
        po = r["posterior"]
        if "elpd" not in po:
            continue
        models = po["elpd_models"]
        for i, w in enumerate(po["widths"]):
            for j, c in enumerate(po["cutoffs"]):
                vals = np.asarray(po["elpd"][i][j], dtype=float)
                errs = np.asarray(po["elpd_se"][i][j], dtype=float)
                ks = (np.asarray(po["elpd_pareto_k_max"][i][j], dtype=float)
                      if "elpd_pareto_k_max" in po else np.full(len(vals), np.nan))
                kept = po["elpd_kept"][i][j] if "elpd_kept" in po else "n/a"
                rows.append([r["label"], w, _f(c)] + _elpd_cells(models, vals, errs, ks)
                            + [kept, models[int(np.nanargmax(vals))]])
    if rows:
        L += _table(["ensemble", "N", "Λ"] + [f"ELPD {m}" for m in models]
                    + ["kept (nested rule)", "highest"], rows)
        L += [f"Kept: the basis the nested rule keeps (`nngp_ppl.inference.evidence."
              f"choose_nested_basis`): from the simplest model, a richer nested one only where "
              f"its ELPD is higher by more than max({ELPD_NEGLIGIBLE:g}, {ELPD_SE_MULTIPLE:g} "
              "paired s.e.); n/a where the file holds no pointwise values. Highest: the "
              "largest ELPD, which a richer model can reach by noise.", ""]
    if any(FAIL in str(c) for row in rows for c in row):
        L += [f"{FAIL}: an EFT model whose ELPD is more than {ELPD_SIGMAS:g} standard errors "
              "(the two models' errors combined) below the GP's. Each contains the GP (at "
              "zero couplings), so a posterior that fits cannot predict much worse than it: "
              "the model's stated discrepancy or its noise model fails there.", ""]
    if any("k̂" in c for row in rows for c in map(str, row)):
        L += [f"k̂: the largest Pareto k of that model's PSIS-LOO exceeds {PARETO_K_MAX:g}; its "
              "ELPD is unreliable there (importance sampling with too heavy a tail).", ""]
    return L


#: Standard errors below the GP at which a model that contains the GP fails its check.
ELPD_SIGMAS = 2.0
#: Pareto k above which PSIS-LOO is unreliable whatever the number of draws S (Vehtari et
#: al., JMLR 25(72), 2024; ArviZ's stricter good_k is min(1 - 1/log10 S, 0.7)).
PARETO_K_MAX = 0.7


def _elpd_cells(models, vals, errs, ks) -> list[str]:
    """ELPD ± se per model, marked where an EFT model is worse than the GP it contains and
    where its largest Pareto k makes the estimate unreliable."""
    gp = models.index("gp") if "gp" in models else None
    cells = []
    for m, (v, e, k) in enumerate(zip(vals, errs, ks, strict=True)):
        cell = f"{v:.1f} ± {e:.1f}"
        if gp is not None and m != gp and np.isfinite(v):
            gap = vals[gp] - v
            if gap > ELPD_SIGMAS * np.hypot(errs[gp], e):
                cell = f"**{cell}** {FAIL} ({gap:.0f} below the GP)"
        if np.isfinite(k) and k > PARETO_K_MAX:
            cell += f" (k̂ {k:.2f})"
        cells.append(cell)
    return cells


def _couplings_section(runs: dict) -> list[str]:
    L = ["## " + ZERO_MEAN_SECTIONS[1], "",
         "![lambda against cutoff](figures/lambda_vs_cutoff.png)", ""]
    L += _coupling_settings(runs)
    first = next(iter(runs.values()))["posterior"]
    L += ["", f"The estimand (stored in each posterior file): {first['estimand']}. The paper's "
          "λ̄ of the sampled G4 is its plug-in estimate; 'λ̄ exact' is the estimand itself, "
          "evaluated on the exact finite-width correlators. 'spread' is the model "
          "discrepancy — the rms over tuples of λ_t − λ, posterior median — which the "
          "interval does not contain by design. At the NGP width of each ensemble:", ""]
    return L + _coupling_table(runs) + _elpd_table(runs)


def _gamma_row(r: dict) -> list:
    fit = r["fit"][r["propagators"][0]]
    b = r["beta"]
    w = r["ngp_width"] if r["ngp_width"] in b["widths"] else b["widths"][0]
    i, fi = b["widths"].index(w), fit["widths"].index(w)

    def interval(name, spec=".4f"):
        return (f"{_f(b[name + '_median'][i], spec)} [{_f(b[name + '_q05'][i], spec)}, "
                f"{_f(b[name + '_q95'][i], spec)}]")

    return [r["label"], w, _f(fit["gamma_fit"][fi], ".4f"),
            _f(fit["gamma_fit_exact"][r["widths"].index(w)], ".4f"), interval("gamma_data"),
            _f(b["gamma_systematic"][i], ".2g"), interval("gamma"),
            interval("gamma_slope"),
            _f(b["gamma_analytic"], "g")]


#: |fitted γ| below which λ̄ counts as not running (its |λ̄| changes by less than a
#: factor 10^0.1 = 1.26 per decade of cutoff).
GAMMA_FLAT = 0.1


def _bias_subtracted_sentence(r: dict) -> str:
    """What the K − σ_b² fit's own numbers say: whether λ̄ runs (fitted γ against
    GAMMA_FLAT), how much it changes over the cutoffs, and whether the fitted γ agrees with
    the analytic one (within three of its standard errors)."""
    bs = r["fit"]["bias_subtracted"]
    fi = bs["widths"].index(r["ngp_width"])
    gamma, analytic = bs["gamma_fit"][fi], bs["gamma_analytic"]
    se = bs["gamma_fit_stderr"][fi]
    lam0, lam1 = bs["lambda_mean"][fi][0], bs["lambda_mean"][fi][-1]
    head = (f"With the bias-subtracted propagator K − σ_b² on the vertex legs ({r['label']}, "
            f"N = {r['ngp_width']}): fitted γ = {_f(gamma, '.4f')}"
            + (f" ± {_f(se, '.2g')}" if se is not None else "")
            + f" (analytic {_f(analytic, 'g')}); λ̄ = {_f(lam0)} at Λ = {_f(bs['cutoffs'][0])} "
            f"and {_f(lam1)} at Λ = {_f(bs['cutoffs'][-1])}")
    if gamma is None:
        return head + "."
    runs_text = ("so λ̄ stops running" if abs(gamma) < GAMMA_FLAT
                 else "so λ̄ still runs with the cutoff")
    tol = 3 * se if se is not None and np.isfinite(se) else 0.0
    agree = (" — as the analytic exponent says" if analytic is not None
             and abs(gamma - analytic) <= max(tol, GAMMA_FLAT)
             else f" — {FAIL} not the analytic exponent {_f(analytic, 'g')}")
    return f"{head}: {runs_text}{agree}."


def _running_section(runs: dict, p: dict) -> list[str]:
    L = ["## " + ZERO_MEAN_SECTIONS[2], "",
         "![beta function](figures/beta_function.png)", "",
         "![gamma against d_in](figures/rg_dimension.png)", "",
         "γ with λ ∝ Λ^−γ: the paper's regression of log|λ̄| on log Λ over all "
         f"{len(p['fit_cutoffs'])} cutoffs (sampled and exact G4); the posterior of the "
         "asymptotic γ from the networks alone (each draw's estimand differentiated in log Λ "
         "and extrapolated) and with the extrapolation's systematic error added; the "
         "posterior of the regression slope over the posterior's cutoffs; and the analytic "
         "exponent (physics.md §8). With one coupling γ depends on the data only through how "
         "the non-Gaussianity is shared between tuples (γ is their λ_t-weighted mean "
         "exponent), so its interval from the networks is narrow; the systematic one is the "
         "extrapolation's, not the networks'.", ""]
    L += _table(["ensemble", "N", "γ fit (sampled)", "γ fit (exact G4)",
                 "γ networks [90%]", "extrapolation syst.", "γ networks + syst. [90%]",
                 "slope over cutoffs [90%]", "analytic"], [_gamma_row(r) for r in runs.values()])
    L += _no_oracle_note(runs, "its γ comes from the sampled λ̄ and the posteriors alone")
    for r in runs.values():
        if "bias_subtracted" in r["fit"]:
            L += [_bias_subtracted_sentence(r), ""]
    # The authors' bias run (role sigma_b) beside the main run of the same ensemble at
    # σ_b = 0 in d_in = 1, both on the authors' inputs: the sentence is about their script.
    relu1 = next((r for r in runs.values() if r["role"] == "sigma_b"
                  and r.get("inputs_source") == "paper"), None)
    relu0 = next((r for r in runs.values() if relu1 and r["role"] == "main"
                  and r["ensemble"] == relu1["ensemble"] and r["sigma_b"] == 0
                  and r["d_in"] == 1 and r.get("inputs_source") == "paper"), None)
    if relu0 and relu1:
        L += [f"{relu0['label']} on the authors' positive one-dimensional inputs is degenerate "
              "(f(x) = x·S for a single random S): every λ_t is the same and runs exactly as "
              "Λ^−5. The authors' RG script meant σ_b = 0 but ran σ_b = 1 (a `==` typo); "
              "both are shown, labelled by σ_b.", ""]
    return L


def _six_point_section(runs: dict, p: dict) -> list[str]:
    L = ["## " + ZERO_MEAN_SECTIONS[3], "",
         "![six-point prediction](figures/six_point.png)", "",
         f"At Λ = {_f(p['six_point_cutoff'])}: m_6 of the GP, of GP + ΔG6(λ̄) (the "
         "paper's check, κ = 0) and of GP + ΔG6 at the posterior-mean λ; improvement = "
         "m6(GP) / m6(EFT); background = ⟨stderr / |G6_GP|⟩:", ""]
    rows = []
    for r in runs.values():
        if r["role"] == "dim":
            continue
        s = r["six_point"]
        rows.append([r["label"], s["width"], _f(s["m6_gp"]), _f(s["m6_eft_point"]),
                     _improvement_cell(s["improvement_point"]), _f(s["m6_eft_posterior"]),
                     _improvement_cell(s["improvement_posterior"]), _f(s["m6_background"])])
    L += _table(["ensemble", "N", "m6 GP", "m6 EFT (λ̄)", "improvement", "m6 EFT (posterior)",
                 "improvement", "background"], rows)
    if any(FAIL in c for row in rows for c in map(str, row)):
        L += [f"{FAIL}: improvement below 1 — the 4-pt coupling's 6-pt prediction is further "
              "from the sampled 6-pt function than the GP itself; the prediction fails here.",
              ""]
    return L


def _improvement_cell(x) -> str:
    """m6(GP) / m6(EFT), marked where the EFT predicts worse than the GP."""
    if x is None or not np.isfinite(x) or x >= 1:
        return _f(x, ".2f")
    return f"**{x:.2f}** {FAIL} ({1 / x:.0f}× worse than the GP)" if x > 0 else (
        f"**{x:.2f}** {FAIL}")


def _posterior_vs_point_section(runs: dict, p: dict) -> list[str]:
    L = ["## " + ZERO_MEAN_SECTIONS[4], "",
         "![posterior vs point](figures/posterior_vs_point.png)", "",
         f"At Λ = {_f(p['six_point_cutoff'])}, every width with a posterior: the posterior, "
         "its plug-in point estimate B r̂ (the estimand's map of the sampled correlators) with "
         "its standard deviation under the noise model, the paper's λ̄ of the sampled G4, and "
         "the exact λ̄:", ""]
    rows = []
    for r in runs.values():
        po = r["posterior"]
        j = nearest(po["cutoffs"], p["six_point_cutoff"])
        fit = r["fit"][po["propagator"]]
        jc = nearest(fit["cutoffs"], po["cutoffs"][j])
        for i, w in enumerate(po["widths"]):
            rows.append([r["label"], w, _f(po["lambda_median"][i][j]),
                         _f(po["lambda_sd"][i][j]),
                         f"{_f(po['plugin'][i][j])} ± {_f(po['plugin_sd'][i][j], '.2g')}",
                         _f(fit["lambda_mean"][fit["widths"].index(w)][jc]),
                         _f(po["lambda_exact"][i][j]), _f(po["z_exact"][i][j], ".2f"),
                         _inside(po["exact_inside90"][i][j])])
    L += _table(["ensemble", "N", "posterior median", "posterior sd", "plug-in B r̂ ± sd",
                 "λ̄ sampled", "λ̄ exact", "z(exact)", "exact in 90%"], rows)
    L += _no_oracle_note(runs, "the posterior, its plug-in estimate and the sampled λ̄ are "
                         "shown alone")
    return L


def _diagnostics_section(summary: dict) -> list[str]:
    L = ["## 6. Diagnostics gate", "", f"{summary['conventions']['diagnostics_gate']}.", ""]
    rows = []
    # Every posterior: the zero-mean runs' and the centred ones of runs with means.
    gates = [(r["label"], r["posterior"]["gate"]) for r in summary["runs"].values()]
    gates += [(r["label"], r["centred"]["gate"])
              for r in summary.get("symmetry_runs", {}).values() if r.get("centred")]
    for label, g in gates:
        rows.append([label, "PASSED" if g["passed"] else "**FAILED**",
                     f"{g['n_posteriors'] - g['n_failed']}/{g['n_posteriors']}",
                     _f(g["max_r_hat"], ".4f"), _f(g["min_ess_bulk"], ".0f"),
                     _f(g["min_ess_tail"], ".0f"), g["divergences"],
                     "; ".join(f"N={w}, Λ={_f(c)}" for w, c in g["failures"]) or "–"])
    L += _table(["ensemble", "gate", "passed (N, Λ)", "max R-hat", "min bulk ESS",
                 "min tail ESS", "divergences", "failing (N, Λ)"], rows)
    warn_lines = [f"- `{stage}`: " + " ".join(s.strip() for s in w.splitlines())
                  for stage, texts in summary["warnings"].items() for w in texts]
    if warn_lines:
        L += ["Warnings raised while computing (also in `manifest.json`):", ""]
        L += warn_lines + [""]
    return L


def _timings_section(summary: dict) -> list[str]:
    L = []
    if summary["timings_s"]:
        L += ["## 7. Stage timings", ""]
        L += _table(["stage", "seconds"], [[k, _f(v, ".1f")]
                                           for k, v in summary["timings_s"].items()])
    L += ["Every number above is in `summary.json`; the data behind the figures are the "
          "netCDF files beside this report (see docs/file_formats.md).", ""]
    return L


def render_report(summary: dict) -> str:
    """The markdown report, from the summary alone (figures referenced by file name)."""
    runs, p = summary["runs"], summary["preset"]
    L = _header(summary) + _conventions(summary)
    if runs:
        L += _deviation_section(runs)
        L += _couplings_section(runs)
        L += _running_section(runs, p)
        L += _six_point_section(runs, p)
        L += _posterior_vs_point_section(runs, p)
    else:
        L += _left_out(summary)
    L += second_order.section(runs, _table)
    L += symmetry.section(runs, _table, summary.get("symmetry_runs", {}), FAIL)
    L += training.section(summary.get("training"), _table)
    L += _diagnostics_section(summary)
    L += _timings_section(summary)
    return "\n".join(L)
