"""``nngp-ppl reproduce``: stages, resume, report, and the physics the report states.

The shared tiny study (tests/tiny_study.py, the session's ``tiny_study`` fixture: a ReLU-net
with σ_b = 0 at two widths, an erf MLP without an oracle and a second-order Erf-net, few
networks, short NUTS runs) runs once into a directory no test touches; each test gets its
own copy of it (``study``), so a test that deletes or changes files cannot change what
another one sees, whatever the order they run in. The tests rerun it in ways that must
skip, resume or redo exactly the right stages. Physics checks use closed forms: ReLU-net
with σ_b = 0 on positive inputs is degenerate (f(x) = x·S), so every per-tuple λ_t is the
same and runs exactly as Λ^-5 (physics.md §9), and the exact connected 4-pt function falls
exactly as 1/N.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from tiny_study import TINY

from nngp_ppl import CorrelatorStats, NNGPInputError
from nngp_ppl._lock import exclusive_lock
from nngp_ppl.cli.main import main
from nngp_ppl.inference import eft
from nngp_ppl.sampling.stats import normalised_deviation
from nngp_ppl.study.manifest import sha256_file
from nngp_ppl.study.report import FIGURES
from nngp_ppl.study.spec import PRESETS, check_preset_overrides, part_file
from nngp_ppl.study.stages import reproduce, stages
from nngp_ppl.theory.wick import gp_correlator_tuples

STAGES = ["sample_relu", "sample_mlp", "sample_erf", "exact_relu", "exact_erf", "fit_relu",
          "fit_mlp", "fit_erf", "infer_relu", "infer_mlp", "infer_erf", "flow_relu",
          "flow_mlp", "flow_erf", "second_order_erf", "report"]


def _quiet(*_args):
    pass


@pytest.fixture
def study(tiny_study, tmp_path):
    """A private copy of the study (modification times kept, as a copy by hand would)."""
    _, src, result = tiny_study
    out = tmp_path / "study"
    shutil.copytree(src, out)
    return out, dataclasses.replace(result, out=out)


def blank_figures(monkeypatch) -> list:
    """Make every figure of the report a blank one; returns the list that gains an entry per
    figure drawn. For the tests whose subject is which stages run or a progress bar, not the
    figures: every figure is drawn from the stored files when the shared study is built and
    checked there (test_first_run_writes_every_stage_and_the_report, and
    test_report_no_oracle), and drawing and rendering them all takes ~7 CPU s a time."""
    import time

    import matplotlib.pyplot as plt

    from nngp_ppl.study.report import figures

    drawn = []

    def blank(*_args, **_kw):
        drawn.append(1)
        time.sleep(0.15)  # a bar redraws at most every 0.1 s (tqdm's mininterval)
        return plt.figure(figsize=(1, 1))

    for name in ("fig_deviation", "fig_connected", "fig_lambda", "fig_beta",
                 "fig_rg_dimension", "fig_six_point", "fig_posterior_vs_point"):
        monkeypatch.setattr(figures, name, blank)
    monkeypatch.setattr(figures.second_order, "figure", blank)
    monkeypatch.setattr(figures, "_save", _closing(figures._save))
    return drawn


def _closing(save):
    import matplotlib.pyplot as plt

    def closing(fig, path):
        try:
            return save(fig, path)
        finally:
            plt.close(fig)

    return closing


def _mtimes(out):
    return {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_first_run_writes_every_stage_and_the_report(study):
    out, result = study
    assert list(result.status) == STAGES
    assert set(result.status.values()) == {"ran"}
    for name in ("run_relu.nc", "exact_relu.nc", "fit_relu.nc", "posterior_relu.nc",
                 "beta_relu.nc", "report.md", "summary.json", "manifest.json"):
        assert (out / name).is_file(), name
    # Two parts of 1000 networks per width, merged into 2000.
    stats = CorrelatorStats.from_netcdf(out / "run_relu.nc")
    assert stats.widths == (2, 20)
    assert all(stats.network_ranges(w) == ((0, 2000),) for w in stats.widths)
    assert (out / part_file("relu", 20, 1000, 2000)).is_file()
    from matplotlib.image import imread

    report = (out / "report.md").read_text()
    for fig in FIGURES:
        img = imread(out / "figures" / fig)
        assert img.ndim == 3 and min(img.shape[:2]) > 200, fig
        assert f"figures/{fig}" in report
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_summary_numbers_are_the_files_numbers(study):
    out, _ = study
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"]["relu"]
    stats = CorrelatorStats.from_netcdf(out / "run_relu.nc")
    gp = gp_correlator_tuples(np.asarray(stats.net.kernel(stats.X)), 4)
    for i, w in enumerate(stats.widths):
        assert run["deviation"]["m4_sampled"][i] == pytest.approx(
            normalised_deviation(stats.correlator_tuples(4, w), gp), rel=1e-12)
    fit = eft.load_fit(out / "fit_relu.nc", out / "run_relu.nc")
    np.testing.assert_allclose(run["fit"]["full"]["lambda_mean"], fit["lambda_mean"].values)
    report = (out / "report.md").read_text()
    gate = run["posterior"]["gate"]
    assert ("PASSED" if gate["passed"] else "FAILED") in report
    assert summary["conventions"]["sign"] in report.replace("**sign**: ", "")


def test_the_degenerate_relu_net_runs_as_lambda_to_the_minus_five(study):
    out, _ = study
    run = json.loads((out / "summary.json").read_text())["runs"]["relu"]
    fit = eft.load_fit(out / "fit_relu.nc")
    lt = fit["lambda_tuple"].values  # (width, cutoff, tuple)
    # f(x) = x S: every tuple measures the same λ at every cutoff, up to the float32
    # round-off of the forward pass (relative ~1e-7 per network output).
    np.testing.assert_allclose(lt, np.broadcast_to(lt[..., :1], lt.shape), rtol=1e-5)
    # ... and λ ∝ Λ^-5 exactly (K(x, y) = 0 for y < 0, ∝ x y for y > 0).
    np.testing.assert_allclose(run["fit"]["full"]["gamma_fit"], [5.0, 5.0], atol=1e-8)
    assert run["fit"]["full"]["gamma_analytic"] == 5.0
    gamma = run["beta"]["gamma_median"][0]
    assert gamma == pytest.approx(5.0, abs=1e-6)
    # The exact connected 4-pt function is exactly N κ4(neuron) (σ_W²/N)²: slope -1.
    assert run["exact_curve"]["c4_slope"] == pytest.approx(-1.0, abs=1e-9)


def test_rerun_skips_everything_and_touches_nothing(study):
    out, _ = study
    before = _mtimes(out)
    result = reproduce(TINY, out, progress=False, log=_quiet)
    assert set(result.status.values()) == {"skipped"}
    assert _mtimes(out) == before


def test_copied_study_is_up_to_date_elsewhere(study, tmp_path):
    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = reproduce(TINY, copy, progress=False, log=_quiet)
    assert set(result.status.values()) == {"skipped"}


def test_lost_run_file_is_rebuilt_from_its_parts_and_nothing_downstream_reruns(study):
    out, _ = study
    digest = sha256_file(out / "run_relu.nc")
    parts = sorted((out / "parts" / "relu").rglob("*.nc"))
    part_times = {p: p.stat().st_mtime_ns for p in parts}
    (out / "run_relu.nc").unlink()
    lines = []
    result = reproduce(TINY, out, progress=False, log=lines.append)
    assert result.status["sample_relu"] == "ran"
    assert sum(1 for line in lines if "reusing" in line) == len(parts) == 4
    assert {p: p.stat().st_mtime_ns for p in parts} == part_times
    # The merged sums are the same bytes, so every later stage is still up to date.
    assert sha256_file(out / "run_relu.nc") == digest
    assert [s for s, v in result.status.items() if v == "ran"] == ["sample_relu"]


def test_interrupted_sampling_resamples_only_the_broken_part(study):
    out, _ = study
    digest = sha256_file(out / "run_relu.nc")
    broken = out / part_file("relu", 20, 1000, 2000)
    broken.write_bytes(b"half a file")  # as left by a crash mid-write of a foreign tool
    (out / "run_relu.nc").unlink()
    lines = []
    result = reproduce(TINY, out, progress=False, log=lines.append)
    assert sum(1 for line in lines if "reusing" in line) == 3
    assert CorrelatorStats.from_netcdf(broken).network_ranges(20) == ((1000, 2000),)
    # Same seed and network indices: the resampled part gives the same merged sums.
    assert sha256_file(out / "run_relu.nc") == digest
    assert [s for s, v in result.status.items() if v == "ran"] == ["sample_relu"]


def test_a_deleted_fit_is_refitted_identically(study, monkeypatch):
    out, _ = study
    drawn = blank_figures(monkeypatch)  # the refit is the subject, not the figures
    # A fit file records the absolute path of its run file (eft.write_fit), so the first
    # refit in this copy differs from the original's in that attribute and reaches the
    # report; from then on a refit here must reproduce the file byte for byte.
    (out / "fit_relu.nc").unlink()
    reproduce(TINY, out, progress=False, log=_quiet)
    digest = sha256_file(out / "fit_relu.nc")
    (out / "fit_relu.nc").unlink()
    result = reproduce(TINY, out, progress=False, log=_quiet)
    assert [s for s, v in result.status.items() if v == "ran"] == ["fit_relu"]
    assert sha256_file(out / "fit_relu.nc") == digest  # so the report stays up to date
    assert len(drawn) == len(FIGURES) + 1  # the first refit's report, not the second's


def test_changed_cutoffs_rerun_exactly_the_stages_they_reach(study, monkeypatch):
    out, _ = study
    drawn = blank_figures(monkeypatch)  # which stages run is the subject, not the figures
    changed = dataclasses.replace(TINY, fit_cutoffs=(10.0, 100.0, 1000.0, 1e4))
    result = reproduce(changed, out, progress=False, log=_quiet)
    # The fit cutoffs reach the exact summaries and the fits (of every run), and the report;
    # the posteriors, flows and the second-order stage use the posterior cutoffs only.
    assert [s for s, v in result.status.items() if v == "ran"] == [
        "exact_relu", "exact_erf", "fit_relu", "fit_mlp", "fit_erf", "report"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["relu"]["fit"]["full"]["cutoffs"] == [10.0, 100.0, 1000.0, 1e4]
    assert len(drawn) == len(FIGURES) + 1  # the report stage drew its figures again


def test_redo_and_dry_run(study, tmp_path):
    out, _ = study
    result = reproduce(TINY, out, progress=False, log=_quiet, dry_run=True, redo="infer")
    assert result.status["infer_relu"] == "would run"
    assert result.status["sample_relu"] == "skipped"
    fresh = tmp_path / "never"
    result = reproduce(TINY, fresh, progress=False, log=_quiet, dry_run=True)
    assert set(result.status.values()) == {"would run"} and not fresh.exists()
    # A changed setting changes the keys of the stages it reaches.
    other = dataclasses.replace(TINY, seed=1)
    keys = {s.name: s.params for s in stages(other)}
    assert keys["sample_relu"]["seed"] == 1


def test_preset_and_cli_errors(tmp_path, capsys):
    with pytest.raises(Exception, match="only must name"):
        check_preset_overrides(PRESETS["quick"], only=["tanh"])
    (tmp_path / "file").write_text("x")
    for argv, words in [
        (["reproduce", "--preset", "nope", "--out", str(tmp_path / "a")], "--preset"),
        (["reproduce", "--n-nets", "0", "--out", str(tmp_path / "a")], "--n-nets"),
        (["reproduce", "--only", "tanh", "--out", str(tmp_path / "a")], "--only"),
        (["reproduce", "--out", str(tmp_path / "file")], "directory"),
        (["reproduce", "--redo", "nothing", "--dry-run", "--out", str(tmp_path / "a")],
         "redo"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()


def test_demo_command_dry_run_names_the_quick_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "preset quick -> demo_out/" in text and "would run" in text
    assert not (tmp_path / "demo_out").exists()


def test_paper_preset_is_the_papers_scale():
    p = PRESETS["paper"]
    assert p.n_nets == 1_000_000 and len(p.widths) == 10 and p.rg_dims == (2, 3)
    keys = [r.key for r in p.runs()]
    assert {"erf", "relu", "relu_sb1", "gauss", "gauss_d2", "gauss_d3"} <= set(keys)
    assert len(p.fit_cutoffs) == 21


def test_a_resumed_sampling_stage_keeps_the_warnings_of_the_parts_it_reuses(study):
    # An interruption after the parts were written (Ctrl-C while merging them, or while
    # sampling a later part) is this: the parts are on disk, the run file is not.
    out, _ = study
    before = json.loads((out / "manifest.json").read_text())["stages"]["sample_relu"]
    assert any(w.startswith("HeavyTailWarning") for w in before["warnings"])
    (out / "run_relu.nc").unlink()
    lines = []
    reproduce(TINY, out, progress=False, log=lines.append)
    assert sum(1 for line in lines if "reusing" in line) == 4  # nothing was resampled
    after = json.loads((out / "manifest.json").read_text())["stages"]["sample_relu"]
    assert after["warnings"] == before["warnings"]


def test_a_second_run_into_the_same_directory_is_refused_before_any_work(study, capsys):
    out, _ = study
    before = _mtimes(out)
    with exclusive_lock(out, option="out", directory=True):  # the first run, still going
        with pytest.raises(NNGPInputError, match=r"^out: .* is being written by another"):
            reproduce(TINY, out, redo="all", progress=False, log=_quiet)
        assert main(["reproduce", "--out", str(out), "--only", "relu", "--n-nets", "10"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--out" in err and "another nngp-ppl run" in err
    assert _mtimes(out) == before  # nothing was touched


def test_an_empty_only_is_refused_not_read_as_all(tmp_path, capsys):
    with pytest.raises(NNGPInputError, match="only must name at least one run"):
        check_preset_overrides(PRESETS["quick"], only=[""])
    for value in ("", ",", " "):
        assert main(["reproduce", "--only", value, "--dry-run", "--out",
                     str(tmp_path / "a")]) == 2
        err = capsys.readouterr().err
        assert "--only must name at least one run" in err and "Traceback" not in err


@pytest.mark.parametrize(("change", "match"), [
    ({"progress": "no"}, r"^progress must be True or False, got 'no'"),
    ({"dry_run": "yes"}, r"^dry_run must be True or False"),
    ({"log": "x"}, r"^log must be a function"),
])
def test_reproduce_arguments_are_checked_before_the_directory_is_made(tmp_path, change,
                                                                     match):
    with pytest.raises(NNGPInputError, match=match):
        reproduce(TINY, tmp_path / "new", **{"log": _quiet, **change})
    with pytest.raises(NNGPInputError, match=r"^out must be a directory path"):
        reproduce(TINY, None, log=_quiet)
    assert not (tmp_path / "new").exists()


def _refuse_physics(monkeypatch):
    """Make every function of the theory modules, problem.py and eft.py raise (except the
    fit file's reader), and every ensemble's kernel: the report must not need any of them."""
    import importlib
    import inspect

    from patching import patch_everywhere

    from nngp_ppl.ensembles import core, networks

    readers = {"load_fit", "file_identity"}
    names = ["nngp_ppl.inference.eft", "nngp_ppl.inference.problem", "nngp_ppl.sampling.stats",
             "nngp_ppl.ensembles.quadrature"] + [
        f"nngp_ppl.theory.{m}" for m in ("diagrams", "exact", "lattice", "second_order", "wick")]

    def refuse(*_args, **_kwargs):
        raise AssertionError("the report called the theory")

    patched = 0
    for name in names:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (inspect.isfunction(obj) and obj.__module__ == name and attr not in readers
                    and not (name == "nngp_ppl.sampling.stats" and attr[0].isupper())):
                # every binding: the report's modules import these by name
                patched += patch_everywhere(monkeypatch, module, attr, refuse)
    for module in (core, networks):
        for obj in vars(module).values():
            if inspect.isclass(obj) and "kernel" in vars(obj):
                monkeypatch.setattr(obj, "kernel", refuse)
                patched += 1
    return patched


def rewrite_report_without_physics(out, plan, monkeypatch) -> tuple[dict, dict]:
    """Delete report.md, make every theory function and kernel raise, write the report
    again from the stored files; returns the summaries (before, after) without the fields
    that change between writes (creation time, machine)."""
    from nngp_ppl.study.report import write_report
    from nngp_ppl.theory import wick

    before = json.loads((out / "summary.json").read_text())
    (out / "report.md").unlink()
    assert _refuse_physics(monkeypatch) > 50
    with pytest.raises(AssertionError, match="called the theory"):
        wick.gp_correlator_tuples(np.eye(2), 4)  # the patch is in force
    write_report(out, plan, timings=before["timings_s"], warnings=before["warnings"])
    after = json.loads((out / "summary.json").read_text())
    for key in ("created", "machine"):
        before.pop(key), after.pop(key)
    return before, after


def test_the_report_reads_stored_results_and_computes_no_physics(study, monkeypatch):
    from nngp_ppl.study.spec import plan_dict

    out, _ = study
    before, after = rewrite_report_without_physics(out, plan_dict(TINY), monkeypatch)
    assert after == before
    report = (out / "report.md").read_text()
    assert "## 6. Diagnostics gate" in report and "figures/six_point.png" in report
    # The settings sentences come from the plan: the preset's paper inputs, d_in = 1.
    assert ("Ensembles and inputs (inputs: the authors' (physics.md §9) for relu, erf; the "
            "study's own for mlp):") in report
    assert "(d_in = 1)" in report.split("\n")[2]
    # The study's MLP run has no exact oracle: its report, rewritten without the theory,
    # still says so (this test serves tests/test_report_no_oracle.py too: same study).
    assert "exact comparison unavailable" in report


@pytest.mark.parametrize("name, change", [
    ("exact_relu.nc", ("m4_slope", -3.0)),
    ("fit_relu.nc", ("m4_sampled", 0.5)),
])
def test_the_report_refuses_an_edited_stored_number(study, name, change):
    """The numbers the report reads instead of recomputing are checksummed with their file:
    one edited value is refused, not reported."""
    import h5netcdf

    from nngp_ppl.study.report import write_report
    from nngp_ppl.study.spec import plan_dict

    out, _ = study
    var, value = change
    with h5netcdf.File(out / name, "a") as f:
        f[var][...] = value
    with pytest.raises(NNGPInputError, match="damaged or edited"):
        write_report(out, plan_dict(TINY))


def test_the_elpd_table_keeps_the_basis_the_nested_rule_keeps(tiny_study):
    """The report's ELPD table names, per width and cutoff, the basis the nested rule keeps
    (choose_nested_basis on the pointwise PSIS-LOO values, recomputed here from each
    posterior file with az.loo's terms through model_loo) beside the highest ELPD."""
    import xarray as xr

    from nngp_ppl.inference.compare import model_loo
    from nngp_ppl.inference.evidence import choose_nested_basis
    from nngp_ppl.study.spec import posterior_file

    _, out, _ = tiny_study
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    checked = 0
    for key, run in summary["runs"].items():
        po = run["posterior"]
        if "elpd" not in po:
            continue
        dt = xr.open_datatree(out / posterior_file(key), engine="h5netcdf").load()
        for i, w in enumerate(po["widths"]):
            for j, c in enumerate(po["cutoffs"]):
                pointwise = {m: np.asarray(model_loo(dt, width=w, cutoff=c, model=m).elpd_i,
                                           dtype=np.float64).ravel()
                             for m in po["elpd_models"]}
                kept = choose_nested_basis(pointwise)[0]
                highest = po["elpd_models"][int(np.nanargmax(po["elpd"][i][j]))]
                assert po["elpd_kept"][i][j] == kept
                rows = [r for r in report.splitlines()
                        if r.startswith(f"| {run['label']} | {w} | ")
                        and r.rstrip().endswith(f"| {kept} | {highest} |")]
                assert rows, (key, w, c, kept, highest)
                checked += 1
    assert checked >= 4  # the ReLU, MLP and Erf runs' posteriors
