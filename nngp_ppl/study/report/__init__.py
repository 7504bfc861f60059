r"""Figures, ``summary.json`` and ``report.md`` of a reproduction (:mod:`nngp_ppl.study.stages`).

The report reads the files the earlier stages wrote and recomputes no physics (no kernel,
Wick sum, diagram or fit): the exact file holds the oracle's m_n and c_n curves and their
slopes, the fit file the point estimates and the sampled m_n, background and c_n, the
posterior and β files the draws. Three steps:

* :mod:`~nngp_ppl.study.report.summary`: :func:`collect_summary` gathers every number the report
  shows into one plain dictionary (written as ``summary.json``);
* :mod:`~nngp_ppl.study.report.figures`: :func:`make_figures` draws the PNG figures from the files;
* :mod:`~nngp_ppl.study.report.markdown`: :func:`render_report` writes the markdown from the
  summary alone, so that the report and the JSON cannot disagree.

Quantities (physics.md §3, §7, §8):

* :math:`m_n = \langle |G^{(n)} - G^{(n)}_{GP}| / |G^{(n)}_{GP}| \rangle_t`, sampled and exact
  (:mod:`nngp_ppl.theory.exact`), and its statistical background
  :math:`\langle \delta G^{(n)}_t / |G^{(n)}_{GP}| \rangle_t` with the naive standard error;
* the connected functions :math:`c_n = \langle |\kappa_n| / |G^{(n)}_{GP}| \rangle_t`, with
  :math:`\kappa_4 \propto 1/N` and :math:`\kappa_6 \propto 1/N^2`;
* the couplings :math:`\lambda_t(\Lambda) = -(G_4 - G_{4,GP})_t / (24 I_t)`, their mean
  :math:`\bar\lambda`, the posterior of :math:`\lambda`, the β-function
  :math:`\beta = d\lambda/d\log\Lambda` and the exponent :math:`\gamma = -\beta/\lambda`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..._io import atomic_path
from .figures import (
    FIGURES,
    fig_beta,
    fig_connected,
    fig_deviation,
    fig_lambda,
    fig_posterior_vs_point,
    fig_rg_dimension,
    fig_six_point,
    make_figures,
)
from .files import StudyRun, study_runs
from .markdown import render_report
from .summary import collect_summary, conventions

__all__ = [
    "FIGURES", "StudyRun", "collect_summary", "conventions", "fig_beta", "fig_connected",
    "fig_deviation", "fig_lambda", "fig_posterior_vs_point", "fig_rg_dimension",
    "fig_six_point", "make_figures", "render_report", "study_runs", "write_report",
]


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_report(out, plan: dict, timings: dict | None = None,
                 warnings: dict | None = None, *,
                 progress: bool = False) -> tuple[Path, Path, list]:
    """Figures, ``summary.json`` and ``report.md`` into ``out`` (all written atomically);
    ``progress``: a bar over the figures on a terminal."""
    out = Path(out)
    runs = study_runs(out, plan)
    summary = collect_summary(out, plan, timings, warnings=warnings, runs=runs)
    figures = make_figures(out, plan, runs=runs, progress=progress)
    summary["figures"] = [str(f.relative_to(out)) for f in figures]
    spath = _write_text(out / "summary.json", json.dumps(summary, indent=1))
    rpath = _write_text(out / "report.md", render_report(summary))
    return rpath, spath, figures
