"""Faults and bad inputs from the adversarial pass of issue 11, one test per defect.

Each test reproduces one reported failure (a traceback, a hang, a silently accepted input, a
file that could be edited unnoticed or that was refused although intact) and checks the
fixed behaviour: one clear ``NNGPInputError`` naming the argument or option, exit status 2
without a traceback on the command line, bounded work, or an exact answer. Files are built
from synthetic sums or small hand-made DataTrees, so no test samples many networks or runs
NUTS.
"""

from __future__ import annotations

import hashlib
import json
import sys

import h5netcdf
import numpy as np
import pytest
import xarray as xr
from patching import patch_everywhere

import nngp_ppl
from nngp_ppl import CorrelatorStats, NNGPInputError, _io
from nngp_ppl._lock import exclusive_lock
from nngp_ppl.cli.main import build_parser, main
from nngp_ppl.sampling.stats import accumulated_orders
from nngp_ppl.tuples import distinct_tuples

NET = nngp_ppl.ErfNet(sigma_w=1.2, sigma_b=0.4)
X = np.array([[-1.0], [0.3], [0.8]])


def synthetic_stats(orders=(2, 4, 6), *, covariance=True, n=50, width=3, seed=0):
    """Statistics of stand-in network outputs (random numbers), exact sums by brute force."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, len(X)))
    sums = {m: np.prod(f[:, distinct_tuples(len(X), m)], axis=2).sum(axis=0)
            for m in accumulated_orders(orders, covariance)}
    squares = None
    if not covariance:
        squares = {width: {m: (np.prod(f[:, distinct_tuples(len(X), m)], axis=2) ** 2).sum(0)
                           for m in orders}}
    return CorrelatorStats(NET, X, orders, 0, {width: sums}, {width: [(0, n)]},
                           squares=squares, covariance=covariance)


def edit_attr(path, key, value):
    """Change one root attribute in place, as a user with h5py would."""
    with h5netcdf.File(path, "a") as f:
        f.attrs[key] = value


def cli_error(argv, capsys) -> str:
    """Run the CLI, require exit 2 with one error line and no traceback; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture
def no_sampling(monkeypatch):
    """Any call of the sampler fails the test: the error must come before the work."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the sampler ran although the arguments were bad")

    patch_everywhere(monkeypatch, nngp_ppl, "sample_correlators", forbidden)


SAMPLE = ["sample", "--ensemble", "erf", "--inputs", "0.5,1", "--widths", "2",
          "--n-nets", "20", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# data lost or unusable
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("covariance", [True, False])
def test_a_run_with_one_order_reads_back(tmp_path, covariance):
    # orders=[4] used to read back as 4 and change the checksum ("damaged or edited").
    stats = synthetic_stats((4,), covariance=covariance)
    stats.to_netcdf(tmp_path / "o4.nc")
    back = CorrelatorStats.from_netcdf(tmp_path / "o4.nc")
    assert back.orders == (4,)
    np.testing.assert_array_equal(back.moment_sums(3)[4], stats.moment_sums(3)[4])


def test_one_order_runs_written_before_the_fix_still_read(tmp_path):
    # The old writer hashed attributes as np.asarray(v).tolist(): [4] as a list. Rebuild such
    # a file with that independent recipe; it must stay readable.
    ds = synthetic_stats((4,), covariance=False).to_dataset()
    h = hashlib.sha256()
    for name in sorted(ds.variables):
        v = np.ascontiguousarray(ds.variables[name].values)
        v = v.astype(v.dtype.newbyteorder("<"))
        h.update(f"{name}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    attrs = {k: (v if isinstance(v, str) else np.asarray(v).tolist())
             for k, v in ds.attrs.items() if k != "checksum"}
    h.update(json.dumps(attrs, sort_keys=True).encode())
    ds.attrs["checksum"] = "sha256:" + h.hexdigest()
    ds.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")
    assert CorrelatorStats.from_netcdf(tmp_path / "old.nc").orders == (4,)


def test_one_element_list_attributes_survive_in_every_group_of_a_datatree(tmp_path):
    tree = small_posterior(orders=[4], couplings=["lambda"])
    tree["constant_data"].attrs["legs"] = [4]
    _io.write_netcdf(tree, tmp_path / "p.nc")
    back = _io.read_netcdf(tmp_path / "p.nc", name="p", what="posterior", tree=True)
    assert np.atleast_1d(back.attrs["orders"]).tolist() == [4]


def test_a_second_sample_run_on_the_same_output_is_refused(tmp_path, capsys, no_sampling):
    out = tmp_path / "run.nc"
    with exclusive_lock(out, option="-o"):
        err = cli_error(SAMPLE + ["-o", str(out)], capsys)
    assert "-o/--output" in err and "another nngp-ppl run" in err
    assert not out.exists()


@pytest.mark.parametrize("where, words", [
    ("FILE/x.nc", "is a file, not a directory"),
    ("/proc/x.nc", "does not accept new files"),
])
def test_unwritable_output_is_refused_before_sampling(tmp_path, capsys, no_sampling, where,
                                                      words):
    (tmp_path / "FILE").write_text("")
    target = str(tmp_path / where) if not where.startswith("/") else where
    err = cli_error(SAMPLE + ["--no-checkpoint", "-o", target], capsys)
    assert "-o/--output" in err and words in err


# ---------------------------------------------------------------------------------------------
# tracebacks, crashes, hangs
# ---------------------------------------------------------------------------------------------
def assert_damaged_header_reads_as_one_error(path, load, match, monkeypatch):
    """Flip a byte inside the HDF5 object header (h5netcdf fails half-way through opening):
    ``load(path)`` raises one NNGPInputError matching ``match`` and leaves no
    "Exception ignored in: File.close" behind."""
    import gc

    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with pytest.raises(NNGPInputError, match=match):
        load(path)
    gc.collect()
    assert reported == []


def test_show_on_a_damaged_header_prints_one_line_only(tmp_path, monkeypatch):
    path = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(path)
    assert_damaged_header_reads_as_one_error(path, CorrelatorStats.from_netcdf,
                                             "not a readable", monkeypatch)


@pytest.mark.parametrize("fn", ["gp_correlator", "gp_correlator_tuples"])
def test_the_zero_point_function_is_one(fn):
    from nngp_ppl.theory import wick

    K = np.asarray(NET.kernel(X))
    assert np.asarray(getattr(wick, fn)(K, 0)).ravel().tolist() == [1.0]


def test_exact_zero_point_function_is_one():
    from nngp_ppl.theory.exact import exact_correlator

    assert float(exact_correlator(NET, X, 2, 0)) == 1.0


def test_widths_none_is_a_clear_error():
    with pytest.raises(NNGPInputError, match="widths must be a positive integer"):
        nngp_ppl.sample_correlators(NET, X, None, 10, progress=False)


# ---------------------------------------------------------------------------------------------
# silent nonsense
# ---------------------------------------------------------------------------------------------
def test_inputs_whose_kernel_overflows_are_refused():
    with pytest.raises(NNGPInputError, match="X must have coordinates of size at most"):
        nngp_ppl.ErfNet().kernel([[1.0], [1e300]])


def test_sample_refuses_huge_inputs_at_the_start(capsys, tmp_path, no_sampling):
    argv = ["sample", "--ensemble", "erf", "--inputs", "0.5,1,1e200", "--widths", "2",
            "--n-nets", "20", "-o", str(tmp_path / "x.nc")]
    assert cli_error(argv, capsys).split("error: ")[1].startswith("--inputs")


def test_output_naming_a_directory_is_refused(tmp_path, capsys, no_sampling):
    err = cli_error(SAMPLE + ["-o", str(tmp_path / "newdir") + "/"], capsys)
    assert "names a directory" in err
    assert not (tmp_path / "newdir").exists()


def test_one_network_is_refused(tmp_path, capsys, no_sampling):
    argv = [a if a != "20" else "1" for a in SAMPLE] + ["-o", str(tmp_path / "x.nc")]
    assert "--n-nets must be at least 2" in cli_error(argv, capsys)


def test_statistics_of_zero_networks_are_refused():
    with pytest.raises(NNGPInputError, match="at least one network"):
        CorrelatorStats(NET, X, (2,), 0, {3: {2: np.zeros(6), 4: np.zeros(15)}}, {3: []})


def test_fit_refuses_a_width_with_one_network(tmp_path, capsys):
    path = tmp_path / "run.nc"
    synthetic_stats(n=1).to_netcdf(path)
    err = cli_error(["fit", str(path), "--cutoffs", "10", "-o", str(tmp_path / "f.nc")], capsys)
    assert "fewer than 2 networks" in err


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nngp-ppl {nngp_ppl.__version__}"


@pytest.mark.parametrize("value", ["-0.3,0.6", "-1", "-.5, 0.5", "-1e-3;2"])
def test_negative_inputs_need_no_equals_sign(value):
    args = build_parser().parse_args(["sample", "--ensemble", "erf", "--inputs", value,
                                      "--widths", "2", "--n-nets", "10", "-o", "x.nc"])
    assert args.inputs == value


def test_option_errors_name_the_option(tmp_path, capsys):
    path = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(path)
    err = cli_error(["fit", str(path), "--cutoffs", "10", "--propagator", "half",
                     "-o", str(tmp_path / "f.nc")], capsys)
    assert "error: --propagator must be one of" in err


# ---------------------------------------------------------------------------------------------
# posterior, β and fit files: checksummed like run files
# ---------------------------------------------------------------------------------------------
def small_posterior(*, orders=(4,), couplings=("lambda",), cutoffs=(10.0, 100.0), draws=None,
                    inputs=True):
    """A DataTree laid out like infer_couplings' output (two chains of five draws)."""
    import arviz_base

    rng = np.random.default_rng(1)
    shape = (2, 5, 1, len(cutoffs))
    lam = -1e-3 * (1 + 0.1 * rng.normal(size=shape)) if draws is None else draws
    groups = {"posterior": {"lambda": lam, "cbar": np.abs(rng.normal(size=shape))},
              "constant_data": {"inputs": X} if inputs else {"n_nets": np.array([50])}}
    dims = {"lambda": ["width", "cutoff"], "cbar": ["width", "cutoff"],
            "inputs": ["input", "input_dim"], "n_nets": ["width"]}
    attrs = {"title": "nngp_ppl coupling posterior", "ensemble": json.dumps(NET.to_dict()),
             "orders": list(orders), "couplings": list(couplings), "propagator": "full",
             "lattice": "default quadrature", "truncation": 1}
    return arviz_base.from_dict(groups, dims=dims, coords={"width": [3], "cutoff": list(cutoffs)},
                                attrs={"/": attrs})


def write_posterior(tree, path):
    _io.write_netcdf(tree, path, file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION)
    return path


def test_an_edited_posterior_attribute_is_refused(tmp_path, capsys):
    # Editing `ensemble` used to change gamma from 1 to 5 silently.
    path = write_posterior(small_posterior(), tmp_path / "post.nc")
    edit_attr(path, "ensemble", json.dumps(nngp_ppl.GaussNet().to_dict()))
    err = cli_error(["flow", str(path), "-o", str(tmp_path / "beta.nc")], capsys)
    assert "damaged or edited" in err


def test_an_edited_posterior_draw_is_refused(tmp_path, capsys):
    path = write_posterior(small_posterior(), tmp_path / "post.nc")
    with h5netcdf.File(path, "a") as f:
        f["posterior"]["lambda"][0, 0, 0, 0] = 1e300
    err = cli_error(["flow", str(path), "-o", str(tmp_path / "beta.nc")], capsys)
    assert "damaged or edited" in err


def test_the_python_readers_of_a_posterior_file_verify_it_as_the_cli_does(tmp_path):
    # beta_function(path) and the study's target stage read a posterior through
    # read_posterior; they opened it unverified before, and an edited ensemble gave another γ.
    from nngp_ppl.inference import beta_function, read_posterior

    path = write_posterior(small_posterior(), tmp_path / "post.nc")
    with pytest.raises(NNGPInputError, match="attribute 'couplings' is not valid JSON"):
        read_posterior(path)  # intact, but not what infer_couplings writes
    edit_attr(path, "ensemble", json.dumps(nngp_ppl.GaussNet().to_dict()))
    for read in (read_posterior, beta_function):
        with pytest.raises(NNGPInputError, match="posterior: .*post.nc is damaged or edited"):
            read(path)


@pytest.mark.parametrize("tree, words", [
    (lambda: small_posterior(draws=np.full((2, 5, 1, 2), np.nan)), "non-finite posterior draws"),
    (lambda: small_posterior(cutoffs=(-10.0, 100.0)), "distinct positive finite cutoffs"),
    (lambda: small_posterior(cutoffs=(10.0, 10.0)), "distinct positive finite cutoffs"),
    (lambda: small_posterior(inputs=False), "lacks constant_data/inputs"),
])
def test_flow_refuses_posteriors_it_cannot_use(tmp_path, capsys, tree, words):
    path = write_posterior(tree(), tmp_path / "post.nc")
    assert words in cli_error(["flow", str(path), "-o", str(tmp_path / "beta.nc")], capsys)
    assert not (tmp_path / "beta.nc").exists()


def test_flow_on_a_beta_file_says_what_it_got(tmp_path, capsys):
    path = tmp_path / "beta.nc"
    _io.write_netcdf(small_posterior(), path, file_format=_io.BETA_FORMAT,
                     version=_io.BETA_VERSION)
    err = cli_error(["flow", str(path), "-o", str(tmp_path / "b2.nc")], capsys)
    assert "not a coupling posterior" in err and "nngp_ppl.BetaFunction" in err


def small_fit():
    from nngp_ppl.inference import eft

    return xr.Dataset(
        {"lambda_mean": (("width", "cutoff"), np.array([[-1e-3, -5e-4]]))},
        coords={"width": [3], "cutoff": [10.0, 100.0]},
        attrs={"nngp_ppl_format": eft.FIT_FORMAT, "nngp_ppl_format_version": eft.FIT_VERSION,
               "propagator": "full", "gamma_analytic": 1.0},
    )


def test_fit_verify_refuses_an_edited_fit(tmp_path, capsys):
    from nngp_ppl.inference import eft

    run = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(run)
    fit = tmp_path / "fit.nc"
    eft.write_fit(small_fit(), fit, run)
    assert main(["fit", str(run), "--verify", str(fit)]) == 0
    capsys.readouterr()
    edit_attr(fit, "gamma_analytic", 5.0)
    assert "damaged or edited" in cli_error(["fit", str(run), "--verify", str(fit)], capsys)


# ---------------------------------------------------------------------------------------------
# infer: arguments checked before any NUTS run
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def run_file(tmp_path, monkeypatch):
    import nngp_ppl.inference as inference

    def forbidden(*args, **kwargs):
        raise AssertionError("infer_couplings ran although the arguments were bad")

    patch_everywhere(monkeypatch, inference, "infer_couplings", forbidden)
    path = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(path)
    return path


@pytest.mark.parametrize("extra, words", [
    (["--widths", ""], "--widths must list at least one width"),
    (["--couplings", "kappa"], "--couplings must be lambda or lambda,kappa"),
    (["--plot", "fig.xyz"], "--plot: cannot draw a .xyz figure"),
    (["--chains", "1e9"], "--chains/--samples: 1000000000 chains"),
    (["--seed", "1e30"], "--seed must be an integer in 0..2**63-1"),
    (["--rcond", "nan"], "--rcond must be a finite real number"),
])
def test_infer_refuses_bad_options_before_sampling(tmp_path, capsys, run_file, extra, words):
    argv = ["infer", str(run_file), "--cutoffs", "10", "-o", str(tmp_path / "p.nc")] + extra
    assert words in cli_error(argv, capsys)
    assert not (tmp_path / "p.nc").exists()


# ---------------------------------------------------------------------------------------------
# vertex integrals: bounded work, clear errors
# ---------------------------------------------------------------------------------------------
def _integrals(net, x, cutoff, n=4):
    from nngp_ppl.theory.lattice import vertex_integrals

    x = np.asarray(x, dtype=np.float64)
    return vertex_integrals(net, x, distinct_tuples(len(x), n), cutoff)


@pytest.mark.parametrize("x, cutoff, words", [
    ([[0.5], [1.0]], 1e160, r"cutoff must be at most 1e\+50"),  # was LinAlgError in fit
    ([[0.5], [1e7]], 1e8, "nodes per axis"),  # was MemoryError
    ([[0.5], [1e40]], 1e41, "nodes per axis"),  # hung in _axis_plan (1e200 now fails earlier)
])
def test_vertex_integrals_bound_their_work(x, cutoff, words):
    with pytest.raises(NNGPInputError, match=words):
        _integrals(nngp_ppl.ErfNet(), x, cutoff)


def test_vertex_integrals_that_overflow_are_refused():
    # ReLU kernels grow like |y|: six legs over a box of 1e49 exceed float64.
    with pytest.raises(NNGPInputError, match="overflow float64"):
        _integrals(nngp_ppl.ReLUNet(), [[0.5], [1.0]], 1e49, n=6)


def test_a_uniform_lattice_too_large_to_hold_is_refused():
    from nngp_ppl.theory.lattice import box_lattice

    with pytest.raises(NNGPInputError, match="n_sites: a uniform lattice of 100000 sites"):
        box_lattice(2, 1.0, "uniform", n_sites=100_000)


def test_a_checkpoint_with_a_damaged_header_prints_one_line_only(tmp_path, monkeypatch):
    from nngp_ppl.sampling.checkpoint import ShardLedger
    from nngp_ppl.sampling.sampler import plan_run

    path = tmp_path / "run.nc.partial"
    ShardLedger(plan_run(NET, X, [3], 20, orders=(2,))).save(path)
    assert_damaged_header_reads_as_one_error(
        path, ShardLedger.load, "not a readable checkpoint.*start the run over", monkeypatch)


def test_a_lattice_field_too_large_for_memory_is_refused(tmp_path, capsys, monkeypatch):
    # --sites 1e6 used to make XLA abort (SIGABRT) allocating the dense (P, P) kernel.
    import nngp_ppl.inference.models.field as field

    def forbidden(*args, **kwargs):
        raise AssertionError("the field lattice was built although it cannot fit")

    monkeypatch.setattr(field.FieldLattice, "build", forbidden)
    argv = ["lattice", "--ensemble", "gauss", "--inputs", "0,0.5", "--cutoff", "1",
            "--sites", "1e6", "--lambda", "-0.002", "--kappa", "0.001",
            "-o", str(tmp_path / "lat.nc")]
    err = cli_error(argv, capsys)
    assert "--sites: a field on 1000000 sites" in err and "memory available" in err


def test_lattice_errors_name_its_own_cutoff_option(tmp_path, capsys):
    argv = ["lattice", "--ensemble", "gauss", "--inputs", "0,0.5", "--cutoff", "1e160",
            "--sites", "4", "--lambda", "0.002", "-o", str(tmp_path / "lat.nc")]
    assert "error: --cutoff must be at most" in cli_error(argv, capsys)


def test_a_plot_on_the_posterior_path_is_refused(tmp_path, capsys, run_file):
    out = str(tmp_path / "p.nc")
    err = cli_error(["infer", str(run_file), "--cutoffs", "10", "-o", out, "--plot", out],
                    capsys)
    assert "--plot must differ from" in err


@pytest.mark.parametrize("path", [123, None, ""])
def test_a_fit_path_that_is_no_path_is_a_clear_error(path):
    from nngp_ppl.inference import eft

    with pytest.raises(NNGPInputError, match="fit file must be a file path"):
        eft.load_fit(path)


def test_statistics_written_below_a_file_are_a_clear_error(tmp_path):
    (tmp_path / "FILE").write_text("")
    with pytest.raises(NNGPInputError, match="FILE is a file, not a directory"):
        synthetic_stats().to_netcdf(tmp_path / "FILE" / "run.nc")


class _ClosedPipe:
    """A stdout whose reader went away after the first line (``nngp-ppl ... | head -1``)."""

    def __init__(self):
        self.lines = 0

    def write(self, text):
        if self.lines >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines += text.count("\n")
        return len(text)

    def flush(self):
        pass


def test_a_closed_pipe_on_stdout_still_writes_the_file(tmp_path, monkeypatch):
    # `nngp-ppl fit RUN --cutoffs paper -o FIT | head -2` died with BrokenPipeError before
    # writing FIT.
    run = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(run)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["fit", str(run), "--cutoffs", "10,100", "-o", str(tmp_path / "fit.nc")]) == 0
    assert (tmp_path / "fit.nc").is_file()


def test_sigterm_is_handled_like_ctrl_c(tmp_path, monkeypatch, capsys):
    # `kill PID` used to end a sample run silently, leaving its lock file behind.
    import os
    import signal

    def terminated(*args, checkpoint=None, **kwargs):
        checkpoint.write_text("finished shards")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    patch_everywhere(monkeypatch, nngp_ppl, "sample_correlators", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(SAMPLE + ["-o", str(tmp_path / "run.nc")]) == 143
    err = capsys.readouterr().err
    assert "rerun the same command with --resume" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["run.nc.partial"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(run)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "fit.nc"))

    patch_everywhere(monkeypatch, _io, "write_netcdf", full)
    assert main(["fit", str(run), "--cutoffs", "10", "-o", str(tmp_path / "fit.nc")]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1


def test_a_fit_file_given_as_a_run_file_is_named(tmp_path, capsys):
    from nngp_ppl.inference import eft

    run = tmp_path / "run.nc"
    synthetic_stats().to_netcdf(run)
    eft.write_fit(small_fit(), tmp_path / "fit.nc", run)
    err = cli_error(["show", str(tmp_path / "fit.nc")], capsys)
    assert "it is an nngp_ppl file of format 'nngp_ppl.EFTFit'" in err
