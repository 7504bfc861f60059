"""The report's section "Symmetry and operator basis": stored results of the symmetry stage.

A run that measures the odd orders (a study's ``odd_orders = true`` or a declared symmetry,
:mod:`nngp_ppl.study.spec`) has a symmetry stage (:mod:`nngp_ppl.study.stages`): per width, the
Wald test of f -> -f on the odd correlators (:func:`nngp_ppl.inference.symmetry.parity_test`)
and the sampled 1- and 3-pt functions with their standard errors and, where the ensemble has
an exact oracle, their exact finite-width values (zero for zero means). This module reads
that file -- it computes no physics -- into the summary, draws the figure and writes the
section. The ELPD table over the nested operator bases and the odd couplings' posteriors
come from the run's stored posterior (:mod:`nngp_ppl.study.report.basis`; the study's ``[infer]``
basis, :mod:`nngp_ppl.inference.basis_choice`); without one the section says so. A run with
non-zero means fitted centred adds its couplings (g₃ and λ by default) against the exact
centred target (:mod:`nngp_ppl.study.report.centred`).
"""

from __future__ import annotations

import json

import numpy as np

from . import basis, centred
from .basis_section import basis_lines, figure_rows
from .files import StudyRun

__all__ = [
    "FIGURE",
    "summary",
    "tested_only_runs",
    "tested_only",
    "figure",
    "section",
]

#: The figure this section adds (drawn only where some run has a symmetry stage).
FIGURE = "odd_correlators.png"


def summary(run) -> dict | None:
    """The stored symmetry result of ``run`` (a :class:`~nngp_ppl.study.report.files.StudyRun`),
    or None for a run without a symmetry stage."""
    path = run.spec["files"].get("symmetry")
    if not path:
        return None
    return run.cached("symmetry", lambda: _with_basis(
        json.loads((run.out / path).read_text()), run))


def _with_basis(stored: dict, run) -> dict:
    """The symmetry stage's result with the run's basis comparison (ELPD over the nested
    bases and the odd couplings' posteriors, :func:`nngp_ppl.study.report.basis.summary`) where
    it has a posterior."""
    if stored.get("basis_comparison") is None:
        stored["basis_comparison"] = basis.summary(run)
    return stored


def tested_only_runs(out, plan: dict) -> list:
    """:class:`~nngp_ppl.study.report.files.StudyRun` of the plan's ``symmetry_runs``: runs with
    non-zero means, which the even-coupling sections leave out (a sample and a symmetry
    stage, and the centred fit, posterior, flow and target stages where the centred theory
    describes the ensemble)."""

    return [StudyRun(out, spec) for spec in plan.get("symmetry_runs", [])]


def tested_only(out, plan: dict) -> dict:
    """Summary entries of :func:`tested_only_runs`: label, ensemble, parameters, the
    settings of the report's table of runs (σ_b, d_in, inputs and their source, widths,
    posterior widths), symmetry, files and ``centred``
    (:func:`nngp_ppl.study.report.centred.summary`, None for a run without centred
    stages)."""
    return {run.key: {"label": run.label, "ensemble": run.spec["ensemble"],
                      "params": run.spec["params"],
                      **{k: run.spec.get(k) for k in ("sigma_b", "d_in", "inputs",
                                                      "inputs_source", "widths")},
                      "infer_widths": run.spec.get("infer_widths", []),
                      "symmetry": summary(run),
                      "files": dict(run.spec.get("files", {})),
                      "centred": centred.summary(run)}
            for run in tested_only_runs(out, plan)}


def figure(runs):
    """The sampled 1- and 3-pt functions (± 2 standard errors) on every distinct tuple,
    against zero and the exact values where stored; one column per run, one row per order,
    the run's widths side by side."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    found = [(run.label, summary(run)) for run in runs]
    cols = [(label, s) for label, s in found if s]
    orders = sorted({n for _, s in cols for e in s["widths"] for n in e["odd"]}, key=int)
    # A last row: the ELPD over operator bases, where some run stores a comparison.
    extra = int(any(s.get("basis_comparison") for _, s in cols))
    nrows = max(1, len(orders)) + extra
    fig, axes = plt.subplots(nrows, max(1, len(cols)),
                             figsize=(4.6 * max(1, len(cols)), 3.2 * nrows),
                             squeeze=False, constrained_layout=True)
    if extra:
        figure_rows(axes[-1], cols)
    for c, (label, s) in enumerate(cols):
        for r, n in enumerate(orders):
            ax = axes[r, c]
            nw = len(s["widths"])
            for i, e in enumerate(s["widths"]):
                row = e["odd"][n]
                x = np.arange(len(row["estimate"])) + (i - (nw - 1) / 2) * 0.8 / max(nw, 1)
                ax.errorbar(x, row["estimate"], yerr=2 * np.asarray(row["stderr"], float),
                            fmt="o", ms=3, capsize=2, label=f"sampled, N = {e['width']}")
                if row["exact"] is not None:
                    ax.plot(x, row["exact"], "k_", ms=9, mew=1.5,
                            label="exact" if i == 0 else None)
            ax.axhline(0.0, color="0.4", lw=0.8)
            ax.set_xlabel(f"distinct {n}-tuple of inputs")
            ax.set_ylabel(f"G{n}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            tests = ", ".join(f"N = {e['width']}: p = {e['p_value']:.2g}" for e in s["widths"])
            ax.set_title(f"{label}: {n}-pt function (± 2 s.e.)\nparity test {tests}",
                         fontsize=8)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    if not cols:
        axes[0, 0].text(0.5, 0.5, "no run measured odd correlators", ha="center",
                        va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    fig.suptitle("Odd correlators against zero (f -> -f) and the exact values"
                 + ("\nand the operator bases by ELPD" if extra else ""), fontsize=11)
    return fig


def _f(x, spec=".3g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def _declared_cell(s: dict, e: dict) -> str:
    if not s["declared"]:
        return "none declared"
    if e["reject"]:
        return f"**{', '.join(s['declared'])} declared: REJECTED by the data**"
    return f"{', '.join(s['declared'])} declared: consistent"


def _odd_rows(label: str, s: dict) -> list[list]:
    rows = []
    for e in s["widths"]:
        for n, row in e["odd"].items():
            exact = row["exact"]
            rows.append([label, e["width"], n, len(row["estimate"]),
                         _f(float(np.max(np.abs(row["estimate"])))),
                         _f(float(np.median(row["stderr"]))),
                         _f(row["max_abs_z_zero"], ".2f"),
                         "no oracle" if exact is None else _f(float(np.max(np.abs(exact)))),
                         "–" if exact is None else _f(row["max_abs_z_exact"], ".2f")])
    return rows


#: Stage that writes each file of a run spec (``files`` in :func:`nngp_ppl.study.spec.plan_dict`).
_STAGE_OF_FILE = {"run": "sample", "symmetry": "symmetry", "fit": "fit", "posterior": "infer",
                  "beta": "flow", "target": "target"}


def _stages(r) -> str:
    """The stages of a run with means and the files they wrote, from the plan's files."""
    parts = []
    for k, v in r.get("files", {}).items():
        for f in (v.values() if isinstance(v, dict) else [v]):
            if isinstance(f, str):
                parts.append(f"{_STAGE_OF_FILE.get(k, k)} (`{f}`)")
    return ", ".join(parts) or "sample and symmetry"


def _means_sentence(tested_only: dict, even_sections: bool = True) -> list[str]:
    """What the runs with means get here; ``even_sections``: whether the report has the
    zero-mean sections above (else it said at the top why they are left out)."""
    if not tested_only:
        return []

    def means(r):
        return ", ".join(f"{k} = {v:g}" for k, v in r["params"].items()
                         if k in ("mu_w", "mu_b"))

    L = []
    fitted = [r for r in tested_only.values() if r.get("centred")]
    alone = [r for r in tested_only.values() if not r.get("centred")]
    if fitted:
        names = "; ".join(f"{r['label']} ({means(r)}; stages: {_stages(r)})" for r in fitted)
        L += [f"Runs with non-zero parameter means are fitted centred, expanded around the "
              f"measured mean (physics.md §6d): {names}. "
              + ("The study's exact summary and the even-coupling sections above (deviation, "
                 "λ̄, 6-pt check, flow figures) expand around the zero-mean GP kernel and do "
                 "not show them; their couplings are below." if even_sections
                 else "Their couplings are below."), ""]
    if alone:
        names = "; ".join(f"{r['label']} ({means(r)}; stages: {_stages(r)})" for r in alone)
        L += [f"Runs with non-zero parameter means have only their sample and symmetry "
              f"stages here: {names}. Why: the even-coupling stages expand around the "
              "zero-mean GP kernel, and the centred theory (physics.md §6d), expanded "
              "around the measured mean, needs the ensemble's limit covariance with means "
              "as a traced kernel and an exact oracle, which ErfNet, GaussNet and "
              "ActivationNet have and this ensemble has not.", ""]
    return L


def section(runs_summary: dict, table, tested_only: dict | None = None,
            fail: str = "✗") -> list[str]:
    """Markdown lines of the section (empty without a run that measured odd orders);
    ``tested_only``: the summary's ``symmetry_runs`` (non-zero means, no other stage);
    ``fail``: the report's failure marker (``markdown.FAIL``)."""
    tested_only = tested_only or {}
    runs = {k: r for k, r in {**runs_summary, **tested_only}.items() if r.get("symmetry")}
    if not runs:
        return []
    first = next(iter(runs.values()))["symmetry"]
    L = ["## 5c. Symmetry and operator basis", "",
         f"Test: {first['test']}, at each sampled width. Odd correlators against zero and, "
         f"where the ensemble has an exact oracle, against the exact finite-width values "
         f"(figure `{FIGURE}`).", ""]
    L += _means_sentence(tested_only, even_sections=bool(runs_summary))
    rows = []
    for r in runs.values():
        s = r["symmetry"]
        for e in s["widths"]:
            rows.append([r["label"], e["width"], e["n_nets"], e["n_observables"],
                         _f(e["statistic"]), e["dof"], _f(e["p_value"]),
                         "reject f -> -f" if e["reject"] else "consistent with f -> -f",
                         _declared_cell(s, e)])
    L += table(["ensemble", "N", "networks", "odd correlators", "Wald W", "dof", "p-value",
                f"verdict ({first['widths'][0]['alpha']:.0%} level)", "declared symmetry"],
               rows)
    for r in runs.values():
        s = r["symmetry"]
        if s["declared_rejected"]:
            bad = [e["width"] for e in s["widths"] if e["reject"]]
            L += [f"**Warning: {r['label']} declares {', '.join(s['declared'])}, but the "
                  f"data reject f -> -f at N = {', '.join(map(str, bad))}; operators pruned "
                  "by this declaration (odd couplings) are needed.**", ""]
    L += ["Odd correlators per width and order: the largest |G| over the distinct tuples, "
          "the median standard error, the largest |G| / s.e. (against zero), the largest "
          "|exact G| and the largest |G − exact| / s.e.:", ""]
    body = [row for r in runs.values() for row in _odd_rows(r["label"], r["symmetry"])]
    L += table(["ensemble", "N", "order", "tuples", "max |G|", "median s.e.",
                "max |z| vs 0", "max |exact|", "max |z| vs exact"], body)
    L += ["### Operator basis by ELPD", ""]
    if all(r["symmetry"].get("basis_comparison") is None for r in runs.values()):
        L += ["The ELPD comparison over operator bases (the even basis against bases with "
              "odd couplings) was not run: no basis comparison is stored for any run.", ""]
    else:
        L += basis_lines(runs, table, fail)
    return L + centred.section_lines(tested_only, table, fail)
