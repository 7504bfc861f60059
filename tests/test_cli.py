"""``nngp-ppl sample`` and ``nngp-ppl show``: a small run end to end, and every error path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from patching import patch_everywhere

import nngp_ppl
from nngp_ppl import CorrelatorStats, sample_correlators
from nngp_ppl.cli.main import main
from nngp_ppl.sampling.stats import normalised_deviation
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples

SAMPLE = ["sample", "--ensemble", "erf", "--preset", "paper", "--widths", "2,10",
          "--n-nets", "4e3", "--seed", "3", "--no-progress"]


def test_sample_then_show(tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(SAMPLE + ["-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    stats = CorrelatorStats.from_netcdf(out)
    net, X = nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")
    assert stats.net == net and stats.widths == (2, 10) and stats.seed == 3
    np.testing.assert_array_equal(stats.X, X)
    direct = sample_correlators(net, X, [2, 10], 4000, seed=3, progress=False)
    for w in (2, 10):
        for m, s in direct.moment_sums(w).items():
            np.testing.assert_allclose(stats.moment_sums(w)[m], s, rtol=1e-12)

    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if re.match(r"\s+\d+\s+\d+\s", ln)]
    assert len(lines) == 2
    gp = {n: gp_correlator_tuples(np.asarray(net.kernel(X)), n) for n in (4, 6)}
    for line, w in zip(lines, (2, 10), strict=True):
        values = [float(v) for v in line.split()]
        assert values[:2] == [w, 4000]
        expect = []
        for n in (4, 6):
            expect += [
                normalised_deviation(stats.correlator_tuples(n, w), gp[n]),
                normalised_deviation(exact_correlator_tuples(net, X, w, n), gp[n]),
                normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n]),
            ]
        np.testing.assert_allclose(values[2:], expect, rtol=1e-3)  # printed to 4 digits
    # The exact finite-width deviation falls with N (connected 4-pt ~ 1/N).
    exact4 = [float(ln.split()[3]) for ln in lines]
    assert exact4[1] < exact4[0] / 3

    assert main(["show", "--no-exact", str(out)]) == 0
    assert "exact" not in capsys.readouterr().out


def test_custom_inputs_in_two_dimensions(tmp_path, capsys):
    out = tmp_path / "relu.nc"
    argv = ["sample", "--ensemble", "relu", "--d-in", "2", "--sigma-b", "0.5",
            "--inputs", "0.5,0.5; 1,0.5; 1 1", "--widths", "3", "--n-nets", "500",
            "--orders", "2,4", "--no-covariance", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    stats = CorrelatorStats.from_netcdf(out)
    np.testing.assert_array_equal(stats.X, [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]])
    assert stats.net == nngp_ppl.ReLUNet(d_in=2, sigma_b=0.5)
    assert stats.orders == (2, 4) and not stats.has_covariance
    assert main(["show", "--no-exact", str(out)]) == 0
    assert "m_4 sampled" in capsys.readouterr().out


BAD = [
    (["--ensemble", "nonesuch"], "--ensemble"),
    (["--ensemble", "tanh"], "--preset"),  # a valid ensemble without paper inputs
    (["--widths", "2,0"], "--widths"),
    (["--widths", "two"], "--widths"),
    (["--n-nets", "0"], "--n-nets"),
    (["--n-nets", "1.5"], "--n-nets"),
    (["--orders", "0,2"], "--orders"),  # odd orders 1..6 are measured now
    (["--orders", "8"], "--orders"),
    (["--sigma-w", "-1"], "--sigma-w"),
    (["--sigma-b", "abc"], "--sigma-b"),
    (["--seed", "-1"], "--seed"),
    (["--batch-size", "0"], "--batch-size"),
    (["--d-in", "0"], "--d-in"),
    (["--preset", "nope"], "--preset"),
    (["--d-in", "5"], "preset"),
    (["--preset", None, "--inputs", ""], "--inputs"),
    (["--preset", None, "--inputs", "1,nan"], "--inputs"),
    (["--preset", None, "--inputs", "1,2; 3", "--d-in", "2"], "--inputs"),
    (["--preset", None, "--inputs", "0.5,0.5", "--d-in", "2"], "--inputs"),
    (["--preset", None, "--inputs", "0.5,0.5; 1,1"], "--inputs"),
]


def _argv(change, out):
    argv = ["sample", "--ensemble", "erf", "--preset", "paper", "--widths", "2",
            "--n-nets", "10", "--no-progress", "-o", str(out)]
    for i in range(0, len(change), 2):
        opt, value = change[i], change[i + 1]
        if opt in argv:
            j = argv.index(opt)
            del argv[j:j + 2]
        if value is not None:
            argv += [opt, value]
    return argv


@pytest.mark.parametrize("change, option", BAD)
def test_bad_sample_arguments_exit_2_with_one_line(change, option, tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(_argv(change, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and option in err, err
    assert not out.exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--widths", "2", "--n-nets", "10", "--preset", "paper", "-o", "x.nc"])
    assert exc.value.code == 2 and "--ensemble" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(_argv(["--inputs", "1,2"], tmp_path / "run.nc"))  # both --preset and --inputs
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(_argv([], tmp_path)) == 2  # output is a directory
    assert "--output" in capsys.readouterr().err


def test_show_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.nc"
    junk.write_text("not netCDF")
    for path, words in [(tmp_path / "missing.nc", "no such file"),
                        (junk, "not a readable netCDF"), (tmp_path, "directory")]:
        assert main(["show", str(path)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err


def test_interrupted_run_leaves_no_file(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    patch_everywhere(monkeypatch, nngp_ppl, "sample_correlators", interrupted)
    out = tmp_path / "run.nc"
    assert main(_argv([], out)) == 130
    assert "interrupted" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_text("not netCDF")
    proc = subprocess.run([sys.executable, "-m", "nngp_ppl.cli.main", "show", str(junk)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a readable netCDF" in proc.stderr


# --- infer and flow through the CLI: noise models, --rcond, --plot, the files' contents -------
ERF3 = np.array([[-0.8], [0.3], [1.1]])
WIDTH, N_NETS = 20, 10_000


@pytest.fixture(scope="module")
def erf_run(tmp_path_factory):
    """10⁴ Erf-nets at N = 20 on three inputs, with the estimator covariance."""
    path = tmp_path_factory.mktemp("erf") / "run.nc"
    stats = sample_correlators(nngp_ppl.ErfNet(), ERF3, widths=[WIDTH], n_nets=N_NETS,
                               orders=(2, 4, 6), seed=2, progress=False)
    stats.to_netcdf(path)
    return stats, path


def _floored(cov, rcond):
    """The covariance with its correlation matrix's eigenvalues floored at rcond × the
    largest (the documented regularisation of
    nngp_ppl.inference.models.couplings.stable_cholesky)."""
    sd = np.sqrt(np.diag(cov))
    e, V = np.linalg.eigh(cov / np.outer(sd, sd))
    return ((V * np.maximum(e, rcond * e[-1])) @ V.T) * np.outer(sd, sd)


def _exact_estimator_covariance(width, n_nets, orders):
    """Cov(Ĝ_s, Ĝ_t) = (G_{s∪t} − G_s G_t) / n of the products on the tuples of ``orders``
    (stacked), from Erf-net's exact finite-width correlators up to twice the highest order
    (multiset unions joined by hand)."""
    from nngp_ppl.tuples import distinct_tuples, tuple_row

    net, k = nngp_ppl.ErfNet(), len(ERF3)
    g = {m: exact_correlator_tuples(net, ERF3, width, m)
         for m in {a + b for a in orders for b in orders} | set(orders)}
    rows = [list(t) for n in orders for t in distinct_tuples(k, n)]
    means = np.array([g[len(s)][tuple_row(k, s)] for s in rows])
    joint = np.array([[g[len(s) + len(t)][tuple_row(k, s + t)] for t in rows] for s in rows])
    return (joint - np.outer(means, means)) / n_nets


# Plumbing, not a converged posterior: the NUTS settings of tests/test_arviz_file.py (one
# width, the 4- and 6-pt functions on three inputs), whose compiled program is reused.
INFER = ["--cutoffs", "10,100", "--chains", "2", "--samples", "200", "--warmup", "150",
         "--seed", "1", "--no-progress", "--allow-failed-gate"]


def _dims(tree) -> set[str]:
    return {d for node in tree.subtree for d in node.to_dataset().dims}


@pytest.mark.slow
@pytest.mark.parametrize("noise, rcond", [("exact", "1e-6"), ("sample", "1e-2")])
def test_infer_noise_models_and_rcond_through_the_cli(erf_run, tmp_path, capsys, noise,
                                                        rcond):
    """--covariance exact and sample: the stored noise factor L Lᵀ is the exact estimator
    covariance (built here from the exact 4- and 8-pt functions) or the run's sampled one,
    regularised with the given --rcond (1e-2 floors eigenvalues the default 1e-6 keeps);
    --plot draws the posterior figure; every dimension follows the common naming scheme."""
    from nngp_ppl import _io

    stats, run = erf_run
    post, fig = tmp_path / "post.nc", tmp_path / "post.png"
    assert main(["infer", str(run), "--covariance", noise, "--rcond", rcond, "--plot",
                 str(fig), "-o", str(post), *INFER]) == 0
    assert f"noise model {noise}" in capsys.readouterr().out
    dt = _io.read_netcdf(post, name="p", what="posterior", tree=True,
                         file_format=_io.POSTERIOR_FORMAT, version=_io.POSTERIOR_VERSION)
    assert dt.attrs["covariance"] == noise
    assert float(dt.attrs["covariance_rcond"]) == float(rcond)
    L = dt["constant_data"]["scale_tril"].values[0]
    orders = [int(n) for n in json.loads(dt.attrs["data_orders"])]
    cov = (_exact_estimator_covariance(WIDTH, N_NETS, orders) if noise == "exact"
           else stats.covariance(WIDTH, orders=orders))
    np.testing.assert_allclose(L @ L.T, _floored(cov, float(rcond)), rtol=1e-8,
                               atol=1e-10 * np.abs(cov).max())
    if noise == "sample":
        assert int(dt["constant_data"]["floored"].values[0]) > 0
        assert not np.allclose(L @ L.T, _floored(cov, 1e-6), rtol=1e-3)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000
    dims = _dims(dt)
    assert {"tuple_4", "position_4", "observation", "observation_col"} <= dims
    assert not [d for d in dims if re.fullmatch(r"(tuple|leg|tuples)\d+|.*_", d)], dims


def test_flow_writes_beta_and_gamma_of_the_posteriors_own_draws(erf_run, tmp_path, capsys):
    """The β file: γ_local = −β/λ draw by draw against the posterior file's λ, the analytic
    γ = d_in = 1 of Erf-net, the --reference-cutoff it was asked for, and the checksum."""
    from nngp_ppl import _io

    _, run = erf_run
    post, beta = tmp_path / "post.nc", tmp_path / "beta.nc"
    assert main(["infer", str(run), "-o", str(post), *INFER]) == 0
    assert main(["flow", str(post), "-o", str(beta), "--reference-cutoff", "10"]) == 0
    capsys.readouterr()
    p = _io.read_netcdf(post, name="p", what="posterior", tree=True)["posterior"]
    b = _io.read_netcdf(beta, name="b", what="beta", tree=True,
                        file_format=_io.BETA_FORMAT, version=_io.BETA_VERSION)
    bp = b["posterior"].to_dataset()
    lam = p["lambda"].transpose("chain", "draw", "width", "cutoff").values
    beta_l = bp["beta"].sel(coupling="lambda").transpose("chain", "draw", "width",
                                                         "cutoff").values
    assert lam.shape == beta_l.shape == (2, 200, 1, 2)
    gamma_local = bp["gamma_local"].transpose("chain", "draw", "width", "cutoff").values
    # flow differentiates the posterior's float32 deviation draws, so -β/λ holds to float32
    # precision of the largest |λ| (2^-20 leaves a factor 8 over its 2^-23 rounding).
    np.testing.assert_allclose(gamma_local * lam, -beta_l, rtol=0,
                               atol=2.0**-20 * np.abs(lam).max() * np.abs(gamma_local).max())
    assert np.all(np.sign(gamma_local) == np.sign(-beta_l / lam))
    assert float(b["constant_data"]["gamma_analytic"]) == 1.0
    assert float(b.attrs["reference_cutoff"]) == 10.0
    assert np.all(np.isfinite(bp["gamma"].values))


def test_a_posterior_of_an_older_layout_is_refused_with_what_to_do(erf_run, tmp_path,
                                                                    capsys):
    import arviz_base

    from nngp_ppl import _io

    old = arviz_base.from_dict({"posterior": {"lambda": np.ones((2, 5, 1, 1))}},
                               dims={"lambda": ["width", "cutoff"]},
                               coords={"width": [5], "cutoff": [10.0]})
    path = tmp_path / "old.nc"
    _io.write_netcdf(old, path, file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION - 1)
    assert main(["flow", str(path), "-o", str(tmp_path / "beta.nc")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert (f"layout version {_io.POSTERIOR_VERSION - 1}; this nngp_ppl reads version "
            f"{_io.POSTERIOR_VERSION}: re-run the command that wrote it") in err


# --- lattice through the CLI: --kind and --propagator reach the file -------------------------
def _first_order_connected4(lattice, lam, propagator):
    """Connected 4-pt function at first order in λ (κ = 0) on a quadrature rule: the single
    vertex joined to the four external points, −24 λ Σ_j w_j Π_a K̃(x_a, y_j), with
    K̃ = K (full) or K − σ_b² (bias_subtracted); Gauss-net σ_W = 1, σ_b = 0.5."""
    from nngp_ppl.tuples import distinct_tuples

    X = np.array([[0.0], [0.6]])
    K = nngp_ppl.GaussNet(sigma_w=1.0, sigma_b=0.5).kernel(
        np.concatenate([X, lattice.points]))[:2, 2:]
    if propagator == "bias_subtracted":
        K = K - 0.25
    legs = np.prod(K[distinct_tuples(2, 4)], axis=1)  # (T, P)
    return -24.0 * lam * legs @ lattice.weights


@pytest.mark.parametrize("kind, propagator", [("uniform", "full"),
                                              ("gauss_legendre", "bias_subtracted")])
@pytest.mark.slow
def test_lattice_kind_and_propagator_reach_the_file(tmp_path, capsys, kind, propagator):
    import xarray as xr

    from nngp_ppl.theory.lattice import box_lattice

    out = tmp_path / "lat.nc"
    assert main(["lattice", "--ensemble", "gauss", "--sigma-w", "1", "--sigma-b", "0.5",
                 "--inputs=0,0.6", "--cutoff", "1", "--sites", "4", "--kind", kind,
                 "--propagator", propagator, "--lambda", "0.002", "--chains", "2",
                 "--samples", "100", "--warmup", "100", "-o", str(out)]) == 0
    capsys.readouterr()
    ds = xr.load_dataset(out, engine="h5netcdf")
    assert ds.attrs["propagator"] == propagator
    X = np.array([[0.0], [0.6]])
    lattices = {"uniform": box_lattice(1, 1.0, "uniform", split_points=X, n_sites=4),
                "gauss_legendre": box_lattice(1, 1.0, "gauss_legendre", split_points=X,
                                              nodes=4)}
    assert ds.attrs["lattice_sites"] == len(lattices[kind])
    got = ds["connected4_first_order"].values
    np.testing.assert_allclose(got, _first_order_connected4(lattices[kind], 0.002, propagator),
                               rtol=1e-10)
    other_kind = "gauss_legendre" if kind == "uniform" else "uniform"
    other_prop = "full" if propagator == "bias_subtracted" else "bias_subtracted"
    for lattice, prop in ((lattices[other_kind], propagator), (lattices[kind], other_prop)):
        assert np.max(np.abs(got - _first_order_connected4(lattice, 0.002, prop))) > (
            1e-3 * np.max(np.abs(got)))
    assert {"tuple_4", "position_4"} <= set(ds.dims) and "tuples_4" in ds
    assert ds.attrs["nngp_ppl_format_version"] == 2


_DEVICES = ("import nngp_ppl.cli.main as cli; print(cli.cpu_devices_per_core()); "
            "import jax; print(len(jax.devices()))")


@pytest.mark.parametrize("env", [{}, {"JAX_NUM_CPU_DEVICES": "1"},
                                 {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}])
def test_the_command_gives_jax_one_cpu_device_per_core_unless_told(env):
    """The program (not a call of main() with argv from Python) asks for one CPU device per
    available core; a count the user set is kept."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    proc = subprocess.run([sys.executable, "-c", _DEVICES], env={**base, **env,
                          "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    set_count, devices = proc.stdout.split()
    cores = len(os.sched_getaffinity(0))
    if not env:
        assert (set_count, int(devices)) == ((str(cores), cores) if cores > 1 else ("None", 1))
    else:
        assert set_count == "None" and int(devices) == (1 if "JAX_NUM_CPU_DEVICES" in env else 3)


def test_main_called_with_argv_leaves_jax_alone(monkeypatch):
    calls = []
    monkeypatch.setattr("nngp_ppl.cli.main.cpu_devices_per_core", lambda: calls.append(1))
    with pytest.raises(SystemExit):  # argparse exits after printing the version
        main(["--version"])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["nngp-ppl", "--version"])
    with pytest.raises(SystemExit):
        main()
    assert calls == [1]
