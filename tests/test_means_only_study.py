"""A study whose every run has non-zero parameter means: ``reproduce`` runs it end to end.

The centred study of tests/centred_study.py without its zero-mean run: one Erf-net with
μ_W = 0.8, μ_b = 0.3 (f -> -f broken) and no zero-mean run beside it. The
report leaves out the sections built on the zero-mean GP kernel (sections 1-5 and their
figures) and says why in one sentence built from the stored run (its label and means); the
symmetry section and the centred couplings carry it, and the diagnostics gate lists the
centred posterior.

Physics against physics: the exact centred target is recomputed here from the exact oracle
through the public centred API (:func:`nngp_ppl.inference.centred.build_theory`); the
report's "exact target", "holds exact" and z cells are recomputed from it and the stored
draws, and the posterior mean lies within 3.3 posterior sd of it (a 99.9% band, as in
tests/test_centred_study.py). The stored
posterior read back by :func:`nngp_ppl.inference.read_posterior` maps its own deviation
draws onto its stored coupling draws, and an edited copy is refused.
Size: the study is reproduced in a copy of the session's centred study (``centred_study`` in
conftest.py), whose stages it shares key for key, so only its report is written (about 2 s of
CPU); the tests that need it wait for that study and are slow.
"""

from __future__ import annotations

import json
import shutil

import h5netcdf
import numpy as np
import pytest
from centred_study import MEANS
from centred_study import MEANS_ONLY as STUDY

from nngp_ppl import NNGPInputError
from nngp_ppl.study.report.figures import FIGURES
from nngp_ppl.study.report.markdown import ZERO_MEAN_SECTIONS
from nngp_ppl.study.report.symmetry import FIGURE as SYMMETRY_FIGURE
from nngp_ppl.study.spec import plan_dict, study_from_text
from nngp_ppl.study.stages import report_outputs, reproduce, stages

#: The run's stages, in order.
STAGES = ["sample_mean", "symmetry_mean", "fit_mean", "infer_mean", "flow_mean", "target_mean"]

#: The means as the report writes them (sorted by name, as the run stores its params).
MEANS_TEXT = ", ".join(f"{k} = {v:g}" for k, v in sorted(MEANS.items()))


@pytest.fixture(scope="module")
def study(centred_study, tmp_path_factory):
    """:data:`centred_study.MEANS_ONLY` reproduced in a copy of the session's centred study:
    its run's stages are that study's (same keys), so only the report is written anew."""
    _, shared, _ = centred_study
    # Without the shared study's figures, so that a figure found here was drawn here.
    out = shutil.copytree(shared, tmp_path_factory.mktemp("means_only") / "study",
                          ignore=shutil.ignore_patterns("figures"))
    preset = study_from_text(STUDY)
    result = reproduce(preset, out, progress=False, log=lambda _: None)
    return preset, out, result


def test_a_study_of_runs_with_means_alone_is_read_and_planned():
    preset = study_from_text(STUDY, "cfg")
    (run,) = preset.runs()
    assert not run.zero_mean and run.centred
    assert [s.name for s in stages(preset)] == [*STAGES, "report"]
    plan = plan_dict(preset)
    assert plan["runs"] == [] and [r["key"] for r in plan["symmetry_runs"]] == ["mean"]
    # The even-coupling figures show zero-mean runs only: the report stage promises none.
    assert report_outputs(preset) == ("report.md", "summary.json",
                                      f"figures/{SYMMETRY_FIGURE}")


@pytest.mark.slow
def test_reproduce_runs_it_and_the_report_says_what_it_left_out_and_why(study):
    preset, out, result = study
    # The "mean" run's stages are the centred study's, key for key: a run's stages do not
    # depend on the runs beside it, so dropping the zero-mean run rewrites the report alone.
    assert result.status == {**{s: "skipped" for s in STAGES}, "report": "ran"}
    (run,) = preset.runs()
    report = (out / "report.md").read_text()
    assert report.splitlines()[0] == f"# nngp_ppl study 'means_only': {run.label}"
    assert "centred_study" not in report and "sym" not in json.loads(
        (out / "summary.json").read_text())["symmetry_runs"]
    for heading in ZERO_MEAN_SECTIONS:
        assert f"## {heading}" not in report
    assert not any((out / "figures" / f).exists() for f in FIGURES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == {} and summary["figures"] == [f"figures/{SYMMETRY_FIGURE}"]
    # The one sentence on the left-out sections, naming the run and its stored means.
    assert report.count("**Sections 1–5 are left out**") == 1
    assert (f"every run of this study has non-zero parameter means ({run.label}: "
            f"{MEANS_TEXT}). Section 5c") in report
    # ... and no sentence about sections "above" that are not there.
    assert "even-coupling sections above" not in report
    assert f"| mean | {run.label} | 1 | 1 | -1; 0.2; 1 | 5 | 5 |" in report
    assert "## 5c. Symmetry and operator basis" in report
    assert "### Centred couplings of the runs with non-zero means" in report
    gate = summary["symmetry_runs"]["mean"]["centred"]["gate"]
    diagnostics = report.split("## 6. Diagnostics gate")[1].split("\n## ")[0]
    assert (f"| {run.label} | {'PASSED' if gate['passed'] else '**FAILED**'} | "
            f"{gate['n_posteriors'] - gate['n_failed']}/{gate['n_posteriors']} |") in diagnostics
    again = reproduce(preset, out, progress=False, log=lambda _: None)
    assert set(again.status.values()) == {"skipped"}


@pytest.mark.slow
def test_the_centred_table_compares_with_the_exact_target(study):
    from nngp_ppl.inference import centred, read_posterior

    preset, out, _ = study
    (run,) = preset.runs()
    th = centred.build_theory(run.net(), run.inputs(), ("g3", "lambda"), max_cutoff=10.0)
    exact = th.estimator((10.0,)).couplings(th.exact_deviation(5))[0]
    assert np.all(np.abs(exact) > 0)  # means: g3's target is not the symmetric 0
    stored = json.loads((out / "target_mean.json").read_text())
    np.testing.assert_allclose(stored["target"][0][0], exact, rtol=1e-10, atol=0)
    post = read_posterior(out / "posterior_mean.nc")
    section = (out / "report.md").read_text().split("### Centred couplings")[1]
    for c, name in enumerate(("g3", "lambda")):
        draws = post.tree["posterior"][name].values.reshape(-1)
        lo, hi = np.quantile(draws, [0.05, 0.95])
        z = (draws.mean() - exact[c]) / draws.std(ddof=1)
        assert abs(z) <= 3.3, (name, z)  # 99.9% band (module docstring)
        inside = "yes" if lo <= exact[c] <= hi else "no"
        assert (f"| [{lo:.3g}, {hi:.3g}] | {exact[c]:.3g} | {inside} | {z:+.2f} |"
                in section), name


@pytest.mark.slow
def test_the_stored_posterior_is_read_back_verified_with_its_theory(study, tmp_path):
    from nngp_ppl.inference import beta_function, read_posterior

    preset, out, _ = study
    post = read_posterior(out / "posterior_mean.nc")
    assert post.couplings == ("g3", "lambda") and post.net.to_dict() == preset.runs()[0].net(
        ).to_dict()
    # The stored coupling draws are B(Λ) r of the stored deviation draws, with the theory
    # the reader rebuilds (as the flow and target stages use it). r is stored in float32
    # (relative rounding 6e-8), the couplings in float64: 1e-6 of their scale.
    g = post.theory().estimator(tuple(post.cutoffs)).couplings(post.deviation)
    for c, name in enumerate(post.couplings):
        draws = post.tree["posterior"][name].transpose("chain", "draw", "width", "cutoff").values
        np.testing.assert_allclose(g[..., c], draws, rtol=0, atol=1e-6 * np.abs(draws).max())
    edited = shutil.copy(out / "posterior_mean.nc", tmp_path / "edited.nc")
    with h5netcdf.File(edited, "a") as f:  # another ensemble: it would give another target
        text = f.attrs["ensemble"]
        f.attrs["ensemble"] = text.replace('"mu_b": 0.3', '"mu_b": 0.5')
        assert f.attrs["ensemble"] != text
    for read in (read_posterior, beta_function):
        with pytest.raises(NNGPInputError, match="damaged or edited"):
            read(edited)
