"""A study with ``order = 2``: the second-order stage, its files and the report's section.

The Erf-net run ``erf`` of the shared tiny study (tests/tiny_study.py: one width, few
networks, short NUTS runs; the ``tiny_study`` fixture) has ``order = 2``. The checks: the
stage runs after the run's first-order ones and leaves them as they are, a rerun skips
everything, the report's connected 6-pt table holds the exact cumulant's size (against
:func:`nngp_ppl.theory.exact.exact_cumulant_tuples` directly), and the section and the
figure are written.
"""

from __future__ import annotations

import json

import numpy as np

from nngp_ppl.study.stages import reproduce, stages


def _quiet(*_args):
    pass


def test_the_second_order_stage_runs_beside_the_first_order_ones(tiny_study):
    preset, out, result = tiny_study
    names = [s.name for s in stages(preset) if s.name.endswith("_erf")]
    assert names == ["sample_erf", "exact_erf", "fit_erf", "infer_erf", "flow_erf",
                     "second_order_erf"]
    assert [s.name for s in stages(preset)][-1] == "report"
    # Only the run of order 2 has the stage.
    assert [s.name for s in stages(preset) if s.name.startswith("second_order")] == [
        "second_order_erf"]
    for name in ("posterior2_erf.nc", "beta2_erf.nc", "sixpoint_erf.nc",
                 "figures/connected_six_point.png"):
        assert (out / name).stat().st_size > 0
    assert result.status["second_order_erf"] == "ran"
    again = reproduce(preset, out, progress=False, log=_quiet, dry_run=True)
    assert set(again.status.values()) == {"skipped"}


def test_the_report_states_the_stored_second_order_numbers(tiny_study):
    from nngp_ppl.theory.exact import exact_cumulant_tuples

    preset, out, _ = tiny_study
    summary = json.loads((out / "summary.json").read_text())
    so = summary["runs"]["erf"]["second_order"]
    assert so["models"] == ["gp", "lambda", "lambda+kappa", "lambda@2", "lambda+kappa@2"]
    six = so["six_point"]
    run = next(r for r in preset.runs() if r.key == "erf")
    assert run.order == 2 and six["widths"] == [5]
    for i, width in enumerate(six["widths"]):
        exact = exact_cumulant_tuples(run.net(), run.inputs(), width, 6)
        got = six["rms"][i][six["sources"].index("exact")]
        np.testing.assert_allclose(got, np.linalg.norm(exact) / np.sqrt(exact.size),
                                   rtol=1e-10)
    report = (out / "report.md").read_text()
    assert "## 5b. Second order" in report and "connected_six_point.png" in report
