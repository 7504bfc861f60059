"""Training on Dask and the accumulation kernel's identity in training runs.

A training shard is a pure function of the plan (per-network keys, fixed-order folding in
one ShardLedger per recorded step), so a Dask run (an in-process LocalCluster on
127.0.0.1, two workers) gives the local run's sums bit for bit (``np.array_equal``), as
does a run killed locally and resumed on Dask. The kernel that summed the shards is
recorded in each step's ledger and checkpoint; a resume or a worker that would sum with
another kernel is refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_same_trained_bits, kill_training_at_shard

import nngp_ppl.sampling._native as _native
from nngp_ppl import ErfNet
from nngp_ppl._checks import NNGPInputError
from nngp_ppl.sampling.checkpoint import ShardLedger, kernel_key
from nngp_ppl.training.trainer import _train_shard_task, train_correlators

NET = ErfNet(sigma_w=1.0, sigma_b=0.5)
X = np.array([-1.0, -0.2, 0.6])
X_TRAIN = np.array([-0.8, 0.0, 0.9])
Y_TRAIN = np.array([0.3, -0.2, 0.5])
ARGS = (NET, X, [4, 6], 384, X_TRAIN, Y_TRAIN, [0, 5], 0.5)
KW = {"orders": (2, 4), "seed": 3, "batch_size": 64, "shard_size": 128, "progress": False}


def _same(a, b):
    return all(np.array_equal(a.at_step(s).moment_sums(w)[m], b.at_step(s).moment_sums(w)[m])
               and np.array_equal(a.at_step(s).tail_sums(w)[n], b.at_step(s).tail_sums(w)[n])
               for s in a.steps for w in a.at_step(s).widths
               for m in a.at_step(s).accumulated_orders for n in a.at_step(s).orders)


@pytest.fixture(scope="module")
def local_run():
    return train_correlators(*ARGS, **KW)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cl:
        with distributed.Client(cl) as c:
            yield cl, c


@pytest.fixture(scope="module")
def client(cluster):
    return cluster[1]


def test_dask_training_gives_the_local_bits(local_run, client):
    on_dask = train_correlators(*ARGS, dask=client, **KW)
    assert _same(local_run, on_dask)
    assert kernel_key(on_dask.kernel) == kernel_key(local_run.kernel)
    assert not np.array_equal(local_run.at_step(5).moment_sums(4)[2],
                              local_run.at_step(0).moment_sums(4)[2])


def test_dask_shifted_training_gives_the_local_bits(client):
    # Orders 1, 2: step 5's outputs are shifted by the reference, computed once on the
    # client and sent with every task; the workers' sums are the local ones bit for bit.
    args = (NET, X, [4], 256, X_TRAIN, Y_TRAIN, [0, 5], 0.5)
    kw = {**KW, "orders": (1, 2)}
    local = train_correlators(*args, **kw)
    on_dask = train_correlators(*args, dask=client, **kw)
    assert np.any(local.at_step(5).shift(4) != 0)
    assert_same_trained_bits(local, on_dask, 4)


def test_killed_locally_resumed_on_dask_gives_the_local_bits(local_run, client, tmp_path,
                                                             monkeypatch):
    folder = tmp_path / "ckpt"
    kill_training_at_shard(
        monkeypatch, 3, lambda: train_correlators(*ARGS, checkpoint=folder, **KW))
    saved = ShardLedger.load(folder / "step_5.nc")
    assert 0 < saved.shards_done() < len(saved.plan.tasks())
    # the kernel that summed the finished shards is in the checkpoint
    assert kernel_key(json.loads(saved.plan.kernel)) == kernel_key(_native.identity("cpu"))
    resumed = train_correlators(*ARGS, checkpoint=folder, resume=True, dask=client, **KW)
    assert _same(local_run, resumed)


def test_resume_with_another_kernel_is_refused(tmp_path, monkeypatch):
    if _native.library() is None:
        pytest.skip("needs the C kernel to differ from the XLA one")
    folder = tmp_path / "ckpt"
    kill_training_at_shard(
        monkeypatch, 2, lambda: train_correlators(*ARGS, checkpoint=folder, **KW))
    monkeypatch.setenv("NNGP_PPL_KERNEL", "xla")
    with pytest.raises(NNGPInputError, match="two roundings"):
        train_correlators(*ARGS, checkpoint=folder, resume=True, **KW)


def test_a_worker_with_another_kernel_refuses_its_shard():
    # the plan records the XLA kernel; a worker that would sum with the C kernel refuses
    if _native.library() is None:
        pytest.skip("needs the C kernel to differ from the XLA one")
    from nngp_ppl.sampling.sampler import plan_run
    from nngp_ppl.training.trainer import training_setup

    plan = plan_run(NET, X, [4], 128, orders=(2,), batch_size=64, shard_size=128)
    plan = type(plan)(**{**plan.__dict__, "kernel": json.dumps(_native.identity("gpu"))})
    setup = training_setup(NET, X_TRAIN, Y_TRAIN, [0, 1], 0.5)
    with pytest.raises(NNGPInputError, match="accumulation kernel"):
        _train_shard_task(NET, setup, plan, 4, 0)


def test_devices_and_dask_together_are_refused():
    with pytest.raises(NNGPInputError, match="not both"):
        train_correlators(*ARGS, devices=1, dask="local:1", **KW)


def test_cli_train_on_a_dask_scheduler_writes_the_local_result(cluster, tmp_path, capsys):
    from nngp_ppl.cli.main import main
    from nngp_ppl.training.trainer import TrainedCorrelators

    data = tmp_path / "points.csv"
    data.write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in zip(X_TRAIN, Y_TRAIN,
                                                                      strict=True)))
    out = tmp_path / "trained.nc"
    argv = ["train", "--ensemble", "erf", "--sigma-b", "0.5", "--inputs=-1,-0.2,0.6",
            "--widths", "5", "--n-nets", "256", "--data", str(data), "--steps", "0,3",
            "--learning-rate", "0.5", "--orders", "2,4", "--seed", "3", "--batch-size", "64",
            "--shard-size", "128", "--no-progress", "--dask", cluster[0].scheduler_address,
            "-o", str(out)]
    assert main(argv) == 0
    got = TrainedCorrelators.from_netcdf(out)
    want = train_correlators(NET, X, 5, 256, X_TRAIN, Y_TRAIN, [0, 3], 0.5, **KW)
    assert _same(got, want)
    capsys.readouterr()
    assert main(argv[:-4] + ["--dask", "nonsense", "-o", str(tmp_path / "x.nc")]) == 2
    assert "dask" in capsys.readouterr().err


def test_the_result_file_records_the_kernel(local_run, tmp_path):
    from nngp_ppl.training.trainer import TrainedCorrelators

    assert kernel_key(local_run.kernel) == kernel_key(_native.identity("cpu"))
    back = TrainedCorrelators.from_netcdf(local_run.to_netcdf(tmp_path / "t.nc"))
    assert back.kernel == local_run.kernel
