"""A study run with non-zero means: its centred stages, the exact centred target, the report.

An Erf-net with μ_W = 0.8, μ_b = 0.3 breaks f -> -f, so ``reproduce`` fits it centred
(physics.md §6d): point fit, posterior of (g₃, λ) (the default basis of a run with means),
β-functions, and the exact centred target B(Λ) r of the exact finite-width moments. A
zero-mean Erf-net stands beside it, so the report has its even-coupling sections too (a study
of runs with means alone: tests/test_means_only_study.py).

Physics against physics: the stored target is recomputed here from the exact oracle through
the public centred API (:func:`nngp_ppl.inference.centred.build_theory`); the posterior's
99.9% interval of each coupling must hold it (a 3.3-sd band: the fixed seed's z-scores lie
well inside); the report's containment count is recounted from the stored draws and target.
Size: 2·10⁴ networks at one width, 3 inputs, one cutoff, 2 chains × 100 draws; the study
takes about a minute of CPU with a cold compilation cache (its centred posterior ranks seven
nested bases, whose design columns are compiled once and shared), so the tests that run it
are marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import xarray as xr
from centred_study import INPUTS, STUDY

from nngp_ppl import NNGPInputError
from nngp_ppl.study.manifest import load_manifest, stage_key, up_to_date
from nngp_ppl.study.spec import ODD_ORDERS, plan_dict, study_from_text
from nngp_ppl.study.stages import reproduce, stages

CENTRED_STAGES = ["sample_mean", "symmetry_mean", "fit_mean", "infer_mean", "flow_mean",
                  "target_mean"]


@pytest.fixture(scope="module")
def study(centred_study):
    """The session's run of :data:`centred_study.STUDY` (conftest.py)."""
    return centred_study


def test_a_run_with_means_gets_the_centred_stages_and_its_basis():
    preset = study_from_text(STUDY)
    sym, mean = preset.runs()
    assert not sym.centred and mean.centred and mean.orders == ODD_ORDERS
    assert mean.basis == ("g3", "lambda")  # f -> -f broken: the recipe keeps g3
    assert [s.name for s in stages(preset) if s.name.endswith("_mean")] == CENTRED_STAGES
    entry = plan_dict(preset)["symmetry_runs"][0]
    assert entry["centred"] and entry["basis"] == ["g3", "lambda"]
    assert entry["files"]["target"] == "target_mean.json"
    assert entry["centred_oracle"]["available"]
    # A declared z2 prunes the odd couplings, as for a zero-mean run (its test then
    # rejects the declaration and warns: tests/test_symmetry_study.py).
    pruned = study_from_text(STUDY.replace("[run.params]", 'symmetries = ["z2"]\n[run.params]'))
    assert pruned.runs()[1].basis == ("lambda",)
    # A declared basis wins, checked as for any run.
    declared = STUDY.replace("[run.params]", "[run.infer]\nmax_dimension = 6\n[run.params]")
    assert study_from_text(declared).runs()[1].basis == ("g3", "lambda", "g5", "kappa")
    with pytest.raises(NNGPInputError, match=r"\(mean\): order = 2: a run with non-zero "
                                             r"means .* order 1 only"):
        study_from_text(STUDY.replace("[run.params]", "order = 2\n[run.params]"), "cfg")
    # The cutoffs are checked against the inputs of the centred run too.
    wide = STUDY.replace("infer_cutoffs = [10]", "infer_cutoffs = [2]").replace(
        f'key = "mean"\nensemble = "erf"\nsigma_b = 1.0\ninputs = {INPUTS}',
        'key = "mean"\nensemble = "erf"\nsigma_b = 1.0\ninputs = [-3.0, 0.2, 3.0]')
    with pytest.raises(NNGPInputError, match=r"infer_cutoffs.*run 'mean'"):
        study_from_text(wide, "cfg")


@pytest.mark.slow
def test_the_centred_posterior_holds_g3_and_lambda_and_the_exact_target(study):
    from nngp_ppl.inference import centred

    preset, out, result = study
    assert all(result.status[s] == "ran" for s in CENTRED_STAGES)
    dt = xr.open_datatree(out / "posterior_mean.nc", engine="h5netcdf").load()
    assert int(dt.attrs["centred"]) == 1
    assert json.loads(dt.attrs["couplings"]) == ["g3", "lambda"]
    fit = xr.open_dataset(out / "fit_mean.nc", engine="h5netcdf").load()
    assert int(fit.attrs["centred"]) == 1 and list(fit["coupling"].values) == ["g3", "lambda"]
    # The exact target, recomputed from the oracle through the public centred API.
    run = preset.runs()[1]
    th = centred.build_theory(run.net(), run.inputs(), ("g3", "lambda"), max_cutoff=10.0)
    exact = th.estimator((10.0,)).couplings(th.exact_deviation(5))[0]
    stored = json.loads((out / "target_mean.json").read_text())
    assert stored["widths"] == [5] and stored["cutoffs"] == [10.0]
    np.testing.assert_allclose(stored["target"][0][0], exact, rtol=1e-10, atol=0)
    assert np.all(np.abs(exact) > 0)  # means: g3's target is not the symmetric 0
    for c, name in enumerate(("g3", "lambda")):
        draws = dt["posterior"][name].values.reshape(-1)
        lo, hi = np.quantile(draws, [0.0005, 0.9995])
        assert lo <= exact[c] <= hi, (name, lo, exact[c], hi)


@pytest.mark.slow
def test_the_report_counts_the_intervals_that_hold_the_exact_target(study):
    """The containment count of the summary and the report, recounted from the stored
    draws and the stored target; the odd coupling g3 in the section's basis table."""
    _, out, _ = study
    dt = xr.open_datatree(out / "posterior_mean.nc", engine="h5netcdf").load()
    target = np.asarray(json.loads((out / "target_mean.json").read_text())["target"])
    held, rows = 0, {}
    for c, name in enumerate(("g3", "lambda")):
        draws = dt["posterior"][name].values.reshape(-1)
        lo, hi = np.quantile(draws, [0.05, 0.95])
        held += int(lo <= target[0, 0, c] <= hi)
        rows[name] = (lo, hi)
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["symmetry_runs"]["mean"]["centred"]
    assert (entry["exact_inside90"], entry["compared"]) == (held, 2)
    for c, (name, (lo, hi)) in enumerate(rows.items()):
        e = entry["couplings"][name]
        np.testing.assert_allclose([e["q05"][0][0], e["q95"][0][0]], [lo, hi], rtol=1e-12)
        assert e["exact_inside90"] == [[bool(lo <= target[0, 0, c] <= hi)]]
    assert entry["couplings"]["g3"]["exact"] == [[target[0, 0, 0]]]
    report = (out / "report.md").read_text()
    section = report.split("## 5c. Symmetry and operator basis")[1].split("\n## ")[0]
    assert f"hold the exact target in {held} of 2 (coupling, width, cutoff)" in section
    assert "### Centred couplings of the runs with non-zero means" in section
    assert "exact comparison unavailable" not in section
    # g3 with its 90% interval, in the basis part (odd couplings) and in the centred table.
    lo, hi = rows["g3"]
    cell = f"[{lo:.3g}, {hi:.3g}]"
    assert section.count(f"| g₃ | {entry['couplings']['g3']['mean'][0][0]:.3g} |") == 1
    assert section.count(cell) == 2
    assert f"| {target[0, 0, 0]:.3g} |" in section


@pytest.mark.slow
def test_a_rerun_reruns_nothing_and_a_change_reaches_exactly_its_stages(study, tmp_path):
    preset, shared, _ = study
    out = shutil.copytree(shared, tmp_path / "study")  # the session's copy stays as it was
    again = reproduce(preset, out, progress=False, log=lambda _: None)
    assert set(again.status.values()) == {"skipped"}
    records = load_manifest(out, lambda _: None)["stages"]

    def reached(changed):
        return [s.name for s in stages(changed) if not up_to_date(
            s, out, records.get(s.name), stage_key(s, out))]

    # The fit cutoffs reach the exact summary and both fits (the centred one too); the
    # posterior cutoffs both posteriors, and then (through the posterior file) the flows
    # and the target; the report reads every setting.
    assert reached(dataclasses.replace(preset, fit_cutoffs=(10.0, 100.0))) == [
        "exact_sym", "fit_sym", "fit_mean", "report"]
    assert reached(dataclasses.replace(preset, infer_cutoffs=(10.0, 100.0))) == [
        "infer_sym", "infer_mean", "report"]
    # A deleted target is recomputed byte for byte, so nothing after it reruns.
    digest = records["target_mean"]["outputs"]["target_mean.json"]
    (out / "target_mean.json").unlink()
    result = reproduce(preset, out, progress=False, log=lambda _: None)
    assert [s for s, v in result.status.items() if v == "ran"] == ["target_mean"]
    assert load_manifest(out, lambda _: None)["stages"]["target_mean"]["outputs"][
        "target_mean.json"] == digest
