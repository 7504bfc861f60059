r"""Dask backend: fan the shards of a sampling run out to ``dask.distributed`` workers.

A run's unit of work is one shard, ``(width, shard index)`` of its
:class:`~nngp_ppl.sampling.checkpoint.RunPlan`: a pure function of the plan
(:func:`nngp_ppl.sampling._shard.shard_sums`, per-network PRNG keys) that returns float64 sums.
Every missing shard becomes one Dask task; the client folds the results into the
:class:`~nngp_ppl.sampling.checkpoint.ShardLedger` as they arrive, which adds them in shard order
whatever the order of completion, and checkpoints after each one. The statistics are
therefore the same numbers as a local run with the same arguments: bit for bit when the
workers run the same nngp_ppl and JAX on the same kind of processor (checked below: a
warning names any worker that differs), to float32 round-off otherwise.

Where the workers come from (``dask=`` of :func:`nngp_ppl.sample_correlators`, ``--dask``
of ``nngp-ppl sample``):

* a :class:`distributed.Client` you made (used as is, left open);
* a scheduler address, ``"tcp://host:8786"`` (or any address Dask accepts);
* ``"local"`` or ``"local:N"``: a :class:`distributed.LocalCluster` on 127.0.0.1 with N
  single-threaded worker processes (default: one per available CPU), closed afterwards.

On a cluster, start a scheduler and workers that can import this same nngp_ppl (see
``docs/scaling.md``, e.g. dask-jobqueue on SLURM). Dask is an optional dependency
(``pip install 'nngp_ppl[distributed]'``) and is imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
import warnings

import jax

from .._checks import NNGPInputError
from .._version import __version__
from . import _native
from ._shard import shard_sums
from .checkpoint import kernel_key

__all__ = [
    "collect",
    "CONNECT_TIMEOUT",
    "parse_dask",
    "dask_client",
    "DaskExecutor",
    "run_dask",
    "worker_kernel",
]

#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT = 30


def _distributed():
    try:
        import distributed
    except ImportError:
        raise NNGPInputError(
            "dask: the Dask backend needs dask.distributed, which is not installed; "
            "pip install 'nngp_ppl[distributed]' (or 'dask[distributed]')"
        ) from None
    return distributed


def parse_dask(spec) -> tuple[str, int | str]:
    """``("local", n_workers)`` for ``local`` / ``local:N``, ``("address", spec)`` otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise NNGPInputError(
            f"dask must be a distributed.Client, a scheduler address such as "
            f"'tcp://host:8786', or 'local' / 'local:N'; got {spec!r}"
        )
    spec = spec.strip()
    m = re.fullmatch(r"local(?:\[?:?(\d+)\]?)?", spec)
    if m:
        n = int(m.group(1)) if m.group(1) else len(os.sched_getaffinity(0))
        if n < 1:
            raise NNGPInputError(f"dask: local:N needs N >= 1 workers, got {spec!r}")
        return "local", n
    if spec.startswith("local"):
        raise NNGPInputError(f"dask: write 'local' or 'local:N' (N workers), got {spec!r}")
    if "://" not in spec and not re.fullmatch(r"[\w.\-\[\]:]+:\d+", spec):
        raise NNGPInputError(
            f"dask: {spec!r} is neither 'local[:N]' nor a scheduler address like "
            "'tcp://host:8786'"
        )
    return "address", spec


@contextlib.contextmanager
def dask_client(spec):
    """A connected :class:`distributed.Client` for ``spec`` (see the module docstring)."""
    distributed = _distributed()
    if isinstance(spec, distributed.Client):
        yield spec
        return
    kind, value = parse_dask(spec)
    if kind == "local":
        cluster = distributed.LocalCluster(
            n_workers=value, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        )
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(value, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise NNGPInputError(
            f"dask: cannot reach a Dask scheduler at {value} ({type(err).__name__}: {err})"
        ) from None
    try:
        yield client
    finally:
        client.close()


def _versions():
    """(nngp_ppl, jax, device kind) of the process it runs in."""

    return __version__, jax.__version__, jax.devices()[0].device_kind


def _worker_versions():
    """:func:`_versions` and the accumulation kernel's identity (JSON) of a worker."""

    return (*_versions(),
            json.dumps(_native.identity(jax.devices()[0].platform), sort_keys=True))


def _check_workers(client) -> dict:
    """Check the workers (see :func:`_worker_versions`); return the accumulation kernel's
    identity they share, or refuse workers that would sum with different kernels (their
    sums would mix two roundings: :mod:`nngp_ppl.sampling._native`)."""
    try:
        seen = client.run(_worker_versions)
    except ModuleNotFoundError as err:
        raise NNGPInputError(
            f"dask: a worker cannot import {err.name}; install nngp_ppl (this version) in "
            "the workers' Python environment"
        ) from None
    if not seen:
        raise NNGPInputError("dask: the scheduler has no workers")
    kernels = {w: json.loads(v[3]) for w, v in seen.items()}
    keys = {kernel_key(i) for i in kernels.values()}
    if len(keys) > 1:
        raise NNGPInputError(
            "dask: the workers would sum with different accumulation kernels "
            f"{sorted(keys, key=str)} (per worker: "
            f"{ {w: kernel_key(i) for w, i in kernels.items()} }), which would mix two "
            "roundings in one run; give every worker a C compiler, or set NNGP_PPL_KERNEL=xla "
            "on all of them")
    mine = _versions()
    odd = {w: tuple(v[:3]) for w, v in seen.items() if tuple(v[:3]) != mine}
    if odd:
        warnings.warn(
            f"Dask workers differ from this process (nngp_ppl, jax, device) = {mine}: "
            f"{odd}; the statistics stay correct but may differ from a local run at round-off",
            RuntimeWarning, stacklevel=4,
        )
    return next(iter(kernels.values()))


def _shard_task(net, X, width, seed, start, count, orders, covariance, batch):
    """One shard on a worker: the pure kernel, nothing of the client's state."""
    return shard_sums(net, X, width, seed, start, count, orders=orders,
                      covariance=covariance, batch=batch)


class DaskExecutor:
    """Runs a plan's missing shards on Dask workers (see the module docstring).

    Interchangeable with :class:`nngp_ppl.sampling.sampler.LocalExecutor`: ``check(plan)`` before
    any work, then ``run(plan, ledger, on_networks, on_shard)``.
    """

    def __init__(self, dask):
        if not isinstance(dask, str):
            distributed = _distributed()
            if not isinstance(dask, distributed.Client):
                parse_dask(dask)  # raises the clear message for anything else
        else:
            parse_dask(dask)
        self.dask = dask

    def check(self, plan) -> None:
        """Nothing to check here: each worker's memory is its own (and unknown here)."""

    def run(self, plan, ledger, on_networks, on_shard) -> None:
        """``on_shard((width, index), sums)`` is called in the order the shards finish (the
        ledger restores shard order); ``on_networks(count)`` after each. An error or
        interrupt cancels the shards still queued."""
        with dask_client(self.dask) as client:
            ledger.adopt_kernel(_check_workers(client))
            plan = ledger.plan
            todo = ledger.todo()
            if not todo:
                return
            tag = uuid.uuid4().hex[:8]
            X = plan.inputs
            futures = {}
            for width, index in todo:
                start, count = plan.shards(width)[index]
                fut = client.submit(
                    _shard_task, plan.net, X, width, plan.seed, start, count, plan.orders,
                    plan.covariance, plan.batch_size(width),
                    key=f"nngp-shard-{tag}-N{width}-{index}", pure=False,
                )
                futures[fut] = (width, index, count)
            collect(client, futures, on_shard, on_networks)


def collect(client, futures: dict, on_shard, on_networks) -> None:
    """Hand each finished shard to ``on_shard((width, index), result)`` and its network
    count to ``on_networks`` as the workers finish them (``futures``: future -> (width,
    index, count)); any failure or interrupt cancels the shards still queued, so a killed
    run leaves no work running on the cluster."""
    try:
        for fut in _distributed().as_completed(list(futures)):
            width, index, count = futures[fut]
            result = fut.result()
            fut.release()
            on_shard((width, index), result)
            on_networks(count)
    except BaseException:
        client.cancel(list(futures))
        raise


def run_dask(plan, ledger, dask, on_networks, on_shard) -> None:
    """Compute the ledger's missing shards on Dask workers (:class:`DaskExecutor`)."""
    DaskExecutor(dask).run(plan, ledger, on_networks, on_shard)


def worker_kernel(client) -> dict:
    """The accumulation kernel's identity (:func:`nngp_ppl._native.identity`) that the
    workers of ``client`` share, after the checks of :class:`DaskExecutor` (workers that
    cannot import nngp_ppl, or would sum with different kernels, are refused): for other
    runs on Dask workers, such as the training's (:mod:`nngp_ppl.training`)."""
    return _check_workers(client)
