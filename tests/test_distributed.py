"""Multi-device and Dask sampling give the same numbers as a single-device local run.

Shards are folded in shard order (nngp_ppl.sampling.checkpoint) and a shard's sums do not depend
on the device or worker that computed it, so the comparisons below are bitwise
(``np.array_equal``), not within a tolerance. Dask runs against an in-process LocalCluster
on 127.0.0.1 (threads, TCP), which starts in about a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import CorrelatorStats, NNGPInputError, sample_correlators
from nngp_ppl.cli.main import main
from nngp_ppl.sampling.checkpoint import ShardLedger
from nngp_ppl.sampling.distributed import parse_dask
from nngp_ppl.sampling.sampler import plan_run, shard_sums

NET = nngp_ppl.GaussNet(sigma_w=0.6, sigma_b=0.3)
X = [0.0, 0.4, 1.0]
WIDTHS = [3, 20]
N_NETS = 1536
KW = dict(orders=(2, 4, 6), seed=9, batch_size=128, shard_size=256, progress=False)


def assert_same_stats(a, b):
    assert a.widths == b.widths
    for w in a.widths:
        assert a.n_nets(w) == b.n_nets(w)
        for m, s in a.moment_sums(w).items():
            assert np.array_equal(s, b.moment_sums(w)[m]), (w, m)
        for n, s in a.tail_sums(w).items():
            assert np.array_equal(s, b.tail_sums(w)[n]), (w, n)


@pytest.fixture(scope="module")
def local_run():
    return sample_correlators(NET, X, WIDTHS, N_NETS, **KW)


CHILD = textwrap.dedent("""
    import json, sys, warnings
    import jax
    import nngp_ppl
    from nngp_ppl.sampling import sampler as sampling

    warnings.simplefilter("ignore")
    used = []
    real_job = sampling.shard_job

    def job(*args, **kwargs):
        used.append(args[-1].id)  # the device the shard is committed to
        return real_job(*args, **kwargs)

    sampling.shard_job = job
    spec = json.loads(sys.argv[1])
    stats = nngp_ppl.sample_correlators(nngp_ppl.GaussNet(**spec["net"]), spec["X"],
                                        spec["widths"], spec["n_nets"], **spec["kw"])
    stats.to_netcdf(spec["out"])
    print(json.dumps({"devices": len(jax.local_devices()), "used": sorted(set(used))}))
""")


@pytest.mark.slow
def test_two_forced_cpu_devices_give_bitwise_the_single_device_result(local_run, tmp_path,
                                                                     two_cpu_devices_env):
    # The flag must be set before JAX initialises its backend: hence a child process.
    out = tmp_path / "two.nc"
    spec = {"net": {"sigma_w": NET.sigma_w, "sigma_b": NET.sigma_b}, "X": X,
            "widths": WIDTHS, "n_nets": N_NETS, "kw": {**KW, "orders": list(KW["orders"])},
            "out": str(out)}
    env = two_cpu_devices_env
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"devices": 2, "used": [0, 1]}  # both devices computed shards
    assert_same_stats(local_run, CorrelatorStats.from_netcdf(out))


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            yield cl, client


def test_dask_local_cluster_matches_the_local_run(local_run, cluster):
    from distributed import get_task_stream

    _, client = cluster
    workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 2
    with get_task_stream(client) as tasks:
        stats = sample_correlators(NET, X, WIDTHS, N_NETS, dask=client, **KW)
    assert_same_stats(local_run, stats)
    shards = [t for t in tasks.data if str(t["key"]).startswith("nngp-shard-")]
    assert len(shards) == 12  # 2 widths x 1536 / 256
    assert {t["worker"] for t in shards} == workers  # both workers computed shards


def test_cli_with_a_dask_scheduler_address_writes_the_local_result(local_run, cluster,
                                                                    tmp_path, capsys):
    cl, _ = cluster
    out = tmp_path / "dask.nc"
    argv = ["sample", "--ensemble", "gauss", "--sigma-w", "0.6", "--sigma-b", "0.3",
            "--inputs", "0,0.4,1", "--widths", "3,20", "--n-nets", str(N_NETS),
            "--seed", "9", "--batch-size", "128", "--shard-size", "256", "--no-progress",
            "--dask", cl.scheduler_address, "-o", str(out)]
    assert cl.scheduler_address.startswith("tcp://127.0.0.1:")
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert_same_stats(local_run, CorrelatorStats.from_netcdf(out))
    assert os.listdir(tmp_path) == ["dask.nc"]  # the checkpoint is gone


def test_a_local_checkpoint_resumes_on_dask(local_run, cluster, tmp_path):
    _, client = cluster
    plan = plan_run(NET, X, WIDTHS, N_NETS, orders=KW["orders"], seed=KW["seed"],
                    batch_size=KW["batch_size"], shard_size=KW["shard_size"])
    ledger = ShardLedger(plan)
    for w, i in [(3, 0), (3, 1), (20, 2)]:  # (20, 2) waits for shards 0, 1 of N = 20
        s, c = plan.shards(w)[i]
        ledger.add(w, i, shard_sums(NET, plan.inputs, w, plan.seed, s, c, orders=plan.orders,
                                    covariance=True, batch=plan.batch_size(w)))
    ck = ledger.save(tmp_path / "run.partial")
    stats = sample_correlators(NET, X, WIDTHS, N_NETS, dask=client, checkpoint=ck,
                               resume=True, **KW)
    assert_same_stats(local_run, stats)
    assert ShardLedger.load(ck).complete


@pytest.mark.parametrize("spec, kind, value", [
    ("local", "local", len(os.sched_getaffinity(0))),
    ("local:3", "local", 3),
    ("local[:2]", "local", 2),
    ("tcp://10.0.0.5:8786", "address", "tcp://10.0.0.5:8786"),
    ("node17:8786", "address", "node17:8786"),
])
def test_dask_specs(spec, kind, value):
    assert parse_dask(spec) == (kind, value)


@pytest.mark.parametrize("spec", ["", "locale", "local:0", "nonsense", 42, None])
def test_bad_dask_specs_are_clear_errors(spec):
    with pytest.raises(NNGPInputError, match="dask"):
        parse_dask(spec)


def test_unreachable_scheduler_and_missing_dask_are_clear_errors(monkeypatch, capsys,
                                                                tmp_path):
    import socket

    import nngp_ppl.sampling.distributed as dist

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT", 2)
    with pytest.raises(NNGPInputError, match="cannot reach a Dask scheduler"):
        sample_correlators(NET, X, [3], 64, dask=f"tcp://127.0.0.1:{port}", progress=False)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(NNGPInputError, match=r"pip install 'nngp_ppl\[distributed\]'"):
        sample_correlators(NET, X, [3], 64, dask="local:1", progress=False)
    assert main(["sample", "--ensemble", "erf", "--inputs", "0,1", "--widths", "2",
                 "--n-nets", "10", "--no-progress", "--dask", "local", "-o",
                 str(tmp_path / "run.nc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nngp-ppl sample: error: --dask: ") and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_devices_argument():
    with pytest.raises(NNGPInputError, match="devices: 5 requested"):
        sample_correlators(NET, X, [3], 64, devices=5, progress=False)
    with pytest.raises(NNGPInputError, match="devices must be"):
        sample_correlators(NET, X, [3], 64, devices=["cpu"], progress=False)


def test_the_shard_kernel_stands_alone_and_executors_are_interchangeable():
    """No import cycle: the kernel imports neither the sampler nor a backend, and the Dask
    backend imports the kernel, not the sampler; both executors have the same interface."""
    import ast
    import inspect

    import nngp_ppl.sampling.sampler as sampling
    from nngp_ppl.sampling import _shard, distributed

    def imported(module):
        tree = ast.parse(inspect.getsource(module))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add(("." * node.level) + (node.module or ""))
        return names

    assert not {".sampler", ".distributed"} & imported(_shard)
    assert ".sampler" not in imported(distributed)
    assert "._shard" in imported(distributed)
    for name in ("check", "run"):
        local = inspect.signature(getattr(sampling.LocalExecutor, name))
        dask = inspect.signature(getattr(distributed.DaskExecutor, name))
        assert list(local.parameters) == list(dask.parameters), name
    assert isinstance(sampling.executor_for(1), sampling.LocalExecutor)
    with pytest.raises(NNGPInputError, match="dask"):
        sampling.executor_for(dask="nonsense address")
