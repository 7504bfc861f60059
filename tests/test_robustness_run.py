"""Robustness of runs: bad input, concurrent writers, resource limits and interruptions.

Each test reproduces one defect from issue 11 (it failed before the fix): the package must
answer a bad request with one clear :class:`NNGPInputError` naming the argument (the CLI:
the option, exit status 2, no traceback) and must never lose or half-write a result.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

import nngp_ppl
import nngp_ppl.sampling.sampler as sampling
from nngp_ppl import NNGPInputError, sample_correlators
from nngp_ppl._lock import exclusive_lock, lock_path_for
from nngp_ppl.sampling import _shard
from nngp_ppl.sampling.sampler import network_sums, plan_run


# --- exclusive output lock -------------------------------------------------------------------
def test_a_second_writer_of_the_same_output_is_refused_and_the_lock_is_released(tmp_path):
    target = tmp_path / "run.nc"
    with exclusive_lock(target, option="-o") as held:
        assert held == lock_path_for(target)
        with pytest.raises(NNGPInputError, match=r"^-o: .*run\.nc is being written by another"):
            with exclusive_lock(target, option="-o"):
                pass
    # Released and tidied: a later run takes it again and no lock file is left behind.
    with exclusive_lock(target, option="-o"):
        pass
    assert os.listdir(tmp_path) == []


def test_a_lock_held_by_another_process_is_seen_and_dies_with_it(tmp_path):
    # The other process takes the flock directly, so this checks the kernel-level contract
    # rather than our own helper against itself.
    lock = lock_path_for(tmp_path, directory=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"%d" % os.getpid())
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(NNGPInputError, match=rf"--out: .* \(process {holder.pid}\)"):
            with exclusive_lock(tmp_path, option="--out", directory=True):
                pass
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves its file but not its lock: the next run proceeds.
    assert lock.exists()
    with exclusive_lock(tmp_path, option="--out", directory=True):
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_lock_in_a_missing_directory_names_the_option(tmp_path):
    with pytest.raises(NNGPInputError, match=r"^-o: cannot create the lock file"):
        with exclusive_lock(tmp_path / "missing" / "x.nc", option="-o"):
            pass


# --- sampling: resources and arguments -------------------------------------------------------
NET = nngp_ppl.ErfNet()
X3 = [-0.5, 0.0, 0.5]


def test_a_width_beyond_the_key_range_is_refused_not_an_overflow():
    with pytest.raises(NNGPInputError, match=r"^widths must be at most 2\*\*32 - 1"):
        sample_correlators(NET, X3, [10**12], 10, progress=False)


def test_a_width_too_wide_for_any_memory_is_refused_before_allocating():
    # 4e9 neurons x 8 networks x 21 float32 per neuron: ~2.5 TiB, more than any test machine.
    with pytest.raises(NNGPInputError, match=r"^widths: N=4,000,000,000 needs about .* GiB "
                                             r"for one batch of 8 networks .* widths up to "):
        sample_correlators(NET, X3, [4 * 10**9], 10, progress=False)


def test_the_memory_refusal_names_exactly_the_widest_width_that_fits(monkeypatch):
    free = 3 * 2**30
    monkeypatch.setattr(sampling, "available_bytes", lambda device: free)
    k, d_in, batch = 3, 1, 8
    fits = _shard.widest_fitting(free, batch, k, d_in)
    assert _shard.batch_bytes(fits, batch, k, d_in) <= free < _shard.batch_bytes(
        fits + 1, batch, k, d_in)
    with pytest.raises(NNGPInputError, match=rf"widths up to {fits:,} fit; with batch_size 1"):
        sample_correlators(NET, X3, [10**8], 10, progress=False, devices=1)
    with pytest.raises(NNGPInputError, match="widths: N=100,000,000"):
        network_sums(NET, X3, 10**8, 0, 0, 10)


#: XLA's buffer assignment for the compiled step, measured in a fresh process: in a test
#: session the same program can be assigned more temporary memory once other tests have
#: compiled (seen once in a full run: 19.1 MB against 13.8 MB alone), which is the
#: session's state, not the estimate's error.
MEMORY_CHILD = textwrap.dedent("""
    import json, sys
    import jax.numpy as jnp
    import nngp_ppl
    from nngp_ppl.sampling import _shard
    name, d_in, k, width, batch = json.loads(sys.argv[1])
    net = nngp_ppl.make_ensemble(name, d_in=d_in)
    plan = _shard.StepPlan(k, (2, 4), True)
    step = _shard.compiled_step(net, width, batch, min(batch, _shard.chunk_size(k, 4)), plan)
    lowered = step.lower(_shard.zero_totals(plan), jnp.zeros((k, d_in)),
                         jnp.asarray(0, jnp.int64), jnp.asarray(0, jnp.uint32),
                         jnp.asarray(batch, jnp.int32))
    print(lowered.compile().memory_analysis().temp_size_in_bytes)
""")


@pytest.mark.parametrize(("name", "d_in", "k"), [("erf", 1, 6), ("gauss", 3, 1)])
def test_the_memory_estimate_bounds_what_xla_allocates(name, d_in, k):
    # Oracle: XLA's own buffer assignment for the compiled step. The estimate must not be
    # below it (a refusal would come too late) nor far above it (it would refuse runs that fit).
    width, batch = 2000, 64
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD,
                           json.dumps([name, d_in, k, width, batch])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    xla = int(proc.stdout.split()[-1])
    estimate = _shard.batch_bytes(width, batch, k, d_in)
    assert xla <= estimate <= 1.5 * xla


@pytest.mark.parametrize("bad", ["no", "yes", 0, 1, None])
def test_progress_must_be_a_boolean(bad):
    with pytest.raises(NNGPInputError, match=r"^progress must be True or False"):
        sample_correlators(NET, X3, [3], 16, progress=bad)


@pytest.mark.parametrize("widths", [None, "5", 2.5])
def test_widths_that_are_not_integers_get_a_clear_error(widths):
    with pytest.raises(NNGPInputError, match=r"^widths must be a positive integer"):
        sample_correlators(NET, X3, widths, 10, progress=False)


def test_a_shard_size_that_is_not_whole_batches_is_refused_with_the_sizes_that_work():
    # Six inputs accumulate in chunks of 128 networks: 1000 would have become 1024 silently.
    X6 = nngp_ppl.paper_inputs("erf")
    with pytest.raises(NNGPInputError, match=r"^shard_size .* use 896 or 1024, or omit it"):
        plan_run(NET, X6, [100], 10_000, shard_size=1000)
    with pytest.raises(NNGPInputError, match=r"^shard_size .*batch_size 96.* use 960 or 1056"):
        plan_run(NET, X6, [100], 10_000, shard_size=1000, batch_size=96)
    # A whole number of chunks is kept exactly; the default batch shrinks to divide it.
    plan = plan_run(NET, X6, [100, 1000], 10_000, shard_size=4096)
    assert plan.shard == (4096, 4096)
    assert all(4096 % b == 0 and b % 128 == 0 for b in plan.batch)
    # A shard as large as the run is just the run: nothing to refuse.
    assert plan_run(NET, X6, [100], 900, shard_size=1000).shards(100) == [(0, 900)]


def test_one_network_warns_that_the_noise_is_undefined():
    with pytest.warns(UserWarning, match=r"^n_nets=1: .*no estimate of their noise"):
        stats = sample_correlators(NET, X3, [3], 1, orders=(2,), progress=False)
    assert np.all(np.isnan(stats.stderr_tuples(2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", nngp_ppl.HeavyTailWarning)
        sample_correlators(NET, X3, [3], 2, orders=(2,), progress=False)


def test_float64_entry_points_refuse_to_run_with_x64_turned_off():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match=r"nngp_ppl\.enable_x64\(\)"):
            sample_correlators(NET, X3, [3], 16, progress=False)
    finally:
        nngp_ppl.enable_x64()
    assert jax.config.jax_enable_x64


# --- lattice CLI -----------------------------------------------------------------------------
def test_lattice_uniform_box_smaller_than_the_inputs_is_refused_like_gauss_legendre(
        tmp_path, capsys):
    from nngp_ppl.cli.main import main

    for kind in ("uniform", "gauss_legendre"):
        argv = ["lattice", "--ensemble", "gauss", "--inputs=0,0.5", "--cutoff", "0.3",
                "--kind", kind, "--lambda", "0", "-o", str(tmp_path / "lat.nc")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "--cutoff must be at least the inputs' extent max|x_i| = 0.5" in err, err
    assert not (tmp_path / "lat.nc").exists()


def test_lattice_target_accept_outside_the_unit_interval_is_refused(tmp_path, capsys):
    from nngp_ppl.cli.main import main

    for bad in ("1", "0", "-0.5", "x"):
        assert main(["lattice", "--ensemble", "gauss", "--inputs=0,0.5", "--cutoff", "1",
                     "--lambda", "0", "--target-accept", bad, "-o",
                     str(tmp_path / "lat.nc")]) == 2
        assert "--target-accept" in capsys.readouterr().err


def _lattice_table(reliable: int):
    import xarray as xr

    t = np.array([[0, 0, 0, 0], [0, 0, 1, 1]])
    ones = np.ones(2)
    return xr.Dataset(
        {"G4": ("tuple_4", ones), "G4_mcse": ("tuple_4", ones), "G4_gp": ("tuple_4", ones),
         "G4_first_order": ("tuple_4", ones), "connected4": ("tuple_4", ones),
         "connected4_mcse": ("tuple_4", ones), "connected4_first_order": ("tuple_4", ones),
         "tuples_4": (("tuple_4", "position_4"), t)},
        attrs={"lambda": -0.01, "kappa": 0.001, "lattice": "Lattice(...)",
               "propagator": "full", "divergences": 0, "max_r_hat": 1.0,
               "min_ess_bulk": 900.0, "interaction_sd": 0.42,
               "first_order_reliable": reliable})


def test_lattice_table_flags_first_order_where_the_couplings_are_non_perturbative():
    import io

    from nngp_ppl.cli.commands.lattice import print_table

    flagged, plain = io.StringIO(), io.StringIO()
    print_table(_lattice_table(0), flagged)
    print_table(_lattice_table(1), plain)
    assert "G4 1st ord*" in flagged.getvalue()
    assert "non-perturbative on this lattice (the interaction varies by σ_V = 0.42" in (
        flagged.getvalue())
    assert "*" not in plain.getvalue() and "non-perturbative" not in plain.getvalue()


def test_a_checkpoint_that_cannot_be_written_is_refused_before_any_shard(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(NNGPInputError, match=r"^checkpoint: .*file is a file"):
        sample_correlators(NET, X3, [3], 16, progress=False,
                           checkpoint=tmp_path / "file" / "run.partial")


def test_reproduce_refuses_more_networks_than_indices_before_sampling():
    from nngp_ppl.study.spec import PRESETS, check_preset_overrides

    with pytest.raises(NNGPInputError, match=r"^n_nets must be at most 2\*\*32"):
        check_preset_overrides(PRESETS["quick"], n_nets=2**32 + 1)


def test_network_sums_progress_must_be_a_callback():
    with pytest.raises(NNGPInputError, match=r"^progress must be None or a function"):
        network_sums(NET, X3, 3, 0, 0, 10, progress="no")


@pytest.mark.parametrize(("change", "match"), [
    ({"num_chains": 0}, r"^num_chains must be a positive integer"),
    ({"num_chains": 1}, r"^num_chains must be >= 2"),
    ({"num_samples": 0}, r"^num_samples must be a positive integer"),
    ({"num_samples": 3}, r"^num_samples must be >= 4"),
    ({"num_warmup": 0}, r"^num_warmup must be a positive integer"),
    ({"seed": -1}, r"^seed must be an integer in 0\.\.2\*\*63-1"),
    ({"target_accept": 1.0}, r"^target_accept must be in \(0, 1\)"),
])
def test_field_nuts_settings_are_checked_before_sampling(change, match):
    from nngp_ppl.inference.models.field import FieldLattice, field_correlators
    from nngp_ppl.theory.lattice import box_lattice

    field = FieldLattice.build(nngp_ppl.GaussNet(), np.array([[0.0], [0.5]]),
                               box_lattice(1, 1.0, "uniform", n_sites=4))
    with pytest.raises(NNGPInputError, match=match):
        field_correlators(field, 0.0, 0.0, **change)


def test_a_file_system_without_locks_warns_and_runs_unguarded(tmp_path, monkeypatch):
    import errno

    from nngp_ppl import _lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_lock.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match=r"^-o: the file system .* does not support locks"):
        with exclusive_lock(tmp_path / "x.nc", option="-o") as held:
            assert held is None
    assert os.listdir(tmp_path) == []
