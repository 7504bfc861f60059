"""``reproduce`` and its report for an ensemble without an exact finite-width oracle (issue 10).

A two-hidden-layer erf MLP declares no exact-moment oracle (``exact_moments = None``), so the
study has no exact stage and no exact file. It still runs sample → fit → infer → flow →
report; every section says that the exact comparison is unavailable for the run and shows
the sampled values and posteriors alone, and every figure is drawn.

Physics oracle: the report's sampled m_4 = ⟨|G4 − G4_GP| / |G4_GP|⟩_t is recomputed here from
the run file's stored moment sums with an independent GP: the depth-2 erf NNGP kernel from
the arcsin recursion written out below (Williams 1997 for E[erf(u) erf(v)]), and the 4-pt
Wick sum over the three pairings written out by hand. Both are deterministic functions of
stored data, so they must agree to round-off.

The run is ``mlp`` of the shared tiny study (tests/tiny_study.py, the ``tiny_study``
fixture: 2,000 networks at widths 4 and 16, a posterior at width 4, three fit cutoffs, two
posterior cutoffs, 2 chains × 50 draws), beside runs that have an oracle: every statement
about the missing comparison must be the MLP run's alone. The posteriors are far too short
to pass the diagnostics gate; nothing here reads them as physics.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil

import numpy as np
import pytest
from tiny_study import MLP_DEPTH, MLP_INPUTS, MLP_SIGMA_B, MLP_SIGMA_W

from nngp_ppl import CorrelatorStats
from nngp_ppl.study.report import FIGURES
from nngp_ppl.study.spec import plan_dict
from nngp_ppl.study.stages import reproduce

SIGMA_W, SIGMA_B, DEPTH, INPUTS = MLP_SIGMA_W, MLP_SIGMA_B, MLP_DEPTH, MLP_INPUTS


@pytest.fixture(scope="module")
def study(tiny_study):
    preset, out, result = tiny_study
    summary = json.loads((out / "summary.json").read_text())
    return preset, out, result, summary


def _erf_mlp_kernel(x, sigma_w, sigma_b, depth):
    """K of a depth-``depth`` erf MLP on scalar inputs, by the layer recursion
    m ← σ_b² + σ_w² (2/π) arcsin(2m / sqrt((1 + 2v)(1 + 2v'))), starting from the
    pre-activation covariance σ_b² + σ_w² x x' (d_in = 1)."""
    x = np.asarray(x, float)
    m = sigma_b**2 + sigma_w**2 * np.outer(x, x)
    for _ in range(depth):
        v = np.diag(m).copy()
        m = sigma_b**2 + sigma_w**2 * (2 / np.pi) * np.arcsin(
            2 * m / np.sqrt(np.outer(1 + 2 * v, 1 + 2 * v)))
    return m


def _wick4(K, t):
    a, b, c, d = t
    return K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]


def test_the_study_runs_every_stage_but_the_exact_one_and_draws_every_figure(study):
    preset, out, result, summary = study
    assert [s for s in result.status if s.endswith("_mlp")] == [
        "sample_mlp", "fit_mlp", "infer_mlp", "flow_mlp"]
    assert set(result.status.values()) == {"ran"} and list(result.status)[-1] == "report"
    # No exact file for this run; the runs with an oracle beside it have theirs.
    assert sorted(p.name for p in out.glob("exact_*.nc")) == ["exact_erf.nc", "exact_relu.nc"]
    plan = {r["key"]: r for r in plan_dict(preset)["runs"]}
    assert plan["mlp"]["files"]["exact"] is None and plan["relu"]["files"]["exact"]
    for name in FIGURES:
        path = out / "figures" / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # ... and the second-order figure, which the study's Erf run of order 2 adds.
    assert summary["figures"] == [f"figures/{name}" for name in FIGURES] + [
        "figures/connected_six_point.png"]
    # Rerunning finds everything up to date: the missing exact file is not a missing input.
    again = reproduce(preset, out, progress=False, log=lambda _line: None, dry_run=True)
    assert set(again.status.values()) == {"skipped"}


def test_the_report_says_the_exact_comparison_is_unavailable(study):
    _, out, _, summary = study
    run = summary["runs"]["mlp"]
    # What the ensemble declares, as the report states it.
    assert run["exact_curve"]["available"] is False
    assert run["exact_curve"]["oracle"] == {"moments": None, "max_order": 0, "needed_order": 6}
    report = (out / "report.md").read_text()
    label = run["label"]
    assert f"**{label}: no exact finite-width oracle.**" in report
    assert "declares no exact-moment oracle; the exact stage needs order 6" in report
    # Sections 1 (twice), 2, 3 and 5 each say it for this run.
    assert report.count(f"*{label}: exact comparison unavailable") == 5
    # No coverage claim for it: the coverage sentence counts the other two runs' one NUTS
    # run each (ReLU N = 20, Erf N = 5), not the MLP's.
    assert ("Coverage of the runs with an exact oracle: 2 independent checks — one NUTS run "
            "per ensemble and width, each serving its 2 cutoffs") in report
    assert "Missed: " + label not in report and f"; {label} N=" not in report
    # Settings sentences follow the study, not the paper: its own inputs (the other runs
    # take the authors'), its d_in.
    assert run["inputs_source"] == "study"
    assert ("Ensembles and inputs (inputs: the authors' (physics.md §9) for relu, erf; the "
            "study's own for mlp):") in report
    assert f"(d_in = {run['d_in']})" in report.split("\n")[2]
    # Every exact number is absent (null), never a stand-in; the sampled ones are there.
    dev, po = run["deviation"], run["posterior"]
    for n in (4, 6):
        assert dev[f"m{n}_exact"] == [None, None] and dev[f"m{n}_z"] == [None, None]
        assert all(np.isfinite(dev[f"m{n}_sampled"]))
    assert po["widths"] == [4]  # the one posterior width (tests/tiny_study.py)
    none = [[None, None]]  # (width, cutoff)
    assert po["lambda_exact"] == none and po["exact_inside90"] == none
    assert all(np.isfinite(np.asarray(po["lambda_median"], float)).ravel())
    assert run["fit"]["full"]["gamma_fit_exact"] == [None, None]
    assert all(run["exact_curve"][f"{q}_slope"] is None for q in ("m4", "m6", "c4", "c6"))
    # The deep MLP's 2-pt function is not K: the stored free part is stated.
    assert po["two_point"] == "measured"
    assert f"- {label}: 2-pt function 'measured' — free part:" in report
    assert f"For {label} K is not the finite-width 2-pt function" in report


def test_the_reported_sampled_m4_is_the_run_files_against_an_independent_gp(study):
    _, out, _, summary = study
    dev = summary["runs"]["mlp"]["deviation"]
    stats = CorrelatorStats.from_netcdf(out / "run_mlp.nc")
    K = _erf_mlp_kernel(INPUTS, SIGMA_W, SIGMA_B, DEPTH)
    # Our own list of the distinct 4-tuples, in the lexicographic order the file uses.
    tuples = list(itertools.combinations_with_replacement(range(len(INPUTS)), 4))
    gp = np.array([_wick4(K, t) for t in tuples])
    assert dev["widths"] == [4, 16] and dev["n_nets"] == [2000, 2000]
    for i, w in enumerate(dev["widths"]):
        g4 = stats.moment_sums(w)[4] / stats.n_nets(w)
        assert g4.shape == gp.shape
        m4 = float(np.mean(np.abs(g4 - gp) / np.abs(gp)))
        assert dev["m4_sampled"][i] == pytest.approx(m4, rel=1e-10)
        # The background: the stored standard errors over |G4_GP|.
        background = float(np.mean(stats.stderr_tuples(4, w) / np.abs(gp)))
        assert dev["m4_background"][i] == pytest.approx(background, rel=1e-10)


def test_a_study_mixing_runs_with_and_without_an_oracle_counts_coverage_only_where_defined(
        study):
    """render_report on the summary with two runs that have exact values (copies of the
    MLP run's one posterior width given exact λ̄, one inside its 90% interval and one
    outside): the coverage sentence counts only their two posteriors, and only the run
    without an oracle gets the 'unavailable' notes."""
    from nngp_ppl.study.report import render_report

    summary = copy.deepcopy(study[3])
    run = summary["runs"]["mlp"]
    others = {}
    # "inside": the medians (inside at both cutoffs); "outside": above the 95% quantiles.
    for key, inside in (("inside", True), ("outside", False)):
        other = others[key] = copy.deepcopy(run)
        other["label"] = f"with-oracle-{key}"
        other["exact_curve"]["available"] = True
        po = other["posterior"]
        po["lambda_exact"] = [list(po["lambda_median"][0]) if inside
                              else [q + 1.0 for q in po["lambda_q95"][0]]]
        po["exact_inside90"] = [[inside, inside]]
        po["z_exact"] = [[0.0, 0.0] if inside else [1.0, 1.0]]
    # the tiny study's runs with an oracle out
    summary["runs"] = {"mlp": run, **others}
    report = render_report(summary)
    assert ("Coverage of the runs with an exact oracle: 2 independent checks — one NUTS run "
            "per ensemble and width, each serving its 2 cutoffs with the same draws, so the 4 "
            "intervals over every width and cutoff are not 4 independent checks. The 90% "
            "intervals contain the exact λ̄ at every cutoff in 1 of the 2 NUTS runs.") in report
    assert "Missed: with-oracle-outside N=4" in report and "with-oracle-inside N=" not in report
    assert "Missed: " + run["label"] not in report
    assert report.count("exact comparison unavailable") == 5
    assert "*with-oracle-inside: exact comparison unavailable" not in report
    assert "*with-oracle-outside: exact comparison unavailable" not in report


def test_the_report_stage_shows_a_bar_over_its_figures_on_a_terminal(study, monkeypatch,
                                                                      capsys, tmp_path):
    """The report stage is the longest one without NUTS or sampling (about 10 s for the
    demo on a quiet machine): with progress forced on, its figures get a bar on standard
    error; with progress off, nothing is drawn."""
    from test_reproduce import blank_figures

    from nngp_ppl.study.report import make_figures

    preset, src, _, _ = study
    out = tmp_path / "copy"  # the figures are drawn again: not into the shared study
    shutil.copytree(src, out)
    drawn = blank_figures(monkeypatch)  # the bar is the subject here, not the figures
    monkeypatch.setenv("NNGP_PPL_PROGRESS", "1")
    paths = make_figures(out, plan_dict(preset), progress=True)
    err = capsys.readouterr().err
    assert "report figures" in err and f"{len(paths)}/{len(paths)}" in err
    # Every figure of the study had its turn under the bar (the 7 + the second-order one).
    assert len(drawn) == len(paths) == len(FIGURES) + 1
    make_figures(out, plan_dict(preset), progress=False)
    assert "report figures" not in capsys.readouterr().err
