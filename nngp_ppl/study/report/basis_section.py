"""Markdown of the report's "Operator basis by ELPD" part (section 5c) and its figure rows.

Every sentence is built from the stored summary (:func:`nngp_ppl.study.report.basis.summary`)
and the parity test of the same run and width; a failure is flagged in its cell: an
observation whose PSIS-LOO estimate is unreliable (Pareto k > 0.7), a basis with odd
couplings kept (:func:`nngp_ppl.inference.evidence.richer_model_earns_its_place`)
although the data are consistent with f -> -f, an odd coupling's 90% interval that excludes
0 although they are.
"""

from __future__ import annotations

import numpy as np

from ...inference.evidence import ELPD_NEGLIGIBLE, ELPD_SE_MULTIPLE
from ...theory.operators import operator
from .basis import K_UNRELIABLE


def _f(x, spec=".3g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def _parity(s: dict, width: int):
    """The run's parity-test entry at ``width`` (None where that width was not tested)."""
    return next((e for e in s["widths"] if int(e["width"]) == int(width)), None)


def _verdict(e) -> str:
    if e is None:
        return "not tested"
    return (f"reject f -> -f (p = {e['p_value']:.2g})" if e["reject"]
            else f"consistent (p = {e['p_value']:.2g})")


def _elpd_rows(label: str, b: dict, fail: str) -> list[list]:
    rows = []
    for t in b["table"]:
        k = f"{t['k_bad']}/{t['n']}" + (f" {fail}" if t["k_bad"] else "")
        delta = "best" if t["best"] else f"{t['delta']:+.1f} ± {t['delta_se']:.1f}"
        rows.append([label, t["width"], f"{t['cutoff']:g}", t["label"],
                     f"{t['elpd']:.1f} ± {t['se']:.1f}", delta, _f(t["p_loo"], ".1f"),
                     _f(t["k_max"], ".2f"), k])
    return rows


def _nested_rows(label: str, s: dict, b: dict, fail: str) -> tuple[list[list], list[int]]:
    rows, counts = [], [0, 0, 0]  # keeps even, even has the higher ELPD, comparisons
    for n in b["nested"]:
        e = _parity(s, n["width"])
        choice = n["even_label"] if n["prefers_even"] else n["odd_label"]
        cell = f"{choice}"
        if n["prefers_even"] and not n["even_higher"]:
            cell += " (higher ELPD with the odd couplings, by less than the threshold)"
        if not n["prefers_even"] and e is not None and not e["reject"]:
            cell += f" {fail} odd couplings preferred although consistent with f -> -f"
        counts[0] += n["prefers_even"]
        counts[1] += n["even_higher"]
        counts[2] += 1
        rows.append([label, n["width"], f"{n['cutoff']:g}", n["even_label"], n["odd_label"],
                     f"{n['delta']:+.1f} ± {n['delta_se']:.1f}", cell, _verdict(e)])
    return rows, counts


def _odd_rows(label: str, s: dict, b: dict, fail: str) -> list[list]:
    rows = []
    for o in b["odd"]:
        e = _parity(s, o["width"])
        cell = "yes" if o["holds_zero"] else "no"
        if not o["holds_zero"] and e is not None and not e["reject"]:
            cell += f" {fail} (the data are consistent with f -> -f)"
        rows.append([label, o["width"], f"{o['cutoff']:g}", operator(o["coupling"]).symbol,
                     _f(o["mean"]), _f(o["sd"]), f"[{_f(o['q05'])}, {_f(o['q95'])}]", cell,
                     _verdict(e)])
    return rows


def basis_lines(runs: dict, table, fail: str) -> list[str]:
    """Lines of the ELPD table over nested bases, the nested comparisons and the odd
    couplings, for every run of ``runs`` (label -> summary entry) with a stored basis
    comparison; ``table(header, rows)`` draws a table, ``fail`` is the report's failure
    marker."""
    L, elpd, nested, odd = [], [], [], []
    counts = [0, 0, 0]
    for r in runs.values():
        s, b = r["symmetry"], r["symmetry"].get("basis_comparison")
        if b is None:
            L += [f"{r['label']}: no basis comparison (no posterior ranks more than one "
                  "model).", ""]
            continue
        L += [f"{r['label']}: posterior in the basis {b['fitted_label']}, conditioned on "
              f"the correlators of orders {b['data_orders']}; its PSIS-LOO ranks "
              f"{', '.join(t for t in dict.fromkeys(t['label'] for t in b['table']))} on "
              "the same data.", ""]
        elpd += _elpd_rows(r["label"], b, fail)
        rows, c = _nested_rows(r["label"], s, b, fail)
        nested += rows
        counts = [a + x for a, x in zip(counts, c, strict=True)]
        odd += _odd_rows(r["label"], s, b, fail)
    if elpd:
        L += ["ELPD per model (Δ: difference from the best model, ± the standard error of the "
              f"paired pointwise differences; k: Pareto k, > {K_UNRELIABLE} marks an "
              "observation whose leave-one-out estimate is unreliable):", ""]
        L += table(["ensemble", "N", "Λ", "model", "ELPD ± s.e.", "Δ vs best", "p_loo",
                    "max k", f"k > {K_UNRELIABLE}"], elpd)
    if nested:
        L += [f"Nested bases (an even basis against the same basis with odd couplings; the "
              f"odd couplings are kept where they raise the ELPD by more than "
              f"max({ELPD_NEGLIGIBLE:g}, {ELPD_SE_MULTIPLE:g} s.e.)): the evidence keeps the "
              f"even basis in {counts[0]} of {counts[2]} comparisons; the even basis has the "
              f"higher ELPD in {counts[1]}.", ""]
        L += table(["ensemble", "N", "Λ", "even basis", "with odd couplings",
                    "Δ (odd − even)", "preferred", "parity test"], nested)
    if odd:
        L += ["Odd couplings (posterior mean, sd and 90% equal-tailed interval; on an "
              "ensemble symmetric under f -> -f their exact value is 0):", ""]
        L += table(["ensemble", "N", "Λ", "coupling", "mean", "sd", "90% interval",
                    "holds 0", "parity test"], odd)
    return L


def figure_rows(axes_row, cols) -> None:
    """Draw, under each run's odd-correlator panels, its ELPD differences from the best
    model (± 2 paired s.e., per width; first cutoff) into ``axes_row`` (one axis per run
    column); ``cols``: (label, symmetry summary) per column."""
    for ax, (label, s) in zip(axes_row, cols, strict=True):
        b = s.get("basis_comparison")
        if not b:
            ax.text(0.5, 0.5, "no basis comparison stored", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
            ax.set_axis_off()
            continue
        cut = b["table"][0]["cutoff"]
        models = list(dict.fromkeys(t["label"] for t in b["table"]))
        widths = sorted({t["width"] for t in b["table"]})
        for i, w in enumerate(widths):
            rows = [t for t in b["table"] if t["width"] == w and t["cutoff"] == cut]
            x = np.arange(len(rows)) + (i - (len(widths) - 1) / 2) * 0.8 / len(widths)
            ax.errorbar(x, [t["delta"] for t in rows],
                        yerr=[2 * t["delta_se"] for t in rows], fmt="o", ms=4, capsize=2,
                        label=f"N = {w}")
        ax.axhline(0.0, color="0.4", lw=0.8)
        ax.set_xticks(np.arange(len(models)))
        ax.set_xticklabels(models, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("ELPD − best (± 2 s.e.)")
        ax.set_title(f"{label}: operator bases by PSIS-LOO, Λ = {cut:g}", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)


__all__ = ["basis_lines", "figure_rows"]
