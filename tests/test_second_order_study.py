"""A study with ``order = 2``: the second-order stage, its files and the report's section.

One tiny Erf-net study (one width, few networks, short NUTS runs) runs once. The checks:
the stage runs after the first-order ones and leaves them as they are, a rerun skips
everything, the report's connected 6-pt table holds the exact cumulant's size (against
:func:`nngp_ppl.theory.exact.exact_cumulant_tuples` directly), and the section and the
figure are written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from nngp_ppl.study.spec import study_from_text
from nngp_ppl.study.stages import reproduce, stages

STUDY = """
name = "second_order_tiny"
n_nets = 1000
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 100
num_warmup = 100

[[run]]
key = "erf"
ensemble = "erf"
sigma_b = 1.0
order = 2
"""


def _quiet(*_args):
    pass


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    preset = study_from_text(STUDY)
    out = tmp_path_factory.mktemp("second_order")
    result = reproduce(preset, out, progress=False, log=_quiet)
    return preset, out, result


def test_the_second_order_stage_runs_beside_the_first_order_ones(study):
    preset, out, result = study
    names = [s.name for s in stages(preset)]
    assert names == ["sample_erf", "exact_erf", "fit_erf", "infer_erf", "flow_erf",
                     "second_order_erf", "report"]
    for name in ("posterior2_erf.nc", "beta2_erf.nc", "sixpoint_erf.nc",
                 "figures/connected_six_point.png"):
        assert (out / name).stat().st_size > 0
    assert result.status["second_order_erf"] == "ran"
    again = reproduce(preset, out, progress=False, log=_quiet)
    assert set(again.status.values()) == {"skipped"}


def test_the_report_states_the_stored_second_order_numbers(study):
    from nngp_ppl.theory.exact import exact_cumulant_tuples

    preset, out, _ = study
    summary = json.loads((out / "summary.json").read_text())
    so = summary["runs"]["erf"]["second_order"]
    assert so["models"] == ["gp", "lambda", "lambda+kappa", "lambda@2", "lambda+kappa@2"]
    six = so["six_point"]
    run = preset.runs()[0]
    for i, width in enumerate(six["widths"]):
        exact = exact_cumulant_tuples(run.net(), run.inputs(), width, 6)
        got = six["rms"][i][six["sources"].index("exact")]
        np.testing.assert_allclose(got, np.linalg.norm(exact) / np.sqrt(exact.size),
                                   rtol=1e-10)
    report = (out / "report.md").read_text()
    assert "## 5b. Second order" in report and "connected_six_point.png" in report
