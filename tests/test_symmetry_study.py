"""A study that declares f -> -f: odd orders sampled, the parity test, its warning, the report.

One tiny Erf-net study runs once: a symmetric run (zero means) and a run with output-bias
mean mu_b = 0.3, both declaring ``symmetries = ["z2"]``. Physics: with mu_b = 0.3 the exact
1-pt function is mu_b itself (:func:`nngp_ppl.theory.exact.exact_correlator_tuples`, checked
here against 0.3), so with 1,500 networks at N = 5 its estimate is about
0.3 / sqrt(Var f / 1500) ~ 10 standard errors from zero and the test must reject (p far
below 1e-6, a bound that cannot be reached by chance at this seed); the symmetric run's test
is a fixed-seed draw under H0, which at the 5% level is consistent with probability 0.95
(seed 0 is). The declared z2 of the mu_b run must raise a SymmetryWarning, logged by the
pipeline, stored in the manifest and stated in the report's section next to its verdict.
Size: 1,500 networks at one width, 2 chains x 60 NUTS draws per posterior (the posteriors are
not read as physics here); the study takes ~100 s on the shared 2-core machine, so the tests
that run it are marked slow.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nngp_ppl import NNGPInputError
from nngp_ppl.study.spec import ODD_ORDERS, ORDERS, plan_dict, shipped_study, study_from_text
from nngp_ppl.study.stages import reproduce, stages

INPUTS = [-1.0, 0.2, 1.0]
STUDY = f"""
name = "symmetry_tiny"
n_nets = 1500
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 60
num_warmup = 60
symmetries = ["z2"]

[[run]]
key = "sym"
ensemble = "erf"
sigma_b = 1.0
inputs = {INPUTS}

[[run]]
key = "shift"
ensemble = "erf"
sigma_b = 1.0
inputs = {INPUTS}
[run.params]
mu_b = 0.3
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    preset = study_from_text(STUDY)
    out = tmp_path_factory.mktemp("symmetry")
    lines = []
    result = reproduce(preset, out, progress=False, log=lines.append)
    return preset, out, result, lines


def test_the_symmetry_keys_default_to_nothing_declared_and_even_orders():
    for name in ("quick", "paper"):
        for run in shipped_study(name).runs():
            assert run.symmetries == () and not run.odd_orders and run.orders == ORDERS
        assert not any(s.name.startswith("symmetry_") for s in stages(name))
    preset = study_from_text(STUDY.replace('symmetries = ["z2"]', "odd_orders = true"))
    assert all(r.symmetries == () and r.orders == ODD_ORDERS for r in preset.runs())


@pytest.mark.parametrize("line, message", [
    ('symmetries = ["parity"]', r"cfg: symmetries must be a list of distinct symmetries"),
    ('symmetries = "z2"', r"cfg: symmetries must be a list"),
    ('symmetries = ["z2", "z2"]', r"cfg: symmetries must be a list of distinct"),
    ("odd_orders = 1", r"cfg: odd_orders must be true or false"),
])
def test_bad_symmetry_keys_are_refused_naming_the_file_and_key(line, message):
    text = STUDY.replace('symmetries = ["z2"]', line)
    with pytest.raises(NNGPInputError, match=message):
        study_from_text(text, "cfg")
    run_level = STUDY.replace('symmetries = ["z2"]', "").replace(
        'key = "sym"', f'key = "sym"\n{line}')
    with pytest.raises(NNGPInputError, match=r"cfg: \[\[run\]\] 1 \(sym\): "
                       + message.removeprefix("cfg: ")):
        study_from_text(run_level, "cfg")


def test_a_run_level_declaration_overrides_the_study(tmp_path):
    text = STUDY.replace('key = "sym"', 'key = "sym"\nsymmetries = []')
    sym, shift = study_from_text(text).runs()
    assert sym.symmetries == () and sym.orders == ORDERS and not sym.tests_symmetry
    assert shift.symmetries == ("z2",) and shift.orders == ODD_ORDERS


@pytest.mark.slow
def test_the_verdicts_and_the_warning_for_the_rejected_declaration(study):
    from nngp_ppl.theory.exact import exact_correlator_tuples

    preset, out, result, lines = study
    assert result.status["symmetry_sym"] == result.status["symmetry_shift"] == "ran"
    sym = json.loads((out / "symmetry_sym.json").read_text())
    shift = json.loads((out / "symmetry_shift.json").read_text())
    (s,), (t,) = sym["widths"], shift["widths"]
    assert not s["reject"] and s["p_value"] > 0.05 and not sym["declared_rejected"]
    assert t["reject"] and t["p_value"] < 1e-6 and shift["declared_rejected"]
    # Exact odd correlators: zero for zero means; for mu_b = 0.3 the 1-pt function is mu_b.
    assert s["odd"]["1"]["exact"] == [0.0] * 3 and s["odd"]["3"]["exact"] == [0.0] * 10
    run = preset.runs()[1]
    np.testing.assert_allclose(t["odd"]["1"]["exact"], 0.3, rtol=1e-12)
    np.testing.assert_allclose(
        t["odd"]["3"]["exact"], exact_correlator_tuples(run.net(), run.inputs(), 5, 3),
        rtol=1e-12)
    # The sampled 1-pt function: ~0.3, within 4.5 standard errors of the exact value.
    assert t["odd"]["1"]["max_abs_z_exact"] < 4.5 and t["odd"]["1"]["max_abs_z_zero"] > 5
    warned = [x for x in lines if "SymmetryWarning" in x]
    assert len(warned) == 1 and "DECLARED SYMMETRY REJECTED" in warned[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert any("SymmetryWarning" in w for w in manifest["stages"]["symmetry_shift"]["warnings"])
    assert not manifest["stages"]["symmetry_sym"]["warnings"]


@pytest.mark.slow
def test_the_report_section_states_the_stored_verdicts(study):
    _, out, _, _ = study
    report = (out / "report.md").read_text()
    section = report.split("## 5c. Symmetry and operator basis")[1].split("\n## ")[0]
    shift = json.loads((out / "symmetry_shift.json").read_text())["widths"][0]
    assert f"{shift['p_value']:.3g}" in section and f"{shift['statistic']:.3g}" in section
    assert "**z2 declared: REJECTED by the data**" in section
    assert "z2 declared: consistent" in section
    assert ("Warning: erf-net (σ_b=1, mu_b=0.3) declares z2, but the data reject f -> -f "
            "at N = 5") in section
    assert "| erf-net (σ_b=1) | 5 | 1500 | 13 |" in section  # the symmetric run's row
    # The symmetric run's posterior (basis pruned by its declared z2) ranks its nested
    # bases: the ELPD table is in the section, not the "not run" sentence.
    assert "ELPD per model" in section and "| λ + κ |" in section
    assert "was not run" not in section
    assert "odd_correlators.png" in section
    assert (out / "figures" / "odd_correlators.png").stat().st_size > 0
    again = reproduce(study[0], out, progress=False, log=lambda _: None)
    assert set(again.status.values()) == {"skipped"}


@pytest.mark.slow
def test_the_symmetry_section_computes_no_physics(study, monkeypatch, tmp_path):
    from test_reproduce import rewrite_report_without_physics

    preset, src, _, _ = study
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    before, after = rewrite_report_without_physics(out, plan_dict(preset), monkeypatch)
    assert after == before
    assert "## 5c. Symmetry and operator basis" in (out / "report.md").read_text()


def test_a_study_of_non_zero_mean_runs_alone_gets_their_stages():
    # Once refused (the report's even-coupling sections had no run to show); now the report
    # leaves those sections out and says why (tests/test_means_only_study.py).
    text = STUDY.split("[[run]]")[0] + "[[run]]" + STUDY.split("[[run]]")[2]
    assert [s.name for s in stages(study_from_text(text, "cfg"))] == [
        "sample_shift", "symmetry_shift", "fit_shift", "infer_shift", "flow_shift",
        "target_shift", "report"]
    # Its stages: no exact summary on a non-zero mean; fit, infer and flow centred, and the
    # exact centred target of its posterior (Erf-net has the oracle with means).
    names = [s.name for s in stages(study_from_text(STUDY))]
    assert names == ["sample_sym", "sample_shift", "symmetry_sym", "symmetry_shift",
                     "exact_sym", "fit_sym", "fit_shift", "infer_sym", "infer_shift",
                     "flow_sym", "flow_shift", "target_shift", "report"]


def test_the_cli_refuses_a_bad_symmetry_key_before_any_work(tmp_path, capsys):
    from nngp_ppl.cli.main import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(STUDY.replace('symmetries = ["z2"]', 'symmetries = ["Z2"]'))
    out = tmp_path / "out"
    assert main(["reproduce", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: symmetries must be a list of distinct symmetries" in err
    assert "Traceback" not in err and not out.exists()


def test_odd_orders_without_a_declaration_test_but_do_not_warn(tmp_path):
    """``odd_orders = true`` alone: the stage stores the rejection of the mu_b = 0.3 run (its
    exact 1-pt function is 0.3, ~10 s.e. from zero at 1,500 networks) and warns nothing,
    since no symmetry was declared."""
    import warnings

    from nngp_ppl.sampling.sampler import sample_correlators
    from nngp_ppl.study.spec import run_file
    from nngp_ppl.study.stages import _symmetry_action

    text = STUDY.replace('symmetries = ["z2"]', "odd_orders = true")
    run = study_from_text(text).runs()[1]
    assert run.symmetries == () and run.tests_symmetry
    stats = sample_correlators(run.net(), run.inputs(), [5], 1500, orders=run.orders,
                               seed=0, progress=False)
    stats.to_netcdf(tmp_path / run_file(run.key))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _symmetry_action(run)(tmp_path)
    result = json.loads((tmp_path / "symmetry_shift.json").read_text())
    assert result["declared"] == [] and not result["declared_rejected"]
    assert result["widths"][0]["reject"] and result["widths"][0]["p_value"] < 1e-6
