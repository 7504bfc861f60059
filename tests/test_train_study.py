"""The [train] block of a TOML study (nngp_ppl.study.train_spec), its stages
(nngp_ppl.study.training_stages) and its report section (nngp_ppl.study.report.training).

Validation: every bad key is refused when the study is read, with one message naming the
file, [train] and the key. Physics: at large width the stage's learned 1-pt and connected
2-pt functions agree with the infinite-width oracle (mu_t, Sigma_t) within 4.5 of their
delta-method standard errors at every input and step (fixed seed); the connected 3-pt
function is zero within its errors at step 0 (f -> -f of the initial ensemble, exact).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import kill_training_at_shard

from nngp_ppl import NNGPInputError
from nngp_ppl.study.spec import check_study, study_from_text
from nngp_ppl.study.train_spec import comparison_file, flow_file, trained_file
from nngp_ppl.study.training_stages import training_stages
from nngp_ppl.training.comparison import oracle_comparison
from nngp_ppl.training.trainer import TrainedCorrelators

HEAD = """
name = "t"
n_nets = 200
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
num_chains = 2
num_samples = 50
num_warmup = 50

[[run]]
key = "erf"
ensemble = "erf"
sigma_b = 0.5
inputs = [-2.0, -0.6, 0.5, 1.9]
"""
XT = [-1.5, -0.5, 0.5, 1.5]
YT = [-1.0, -0.48, 0.48, 1.0]


def study(train: str, head: str = HEAD, source="s.toml"):
    return study_from_text(head + "\n[train]\n" + train, source)


def train_text(**change) -> str:
    keys = {"x_train": XT, "y_train": YT, "steps": [0, 2, 8], "learning_rate": 0.5,
            "n_nets": 400, "widths": [16]}
    keys.update(change)
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items() if v is not None)


def test_a_valid_block_is_read_with_the_defaults():
    spec = study(train_text(n_nets=None, widths=None)).train
    assert spec.run == "erf" and spec.steps == (0, 2, 8) and spec.optimizer == "gd"
    assert spec.parametrisation == "ntk" and spec.x_train == tuple((x,) for x in XT)
    preset = study(train_text(n_nets=None, widths=None))
    run = preset.runs()[0]
    resolved = spec.resolved(preset, run)
    assert (resolved.n_nets, resolved.widths, resolved.seed) == (200, (5,), 0)


@pytest.mark.parametrize("text, key, match", [
    (train_text(momentum_typo=1), None, "unknown key 'momentum_typo'"),
    (train_text(steps=None), None, "missing required key 'steps'"),
    (train_text(learning_rate=None), None, "missing required key 'learning_rate'"),
    (train_text(y_train=None), None, "missing y_train"),
    (train_text(x_train=[[0.1, 0.2]] * 4), "x_train", "dimension 2; the run's d_in is 1"),
    (train_text(x_train=[0.1, "a", 0.2, 0.3]), "x_train", "finite numbers"),
    (train_text(y_train=YT[:3]), "y_train", "one target per x_train point"),
    (train_text(y_train="sin"), "y_train", "list of finite numbers"),
    (train_text(steps=[0, -2]), "steps", "distinct integers"),
    (train_text(steps=[0, 2, 2]), "steps", "distinct integers"),
    (train_text(steps=[0, 2.5]), "steps", "distinct integers"),
    (train_text(steps=[]), "steps", "non-empty"),
    (train_text(learning_rate=0), "learning_rate", "positive finite number"),
    (train_text(learning_rate=50.0), "learning_rate", "stability bound"),
    (train_text(optimizer="lbfgs"), "optimizer", "one of"),
    (train_text(parametrisation="mup"), "parametrisation", "one of"),
    (train_text(n_nets=1), "n_nets", "2..2\\*\\*32"),
    (train_text(widths=[0]), "widths", "distinct positive integers"),
    (train_text(seed=-1), "seed", "integer >= 0"),
    (train_text(run="relu"), "run", "must name a run"),
    (train_text(data="p.csv"), None, "not both"),
    (train_text(x_train=None, y_train=None, data=3), "data", "path of a .npz or .csv"),
    (train_text(x_train=None, y_train=None, data="missing.csv"), "data", "no such file"),
])
def test_bad_keys_are_refused_naming_the_key(text, key, match):
    where = "s.toml: [train]" + (f": {key}" if key else "")
    with pytest.raises(NNGPInputError, match=match) as err:
        study(text)
    assert str(err.value).startswith(where), str(err.value)


def test_non_finite_targets_are_refused():
    text = train_text(y_train=None) + "y_train = [0.1, nan, 0.2, 0.3]\n"
    with pytest.raises(NNGPInputError, match=r"\[train\]: y_train must be .*finite"):
        study(text)


def test_a_non_gd_optimizer_needs_optax():
    try:
        import optax  # noqa: F401
    except ImportError:
        with pytest.raises(NNGPInputError, match=r"\[train\].*optax"):
            study(train_text(optimizer="adam"))
    else:
        assert study(train_text(optimizer="adam")).train.optimizer == "adam"


def test_a_study_of_two_runs_names_the_trained_one():
    two = HEAD + '\n[[run]]\nkey = "relu"\nensemble = "relu"\ninputs = [0.5, 1.0]\n'
    with pytest.raises(NNGPInputError, match="missing key 'run'"):
        study(train_text(), head=two)
    assert study(train_text(run="erf"), head=two).train.run == "erf"


def test_data_files_next_to_the_study_give_the_same_block(tmp_path):
    inline = study(train_text()).train
    (tmp_path / "pts.csv").write_text("x,y\n" + "".join(f"{x},{y}\n"
                                                         for x, y in zip(XT, YT, strict=True)))
    np.savez(tmp_path / "pts.npz", x_train=np.asarray(XT), y_train=np.asarray(YT))
    for name in ("pts.csv", "pts.npz"):
        toml = tmp_path / f"{name}.toml"
        toml.write_text(HEAD + "\n[train]\n" + train_text(x_train=None, y_train=None,
                                                          data=name))
        from nngp_ppl.study.spec import load_study

        got = load_study(toml).train
        assert dataclasses.replace(got, data=None) == inline and got.data == name


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros(4), "y": np.zeros(4)}, "must hold arrays x_train and y_train"),
    ({"x_train": np.zeros(4), "y_train": np.array([0, np.inf, 0, 0])}, "NaN or infinite"),
    ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4)}, "dimension 2"),
    ({"x_train": np.zeros(4), "y_train": np.zeros(3)}, "shape"),
    ({"x_train": np.array([object()] * 4), "y_train": np.zeros(4)}, "cannot read"),
])
def test_bad_data_files_are_refused_without_running_code(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)  # an object array is pickled: never loaded
    text = HEAD + "\n[train]\n" + train_text(x_train=None, y_train=None,
                                             data=str(tmp_path / "d.npz"))
    with pytest.raises(NNGPInputError, match=match) as err:
        study_from_text(text, "s.toml")
    assert str(err.value).startswith("s.toml: [train]: data")


def test_a_preset_changed_in_python_is_checked_again():
    preset = study(train_text())
    bad = dataclasses.replace(preset, train=dataclasses.replace(preset.train,
                                                                learning_rate=80.0))
    with pytest.raises(NNGPInputError, match="stability bound"):
        check_study(bad)
    gone = dataclasses.replace(preset, train=dataclasses.replace(preset.train, run="x"))
    with pytest.raises(NNGPInputError, match=r"\[train\]: run"):
        check_study(gone)


# ---------------------------------------------------------------------------------------------
# the stages, run directly (the reproduce pipeline: test_train_pipeline below)
# ---------------------------------------------------------------------------------------------
def _run_stages(preset, out):
    for stage in training_stages(preset, progress=False, log=lambda *_: None):
        stage.action(out)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The stages at N = 16 and 2048, 1000 networks, steps 0, 2, 8, 30 (fixed seed)."""
    out = tmp_path_factory.mktemp("wide")
    preset = study(train_text(n_nets=1000, widths=[16, 2048], steps=[0, 2, 8, 30],
                              seed=5))
    _run_stages(preset, out)
    return preset, out


def test_the_stage_matches_the_oracle_at_large_width(wide):
    # At N = 2048 the O(1/N) deviations are far below the errors of 1000 networks: the
    # learned 1-pt function is mu_t and the connected 2-pt function Sigma_t within 4.5
    # delta-method standard errors at every input and step; the connected 3-pt function
    # of the initial (f -> -f symmetric) ensemble is 0 within 4.5 of its errors.
    import xarray as xr

    _, out = wide
    comp = xr.load_dataset(out / comparison_file("erf"), engine="h5netcdf")
    big = comp.sel(width=2048)
    assert float(big["max_abs_z1"].max()) <= 4.5, big["max_abs_z1"].values
    assert float(big["max_abs_z2"].max()) <= 4.5, big["max_abs_z2"].values
    z3 = np.abs(comp["kappa3"] / comp["kappa3_stderr"]).sel(step=0)
    assert float(z3.max()) <= 4.5
    # The oracle the stage stored is training_oracle itself, and training moved the mean.
    from nngp_ppl.theory.ntk import training_oracle

    trained = TrainedCorrelators.from_netcdf(out / trained_file("erf"))
    st = trained.at_step(0)
    mu, cov = training_oracle(st.net, st.X, np.asarray(XT)[:, None], YT, [0, 2, 8, 30], 0.5)
    np.testing.assert_array_equal(comp["oracle1"].values, mu)
    assert np.min(np.abs(mu[-1])) > 20 * float(big["kappa1_stderr"].sel(step=30).max())
    # The stored numbers are the trained file's own connected functions.
    again = oracle_comparison(trained)
    for v in ("kappa1", "kappa2_stderr", "kappa3", "skewness"):
        np.testing.assert_array_equal(again[v].values, comp[v].values)


def test_the_flow_stage_computes_the_couplings_and_the_verdict(wide):
    import xarray as xr

    _, out = wide
    flow = xr.load_dataset(out / flow_file("erf"), engine="h5netcdf")
    assert flow.attrs["computed"] == "yes"
    assert list(flow["step"].values) == [0, 2, 8, 30]
    assert flow["coupling_median"].dims == ("step", "width", "coupling")
    assert not bool(flow["symmetry_reject"].sel(step=0).any())
    # The stored file says how its band was built (training_flow's default, the score
    # band); the figure's short label sits beside it and does not replace it.
    assert flow.attrs["band"].startswith("score") and flow.attrs["band_label"] == "90% score band"


def test_the_report_section_and_figures(wide, tmp_path):
    from nngp_ppl.study.report import training
    from nngp_ppl.study.report.markdown import _table
    from nngp_ppl.study.spec import plan_dict

    preset, out = wide
    plan = plan_dict(preset)
    summary = training.summary(out, plan)
    assert summary["widths"] == [16, 2048] and summary["steps"] == [0, 2, 8, 30]
    lines = "\n".join(training.section(summary, _table))
    assert "trained at widths 16, 2048 (1,000, 1,000 networks) on 4 points" in lines
    assert "within 4.5 standard errors of the oracle's mean" in lines
    assert "along training: `training_couplings.png` (d)" in lines
    for name, make in training.figures(out, plan).items():
        fig = make()
        fig.savefig(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert set(training.figures(out, plan)) == set(training.FIGURES + training.FLOW_FIGURES)


def test_an_interrupted_train_stage_resumes_to_the_same_bits(wide, tmp_path, monkeypatch):
    preset = dataclasses.replace(wide[0], train=dataclasses.replace(
        wide[0].train, widths=(16,), n_nets=600))
    whole = tmp_path / "whole"
    whole.mkdir()
    stage = training_stages(preset, progress=False, log=lambda *_: None)[0]
    # A fixed shard size: several shards, so an interruption leaves some done.
    import nngp_ppl.study.training_stages as stages

    real_train = stages.train_correlators

    def small_shards(*args, **kw):
        return real_train(*args, shard_size=128, batch_size=64, **kw)

    monkeypatch.setattr(stages, "train_correlators", small_shards)
    stage.action(whole)
    cut = tmp_path / "cut"
    cut.mkdir()
    kill_training_at_shard(monkeypatch, 3, lambda: stage.action(cut))
    assert list(cut.glob("train_erf.nc.partial-*")) and not (cut / "train_erf.nc").exists()
    lines = []
    stage = training_stages(preset, progress=False, log=lines.append)[0]
    stage.action(cut)
    assert any("resuming from" in line for line in lines)
    assert not list(cut.glob("train_erf.nc.partial-*"))
    a = TrainedCorrelators.from_netcdf(whole / "train_erf.nc")
    b = TrainedCorrelators.from_netcdf(cut / "train_erf.nc")
    for s in a.steps:
        for m, v in a.at_step(s).moment_sums(16).items():
            np.testing.assert_array_equal(v, b.at_step(s).moment_sums(16)[m])


# ---------------------------------------------------------------------------------------------
# the whole pipeline (slow: it samples, fits and infers the untrained run too)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from nngp_ppl.study.stages import reproduce

    out = tmp_path_factory.mktemp("pipeline")
    preset = study(train_text(n_nets=300, widths=[16], steps=[0, 3]))
    reproduce(preset, out, progress=False, log=lambda *_: None)
    return preset, out


@pytest.mark.slow
def test_train_pipeline_reports_and_reruns_nothing(pipeline, tmp_path):
    from nngp_ppl.study.report.training import FIGURES
    from nngp_ppl.study.stages import reproduce

    preset, src = pipeline
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    report = (out / "report.md").read_text()
    assert "## 5d. Training" in report
    assert all((out / "figures" / f).stat().st_size > 0 for f in FIGURES)
    manifest = json.loads((out / "manifest.json").read_text())["stages"]
    assert {"train_erf", "training_erf", "training_flow_erf"} <= set(manifest)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = reproduce(preset, out, progress=False, log=lambda *_: None)
    assert set(result.status.values()) == {"skipped"}
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # A changed learning rate reruns the training stages and the report, nothing else.
    changed = dataclasses.replace(preset, train=dataclasses.replace(preset.train,
                                                                    learning_rate=0.4))
    result = reproduce(changed, out, progress=False, log=lambda *_: None)
    ran = {k for k, v in result.status.items() if v == "ran"}
    assert ran == {"train_erf", "training_erf", "training_flow_erf", "report"}


def test_the_shipped_study_reads_and_lists_its_training_stages(tmp_path):
    from pathlib import Path

    from nngp_ppl.study.spec import load_study
    from nngp_ppl.study.stages import reproduce

    path = Path(__file__).resolve().parent.parent / "examples" / "train_1d.toml"
    preset = load_study(path)
    assert preset.train.steps == (0, 1, 3, 10, 30, 100, 300) and len(preset.train.y_train) == 5
    np.testing.assert_allclose(preset.train.y_train, np.sin(np.ravel(preset.train.x_train)),
                               atol=1e-6)
    lines = []
    result = reproduce(preset, tmp_path / "dry", dry_run=True, log=lines.append)
    assert {"train_erf", "training_erf", "training_flow_erf"} <= set(result.status)
    assert all(v == "would run" for v in result.status.values())


def test_the_readme_train_block_is_the_shipped_studys():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    after = readme[readme.index("\n## Trained ensembles\n"):]
    block = re.findall(r"```toml\n(.*?)```", after, flags=re.S)[0]
    shipped = study_from_text(
        (Path(__file__).resolve().parent.parent / "examples" / "train_1d.toml").read_text())
    head = HEAD.replace('inputs = [-2.0, -0.6, 0.5, 1.9]', 'inputs = [-2.5, -1.1, 0.4, 2.2]')
    assert study_from_text(head + "\n" + block).train == shipped.train
