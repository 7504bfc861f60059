"""The operator basis of a study (``[infer]``: couplings, or max_dimension and symmetry),
the pipeline's posterior in that basis, and the report's "Symmetry and operator basis"
ELPD table, nested comparisons and odd couplings (issue 17, part 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nngp_ppl import NNGPInputError
from nngp_ppl.study.report import basis as rbasis
from nngp_ppl.study.report.basis_section import basis_lines
from nngp_ppl.study.report.markdown import FAIL
from nngp_ppl.study.spec import ODD_ORDERS, ORDERS, study_from_text
from nngp_ppl.study.stages import stages

INPUTS = [-1.0, 0.2, 1.0]
BASE = """
name = "basis_tiny"
n_nets = 1500
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 60
num_warmup = 60
"""
RUN = f"""
[[run]]
key = "sym"
ensemble = "erf"
sigma_b = 1.0
inputs = {INPUTS}
"""


def _infer_stage(preset):
    return next(s for s in stages(preset, log=lambda *_: None) if s.name == "infer_sym")


def test_study_infer_table_sets_each_runs_basis():
    run = study_from_text(BASE + RUN).runs()[0]
    assert run.basis == ("lambda",) and run.orders == ORDERS
    text = BASE + "[infer]\nmax_dimension = 6\n" + RUN
    run = study_from_text(text).runs()[0]
    assert run.basis == ("g3", "lambda", "g5", "kappa")
    assert run.orders == ODD_ORDERS and run.tests_symmetry  # odd couplings need odd data
    # the declared symmetry is the default of `symmetry`, and prunes the odd operators
    run = study_from_text('symmetries = ["z2"]\n' + text).runs()[0]
    assert run.basis == ("lambda", "kappa")
    run = study_from_text('symmetries = ["z2"]\n' + text.replace(
        "max_dimension = 6", 'max_dimension = 6\nsymmetry = "none"')).runs()[0]
    assert run.basis == ("g3", "lambda", "g5", "kappa")
    # a run's own table wins; couplings in any order, validated and sorted by size
    run = study_from_text(text + '[run.infer]\ncouplings = ["lambda", "g3"]\n').runs()[0]
    assert run.basis == ("g3", "lambda")
    stage = _infer_stage(study_from_text(text))
    assert stage.params["couplings"] == ["g3", "lambda", "g5", "kappa"]
    assert _infer_stage(study_from_text(BASE + RUN)).params["couplings"] == ["lambda"]


@pytest.mark.parametrize("table, match", [
    ("max_dimension = 7", "infer.max_dimension must be an integer in 4..6"),
    ("max_dimension = 4.0", "infer.max_dimension must be an integer 4, 5 or 6"),
    ('max_dimension = 4\nsymmetry = "u1"', "infer.symmetry must be one of"),
    ('couplings = ["kappa"]', "infer.couplings must be lambda"),
    ('couplings = ["g3", "lambda"]\nmax_dimension = 4', "not both"),
    ('couplings = "g3,lambda"', "infer.couplings must be a list"),
    ("dimension = 4", "unknown key 'dimension'"),
    ('symmetry = "z2"', "must give couplings or max_dimension"),
])
def test_study_infer_table_refusals_name_file_and_key(table, match):
    with pytest.raises(NNGPInputError, match=match) as err:
        study_from_text(BASE + f"[infer]\n{table}\n" + RUN, "s.toml")
    assert str(err.value).startswith("s.toml")


def test_declared_symmetry_refuses_odd_couplings():
    text = BASE + RUN + 'symmetries = ["z2"]\n[run.infer]\ncouplings = ["g3", "lambda"]\n'
    with pytest.raises(NNGPInputError, match=r"infer.couplings holds g3, odd under f -> -f"):
        study_from_text(text, "s.toml")


def _summary(prefers_even=True, k_bad=0, holds_zero=True, reject=False, even_higher=None):
    """A stored summary entry (the shape report.basis.summary writes) with one nested
    comparison and one odd coupling."""
    even_higher = prefers_even if even_higher is None else even_higher
    delta = -3.0 if even_higher else 3.0
    table = [{"width": 5, "cutoff": 10.0, "model": m, "label": lab, "elpd": e, "se": 2.0,
              "p_loo": 1.0, "delta": d, "delta_se": 0.5, "best": d == 0.0, "k_max": 0.3,
              "k_bad": k_bad if m == "g3+lambda" else 0, "n": 40}
             for m, lab, e, d in (("gp", "GP", -10.0, -5.0), ("lambda", "λ", -5.0, 0.0),
                                  ("g3+lambda", "g₃ + λ", -8.0, -3.0))]
    nested = [{"width": 5, "cutoff": 10.0, "even": "lambda", "odd": "g3+lambda",
               "even_label": "λ", "odd_label": "g₃ + λ", "delta": delta, "delta_se": 0.5,
               "prefers_even": prefers_even, "even_higher": even_higher}]
    odd = [{"coupling": "g3", "width": 5, "cutoff": 10.0, "mean": 1e-4, "sd": 1e-4,
            "q05": -6e-5 if holds_zero else 2e-5, "q95": 3e-4, "holds_zero": holds_zero}]
    sym = {"widths": [{"width": 5, "reject": reject, "p_value": 1e-9 if reject else 0.4}],
           "basis_comparison": {"fitted": ["g3", "lambda"], "fitted_label": "g₃ + λ",
                                "data_orders": [1, 3, 4, 6], "models": [],
                                "table": table, "nested": nested, "odd": odd}}
    return {"sym": {"label": "erf-net", "symmetry": sym}}


def _table(header, rows):
    return ["| " + " | ".join(header) + " |"] + ["| " + " | ".join(map(str, r)) + " |"
                                                 for r in rows] + [""]


def test_section_states_the_comparison_and_flags_failures():
    good = "\n".join(basis_lines(_summary(), _table, FAIL))
    assert FAIL not in good
    assert ("the evidence keeps the even basis in 1 of 1 comparisons; the even basis has "
            "the higher ELPD in 1") in good
    assert "by more than max(4, 2 s.e.)" in good
    # kept by the threshold although the odd basis has the higher ELPD: said in the cell
    close = "\n".join(basis_lines(_summary(even_higher=False), _table, FAIL))
    assert "keeps the even basis in 1 of 1 comparisons; the even basis has the higher ELPD " \
           "in 0" in close
    assert "higher ELPD with the odd couplings, by less than the threshold" in close
    assert FAIL not in close
    assert "posterior in the basis g₃ + λ, conditioned on the correlators of orders " \
           "[1, 3, 4, 6]" in good
    # odd basis preferred while the parity test is consistent: flagged in the cell
    bad = "\n".join(basis_lines(_summary(prefers_even=False), _table, FAIL))
    assert "in 0 of 1 comparisons" in bad
    assert f"{FAIL} odd couplings preferred although consistent with f -> -f" in bad
    # ... but not where the data reject f -> -f
    ok = "\n".join(basis_lines(_summary(prefers_even=False, reject=True), _table, FAIL))
    assert "odd couplings preferred although" not in ok
    assert f"3/40 {FAIL}" in "\n".join(basis_lines(_summary(k_bad=3), _table, FAIL))
    excl = "\n".join(basis_lines(_summary(holds_zero=False), _table, FAIL))
    assert f"no {FAIL} (the data are consistent with f -> -f)" in excl


@pytest.fixture(scope="module")
def posterior(symmetric_erf_posterior):
    """20 000 symmetric Erf-nets at N = 5 on INPUTS, orders 1..6, basis (g3, lambda): the
    session's basis study's (tests/conftest.py)."""
    return symmetric_erf_posterior[1]


def test_summary_reads_the_stored_elpd_and_the_odd_posterior(posterior):
    s = rbasis._summary(posterior)
    stored = posterior["constant_data"]["elpd"].sel(width=5, cutoff=10.0)
    models = json.loads(posterior.attrs["elpd_models"])
    assert [t["model"] for t in s["table"]] == models
    for t in s["table"]:
        assert t["elpd"] == pytest.approx(float(stored.sel(model=t["model"])), rel=1e-9)
    best = max(s["table"], key=lambda t: t["elpd"])
    assert best["best"] and best["delta"] == 0.0
    for t in s["table"]:  # Δ against the best, whose sum is the difference of the ELPDs
        assert t["delta"] == pytest.approx(t["elpd"] - best["elpd"], abs=1e-6)
        assert t["delta_se"] >= 0
    # The study samples orders 1..6, so g5 joins the odd models (data orders 1, 3, 4, 5, 6).
    assert json.loads(posterior.attrs["data_orders"]) == [1, 3, 4, 5, 6]
    assert sorted((n["even"], n["odd"]) for n in s["nested"]) == [
        ("lambda", "g3+lambda"), ("lambda", "g3+lambda+g5"),
        ("lambda+kappa", "g3+lambda+g5+kappa"), ("lambda+kappa", "g3+lambda+kappa")]
    (g3,) = s["odd"]
    draws = posterior["posterior"]["g3"].values.ravel()
    assert g3["q05"] == pytest.approx(np.quantile(draws, 0.05))
    assert g3["holds_zero"] == bool(g3["q05"] <= 0 <= g3["q95"])
    assert rbasis.model_label("g3+lambda+kappa") == "g₃ + λ + κ"
    assert rbasis.model_label("lambda@2") == "λ (order 2)"


@pytest.mark.slow
def test_pipeline_fits_the_study_basis_and_reports_it(basis_study):
    """A tiny study asking for every operator up to dimension 4 (g3, lambda): the posterior
    file holds both couplings, the report's section shows the ELPD table, the nested
    comparison and g₃'s interval, and the figure gains the ELPD row. The study is the
    session's (tests/conftest.py: BASE and RUN with max_dimension = 4, sized for the
    posterior that the other tests read)."""
    preset, out, _ = basis_study
    (run,) = preset.runs()
    assert run.basis == ("g3", "lambda") and list(run.inputs()[:, 0]) == INPUTS
    import xarray as xr

    dt = xr.open_datatree(out / "posterior_sym.nc", engine="h5netcdf")
    assert json.loads(dt.attrs["couplings"]) == ["g3", "lambda"]
    report = (out / "report.md").read_text()
    assert "posterior in the basis g₃ + λ" in report
    assert "| erf-net (σ_b=1) | 5 | 10 | λ | g₃ + λ |" in report  # the nested pair
    assert "| erf-net (σ_b=1) | 5 | 10 | g₃ |" in report  # g₃'s interval
    summary = json.loads((out / "summary.json").read_text())
    comp = summary["runs"]["sym"]["symmetry"]["basis_comparison"]
    assert comp["fitted"] == ["g3", "lambda"] and comp["odd"][0]["coupling"] == "g3"
    assert (out / "figures" / "odd_correlators.png").stat().st_size > 0
