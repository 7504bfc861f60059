"""Checkpoints and resume: a killed run continues without losing or double-counting a network.

The sums of a run are folded shard by shard in shard order (nngp_ppl.sampling.checkpoint), so an
interrupted and resumed run must reproduce the uninterrupted one *bit for bit*: the tests
compare with ``np.array_equal`` / ``Dataset.identical``, not with a tolerance. A network
lost would change n_nets and the sums; one counted twice would too (and is refused).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import nngp_ppl
from nngp_ppl import NNGPInputError, sample_correlators
from nngp_ppl.cli.main import main
from nngp_ppl.sampling.checkpoint import ShardLedger
from nngp_ppl.sampling.sampler import plan_run, shard_sums

# Small and cheap to compile: 3 inputs, orders 2 and 4.
NET = nngp_ppl.ErfNet(sigma_w=1.1, sigma_b=0.4)
X = [-0.8, 0.1, 0.9]
KW = dict(orders=(2, 4), seed=5, batch_size=64, shard_size=64, progress=False)


def assert_same_stats(a, b):
    assert a.widths == b.widths
    for w in a.widths:
        assert a.network_ranges(w) == b.network_ranges(w)
        for m, s in a.moment_sums(w).items():
            assert np.array_equal(s, b.moment_sums(w)[m]), (w, m)
        for n, s in a.tail_sums(w).items():
            assert np.array_equal(s, b.tail_sums(w)[n]), (w, n)


def test_ledger_folds_in_shard_order_whatever_the_completion_order(tmp_path):
    plan = plan_run(NET, X, [3, 7], 640, orders=(2, 4), seed=5, batch_size=64, shard_size=128)
    assert [len(plan.shards(w)) for w in plan.widths] == [5, 5]
    sums = {(w, i): shard_sums(NET, plan.inputs, w, plan.seed, s, c, orders=plan.orders,
                               covariance=True, batch=plan.batch_size(w))
            for w in plan.widths for i, (s, c) in enumerate(plan.shards(w))}
    in_order = ShardLedger(plan)
    for key in plan.tasks():
        in_order.add(*key, sums[key])
    shuffled = ShardLedger(plan)
    order = list(plan.tasks())
    np.random.default_rng(0).shuffle(order)
    for j, key in enumerate(order):
        shuffled.add(*key, sums[key])
        if j == 4:  # save and reload with some shards still waiting for predecessors
            shuffled.save(tmp_path / "ck")
            shuffled = ShardLedger.load(tmp_path / "ck")
            assert shuffled.shards_done() == 5
    assert shuffled.complete
    assert_same_stats(in_order.stats(), shuffled.stats())
    # Bitwise equal to one uninterrupted sample_correlators run with the same layout.
    direct = sample_correlators(NET, X, [3, 7], 640, orders=(2, 4), seed=5, batch_size=64,
                                shard_size=128, progress=False)
    assert_same_stats(direct, in_order.stats())
    with pytest.raises(ValueError, match="counted twice"):
        in_order.add(3, 2, sums[3, 2])


def test_python_api_resume_after_a_crash(tmp_path, monkeypatch):
    ck = tmp_path / "run.partial"
    whole = sample_correlators(NET, X, [7], 640, **KW)
    saves = []
    real_save = ShardLedger.save

    def crash_after_three(self, path):
        real_save(self, path)
        saves.append(path)
        if len(saves) == 3:
            raise KeyboardInterrupt  # as if killed right after the third checkpoint

    monkeypatch.setattr(ShardLedger, "save", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        sample_correlators(NET, X, [7], 640, checkpoint=ck, **KW)
    monkeypatch.setattr(ShardLedger, "save", real_save)
    assert ShardLedger.load(ck).shards_done() == 3
    with pytest.raises(NNGPInputError, match="resume=True"):
        sample_correlators(NET, X, [7], 640, checkpoint=ck, **KW)
    resumed = sample_correlators(NET, X, [7], 640, checkpoint=ck, resume=True, **KW)
    assert_same_stats(whole, resumed)
    assert resumed.n_nets(7) == 640
    # A finished checkpoint resumes to the same result without sampling again.
    again = sample_correlators(NET, X, [7], 640, checkpoint=ck, resume=True, **KW)
    assert_same_stats(whole, again)


def test_resume_refuses_a_different_run_and_damaged_checkpoints(tmp_path):
    ck = tmp_path / "run.partial"
    sample_correlators(NET, X, [7], 256, checkpoint=ck, **KW)
    for change, word in [({"seed": 6}, "seed"), ({"orders": (2,)}, "orders")]:
        with pytest.raises(NNGPInputError, match=f"different run.*{word}"):
            sample_correlators(NET, X, [7], 256, checkpoint=ck, resume=True,
                               **{**KW, **change})
    with pytest.raises(NNGPInputError, match="different run.*n_nets"):
        sample_correlators(NET, X, [7], 512, checkpoint=ck, resume=True, **KW)
    with pytest.raises(NNGPInputError, match="shard_size"):
        sample_correlators(NET, X, [7], 256, checkpoint=ck, resume=True,
                           **{**KW, "shard_size": 128})

    edited = xr.load_dataset(ck, engine="h5netcdf")
    edited["folded"][0, 3] = edited["folded"][0, 3] + 1.0
    edited.to_netcdf(tmp_path / "edited", engine="h5netcdf")
    with pytest.raises(NNGPInputError, match="checksum"):
        ShardLedger.load(tmp_path / "edited")
    (tmp_path / "junk").write_bytes(ck.read_bytes()[:200])  # truncated
    with pytest.raises(NNGPInputError, match="not a readable checkpoint"):
        sample_correlators(NET, X, [7], 256, checkpoint=tmp_path / "junk", resume=True, **KW)
    with pytest.raises(NNGPInputError, match="checkpoint"):
        sample_correlators(NET, X, [7], 256, checkpoint=tmp_path, **KW)
    with pytest.raises(NNGPInputError, match="resume"):
        sample_correlators(NET, X, [7], 256, resume=True, **KW)


def _argv(out, *extra):
    return ["sample", "--ensemble", "erf", "--sigma-w", "1.1", "--sigma-b", "0.4",
            "--inputs=-0.8,0.1,0.9", "--orders", "2,4", "--widths", "3,7",
            "--n-nets", str(N_KILL), "--seed", "5", "--batch-size", "64", "--shard-size", "64",
            "--no-progress", "-o", str(out), *extra]


# 2 widths x 30 shards: each shard is a few ms of sampling plus a checkpoint write, so the
# run lasts seconds after its first checkpoint appears (a checkpoint write alone takes
# 40-120 ms on a loaded 2-core machine); the kill lands well inside it.
N_KILL = 30 * 64


def test_sigkill_mid_run_then_resume_gives_the_identical_file(tmp_path, capsys):
    ref = tmp_path / "ref" / "run.nc"
    assert main(_argv(ref, "--no-checkpoint")) == 0
    out = tmp_path / "run.nc"
    ck = tmp_path / "run.nc.partial"
    proc = subprocess.Popen([sys.executable, "-m", "nngp_ppl.cli.main", *_argv(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ck.exists(), proc.stderr.read() if proc.poll() is not None else "timeout"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    done = ShardLedger.load(ck)
    total = len(done.plan.tasks())
    assert 0 < done.shards_done() < total  # killed mid-run

    capsys.readouterr()
    assert main(_argv(out, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"resuming from {ck}: {done.shards_done()} of {total} shards" in err
    assert not ck.exists()
    assert sorted(os.listdir(tmp_path)) == ["ref", "run.nc"]  # no checkpoint or temporaries
    with xr.open_dataset(out, engine="h5netcdf") as a, \
            xr.open_dataset(ref, engine="h5netcdf") as b:
        assert a.identical(b)  # every sum bit for bit, every attribute, the checksum
    stats = nngp_ppl.CorrelatorStats.from_netcdf(out)
    assert [stats.n_nets(w) for w in stats.widths] == [N_KILL, N_KILL]


def test_cli_refuses_to_overwrite_a_checkpoint_without_resume(tmp_path, capsys):
    out = tmp_path / "run.nc"
    (tmp_path / "run.nc.partial").write_bytes(b"left from a crash")
    assert main(_argv(out)) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and err.count("\n") == 1
    assert main(_argv(out, "--resume")) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(_argv(out, "--resume", "--no-checkpoint")) == 2
    assert "--no-checkpoint" in capsys.readouterr().err
