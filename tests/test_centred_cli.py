"""The CLI on runs of nets with non-zero means (mu_w, mu_b), fitted centred (physics.md §6d).

``fit`` prints the centred fit file's own fields (g3, lambda ± σ and their running per width
and cutoff) instead of the zero-mean λ̄ / 6-pt table it lacks; ``fit`` and ``infer`` refuse,
with one line and exit 2, what the centred theory cannot do (order 2, runs without the odd
raw moments it is built from); ``show`` describes such a run.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import nngp_ppl as nn
from nngp_ppl.cli.main import main
from nngp_ppl.inference import eft

X3 = np.array([[-1.0], [0.2], [1.0]])


def _run(tmp_path_factory, name, orders, n_nets):
    stats = nn.sample_correlators(nn.ErfNet(d_in=1, mu_w=0.5, mu_b=0.2), X3, [5], n_nets,
                                  orders=orders, seed=0, progress=False)
    path = tmp_path_factory.mktemp("centred_cli") / name
    stats.to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """2000 Erf-nets with mu_w = 0.5, mu_b = 0.2 at N = 5, raw orders 1..4 (g3 and λ)."""
    with pytest.warns(Warning):  # few networks: the heavy-tail warning is expected
        return _run(tmp_path_factory, "odd.nc", (1, 2, 3, 4), 2000)


@pytest.fixture(scope="module")
def even_run(tmp_path_factory):
    """The same net sampled at even orders only: no 1- or 3-pt moments to centre with."""
    with pytest.warns(Warning):
        return _run(tmp_path_factory, "even.nc", (2, 4, 6), 500)


def _one_line_error(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_fit_prints_the_centred_fit_it_writes(odd_run, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    assert main(["fit", str(odd_run), "--cutoffs", "10,100", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    ds = eft.load_fit(out, run_path=odd_run)
    assert int(ds.attrs["centred"]) == 1
    assert list(ds["coupling"].values) == ["g3", "lambda"]  # the centred default basis
    assert "centred fit (expanded around the measured mean" in text
    assert "λ̄" not in text  # the zero-mean columns the centred file does not hold
    rows = [line.split() for line in text.splitlines() if re.match(r"\s+5\s+\d", line)]
    assert len(rows) == 2  # one per cutoff
    for j, row in enumerate(rows):
        assert float(row[1]) == pytest.approx(float(ds["cutoff"][j]), rel=1e-3)
        for m in range(2):  # value, ±, running, ± per coupling, as the file holds them
            printed = [float(v) for v in row[2 + 4 * m: 6 + 4 * m]]
            stored = [float(ds[v][0, j, m]) for v in
                      ("fit", "fit_stderr", "beta_fit", "beta_fit_stderr")]
            np.testing.assert_allclose(printed, stored, rtol=2e-3)
        assert float(row[-1]) == pytest.approx(float(ds["tau"][0, j]), rel=2e-3)


def test_fit_order_two_is_refused(odd_run, tmp_path, capsys):
    code = main(["fit", str(odd_run), "--cutoffs", "10", "--order", "2",
                 "-o", str(tmp_path / "f.nc")])
    _one_line_error(capsys, code, "--order", "non-zero means")
    assert not (tmp_path / "f.nc").exists()


@pytest.mark.parametrize("command", ["fit", "infer"])
def test_run_without_odd_moments_is_refused(command, even_run, tmp_path, capsys):
    code = main([command, str(even_run), "--cutoffs", "10", "-o", str(tmp_path / "o.nc")])
    _one_line_error(capsys, code, "1-pt", "3-pt", "centred")
    assert not (tmp_path / "o.nc").exists()


def test_show_describes_the_non_zero_mean_run(odd_run, capsys):
    assert main(["show", str(odd_run)]) == 0
    text = capsys.readouterr().out
    assert "mu_w=0.5" in text and "mu_b=0.2" in text
    assert "f -> -f rejected" in text  # the means break the symmetry, and show says so


def test_the_report_names_the_stages_of_a_non_zero_mean_run_and_why():
    """The study pipeline gives a run with non-zero means its sample and symmetry stages
    and, where the centred theory describes the ensemble (Erf, Gauss, an ActivationNet such
    as tanh), its centred fit, posterior, flow and exact-target stages. The report's
    sentence names them from the plan's files; for a run outside the centred theory (which
    reading a study refuses today, so the entry is built by hand) it says why it has only
    its sample and symmetry stages."""
    from nngp_ppl.study.report import symmetry
    from nngp_ppl.study.spec import plan_dict, study_from_text
    from nngp_ppl.study.stages import stages

    text = """
name = "centred_tiny"
n_nets = 100
widths = [5]
fit_cutoffs = [10]
infer_cutoffs = [10]
[[run]]
key = "even"
ensemble = "erf"
inputs = [-1.0, 0.2, 1.0]
[[run]]
key = "shift"
ensemble = "erf"
inputs = [-1.0, 0.2, 1.0]
[run.params]
mu_w = 0.4
[[run]]
key = "cone"
ensemble = "tanh"
inputs = [-1.0, 0.2, 1.0]
[run.params]
mu_w = 0.4
"""
    preset = study_from_text(text, "cfg")
    shift = [s.name for s in stages(preset) if s.name.endswith("_shift")]
    assert sorted(shift) == ["fit_shift", "flow_shift", "infer_shift", "sample_shift",
                             "symmetry_shift", "target_shift"]
    cone = [s.name for s in stages(preset) if s.name.endswith("_cone")]
    assert sorted(cone) == ["fit_cone", "flow_cone", "infer_cone", "sample_cone",
                            "symmetry_cone", "target_cone"]
    specs = {s["key"]: s for s in plan_dict(preset)["symmetry_runs"]}
    entries = {k: {"label": k, "params": s["params"], "files": s["files"],
                   "centred": s["centred"]} for k, s in specs.items()}
    sentence = " ".join(symmetry._means_sentence({"shift": entries["shift"]}))
    assert "mu_w = 0.4" in sentence and "fitted centred" in sentence
    for stage, name in (("sample", "run"), ("symmetry", "symmetry"), ("infer", "posterior"),
                        ("flow", "beta"), ("target", "target")):
        assert f"{stage} (`{specs['shift']['files'][name]}`)" in sentence
    assert f"fit (`{specs['shift']['files']['fit']['full']}`)" in sentence
    assert "zero-mean GP kernel" in sentence
    outside = {**entries["cone"], "centred": False,
               "files": {k: v for k, v in entries["cone"]["files"].items()
                         if k in ("run", "symmetry")}}
    sentence = " ".join(symmetry._means_sentence({"cone": outside}))
    assert f"sample (`{specs['cone']['files']['run']}`)" in sentence
    assert f"symmetry (`{specs['cone']['files']['symmetry']}`)" in sentence
    assert "only their sample and symmetry stages" in sentence
    assert "zero-mean GP kernel" in sentence and "ErfNet, GaussNet and ActivationNet" in sentence


def test_sample_takes_the_means_and_fit_goes_centred(tmp_path, capsys):
    run = tmp_path / "cli.nc"
    assert main(["sample", "--ensemble", "erf", "--mu-w", "0.5", "--mu-b", "-0.2",
                 "--inputs=-1,0.2,1", "--widths", "5", "--n-nets", "300", "--orders",
                 "1,2,3,4", "--no-progress", "-o", str(run)]) == 0
    net = nn.CorrelatorStats.from_netcdf(run).net
    assert (net.mu_w, net.mu_b) == (0.5, -0.2)
    assert main(["fit", str(run), "--cutoffs", "10", "-o", str(tmp_path / "f.nc")]) == 0
    assert "centred fit" in capsys.readouterr().out
    code = main(["sample", "--ensemble", "erf", "--mu-w", "inf", "--inputs=-1,1", "--widths",
                 "5", "--n-nets", "10", "-o", str(tmp_path / "bad.nc")])
    _one_line_error(capsys, code, "--mu-w")


@pytest.mark.slow
def test_sample_and_fit_a_tanh_net_with_means(tmp_path, capsys):
    """An ActivationNet with means has the centred theory too (quadrature propagator):
    sample, then fit, writes a centred fit whose values are finite."""
    run = tmp_path / "tanh.nc"
    assert main(["sample", "--ensemble", "tanh", "--mu-w", "0.5", "--mu-b", "0.2",
                 "--inputs=-1,0.2,1", "--widths", "5", "--n-nets", "300", "--orders",
                 "1,2,3,4", "--no-progress", "-o", str(run)]) == 0
    net = nn.CorrelatorStats.from_netcdf(run).net
    assert isinstance(net, nn.ActivationNet) and (net.mu_w, net.mu_b) == (0.5, 0.2)
    out = tmp_path / "f.nc"
    assert main(["fit", str(run), "--cutoffs", "5,10", "-o", str(out)]) == 0
    assert "centred fit" in capsys.readouterr().out
    ds = eft.load_fit(out, run_path=run)
    assert int(ds.attrs["centred"]) == 1
    assert list(ds["coupling"].values) == ["g3", "lambda"]
    assert np.all(np.isfinite(ds["fit"].values)) and np.all(ds["fit_stderr"].values > 0)
    # tanh's limit covariance tends to a constant far out: gamma = d_in, as for Erf.
    assert float(ds.attrs["gamma_analytic"]) == 1.0
